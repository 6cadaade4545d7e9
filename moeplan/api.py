"""The notebook API: every number the CLI and the dashboard show is one call here."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from hwmodels import arithmetic, catalog
from hwmodels.deployment import Deployment
from hwmodels.fit import FitReport, fit
from hwmodels.precision import default_plan
from hwmodels.validation import ValidationRow, validate as _validate
from moeplan import study
from moeplan.spec import Spec, load_spec, resolve
from moeplan.study import Plan, Sweep
from planner.search import plan as _plan


def deployment(spec: str | Path | Spec | Deployment, base_dir: Path | None = None) -> Deployment:
    """A Deployment from a spec path, a parsed Spec, or a Deployment (returned as is)."""
    if isinstance(spec, Deployment):
        return spec
    if isinstance(spec, Spec):
        return resolve(spec, base_dir)
    parsed, folder = load_spec(spec)
    return resolve(parsed, folder)


def check(spec: str | Path | Spec | Deployment) -> FitReport:
    """Does the model fit the cluster: weights per device per layout, KV room, concurrent sequences."""
    return fit(deployment(spec))


def model_summary(name_or_path: str, precision: Mapping[str, str] | None = None, context_tokens: int = 4096) -> dict:
    """Parameters, weight bytes, KV bytes per token and FLOPs per token of a catalog model or config.json."""
    arch = catalog.load_model(name_or_path)
    plan = default_plan(arch.quantization_config, arch.torch_dtype).with_overrides(precision or {}, "--precision")
    return dict(arithmetic.summary(arch, plan, context_tokens))


def validate(deployments: str | Path | None = None) -> list[ValidationRow]:
    """Predicted vs published for each scenario of a deployments YAML (default: the project's published set)."""
    return _validate(deployments)


def plan(spec: str | Path | Spec | Deployment) -> Plan:
    """Search layouts for the spec's model, cluster, workload and SLOs; recommend the cheapest that meets them.
    The Plan reads like a PlanResult (.recommendation, .frontier, .infeasible) and adds .to_frame(table),
    .figure(name) and .to_json() (plan.json)."""
    return Plan(_plan(deployment(spec)))


def compare(spec: str | Path | Spec | Mapping, devices: Sequence[str] = (), models: Sequence[str] = (),
            engine: str = "local", processes: int | None = None, progress=None) -> Sweep:
    """The same workload and SLOs across devices (at the spec's device count, whole nodes) and/or models."""
    return study.compare(spec, devices, models, engine, processes, progress)


def sweep(spec: str | Path | Spec | Mapping, vary: Mapping[str, Sequence], engine: str = "local",
          processes: int | None = None, progress=None) -> Sweep:
    """Plan the spec at every combination of the varied fields (dotted spec paths, or device / model)."""
    return study.sweep(spec, vary, engine, processes, progress)
