"""Calibration: where operator times come from, and how well each source reproduces what was published.

- operator_costs: `OperatorCosts`, the one interface the step model asks for operator times, built from the
  stored fits (`fitted_costs()`); every time it returns names the fit or published figure behind it.
- gemm_fit, deepep_fit, overlap_fit: the fits to published kernel tables (DeepGEMM, DeepEP and
  DeepEP-Ascend, LMSYS's two-batch-overlap ablation), each with its report; their results are stored as
  data in catalogs/fits/ (`python -m hwmodels.calibrate` refits and rewrites them), never re-fitted at import.
- kernels_measured: kernels_ref's measured CSVs, fitted kernel by kernel and composed into a whole MoE layer.
- deployments: published end-to-end deployments reproduced from the catalogs (validation, never fitting).
"""
