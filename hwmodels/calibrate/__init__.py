"""Calibration: where operator times come from, and how well each source reproduces what was published.

- operator_costs: `OperatorCosts`, the one interface the step model asks for operator times, built from the
  stored fits (`fitted_costs()`); every time it returns names the fit or published figure behind it.
- gemm_fit, deepep_fit, overlap_fit: the fits to published kernel tables (DeepGEMM, DeepEP and
  DeepEP-Ascend, LMSYS's two-batch-overlap ablation), each with its report; their results are stored as
  data in catalogs/fits/ (`python -m hwmodels.calibrate` refits and rewrites them), never re-fitted at import.
- gqa_decode_fit, closed_loop_fit: the fits to NVIDIA's measured tables (grouped-query decode attention) and
  measured closed loops (the engines' step constants), with the moeplan[measured] extra; each stores its fit with
  `store_fit` (`python -m hwmodels.calibrate.<module> --write`).
- kernels_measured: kernels_ref's measured CSVs, fitted kernel by kernel and composed into a whole MoE layer.
- deployments: published end-to-end deployments reproduced from the catalogs (validation, never fitting).
"""

from pathlib import Path

import yaml

from catalogs import CATALOG_DIR


def store_fit(name: str, header: str, record: dict) -> Path:
    """Write catalogs/fits/<name>.yaml: the `header` comment lines, then the record (a recalibration, to be committed
    as one)."""
    path = CATALOG_DIR / "fits" / f"{name}.yaml"
    path.write_text(header + yaml.safe_dump(record, sort_keys=False, width=200), encoding="utf-8")
    return path
