"""SWEEP.yaml: which spec to plan and which of its fields to vary (moeplan.study.sweep's file form).

    spec: kimi-k2-h200.yaml          # a spec path relative to this file, or a spec mapping inline
    vary:                            # dotted spec fields (or `device`, `model`) -> values
      device: [h200-sxm, b200-sxm, gb200]
      workload.input_tokens: [2048, 8192, 32768]
    y: usd_per_million_output_tokens # the metric the report charts
    title: Kimi K2 cost by device and context

Loaded in bounded work (hwmodels.safe_yaml), and refused before any planning when the product of the value
counts passes moeplan.study.MAX_POINTS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwmodels import safe_yaml
from hwmodels.errors import InputError
from moeplan.spec import one_line_error
from moeplan.study import check_grid_size

MAX_VARIED = 32  # fields varied at once

METRICS = ("usd_per_million_output_tokens", "usd_per_million_input_tokens", "tpot_s", "ttft_s", "devices",
           "output_tokens_per_s_per_device", "usd_per_hour")


class SweepFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: Annotated[str, Field(max_length=4096)] | dict[str, Any] = Field(
        description="a spec YAML path (relative to this file) or a spec mapping")
    vary: dict[Annotated[str, Field(max_length=200)], list[Any]] = Field(
        max_length=MAX_VARIED, description="dotted spec field (or device, model) -> the values to plan at")
    y: str = Field("usd_per_million_output_tokens", max_length=200,
                   description=f"the metric the report charts: {', '.join(METRICS)}")
    title: str = Field("sweep", max_length=200, description="the report's title")


def load_sweep(path: str | Path) -> SweepFile:
    path = Path(path)
    raw = safe_yaml.load(safe_yaml.read_text(path, "SWEEP", "give a sweep YAML (see moeplan sweep --help)"), str(path))
    if not isinstance(raw, dict):
        raise InputError(str(path), "is not a mapping", "give spec: and vary:")
    try:
        sweep = SweepFile.model_validate(raw)
    except ValidationError as e:
        raise one_line_error(e, str(path), SweepFile) from None
    check_grid_size(sweep.vary, f"{path}: vary")
    if sweep.y not in METRICS:
        raise InputError(f"{path}: y", f"unknown metric '{sweep.y}'", f"one of {', '.join(METRICS)}")
    if isinstance(sweep.spec, str):
        spec_path = Path(sweep.spec)
        sweep = sweep.model_copy(update={"spec": str(spec_path if spec_path.is_absolute() else path.resolve().parent / spec_path)})
    return sweep
