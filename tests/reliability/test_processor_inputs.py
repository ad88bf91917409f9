"""Hostile files into every registered family's image processor (issue 10, fault suite).

Each input of `hostile_files.CASES` (empty, truncated, wrong kind under the expected extension, NIfTI and
DICOM headers claiming 2000^3 voxels or 65535^2 pixels, PNG decompression bombs, NaN / inf, 4-D NIfTI,
DICOM without pixels or with undecodable ones, MR into a model that reads no MR...) must give a one-line
`ValueError` that names the problem, within `MAX_SECONDS` and `MAX_GROWTH_MB` of peak memory. All cases run
in one worker process (`python -m tests.reliability.hostile_files`), which measures each one: its own
process, so that the peak memory (`VmHWM`, reset per case) is the processor's and nothing else's.

The bounds are guards against a hang or an allocation of the claimed size (gigabytes), not speed targets:
every case takes milliseconds and a few MB.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hfmed.registry import FAMILIES
from tests.reliability.hostile_files import CASE_NAMES, CASES, tiny_processor

ROOT = Path(__file__).resolve().parents[2]
MAX_SECONDS = 10.0
MAX_GROWTH_MB = 200.0
MR_CASE = "MR DICOM into the model"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "results.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "tests.reliability.hostile_files", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return {(row["family"], row["case"]): row for row in rows}, done


def refuses_mr(processor) -> bool:
    """Whether the processor declares a DICOM Modality list without MR (a CT or X-ray model)."""
    allowed = getattr(processor, "allowed_modalities", None)
    return allowed is not None and "MR" not in allowed


@pytest.mark.parametrize("case", CASES, ids=CASE_NAMES)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_hostile_input_is_a_one_line_error_in_bounded_time_and_memory(results, family, case):
    rows, done = results
    row = rows.get((family, case.name))
    assert row is not None, f"the worker died on this input (exit {done.returncode}):\n{done.stderr[-3000:]}"
    assert row["seconds"] < MAX_SECONDS, f"took {row['seconds']:.1f} s"
    assert row["peak_growth_mb"] < MAX_GROWTH_MB, f"peak memory grew {row['peak_growth_mb']:.0f} MB"
    processor = tiny_processor(FAMILIES[family])
    if case.name == MR_CASE and not refuses_mr(processor) and row["error_type"] is None:
        return  # a model for any modality (or for MR) may take the MR slice
    assert row["is_value_error"], f"{row['error_type']} instead of ValueError: {row['message']!r}"
    message = row["message"]
    assert message.strip() and "\n" not in message, repr(message)
    assert re.search(case.expect, message), f"{message!r} does not match {case.expect!r}"
    if case.name == MR_CASE and refuses_mr(processor):
        # names the modality, and the field that opts out of the check
        assert "Modality 'MR'" in message and "allowed_modalities" in message, message
