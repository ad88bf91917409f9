"""A segmentation run end to end: an image + mask folder, `hfmed train` on a recipe, metrics.json with Dice /
IoU, the overlay plot, the model card and `hfmed demo`'s report lines, all through the task layer."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from hfmed.cards import build_model_card_for_run
from hfmed.tasks import task_for
from hfmed.train import main as train_main


def write_folder(root, count=16, size=32, seed=0):
    """Bright discs on dark noise (0/255 masks), in a generic image + mask folder layout."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for index in range(count):
        cy, cx, radius = rng.integers(10, size - 10), rng.integers(10, size - 10), rng.integers(5, 9)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        image = rng.integers(0, 60, (size, size, 3)) + 150 * mask[..., None]
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "images" / f"case{index:02d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"case{index:02d}.png")


def write_recipe(path, data_root, output_dir, **training):
    recipe = {
        "model": {"family": "diamant", "preset": "diamant-tiny"},
        "processor": {"mask_binarize_threshold": 128},
        "data": {
            "builder": "seg_folder",
            "args": {"root": str(data_root), "layout": "generic", "image_dir": "images", "mask_dir": "masks",
                     "val_fraction": 0.25, "seed": 0},
            "augment": {"hflip": 0.5, "rotate_degrees": 10},
        },
        "training": {"output_dir": str(output_dir), "epochs": 3, "batch_size": 4, "eval_batch_size": 8,
                     "learning_rate": 5e-3, "optimizer": "adam", "weight_decay": 1e-4, "warmup_ratio": 0.0,
                     "log_every_steps": 1, **training},
        "evaluation": {"metric": "mean_dice"},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("segmentation")
    write_folder(root / "data")
    recipe = write_recipe(root / "recipe.yaml", root / "data", root / "run")
    assert train_main([str(recipe)]) == 0
    return root / "run"


def test_a_segmentation_run_writes_dice_and_iou_and_the_overlays(run_dir):
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["task"] == "semantic_segmentation"
    best = report["best"]["metrics"]
    assert {"mean_dice", "dice_background", "dice_foreground", "mean_iou", "iou_background", "iou_foreground"} <= set(best)
    assert best["mean_dice"] == best["dice_foreground"] and 0.0 <= best["mean_dice"] <= 1.0
    assert report["best"]["score"] == best["mean_dice"]
    assert len(report["history"]) == 3
    assert (run_dir / "plots" / "overlays.png").is_file() and (run_dir / "plots" / "loss.png").is_file()


def test_the_run_reports_through_the_task_layer(run_dir):
    from transformers import AutoConfig

    report = json.loads((run_dir / "metrics.json").read_text())
    task = task_for(AutoConfig.from_pretrained(run_dir / "model"))
    name, value = task.headline(report)
    assert name == "foreground mean Dice" and value == report["best"]["metrics"]["mean_dice"]
    lines = task.report_lines(report)
    assert lines[0].startswith("mean_dice") and any(line.startswith("dice_foreground") for line in lines)
    card = str(build_model_card_for_run(run_dir, "org/diamant-test"))
    assert "semantic segmentation" in card and "foreground mean Dice" in card and "image-segmentation" in card


def test_the_trained_model_segments_through_the_pipeline(run_dir, tmp_path):
    from hfmed.pipelines import segment

    image = tmp_path / "large.png"
    write_folder(tmp_path / "one", count=1, size=64, seed=5)
    rows = segment(str(tmp_path / "one" / "images" / "case00.png"), str(run_dir / "model"))
    assert rows and all(row["mask"].size == (64, 64) for row in rows)
    assert not image.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [("training.pos_weight=auto", "remove training.pos_weight"), ("evaluation.metric=mean_auroc", "mean_dice")],
)
def test_a_segmentation_recipe_with_options_that_do_not_apply_stops_before_training(tmp_path, capsys, override,
                                                                                        message):
    write_folder(tmp_path / "data", count=4)
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "data", tmp_path / "run")
    assert train_main([str(recipe), override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("pipeline_task", ["image-segmentation", "medical-image-segmentation"])
def test_hfmed_demo_prints_the_table_row_and_the_example_prediction(run_dir, tmp_path, capsys, pipeline_task):
    import dataclasses

    from hfmed.cli import _print_example_prediction, demo_row
    from hfmed.registry import FAMILIES

    write_folder(tmp_path / "one", count=1, size=48, seed=7)
    example = str(tmp_path / "one" / "images" / "case00.png")
    family = dataclasses.replace(FAMILIES["diamant"], demo_input=lambda: example, pipeline_task=pipeline_task)
    row = demo_row(run_dir, family, tmp_path / "staged")
    report = json.loads((run_dir / "metrics.json").read_text())
    assert (row["task"], row["metric"], row["value"]) == (
        "semantic_segmentation", "foreground mean Dice", report["best"]["metrics"]["mean_dice"]
    )
    _print_example_prediction(run_dir / "model", family)
    lines = capsys.readouterr().out.splitlines()
    shares = [float(line.split()[1].rstrip("%")) for line in lines[1:]]
    assert lines[0].startswith("trained model on case00.png") and lines[1].split()[0] in {"background", "foreground"}
    assert sum(shares) == pytest.approx(100.0, abs=0.2)  # every pixel in one class's mask


def test_a_resumed_run_re_evaluates_the_saved_model_with_its_kept_inputs(run_dir):
    # After a resume past the best epoch the loop re-evaluates model/ (`_evaluate_saved`): the overlays then
    # need the same kept inputs as in an uninterrupted run.
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import AutoConfig, AutoImageProcessor

    from hfmed.data import build_dataset
    from hfmed.data.transforms import collate, make_transform
    from hfmed.tasks import get_task
    from hfmed.train import _evaluate_saved

    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    data = build_dataset(recipe["data"]["builder"], **recipe["data"]["args"])
    processor = AutoImageProcessor.from_pretrained(run_dir / "model")
    loader = DataLoader(data["validation"].with_transform(make_transform(processor)), batch_size=3, collate_fn=collate)
    task = get_task("semantic_segmentation")
    scores, labels, inputs = _evaluate_saved(run_dir / "model", loader, Accelerator(cpu=True), task)
    assert inputs.shape == (task.keep_inputs, 3, 32, 32) and labels.shape == (len(data["validation"]), 32, 32)
    first = collate([data["validation"].with_transform(make_transform(processor))[i] for i in range(task.keep_inputs)])
    np.testing.assert_array_equal(inputs, first["pixel_values"].numpy())
    best = json.loads((run_dir / "metrics.json").read_text())["best"]["metrics"]
    config = AutoConfig.from_pretrained(run_dir / "model")
    assert task.metrics(config, scores, labels, ["background", "foreground"])["mean_dice"] == pytest.approx(
        best["mean_dice"]
    )
    # the run's policy prepares every batch of that evaluation too (DIAMANT's cached attention maps)
    from hfmed.policy import TrainingPolicy

    class Counting(TrainingPolicy):
        calls = 0

        def prepare_batch(self, model, batch):
            self.calls += 1
            return batch

    policy = Counting()
    again, _, _ = _evaluate_saved(run_dir / "model", loader, Accelerator(cpu=True), task, policy)
    assert policy.calls == len(loader)
    np.testing.assert_array_equal(again, scores)
