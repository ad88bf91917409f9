"""Kill -9 during training (issue 10, fault suite), for every registered family.

A real `python -m hfmed.train` process on the family's tiny recipe is SIGKILLed twice: inside a backward
pass in the middle of epoch 2, then (resumed with `--resume latest`) while checkpoint 2 * steps + 2 is being
written, in the middle of epoch 3. `--resume latest` then skips the torn checkpoint with one printed line and
ends with weights, metrics history and thresholds bit-identical to an uninterrupted run. After each kill,
what the finished epochs wrote is intact (complete checkpoints, their history, the best model, the recipe).
The kill points are deterministic: `stop_point.py` parks the process there and the test sends the signal.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hfmed.checkpoint import (
    atomic_path,
    checkpoint_name,
    list_checkpoints,
    recover_folder,
    replace_folder,
    resolve_resume,
    staging_folder,
    torn_checkpoints,
    write_checkpoint,
)
from hfmed.data import build_dataset
from hfmed.recipe import RecipeError, load_recipe
from hfmed.train import _json_safe, main, train
from tests.reliability.tiny_runs import TRAINED_FAMILIES, write_tiny_recipe

STOP_POINT = Path(__file__).with_name("stop_point.py")
WAIT_S = 300  # for the process to reach its stop point: a bound against hangs, not a speed target


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("twins")


@contextlib.contextmanager
def one_thread():
    # The killed runs are single-threaded processes (OMP_NUM_THREADS=1); the in-process runs match them, so
    # that no reduction is split differently between the runs compared bit for bit.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def steps_per_epoch(recipe) -> int:
    examples = len(build_dataset(recipe.data.builder, **recipe.data.args)["train"])
    return examples // recipe.training.batch_size  # the loop drops the last partial batch


def kill_at(recipe_path: Path, point: str, count: int, *extra: str) -> None:
    """Starts `python -m hfmed.train recipe_path *extra`, waits until it is parked at `point`, SIGKILLs it."""
    folder = recipe_path.parent
    marker, log = folder / f"parked-{point}-{count}", folder / f"log-{point}-{count}.txt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, str(STOP_POINT), str(marker), point, str(count), str(recipe_path), *extra]
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT_S
        while not marker.exists():
            assert process.poll() is None, f"the run ended before {point} {count}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{point} {count} not reached in {WAIT_S} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def steps(folders) -> list[int]:
    return [int(p.name.split("_")[1].split(".")[0]) for p in folders]


def history_of(checkpoint: Path) -> list:
    return _json_safe(json.loads((checkpoint / "trainer_state.json").read_text())["history"])


def assert_finished_epochs_intact(out: Path, reference_history: list, epochs_done: int) -> None:
    from hfmed.registry import load_model  # the family's own head Auto class (classification, segmentation)

    newest = list_checkpoints(out)[-1]
    # the newest complete checkpoint holds the finished epochs' metrics, exactly as the uninterrupted run
    assert history_of(newest) == reference_history[: len(history_of(newest))]
    assert len(history_of(newest)) >= epochs_done - 1
    for checkpoint in list_checkpoints(out):
        assert {"model.safetensors", "optimizer.bin", "trainer_state.json"} <= {p.name for p in checkpoint.iterdir()}
    # the best model so far is a whole, loadable folder; the recipe is there
    load_model(out / "model")
    assert load_recipe(out / "recipe.yaml", check_paths=False).training.output_dir == str(out)


@pytest.mark.parametrize("family", TRAINED_FAMILIES)
def test_sigkill_mid_epoch_and_mid_checkpoint_then_resume_is_bit_identical(family, tmp_path, data_root, capsys):
    recipe_path = write_tiny_recipe(family, tmp_path / "killed", data_root)
    recipe = load_recipe(recipe_path)
    out = Path(recipe.training.output_dir)
    per_epoch = steps_per_epoch(recipe)
    assert per_epoch >= 3, "the tiny recipe needs >= 3 steps per epoch to kill mid-epoch"
    with one_thread():
        reference = train(load_recipe(write_tiny_recipe(family, tmp_path / "reference", data_root)))
    reference_report = json.loads((reference / "metrics.json").read_text())
    assert len(reference_report["history"]) == 3

    # 1. SIGKILL inside the backward pass of step per_epoch + 2: the middle of epoch 2.
    kill_at(recipe_path, "backward", per_epoch + 2)
    assert not (out / "metrics.json").exists()
    last = (per_epoch + 1) // 2 * 2  # checkpoints every 2 steps
    assert steps(list_checkpoints(out)) == [last - 2, last] and torn_checkpoints(out) == []
    assert_finished_epochs_intact(out, reference_report["history"], epochs_done=1)

    # 2. Resumed, SIGKILLed while checkpoint 2 * per_epoch + 2 (the middle of epoch 3) is being written.
    torn_step = 2 * per_epoch + 2
    kill_at(recipe_path, "checkpoint", torn_step, "--resume", "latest")
    assert steps(torn_checkpoints(out)) == [torn_step]
    assert steps(list_checkpoints(out)) == [torn_step - 4, torn_step - 2]
    assert_finished_epochs_intact(out, reference_report["history"], epochs_done=2)

    # 3. --resume latest skips the torn checkpoint, saying so in one line, and finishes the run.
    capsys.readouterr()
    with one_thread():
        assert main([str(recipe_path), "--resume", "latest"]) == 0
    printed = capsys.readouterr().out.splitlines()
    notes = [line for line in printed if checkpoint_name(torn_step) in line]
    assert len(notes) == 1, printed
    assert "incomplete" in notes[0] and checkpoint_name(torn_step - 2) in notes[0]
    assert any(line.startswith(f"resumed from {out / 'checkpoints' / checkpoint_name(torn_step - 2)}") for line in printed)
    assert torn_checkpoints(out) == []

    a, b = load_file(str(reference / "model" / "model.safetensors")), load_file(str(out / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    report = json.loads((out / "metrics.json").read_text())
    assert report["history"] == reference_report["history"] and report["best"] == reference_report["best"]
    assert report.get("thresholds") == reference_report.get("thresholds")
    config, reference_config = (json.loads((run / "model" / "config.json").read_text()) for run in (out, reference))
    assert config.get("label_thresholds") == reference_config.get("label_thresholds")
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(p.name for p in (reference / "plots").iterdir())


# --- the write protocol, step by step (in-process, milliseconds) ------------------------------------------


def fake_save_state(folder):
    Path(folder).mkdir(parents=True)
    (Path(folder) / "model.safetensors").write_bytes(b"weights")


def write(out, step, keep=2):
    return write_checkpoint(out, step, fake_save_state, lambda f: (f / "trainer_state.json").write_text("{}"), keep=keep)


def test_a_torn_checkpoint_is_skipped_with_one_line_and_cleaned_at_the_next_write(tmp_path):
    for step in (2, 4):
        write(tmp_path, step)
    fake_save_state(tmp_path / "checkpoints" / "step_000006.partial")  # killed before the rename
    fake_save_state(tmp_path / "checkpoints" / "step_000008")  # an older hfmed, killed mid-write (no state)
    lines = []
    assert resolve_resume("latest", tmp_path, log=lines.append) == tmp_path / "checkpoints" / "step_000004"
    assert len(lines) == 1 and "step_000008 is incomplete" in lines[0] and "step_000004" in lines[0]
    with pytest.raises(RecipeError, match="not a complete checkpoint"):
        resolve_resume(tmp_path / "checkpoints" / "step_000006.partial", tmp_path)
    write(tmp_path, 6)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000004", "step_000006"]


def test_no_complete_checkpoint_is_a_clear_error(tmp_path):
    fake_save_state(tmp_path / "checkpoints" / "step_000002.partial")
    with pytest.raises(RecipeError, match=r"no complete checkpoint .*step_000002.partial was torn"):
        resolve_resume("latest", tmp_path)


def test_without_a_limit_every_checkpoint_is_kept(tmp_path):
    # Before the fix `checkpoints_total_limit: null` deleted every checkpoint, the new one included.
    for step in (1, 2, 3):
        write(tmp_path, step, keep=None)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000001", "step_000002", "step_000003"]


class Killed(BaseException):
    pass


@pytest.mark.parametrize("cut_after_renames", [0, 1])
def test_a_model_swap_cut_short_by_a_kill_is_recovered(tmp_path, monkeypatch, cut_after_renames):
    final = tmp_path / "model"
    final.mkdir()
    (final / "config.json").write_text("old")
    staged = staging_folder(final)
    staged.mkdir()
    (staged / "config.json").write_text("new")
    real_replace, calls = os.replace, []

    def replace(a, b):
        if len(calls) == cut_after_renames:
            raise Killed  # stands for the kill: nothing after it runs
        calls.append((a, b))
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        replace_folder(staged, final)
    monkeypatch.setattr(os, "replace", real_replace)
    recover_folder(final)
    # cut before or between the two renames: the old model is whole and nothing else is left
    assert (final / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(OSError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise OSError("disk full")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
