from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hfmed.recipe import RecipeError, load_recipe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PUBLISHED = ["scopeformer-base", "scopeformer-efficient", "scopeformer-efficient-small"]
LT_VIT = ["lt-vit-small-nih14", "lt-vit-small-chexpert", "lt-vit-base-nih14", "lt-vit-demo"]


@pytest.mark.parametrize("name", sorted(path.stem for path in CONFIGS.glob("*.yaml")))
def test_shipped_recipes_parse_and_name_a_hub_repo(name):
    recipe = load_recipe(CONFIGS / f"{name}.yaml", check_paths=False)
    assert recipe.name == name
    assert recipe.hub.repo_id and "/" in recipe.hub.repo_id
    assert recipe.evaluation.metric


def test_published_presets_match_their_recipes():
    for name in PUBLISHED:
        assert load_recipe(CONFIGS / f"{name}.yaml", check_paths=False).model.preset == name
    for name in LT_VIT[:3]:
        recipe = load_recipe(CONFIGS / f"{name}.yaml", check_paths=False)
        assert recipe.model.family == "lt_vit" and recipe.model.preset == name.rsplit("-", 1)[0]


@pytest.mark.parametrize("name", ["lt-vit-small-chexpert", "lt-vit-demo"])
def test_lt_vit_recipes_build_their_label_sets(name):
    from hfmed.train import build_model, parameter_groups

    recipe = load_recipe(CONFIGS / f"{name}.yaml", ["model.pretrained_backbones=false"], check_paths=False)
    with torch.device("meta"):
        model, _ = build_model(recipe)
    assert model.config.num_labels == 5
    parameter_groups(model, recipe)  # every per-module learning-rate prefix names real parameters


def write(tmp_path, data) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, {"training": {"lerning_rate": 0.1}})
    with pytest.raises(RecipeError, match=r"r\.yaml: unknown key 'training\.lerning_rate'"):
        load_recipe(path)


def test_wrong_type_is_reported(tmp_path):
    with pytest.raises(RecipeError, match=r"'training\.epochs' must be int, got str '3x'"):
        load_recipe(write(tmp_path, {"training": {"epochs": "3x"}}))
    with pytest.raises(RecipeError, match="'data' must be a mapping"):
        load_recipe(write(tmp_path, {"data": [1, 2]}))


def test_missing_data_path_is_reported_with_the_fix(tmp_path):
    path = write(tmp_path, {"data": {"builder": "rsna_ich", "args": {"root": str(tmp_path / "nowhere")}}})
    with pytest.raises(RecipeError, match=r"data\.args\.root = .*nowhere does not exist.*data\.args\.root="):
        load_recipe(path)
    with pytest.raises(RecipeError, match=r"data\.args\.root is required"):
        load_recipe(write(tmp_path, {"data": {"builder": "rsna_ich"}}))


def test_overrides_are_typed_and_checked(tmp_path):
    path = write(tmp_path, {})
    recipe = load_recipe(path, ["training.epochs=3", "training.learning_rate=1e-4", "model.config.hidden_size=64"])
    assert recipe.training.epochs == 3
    assert recipe.training.learning_rate == pytest.approx(1e-4)
    assert recipe.model.config == {"hidden_size": 64}
    with pytest.raises(RecipeError, match="section.key=value"):
        load_recipe(path, ["training.epochs"])
    with pytest.raises(RecipeError, match="unknown key 'training.epoch'"):
        load_recipe(path, ["training.epoch=3"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model": {"family": "unet"}}, "model.family 'unet' is unknown"),
        ({"model": {"preset": "scopeformer-huge"}}, "model.preset 'scopeformer-huge' is unknown"),
        ({"training": {"mixed_precision": "fp8"}}, "mixed_precision must be one of"),
        ({"training": {"batch_size": 0}}, "batch_size must be >= 1"),
        ({"evaluation": {"threshold_method": "f1"}}, "threshold_method must be one of"),
        ({"training": {"pos_weight": "balanced"}}, "pos_weight must be null, 'auto' or a list"),
    ],
)
def test_bad_values_are_reported(tmp_path, data, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, data))


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [("training.optimizer=sgd", "training.optimizer must be one of"), ("training.lr_scheduler=step", "lr_scheduler")],
)
def test_unknown_optimizer_or_schedule_is_a_clear_error(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(CONFIGS / "scopeformer-efficient-demo.yaml", [override], check_paths=False)


def test_constant_schedule_keeps_the_learning_rate_after_warmup_and_cosine_decays_it():
    from hfmed.train import cosine_with_warmup

    def rates(decay):
        optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = cosine_with_warmup(optimizer, warmup_steps=2, total_steps=10, decay=decay)
        out = []
        for _ in range(10):
            out.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return out

    assert rates(False) == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    cosine = rates(True)
    assert cosine[:3] == pytest.approx([0.5, 1.0, 1.0]) and cosine[-1] == pytest.approx(0.5 * (1 + np.cos(np.pi * 7 / 8)))


@pytest.mark.parametrize(
    ("name", "task", "parameters"),
    # The paper's brain-age model has exactly the official implementation's 11,203,841 parameters.
    [("slice-cnn-brain-age", "regression", 11_203_841), ("slice-cnn-ad", "classification", 11_203_841)],
)
def test_slice_cnn_recipes_build_the_paper_model_and_its_processor(name, task, parameters):
    from hfmed.train import build_model

    recipe = load_recipe(CONFIGS / f"{name}.yaml", ["model.pretrained_backbones=false"], check_paths=False)
    assert (recipe.training.optimizer, recipe.training.learning_rate, recipe.training.weight_decay) == ("adam", 1e-4, 1e-4)
    assert (recipe.training.batch_size, recipe.training.epochs, recipe.training.lr_scheduler) == (8, 100, "constant")
    with torch.device("meta"):
        model, processor = build_model(recipe)
    assert model.config.task == task and model.config.aggregation == "mean" and model.config.slice_axis == 1
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert list(processor.target_shape) == [91, 109, 91] and list(processor.target_spacing) == [2.0, 2.0, 2.0]


def test_slice_cnn_demo_processor_matches_the_model_volume():
    from hfmed.train import build_model

    recipe = load_recipe(CONFIGS / "slice-cnn-demo.yaml", check_paths=False)
    with torch.device("meta"):
        model, processor = build_model(recipe)
    assert list(processor.target_shape) == list(model.config.volume_shape) == recipe.data.args["shape"]
