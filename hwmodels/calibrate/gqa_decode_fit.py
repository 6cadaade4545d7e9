"""Grouped-query decode attention where no engine table measures it, fitted to the tables that do.

The fitted models priced a GQA decode step as the read of its KV cache at the DeepGEMM fit's HBM efficiency (0.87)
plus one kernel launch. NVIDIA's measured kernels (aiconfigurator-core's TensorRT-LLM `generation_attention_perf`
tables, every GPU that has one) take longer at the shapes a serving step has: at Qwen3-235B's 64 query and 4 KV heads
1.15-1.4x that time with a bf16 cache and 1.3-1.7x with an FP8 one. This fits, per KV dtype,

    t = launch_s + per_sequence_s x batch + KV bytes / (memory_efficiency x HBM bytes/s)

on the tables' decode-sized rows (full attention, window 0; at least 8 sequences and 20 MB of KV; at most 16 query
heads per KV head, as the catalog's models have), minimising the squared log ratio of predicted to measured time,
and reports each GPU's median |error| when that GPU is held out of the fit, since the fitted models price GPUs no
table measured. Kernel-level measurements only (issue 17's rule), nothing end to end.

`python -m hwmodels.calibrate.gqa_decode_fit [--write]` prints the fit and its held-out error; --write stores it in
catalogs/fits/gqa-decode.yaml (a recalibration, to be committed as one). Needs the moeplan[measured] extra.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from hwmodels import catalog
from hwmodels.calibrate import measured_tables as tables, store_fit
from hwmodels.calibrate.operator_costs import stored_gemm_fit
from hwmodels.efficiency import GQA_KV_DTYPES

ENGINE, TABLE, KERNEL = "trtllm", "generation_attention_perf", "torch_flow"  # TensorRT-LLM's own attention kernel
MIN_SEQUENCES, MIN_KV_BYTES, MAX_HEAD_RATIO = 8, 20e6, 16  # the decode-sized rows


def observed() -> pd.DataFrame:
    """The decode-sized full-attention rows of each GPU's newest TensorRT-LLM generation-attention table: columns gpu,
    kv_bytes (per element), batch, bytes (the KV read), bw (the GPU's HBM bytes/s) and seconds."""
    frames = []
    for device, system in sorted(tables.SYSTEMS.items()):
        versions = tables.table_versions(system, ENGINE, TABLE)
        if not versions:
            continue
        t = tables.load_table(tables.table_path(system, ENGINE, TABLE, versions[-1]))
        t = t[(t.window_size == 0) & (t.kernel_source == KERNEL) & t.kv_cache_dtype.isin(GQA_KV_DTYPES)
              & (t.batch_size >= MIN_SEQUENCES) & (t.num_heads <= MAX_HEAD_RATIO * t.num_key_value_heads)]
        kv_bytes = t.kv_cache_dtype.map(GQA_KV_DTYPES).to_numpy(float)
        frame = pd.DataFrame({"gpu": device, "kv_bytes": kv_bytes, "batch": t.batch_size.to_numpy(float),
                              "bytes": (t.batch_size * t.step * 2 * t.num_key_value_heads * t.head_dim).to_numpy(float) * kv_bytes,
                              "bw": catalog.load_device(device).hbm_bytes_per_s, "seconds": t.latency.to_numpy(float) * 1e-3})
        frames.append(frame[frame.bytes >= MIN_KV_BYTES])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def predict(params: dict, frame: pd.DataFrame) -> np.ndarray:
    """The model's seconds for each row (the module docstring's equation)."""
    return (params["launch_s"] + params["per_sequence_s"] * frame.batch
            + frame.bytes / (params["memory_efficiency"] * frame.bw)).to_numpy()


def fit(frame: pd.DataFrame) -> dict:
    """The parameters minimising the squared log ratio over `frame` (one KV dtype)."""
    def params(x):  # microseconds and nanoseconds keep the solver's steps of one scale
        return {"launch_s": x[0] * 1e-6, "per_sequence_s": x[1] * 1e-9, "memory_efficiency": x[2]}
    x = least_squares(lambda x: np.log(predict(params(x), frame) / frame.seconds), (5.0, 10.0, 0.8),
                      bounds=((0.0, 0.0, 0.05), (100.0, 1e4, 1.0))).x
    return {k: float(v) for k, v in params(x).items()}


def median_error(params: dict, frame: pd.DataFrame) -> float:
    return float(np.median(np.abs(predict(params, frame) / frame.seconds - 1)))


def record(frame: pd.DataFrame) -> dict:
    """The stored fit: per KV dtype its parameters (3 significant digits, as the step model uses them), the
    in-sample median |error|, each GPU's with that GPU held out of the fit, and the read-only model's it replaces."""
    gemm = stored_gemm_fit()
    before = {"launch_s": gemm.launch_overhead_s, "per_sequence_s": 0.0, "memory_efficiency": gemm.memory_efficiency}
    parameters, report = {}, {}
    for name, kv_bytes in GQA_KV_DTYPES.items():
        rows = frame[frame.kv_bytes == kv_bytes]
        rounded = {k: float(f"{v:.3g}") for k, v in fit(rows).items()}
        held_out = {gpu: round(median_error(fit(rows[rows.gpu != gpu]), rows[rows.gpu == gpu]), 4)
                    for gpu in sorted(rows.gpu.unique())}
        parameters[name] = rounded
        report[name] = {"rows": int(len(rows)), "median_abs_error": round(median_error(rounded, rows), 4),
                        "held_out_by_gpu": held_out, "held_out_median": round(float(np.median(list(held_out.values()))), 4),
                        "kv_read_model_median_abs_error": round(median_error(before, rows), 4)}
    gpus = sorted(frame.gpu.unique())
    return {"schema_version": 1,
            "fitted_by": "hwmodels.calibrate.gqa_decode_fit.fit (python -m hwmodels.calibrate.gqa_decode_fit)",
            "fitted_on": (f"aiconfigurator-core {tables.package_version()} TensorRT-LLM {TABLE}, window 0, kernel {KERNEL}, "
                          f">= {MIN_SEQUENCES} sequences, >= {MIN_KV_BYTES / 1e6:.0f} MB of KV, <= {MAX_HEAD_RATIO} query "
                          f"heads per KV head: {', '.join(gpus)}"),
            "source": f"GQA decode fit to TensorRT-LLM's measured attention kernels on {len(gpus)} GPUs",
            "parameters": parameters, "report": report}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hwmodels.calibrate.gqa_decode_fit", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="store the fit in catalogs/fits/gqa-decode.yaml")
    args = parser.parse_args(argv)
    frame = observed()
    if frame.empty:
        print("no measured attention tables: pip install 'moeplan[measured]'")
        return 2
    rec = record(frame)
    for name, p in rec["parameters"].items():
        r = rec["report"][name]
        print(f"{name} KV ({r['rows']:,} rows): launch {p['launch_s'] * 1e6:.2f} us, {p['per_sequence_s'] * 1e9:.1f} ns a "
              f"sequence, {p['memory_efficiency']:.3f} of HBM; median |error| {r['median_abs_error']:.1%} "
              f"(the KV read alone: {r['kv_read_model_median_abs_error']:.1%}); each GPU held out: "
              + ", ".join(f"{g} {e:.1%}" for g, e in r["held_out_by_gpu"].items()))
    if args.write:
        header = ("# Grouped-query decode attention for the fitted models, per KV dtype, fitted to NVIDIA's measured kernels\n"
                  "# (hwmodels/calibrate/gqa_decode_fit.py says how); report: in-sample, each GPU held out, and the KV\n"
                  "# read model it replaces. Written by `python -m hwmodels.calibrate.gqa_decode_fit --write`;\n"
                  "# tests/test_gqa_decode_fit.py refits and compares.\n")
        print(f"wrote {store_fit('gqa-decode', header, rec)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
