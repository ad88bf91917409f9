"""The loop's checkpoint calls: which folder `--resume` means, saving with a total limit, loading the loop
state. (Kills, torn checkpoints and full disks: tests/reliability/.)"""

import json

import pytest

from hfmed.checkpoint import STATE_FILE, list_checkpoints, load_checkpoint, resolve_resume, save_checkpoint
from hfmed.recipe import RecipeError


class FakeAccelerator:
    """What the checkpoint functions use of `accelerate.Accelerator`."""

    is_main_process = True

    def __init__(self):
        self.loaded = None

    def save_state(self, folder):
        from pathlib import Path

        Path(folder).mkdir(parents=True)
        (Path(folder) / "model.safetensors").write_bytes(b"weights")

    def load_state(self, folder):
        self.loaded = folder

    def wait_for_everyone(self):
        pass


def test_checkpoints_are_ordered_by_step_number_not_by_name(tmp_path):
    for step in ("step_000900", "step_1000000", "step_000050"):
        (tmp_path / "checkpoints" / step).mkdir(parents=True)
        (tmp_path / "checkpoints" / step / STATE_FILE).write_text("{}")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000050", "step_000900", "step_1000000"]


def test_resume_latest_needs_a_checkpoint_and_a_folder_needs_a_state_file(tmp_path):
    assert resolve_resume(None, tmp_path) is None
    with pytest.raises(RecipeError, match="--resume latest: no complete checkpoint under"):
        resolve_resume("latest", tmp_path)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(RecipeError, match=f"not a complete checkpoint folder \\(no {STATE_FILE}"):
        resolve_resume(str(tmp_path / "elsewhere"), tmp_path)


def test_save_keeps_the_newest_checkpoints_and_load_returns_the_state(tmp_path):
    accelerator = FakeAccelerator()
    for step in (1, 2, 3):
        save_checkpoint(accelerator, tmp_path, {"step": step, "history": []}, total_limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000002", "step_000003"]
    latest = resolve_resume("latest", tmp_path)
    assert json.loads((latest / STATE_FILE).read_text())["step"] == 3
    assert load_checkpoint(accelerator, latest) == {"step": 3, "history": []}
    assert accelerator.loaded == str(latest)
    save_checkpoint(accelerator, tmp_path, {"step": 4}, total_limit=None)
    assert len(list_checkpoints(tmp_path)) == 3
