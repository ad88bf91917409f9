"""Concurrent load on the served Spaces (issue 10, point 3): failures and latency per Space and concurrency.

    .venv/bin/python -m benchmarks.space_load                       # every Space, 4 / 16 / 32 clients, 256 each
    .venv/bin/python -m benchmarks.space_load --spaces scopeformer --clients 4 --requests 32

Each Space runs as a real server (`python spaces/<family>/app.py`, as `make demo` serves it) with a tiny
random-init model of its family saved by `hfmed.hub.save_for_hub`. N threads, each its own `gradio_client`
Client (its own download folder), send `--requests` requests in all through `/predict` and download every
output file, as a user's browser does. Two modes: `same` (every request uploads the same bytes, which gradio
stores at one content-addressed path, as when users click the same example) and `different` (every request
uploads its own bytes, same pixels). A request fails when it raises (gr.Error, RemoteProtocolError, queue
full) or an output image does not decode; all files hold the same pixels, so all answers must be equal
(pictures compared by their decoded pixels). After each run the upload folder must hold none of the uploaded files, and the server log no
h11 / traceback line. Prints one Markdown table; writes it as JSON with `--json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from tests.space_harness import (
    SPACES_DIR,
    run_load,
    save_tiny_space_model,
    space_examples,
    space_families,
    space_process,
    unique_copy,
    wait_until_up,
)

LOG_ALARMS = ("Too much data", "Too little data", "Traceback", "RemoteProtocolError", "LocalProtocolError")


def _load_row(info: dict, files: list[Path], clients: int, work: Path) -> dict:
    tally = run_load(info["url"], files, clients, work)
    latencies = tally["latencies"]
    names = {f.name for f in files}
    return {
        "requests": len(files), "clients": clients, "failed": tally["failed"], "wall_s": round(tally["wall_s"], 2),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "max_s": round(max(latencies), 3) if latencies else None,
        # every file holds the same pixels, so every answer must be the same (pictures compared by pixels)
        "distinct_answers": len(set(tally["digests"].values())),
        "uploads_left": sorted({p.name for p in info["uploads"].rglob("*") if p.name in names}),
        "errors": tally["errors"][:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spaces", nargs="*", default=None, help="families (default: every Space)")
    parser.add_argument("--clients", nargs="*", type=int, default=[4, 16, 32])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--modes", nargs="*", default=["same", "different"], choices=["same", "different"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    rows = []
    for family in args.spaces or space_families():
        with tempfile.TemporaryDirectory(prefix=f"space-load-{family}-") as tmp:
            root = Path(tmp)
            model = save_tiny_space_model(family, root / "model")
            source = space_examples(family)[0]
            with space_process(SPACES_DIR / family / "app.py", model, root) as info:
                wait_until_up(info, timeout=180)
                alarms_before = 0
                for clients in args.clients:
                    for mode in args.modes:
                        inputs = root / f"inputs-{clients}-{mode}"
                        if mode == "same":
                            # one file, bytes unlike any bundled example, so its upload is deleted after each answer
                            files = [unique_copy(source, inputs, "same")] * args.requests
                        else:
                            files = [unique_copy(source, inputs, f"r{i}") for i in range(args.requests)]
                        row = {"space": family, "mode": mode,
                               **_load_row(info, files, clients, root / f"work-{clients}-{mode}")}
                        info["log"].flush()
                        log = Path(info["root"] / "server.log").read_text(errors="replace")
                        alarms = sum(log.count(alarm) for alarm in LOG_ALARMS)
                        row["log_alarms"], alarms_before = alarms - alarms_before, alarms
                        print(json.dumps(row), flush=True)
                        rows.append(row)

    print("\n| Space | files | clients | requests | failed | p50 (s) | max (s) | uploads left | log alarms "
          "| distinct answers |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['space']} | {row['mode']} | {row['clients']} | {row['requests']} | {row['failed']} | "
              f"{row['p50_s']} | {row['max_s']} | {len(row['uploads_left'])} | {row['log_alarms']} | "
              f"{row['distinct_answers']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
