"""`hfmed experiment`: the family's declared variants of one recipe, trained on the same data, one table."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hfmed import MoVLForImageClassification, movl_config
from hfmed.data import source_backbone
from hfmed.experiment import format_table, main, parameter_counts, run_experiment, variant_recipes
from hfmed.recipe import RecipeError, load_recipe
from hfmed.registry import FAMILIES

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "movl-demo.yaml"
STRATEGIES = ["lp", "vp", "lp_then_vp", "joint", "movl", "full_finetune"]


def test_variants_are_the_recipe_with_the_family_overrides(tmp_path):
    folder, recipes = variant_recipes(DEMO, ["training.epochs=2"], out=tmp_path / "exp")
    assert folder == tmp_path / "exp" and list(recipes) == STRATEGIES
    for name, recipe in recipes.items():
        assert recipe.model.config["strategy"] == name
        assert recipe.training.epochs == 2 and recipe.training.output_dir == str(tmp_path / "exp" / name)
        assert recipe.data.args == load_recipe(DEMO).data.args  # the same data for every variant
    assert recipes["movl"].training.module_learning_rates == {"movl.prompter": 1e-2}
    assert recipes["lp"].training.module_learning_rates == {}
    assert recipes["full_finetune"].training.module_learning_rates == {"movl.backbone": 1e-4}
    default, chosen = variant_recipes(DEMO, variants=["full_finetune", "lp"])
    assert list(chosen) == ["lp", "full_finetune"] and default == Path("runs/movl-demo-experiment")
    with pytest.raises(RecipeError, match=r"unknown experiment variant\(s\) \['adapter'\]"):
        variant_recipes(DEMO, variants=["adapter"])
    with pytest.raises(RecipeError, match="declares no experiment variants"):
        variant_recipes(REPO / "configs" / "lt-vit-demo.yaml")
    assert main([str(REPO / "configs" / "lt-vit-demo.yaml")]) == 2
    from hfmed.cli import main as cli_main

    assert cli_main(["experiment", str(DEMO), "--variants", "adapter"]) == 2  # `hfmed experiment` reaches it


def test_trainable_parameters_are_what_the_optimizer_holds():
    recipe = load_recipe(DEMO, check_paths=False)
    counts = {}
    for strategy in STRATEGIES:
        model = MoVLForImageClassification(movl_config("movl-tiny", strategy=strategy, num_labels=4))
        counts[strategy] = parameter_counts(model, recipe)
    head = 96 * 4 + 4  # test_resnet's 96-d pooled feature -> 4 classes
    prompt = 2 * 3 * 4 * 32 + 2 * 3 * (32 - 8) * 4
    backbone = counts["lp"][1] - head
    assert counts["lp"] == (head, backbone + head)
    assert counts["vp"] == (prompt, backbone + head + prompt)
    # staged strategies: every stage's parameters (probe, then prompt)
    assert counts["lp_then_vp"][0] == counts["joint"][0] == counts["movl"][0] == prompt + head
    assert counts["full_finetune"] == (backbone + head, backbone + head)


def test_table():
    rows = [
        {"variant": "lp", "trainable_parameters": 388, "total_parameters": 100_000, "train_time_s": 12.25,
         "metrics": {"validation": {"accuracy": 0.5}, "test": {"accuracy": 0.625}, "test_ood": {"accuracy": 0.25}}},
        {"variant": "movl", "trainable_parameters": 2_000, "total_parameters": 101_612, "train_time_s": None,
         "metrics": {"validation": {"accuracy": 0.75}, "test": {"accuracy": 1.0}}},
    ]  # fmt: skip
    assert format_table(rows, "accuracy") == [
        "| variant | validation accuracy | test accuracy | test_ood accuracy | trainable | of total | train time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        "| `lp` | 0.5000 | 0.6250 | 0.2500 | 388 | 0.39 % | 12.2 |",
        "| `movl` | 0.7500 | 1.0000 | - | 2,000 | 1.97 % | - |",
    ]


def test_a_tiny_experiment_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setitem(source_backbone.PRETRAINING, "epochs", 1)
    overrides = [
        f"data.args.root={tmp_path / 'twin'}", "data.args.num_source=10", "data.args.num_train=8",
        "data.args.num_validation=4", "data.args.num_test=4", "data.args.num_ood=6", "training.epochs=2",
        "training.batch_size=4", "model.config.lp_warmup_epochs=1", "training.log_every_steps=1",
    ]  # fmt: skip
    folder = run_experiment(DEMO, overrides, ["lp", "movl"], out=tmp_path / "exp")
    summary = json.loads((folder / "experiment.json").read_text())
    assert [row["variant"] for row in summary["variants"]] == ["lp", "movl"]
    movl = summary["variants"][1]
    assert set(movl["metrics"]) == {"validation", "test", "test_ood"}
    assert movl["trainable_parameters"] == 2 * 3 * 4 * 32 + 2 * 3 * 24 * 4 + 96 * 4 + 4
    # the OOD accuracy is the saved model's on the OOD images, counted here independently
    from transformers import AutoImageProcessor

    model = MoVLForImageClassification.from_pretrained(folder / "movl" / "model").eval()
    processor = AutoImageProcessor.from_pretrained(folder / "movl" / "model")
    index = [line.split(",") for line in (tmp_path / "twin" / "index.csv").read_text().splitlines()[1:]]
    ood = [(tmp_path / "twin" / path, int(label)) for path, label, split in index if split == "test_ood"]
    with torch.no_grad():
        images = [Image.open(path).convert("RGB") for path, _ in ood]
        predicted = model(**processor(images, return_tensors="pt")).logits.argmax(-1).numpy()
    expected = float(np.mean(predicted == np.array([label for _, label in ood])))
    assert movl["metrics"]["test_ood"]["accuracy"] == pytest.approx(expected)
    table = (folder / "experiment.md").read_text()
    assert table.startswith("# movl-demo: variants\n")
    assert re.search(r"\| `movl` \| [0-9.]+ \| [0-9.]+ \| " + f"{expected:.4f}", table)
    # a second call reuses the finished runs (same resolved recipes)
    stamp = (folder / "lp" / "metrics.json").stat().st_mtime_ns
    run_experiment(DEMO, overrides, ["lp"], out=tmp_path / "exp")
    assert (folder / "lp" / "metrics.json").stat().st_mtime_ns == stamp


def test_every_family_variant_is_a_valid_recipe():
    for family in FAMILIES.values():
        if family.experiments:
            for overrides in family.experiments.values():
                load_recipe(family.demo_recipe_path, list(overrides), check_paths=False)
