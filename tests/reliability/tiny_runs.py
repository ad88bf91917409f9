"""Tiny training recipes for every registered family, written as YAML files for real `hfmed train` runs.

Each family's recipe is its demo recipe from configs/ (the one whose `model.family` is the family) with the
`TINY` overrides below: the tiny preset's sizes, a dozen examples, and a data root under the test's tmp
folder. A family added to `hfmed.registry.FAMILIES` joins the fault suite by adding one `TINY` entry once it
has a demo recipe (`TRAINED_FAMILIES`: those whose `Family.pending` does not list "demo recipe"; the
completeness test in tests/test_families.py keeps that list honest); a family with a demo recipe and no `TINY`
entry fails with a message saying so.
"""

import copy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def trained_families() -> list[str]:
    """The registered families that have a demo recipe to shrink (not pending)."""
    from hfmed.registry import FAMILIES

    return sorted(name for name, family in FAMILIES.items() if "demo recipe" not in family.pending)


TRAINED_FAMILIES = trained_families()

# Per family: dotted key -> value, set on the demo recipe. `{data}` in a string is the data root.
TINY = {
    "scopeformer": {
        "model.preset": "scopeformer-tiny",
        "model.config": {"image_size": 32, "feature_grid_size": 4, "hidden_size": 32, "intermediate_size": 64,
                         "num_attention_heads": 2, "projection_dim": 16, "freeze_backbones": False,
                         "hidden_dropout_prob": 0.1},
        "data.args": {"root": "{data}/ct", "num_patients": 6, "slices_per_patient": 2, "image_size": 32,
                      "seed": 0, "val_fraction": 0.34},
        "data.augment": {"hflip": 0.5},
    },
    "lt_vit": {
        "model.preset": "lt-vit-tiny",
        "model.config.image_size": 32,
        "model.config.hidden_size": 32,
        "model.config.intermediate_size": 64,
        "model.config.num_hidden_layers": 2,
        "model.config.num_attention_heads": 2,
        "model.config.num_label_blocks": 1,
        "data.args": {"root": "{data}/cxr", "num_patients": 8, "images_per_patient": 2, "image_size": 32,
                      "seed": 0, "val_fraction": 0.25},
    },
    "slice_cnn": {
        "model.config.volume_shape": [24, 28, 24],
        "model.config.encoder_channels": [4, 8, 8],
        "model.config.encoder1_feature_size": 16,
        "processor": {"target_spacing": [8.0, 8.0, 8.0], "target_shape": [24, 28, 24]},
        "data.args": {"root": "{data}/brain", "num_subjects": 12, "shape": [24, 28, 24], "spacing": 8.0,
                      "orientation": "LPS", "target": "age", "seed": 0, "val_fraction": 0.25},
    },
    "diamant": {
        "model.preset": "diamant-tiny",
        "model.config": {"image_size": 32, "pretrained_dino": None},
        "data.args": {"root": "{data}/lesion", "num_images": 16, "image_size": 32, "seed": 0,
                      "layout": "kvasir_seg", "val_fraction": 0.25},
    },
    "movl": {
        "model.config.lp_warmup_epochs": 1,
        "data.args": {"root": "{data}/shift", "image_size": 32, "num_source": 10, "num_train": 12,
                      "num_validation": 4, "num_test": 4, "num_ood": 4, "seed": 0},
    },
}

# The same for every family: 3 epochs of at least 3 steps, a checkpoint every 2 steps, 2 kept.
TRAINING = {
    "epochs": 3,
    "batch_size": 2,
    "eval_batch_size": 16,
    "save_every_steps": 2,
    "checkpoints_total_limit": 2,
    "log_every_steps": 1,
    "seed": 0,
}


def demo_recipe(family: str) -> Path:
    """The demo recipe of `family` in configs/ (exactly one *-demo.yaml names it)."""
    found = [
        path for path in sorted((ROOT / "configs").glob("*demo*.yaml"))
        if (yaml.safe_load(path.read_text()).get("model") or {}).get("family") == family
    ]
    assert len(found) == 1, f"family {family!r}: expected one configs/*demo*.yaml for it, found {found}"
    return found[0]


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _fill(value, data_root: Path):
    if isinstance(value, str):
        return value.replace("{data}", str(data_root))
    if isinstance(value, dict):
        return {k: _fill(v, data_root) for k, v in value.items()}
    return value


def write_tiny_recipe(family: str, folder: Path, data_root: Path, **training) -> Path:
    """Writes `folder/recipe.yaml`: the family's demo recipe, shrunk; output_dir `folder/run`."""
    if family not in TINY:
        raise AssertionError(
            f"family {family!r} has no tiny recipe for the fault suite: give it a demo recipe in configs/ "
            f"(CONTRIBUTING, step 5) and a TINY entry in tests/reliability/tiny_runs.py"
        )
    recipe = copy.deepcopy(yaml.safe_load(demo_recipe(family).read_text()))
    for dotted, value in TINY[family].items():  # a dict value replaces the whole section
        _set(recipe, dotted, _fill(value, data_root))
    recipe.setdefault("data", {})["num_workers"] = 0
    for key, value in {**TRAINING, "output_dir": str(folder / "run"), **training}.items():
        _set(recipe, f"training.{key}", value)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
