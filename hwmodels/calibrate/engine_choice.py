"""Which serving engine's measured tables price a deployment that names none (no serving.engine, no --backend).

The engine whose tables measure the most of the model's operator families on its device, at the model's own
shapes and number formats in some measured version (the lookups try every version, nearest first): the dense
GEMMs in the attention's format, the routed experts at the model's expert count, widths and top-k in their
served format, MLA decode and prefill (MLA models) or grouped-query attention's (at the model's head size), and the
tensor-parallel all-reduce. Ties go to the order of
measured_tables.ENGINES (SGLang, TensorRT-LLM, vLLM). Without the `moeplan[measured]` extra, or on a device
NVIDIA did not measure, there is none and the fitted kernel models price everything, as they do everything an
engine's tables leave out.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwmodels.calibrate import measured_tables as tables
from hwmodels.calibrate.measured_costs import GEMM_DTYPES, KV_DTYPES, MOE_DTYPES, measured_anywhere
from hwmodels.hardware import Device
from hwmodels.attention_kinds import Kind
from hwmodels.model_arch import GQAAttention, ModelArch
from hwmodels.precision import PrecisionPlan
from hwmodels.step_ops import served

FITTED = "fitted"  # serving.engine.name / --backend asking for no engine: the fitted kernel models alone


@dataclass(frozen=True)
class Family:
    """One operator family of a model: its label and the measured rows that would price it."""

    label: str
    table: str
    select: tuple  # (column, value) pairs; a value None: no table measures that format


@dataclass(frozen=True)
class EngineCoverage:
    engine: str
    measured: tuple[str, ...]  # labels of the model's families its tables measure on the device
    missing: tuple[str, ...]

    def phrase(self) -> str:
        return f"{self.engine} {len(self.measured)} of {len(self.measured) + len(self.missing)}"


def families(device: Device, arch: ModelArch, plan: PrecisionPlan) -> tuple[Family, ...]:
    """The operator families the step model asks the measured tables for, at this model's shapes and formats."""
    gemm = GEMM_DTYPES.get(served(plan.of("attention"), device).name)
    found = [Family(f"GEMM {gemm or plan.of('attention').name}", "gemm_perf", (("gemm_dtype", gemm),))]
    if arch.is_moe:
        scheme = served(plan.of("routed_experts"), device)
        dtype, moe = MOE_DTYPES.get(scheme.name), arch.moe
        found.append(Family(f"MoE {dtype or scheme.name} at {moe.num_experts} experts, top-{moe.top_k}", "moe_perf",
                            (("moe_dtype", dtype), ("hidden_size", moe.latent_size or arch.hidden_size),
                             ("inter_size", moe.expert_intermediate_size), ("topk", moe.top_k),
                             ("num_experts", moe.num_experts))))
    kv = KV_DTYPES.get(plan.kv_cache.name)
    if arch.is_mla:
        found.append(Family(f"MLA decode {kv or plan.kv_cache.name}", "generation_mla_perf", (("kv_cache_dtype", kv),)))
        found.append(Family("MLA prefill", "context_mla_perf", (("kv_cache_dtype", "bfloat16"),)))
    elif isinstance(arch.attention, GQAAttention) and arch.layers_of(Kind.FULL):
        att = arch.attention  # no table measures keys and values of unequal widths (step_attention prices them fitted)
        head = (("head_dim", att.head_dim if att.value_dim == att.head_dim else None),)
        found.append(Family(f"attention decode {kv or plan.kv_cache.name}", "generation_attention_perf",
                            (("kv_cache_dtype", kv),) + head))
        found.append(Family("attention prefill", "context_attention_perf", (("kv_cache_dtype", "bfloat16"),) + head))
    found.append(Family("all-reduce", "custom_allreduce_perf", (("allreduce_dtype", "bfloat16"),)))
    return tuple(found)


def engine_coverage(device: Device, arch: ModelArch, plan: PrecisionPlan) -> tuple[EngineCoverage, ...]:
    """Each engine's coverage of the model on the device; () without the measured extra or for an unmeasured device."""
    if tables.database_root() is None or device.name not in tables.SYSTEMS:
        return ()
    asked = families(device, arch, plan)
    out = []
    for engine in tables.ENGINES:
        hit = [all(v is not None for _, v in f.select) and measured_anywhere(device.name, engine, f.table, f.select)
               for f in asked]
        out.append(EngineCoverage(engine, tuple(f.label for f, h in zip(asked, hit) if h),
                                  tuple(f.label for f, h in zip(asked, hit) if not h)))
    return tuple(out)


def best_covered(coverage: tuple[EngineCoverage, ...]) -> EngineCoverage | None:
    """Of engine_coverage's answer, the engine that measures most of the model (ties: ENGINES order); None: none
    measures any of it."""
    covered = [c for c in coverage if c.measured]
    return max(covered, key=lambda c: len(c.measured)) if covered else None
