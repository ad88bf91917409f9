"""A read-only, misnamed or full output folder stops `hfmed train` with one line before training starts
(issue 10, fault suite), for every registered family.

How each fault is made, as root and without mounting anything (CI may not allow it):
- a path through a regular file: `training.output_dir` under a file, so creating it fails for real;
- a read-only folder: the probe write in `check_output_dir` fails with EROFS, as on a read-only mount
  (`chmod a-w` does not stop root, and `os.access` ignores permission bits for root; it does report EROFS,
  but the probe write is the check that also sees quotas and ACLs, so that is the one we make fail);
- a full disk: `shutil.disk_usage` reports 1 KB free.
"""

import errno
from pathlib import Path

import pytest

import hfmed.checkpoint
import hfmed.train
from hfmed.recipe import load_recipe
from hfmed.train import build_model, main
from tests.reliability.tiny_runs import TRAINED_FAMILIES, write_tiny_recipe


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("twins")


@pytest.fixture(autouse=True)
def no_training_step(monkeypatch):
    def backward(*args, **kwargs):
        raise AssertionError("a training step ran before the output folder was checked")

    monkeypatch.setattr(hfmed.train.StepCalls, "backward", backward)  # the loop's one backward call


def run_cli(recipe: Path, capsys) -> str:
    capsys.readouterr()
    assert main([str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: training.output_dir "), err
    return err


@pytest.mark.parametrize("family", TRAINED_FAMILIES)
def test_an_output_path_through_a_file_is_one_line_before_training(family, tmp_path, data_root, capsys):
    (tmp_path / "blocker").write_text("a file, not a folder")
    recipe = write_tiny_recipe(family, tmp_path, data_root, output_dir=str(tmp_path / "blocker" / "run"))
    err = run_cli(recipe, capsys)
    assert "a part of its path is a file" in err and "training.output_dir=" in err


@pytest.mark.parametrize("family", TRAINED_FAMILIES)
def test_a_read_only_output_folder_is_one_line_before_training(family, tmp_path, data_root, capsys, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(hfmed.checkpoint.tempfile, "mkstemp", read_only)
    recipe = write_tiny_recipe(family, tmp_path, data_root)
    err = run_cli(recipe, capsys)
    assert "is not writable (read-only file system)" in err
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "model").exists()


@pytest.mark.parametrize("family", TRAINED_FAMILIES)
def test_a_full_disk_is_one_line_before_training(family, tmp_path, data_root, capsys, monkeypatch):
    recipe_path = write_tiny_recipe(family, tmp_path, data_root)
    real_disk_usage = hfmed.checkpoint.shutil.disk_usage
    monkeypatch.setattr(
        hfmed.checkpoint.shutil, "disk_usage", lambda path: real_disk_usage(path)._replace(free=1024)
    )
    err = run_cli(recipe_path, capsys)
    assert "has 1.0 KB free but this run needs about" in err and "checkpoints_total_limit" in err
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "model").exists()

    # The estimate: the kept checkpoints plus the one being written (weights and Adam's two moments per
    # trainable parameter), and the best model twice (old and new during the swap).
    monkeypatch.setattr(hfmed.checkpoint.shutil, "disk_usage", real_disk_usage)
    recipe = load_recipe(recipe_path)
    model, _ = build_model(recipe)
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    moments = 2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    needed = hfmed.checkpoint.check_free_space(tmp_path, model, recipe.training.checkpoints_total_limit)
    assert needed == (weights + moments) * (recipe.training.checkpoints_total_limit + 1) + 2 * weights
    assert needed >= 3 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
