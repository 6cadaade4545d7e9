"""`python -m hwmodels.calibrate [--write]`: refit every stored fit and compare it with catalogs/fits/.

Without --write it only prints, per fit, each parameter as stored (what the step model uses), as the fit gives it
today, and their relative difference. With --write it stores today's fits, unrounded, with their reports: a
recalibration, which changes every number moeplan prints, to be committed as one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from catalogs import CATALOG_DIR
from hwmodels import catalog
from hwmodels.calibrate import deepep_fit, gemm_fit, overlap_fit

_COLLECTIVE_FIELDS = ("scaleup_efficiency", "scaleout_efficiency", "alltoall_latency_s", "per_token_s", "per_copy_s",
                      "normal_per_peer_s", "notify_per_peer_s")


def refitted() -> dict[str, dict]:
    """Every fit as a catalogs/fits/ record, fitted now."""
    gemm = gemm_fit.fit_deepgemm()
    records = {"deepgemm-h800": gemm_fit.stored_record(gemm, gemm_fit.fit_report(gemm))}
    for name, fit in (("deepep-h800", deepep_fit.fit_deepep()), ("deepep-ascend", deepep_fit.fit_deepep_ascend())):
        params = {k: float(getattr(fit, k)) for k in _COLLECTIVE_FIELDS}
        records[name] = dict(catalog.stored_fit(name), source=fit.source, parameters=params, unrounded=params)
    efficiency = overlap_fit.fit_overlap_efficiency()
    records["overlap"] = dict(catalog.stored_fit("overlap"), parameters={"overlap_efficiency": efficiency},
                              unrounded={"overlap_efficiency": efficiency},
                              report=overlap_fit.overlap_report(overlap_efficiency=efficiency))
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hwmodels.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="store today's fits (a recalibration)")
    parser.add_argument("--to", default=str(CATALOG_DIR / "fits"), metavar="DIR", help="where --write stores them (default catalogs/fits)")
    args = parser.parse_args(argv)
    for name, record in refitted().items():
        stored = catalog.stored_fit(name)["parameters"]
        print(f"{name}: {record['fitted_by']}")
        for key, value in record["parameters"].items():
            old = float(stored[key])
            change = (value - old) / old if old else value
            print(f"  {key:<24} stored {old:<12.6g} fitted {value:<12.6g} ({change:+.2%})")
        if args.write:
            stored_path = CATALOG_DIR / "fits" / f"{name}.yaml"
            header = "".join(line + "\n" for line in stored_path.read_text(encoding="utf-8").splitlines() if line.startswith("#"))
            path = Path(args.to) / f"{name}.yaml"
            path.write_text(header + yaml.safe_dump(record, sort_keys=False, width=200), encoding="utf-8")
            print(f"  wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
