"""Benchmarks: `pytest benchmarks` (or `make bench`). Offline, like the tests."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collect_file(file_path, parent):
    # Benchmark files are named bench_*.py, which pytest's default python_files would skip.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
