"""The synthetic_shift twin (source shapes, stained-cell target, scanner-shifted OOD split) and the source
backbone pretrained on it once, cached."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hfmed import MoVLForImageClassification, movl_config
from hfmed.data import build_dataset, builder_spec, source_backbone
from hfmed.data.synthetic_shift import (
    SOURCE_CLASSES,
    TARGET_CLASSES,
    ensure_synthetic_shift,
    synthetic_source_image,
    synthetic_target_image,
    write_synthetic_shift,
)
from hfmed.recipe import RecipeError, load_recipe
from hfmed.train import build_model

TINY = {"image_size": 24, "num_source": 20, "num_train": 8, "num_validation": 4, "num_test": 4, "num_ood": 6}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return write_synthetic_shift(tmp_path_factory.mktemp("shift") / "twin", **TINY, seed=3)


def read_rows(folder):
    with open(folder / "index.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_layout_balance_and_determinism(twin, tmp_path):
    rows = read_rows(twin)
    counts = {}
    for row in rows:
        path = twin / row["path"]
        assert path.is_file()
        label = int(row["label"])
        classes = SOURCE_CLASSES if row["split"] == "source" else TARGET_CLASSES
        assert path.parent.name == classes[label]  # one sub-folder per class
        counts.setdefault(row["split"], []).append(label)
    expected = {"source": 20, "train": 8, "validation": 4, "test": 4, "test_ood": 6}
    assert {split: len(labels) for split, labels in counts.items()} == expected
    for split, labels in counts.items():
        per_class = np.bincount(labels)
        assert per_class.max() - per_class.min() <= 1, split  # balanced within one
    assert np.asarray(Image.open(twin / rows[0]["path"])).shape == (24, 24, 3)
    again = write_synthetic_shift(tmp_path / "again", **TINY, seed=3)
    assert (again / "index.csv").read_text() == (twin / "index.csv").read_text()
    for row in rows[::7]:
        assert np.array_equal(np.asarray(Image.open(again / row["path"])), np.asarray(Image.open(twin / row["path"])))
    other = write_synthetic_shift(tmp_path / "other", **TINY, seed=4)
    assert not np.array_equal(np.asarray(Image.open(other / rows[0]["path"])), np.asarray(Image.open(twin / rows[0]["path"])))


def optical_density(image):
    return -np.log(np.clip(image.astype(np.float64) / 255.0, 1 / 255, 1.0)).sum(axis=-1)


def test_the_scanner_shift_changes_colour_not_the_cell():
    a = synthetic_target_image("lobed_nucleus", 48, np.random.default_rng(5))
    b = synthetic_target_image("lobed_nucleus", 48, np.random.default_rng(5), ood="stain")
    # the same morphology: the stained (dense) pixels are nearly the same set under both scanners
    dense_a, dense_b = optical_density(a) > 1.2, optical_density(b) > 1.2
    assert dense_a.sum() > 20
    assert (dense_a & dense_b).sum() / (dense_a | dense_b).sum() > 0.8
    # another colour: the mean colour of the dense pixels moves
    assert np.abs(a[dense_a].mean(0) - b[dense_b].mean(0)).max() > 20
    # paler and noisier under the full scanner shift
    c = synthetic_target_image("lobed_nucleus", 48, np.random.default_rng(5), ood="scanner")
    def contrast(image):  # nucleus against the rest, at the same places (the same cell)
        od = optical_density(image)
        return np.median(od[dense_a]) - np.median(od[~dense_a])

    assert contrast(c) < 0.75 * contrast(a)
    assert np.abs(np.diff(c.astype(float), axis=1)).mean() > np.abs(np.diff(a.astype(float), axis=1)).mean()


def test_classes_are_drawn_differently():
    images = [synthetic_target_image(name, 32, np.random.default_rng(1)) for name in TARGET_CLASSES]
    shapes = [synthetic_source_image(name, 32, np.random.default_rng(1)) for name in SOURCE_CLASSES]
    for group in (images, shapes):
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                assert not np.array_equal(group[i], group[j])
    with pytest.raises(ValueError, match="unknown target class 'x'"):
        synthetic_target_image("x", 32, np.random.default_rng(0))
    with pytest.raises(ValueError, match="ood must be one of"):
        synthetic_target_image("granular", 32, np.random.default_rng(0), ood="blue")
    with pytest.raises(ValueError, match="image_size must be an int >= 16"):
        synthetic_source_image("disk", 8, np.random.default_rng(0))


def test_builder_splits_columns_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "cache"))
    data = build_dataset("synthetic_shift", **TINY)
    assert list(data) == ["train", "validation", "test", "test_ood"]
    assert data["train"].features["labels"].dtype == "int64"
    assert data["train"].features["labels"].names == ["round_nucleus", "lobed_nucleus", "spindle_nucleus", "granular"]
    assert data["test_ood"].features["labels"] == data["train"].features["labels"]  # the same classes
    assert sorted(set(data["test_ood"]["labels"])) == [0, 1, 2, 3]
    assert all(Path(p).is_file() and "/target/test_ood/" in p for p in data["test_ood"]["path"])
    folder = ensure_synthetic_shift(**TINY)
    assert folder.parent == tmp_path / "cache" / "synthetic_shift"
    stamp = (folder / "index.csv").stat().st_mtime_ns
    source = build_dataset("synthetic_shift", **TINY, splits=["source"])["source"]
    assert (folder / "index.csv").stat().st_mtime_ns == stamp  # found again, not rewritten
    assert len(source) == 20 and max(source["labels"]) == len(SOURCE_CLASSES) - 1
    with pytest.raises(ValueError, match="splits must be a non-empty list"):
        build_dataset("synthetic_shift", **TINY, splits=["ood"])


def test_source_backbone_is_pretrained_once_and_loads_into_the_model(tmp_path, monkeypatch):
    monkeypatch.setitem(source_backbone.PRETRAINING, "epochs", 1)
    config = movl_config("movl-tiny", image_size=24, prompt_size=3, num_labels=4)
    weights = builder_spec("synthetic_shift").source_backbone(config, root=tmp_path / "twin", **TINY)
    assert weights.name == "backbone.safetensors" and weights.parent.parent == tmp_path / "twin" / "backbones"
    report = (weights.parent / "pretraining.json").read_text()
    assert '"held_out_accuracy"' in report and '"epochs": 1' in report
    state = load_file(weights)
    assert not any(key.startswith("fc.") for key in state)
    model = MoVLForImageClassification.from_pretrained_backbones(config, backbone_weights=weights)
    for name, tensor in model.movl.backbone.model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    # cached: a second call trains nothing
    monkeypatch.setattr(source_backbone, "pretrain", lambda *a, **k: pytest.fail("pretrained twice"))
    assert builder_spec("synthetic_shift").source_backbone(config, root=tmp_path / "twin", **TINY) == weights
    clip = movl_config("movl-clip-tiny", num_labels=4)
    with pytest.raises(ValueError, match="pretrains timm CNNs only"):
        builder_spec("synthetic_shift").source_backbone(clip, root=tmp_path / "twin", **TINY)


def test_recipe_backbone_weights_from_the_data_source(tmp_path, monkeypatch):
    monkeypatch.setitem(source_backbone.PRETRAINING, "epochs", 1)
    recipe = load_recipe(REPO / "configs" / "movl-demo.yaml", [
        f"data.args.root={tmp_path / 'twin'}", *(f"data.args.{k}={v}" for k, v in TINY.items()),
        "model.config.image_size=24", "model.config.prompt_size=3",
    ])  # fmt: skip
    torch.manual_seed(0)
    model, processor = build_model(recipe)
    state = load_file(next((tmp_path / "twin" / "backbones").glob("*/backbone.safetensors")))
    assert all(torch.equal(t, state[n]) for n, t in model.movl.backbone.model.state_dict().items())
    assert processor.size == {"height": 24, "width": 24}
    # pretraining does not move the caller's RNG: a rebuild (cached weights) draws the same head
    torch.manual_seed(0)
    again, _ = build_model(recipe)
    assert torch.equal(again.classifier.weight, model.classifier.weight)
    with pytest.raises(RecipeError, match="model.pretrained_backbones is false"):
        load_recipe(REPO / "configs" / "movl-demo.yaml", ["model.pretrained_backbones=false"])
    with pytest.raises(RecipeError, match="has no source set to pretrain on"):
        load_recipe(REPO / "configs" / "movl-demo.yaml", ["data.builder=synthetic_cxr", "data.args={}"])
