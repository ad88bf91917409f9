"""Concurrent load on the served Spaces (issue 10, point 3): failures and latency per Space and concurrency.

    .venv/bin/python -m benchmarks.space_load                       # every Space, 4 / 16 / 32 clients, 256 each
    .venv/bin/python -m benchmarks.space_load --spaces scopeformer --clients 4 --requests 32

Each Space runs as a real server (`python spaces/<family>/app.py`, as `make demo` serves it) with a tiny
random-init model of its family saved by `hfmed.hub.save_for_hub`. N threads, each its own `gradio_client`
Client (its own download folder), send `--requests` requests in all through `/predict` and download every
output file, as a user's browser does. Two modes: `same` (every request uploads the same bytes, which gradio
stores at one content-addressed path, as when users click the same example) and `different` (every request
uploads its own bytes). A request fails when it raises (gr.Error, RemoteProtocolError, queue full) or an
output image does not decode. After each run the upload folder must hold none of the uploaded files, and the
server log no h11 / traceback line. Prints one Markdown table; writes it as JSON with `--json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from tests.space_harness import (
    SPACES_DIR,
    save_tiny_space_model,
    space_examples,
    space_families,
    space_process,
    unique_copy,
    wait_until_up,
)

LOG_ALARMS = ("Too much data", "Too little data", "Traceback", "RemoteProtocolError", "LocalProtocolError")


def _image_paths(value) -> list[str]:
    """Every downloaded image path in one endpoint answer (galleries are lists of {image, caption})."""
    found = []
    if isinstance(value, dict):
        image = value.get("image")
        if isinstance(image, str):
            found.append(image)
        elif isinstance(image, dict) and isinstance(image.get("path"), str):
            found.append(image["path"])
        for item in value.values():
            if isinstance(item, (list, tuple)):
                found += _image_paths(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            found += _image_paths(item)
    return found


def run_load(info: dict, files: list[Path], clients: int, work: Path) -> dict:
    """Sends one request per entry of `files` from `clients` concurrent clients; returns the tally."""
    from gradio_client import Client, handle_file

    next_index = iter(range(len(files)))
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []

    def worker(number: int) -> None:
        client = Client(info["url"], verbose=False, analytics_enabled=False,
                        download_files=str(work / f"downloads-{number}"))
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            start = time.perf_counter()
            try:
                answer = client.predict(handle_file(str(files[index])), 0.5, api_name="/predict")
                images = _image_paths(answer)
                if not images:
                    raise AssertionError(f"no output image in the answer: {str(answer)[:200]}")
                for path in images:
                    with Image.open(path) as image:
                        image.load()
                with lock:
                    latencies.append(time.perf_counter() - start)
            except Exception as err:  # every failure is counted, whatever it is
                with lock:
                    failures.append(f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    names = {f.name for f in files}
    left = sorted({p.name for p in info["uploads"].rglob("*") if p.name in names})
    return {
        "requests": len(files), "clients": clients, "failed": len(failures), "wall_s": round(wall, 2),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "max_s": round(max(latencies), 3) if latencies else None,
        "uploads_left": left, "errors": sorted(set(failures))[:5],
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
                               **run_load(info, files, clients, root / f"work-{clients}-{mode}")}
                        info["log"].flush()
                        log = Path(info["root"] / "server.log").read_text(errors="replace")
                        alarms = sum(log.count(alarm) for alarm in LOG_ALARMS)
                        row["log_alarms"], alarms_before = alarms - alarms_before, alarms
                        print(json.dumps(row), flush=True)
                        rows.append(row)

    print("\n| Space | files | clients | requests | failed | p50 (s) | max (s) | uploads left | log alarms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['space']} | {row['mode']} | {row['clients']} | {row['requests']} | {row['failed']} | "
              f"{row['p50_s']} | {row['max_s']} | {len(row['uploads_left'])} | {row['log_alarms']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
