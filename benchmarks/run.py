"""`make bench`: every registered family against its anchor, plus the shared paths; writes docs/benchmarks.md.

    python -m benchmarks.run                       # everything, CPU (or CUDA when present), fp32
    python -m benchmarks.run --family lt_vit       # one family
    python -m benchmarks.run --amp bf16 --compile  # CUDA options
    python -m benchmarks.run --quick               # 3+ rounds (0.5 s a side), for a smoke check
    python -m benchmarks.run --family lt_vit --only forward --only loop   # some rows of one family

With --family or --only the report is written only when --out is given (a partial run must not replace
docs/benchmarks.md); rows print as they finish either way.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from .harness import Figure, Row, Settings, gemm_peak, machine, write_report
from .shared import SHARED

REPO = Path(__file__).resolve().parents[1]

# --only keys: the per-family rows, then the shared benchmarks (benchmarks.shared.SHARED keys)
FAMILY_ROWS = ("forward", "noise", "gemm", "train", "preprocess", "from_pretrained", "extra")


def _check_table() -> list[str]:
    from hfmed.registry import FAMILIES

    from .families import BENCHES

    missing = sorted(set(FAMILIES) - set(BENCHES))
    if missing:
        raise SystemExit(
            f"benchmarks: registered families without a benchmark: {missing}; add a FamilyBench for each to "
            "BENCHES in benchmarks/families.py"
        )
    return list(FAMILIES)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", action="append", help="only these families (repeatable)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="autocast dtype (CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile ours and the anchor")
    parser.add_argument("--quick", action="store_true", help="3 rounds (more until each side ran 0.5 s) after 1 warm-up; default 7 rounds, 3 s")
    parser.add_argument("--skip-shared", action="store_true", help="family rows only")
    parser.add_argument("--only", action="append", default=[],
                        help="only these rows (repeatable): " + ", ".join(FAMILY_ROWS) + ", " + ", ".join(SHARED))
    parser.add_argument("--out", default=None,
                        help="folder for benchmarks.md / benchmarks.json (default docs/ for a full run; a run "
                             "limited by --family or --only writes nothing unless --out is given)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    from .families import bench_family

    families = _check_table()
    keys = FAMILY_ROWS + tuple(SHARED)
    unknown = sorted(set(args.only) - set(keys))
    if unknown:
        raise SystemExit(f"benchmarks: unknown --only {unknown}; choose from {list(keys)}")
    if args.family:
        unknown = sorted(set(args.family) - set(families))
        if unknown:
            raise SystemExit(f"benchmarks: unknown family {unknown}; registered: {families}")
        families = args.family
    settings = Settings(device=args.device, amp=args.amp, compile=args.compile,
                        rounds=3 if args.quick else 7, warmup=1 if args.quick else 2, quick=args.quick,
                        min_seconds=0.5 if args.quick else 3.0,
                        only=tuple(args.only), families=tuple(families))
    out = args.out or (None if (args.family or args.only) else str(REPO / "docs"))
    info = machine()
    peak = gemm_peak(settings)
    info["gemm_peak_gflops"] = round(peak, 1)
    print(f"GEMM peak {peak:.1f} GFLOP/s on {info.get('gpu', info['cpu'])}", flush=True)
    rows: list[Row] = []
    figures: list[Figure] = []
    run_families = not args.only or any(key in FAMILY_ROWS for key in args.only)
    for name in families if run_families else []:
        print(f"[{name}] ...", flush=True)
        for row in bench_family(name, settings, peak):
            rows.append(row)
            print(_line(row), flush=True)
    if not args.skip_shared:
        for title, bench in SHARED.items():
            if not settings.wants(title):
                continue
            print(f"[{title}] ...", flush=True)
            for item in bench(settings):
                if isinstance(item, Figure):
                    figures.append(item)
                    print(f"  plot {item.name}: " + "; ".join(
                        f"{label} " + ", ".join(f"({x:g}, {y:.3g})" for x, y in points)
                        for label, points in item.series.items()), flush=True)
                    continue
                rows.append(item)
                print(_line(item), flush=True)
    if out is None:
        print("partial run (--family / --only): no report written; pass --out to write one")
        return 0
    from .families import BENCHES

    notes = {name: BENCHES[name].notes for name in families if run_families and BENCHES[name].notes}
    markdown, data = write_report(rows, info, settings, Path(out), notes, figures)
    print(f"wrote {markdown} and {data}")
    return 0


def _line(row: Row) -> str:
    ratio = "" if row.ratio is None else f"  ratio {row.ratio:.3f}"
    anchor = "" if row.anchor is None else f"  anchor {row.anchor:.4g} {row.unit}"
    return f"  {row.what}: ours {row.ours:.4g} {row.unit}{anchor}{ratio}"


if __name__ == "__main__":
    sys.exit(main())
