"""The Accelerate loop (`hfmed train`) on a single-label MoVL recipe written here: MedMNIST-layout data, softmax
metrics chosen by the task, a confusion matrix, a model whose pipeline answers with softmax probabilities."""

import json

import numpy as np
import pytest
import torch
import yaml

from hfmed.recipe import RecipeError, load_recipe
from hfmed.train import check_recipe, main, prepare, recipe_with_data_classes, train
from tests.test_trainer import write_learnable_pneumoniamnist


def write_recipe(tmp_path, classes=None, **training):
    """The recipe; `classes` replaces `model.config.id2label` (`{}`: the recipe names no classes)."""
    write_learnable_pneumoniamnist(tmp_path / "pneumoniamnist.npz")
    config = {"strategy": "movl", "lp_warmup_epochs": 1, "id2label": {0: "normal", 1: "pneumonia"}}
    if classes is not None:
        config.pop("id2label")
        config.update(classes)
    recipe = {
        "model": {"family": "movl", "preset": "movl-tiny", "config": config},
        "data": {"builder": "medmnist", "balanced_sampler": True,
                 "args": {"npz_path": str(tmp_path / "pneumoniamnist.npz"), "cache_dir": str(tmp_path / "png")}},
        "training": {"output_dir": str(tmp_path / "run"), "epochs": 2, "batch_size": 8, "eval_batch_size": 16,
                     "learning_rate": 1.0e-2, "log_every_steps": 1, **training},
        "evaluation": {"metric": "balanced_accuracy"},
    }  # fmt: skip
    path = tmp_path / "movl-tiny-pneumonia.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_single_label_run_writes_softmax_metrics_a_confusion_matrix_and_a_softmax_model(tmp_path, capsys):
    from hfmed.pipelines import classify

    assert main([str(write_recipe(tmp_path))]) == 0
    run = tmp_path / "run"
    assert f"run folder: {run}" in capsys.readouterr().out
    report = json.loads((run / "metrics.json").read_text())
    assert report["task"] == "single_label_classification"
    best = report["best"]["metrics"]
    assert {"accuracy", "balanced_accuracy", "macro_auroc", "recall_normal", "auroc_pneumonia"} <= set(best)
    assert report["best"]["score"] == best["balanced_accuracy"]
    matrix = report["confusion_matrix"]
    assert matrix["labels"] == ["normal", "pneumonia"]
    counts = np.asarray(matrix["counts"])
    assert counts.sum() == 16 and counts.sum(axis=1).tolist() == [8, 8]  # every validation image once
    assert best["accuracy"] == pytest.approx(np.trace(counts) / 16)
    assert (run / "plots" / "confusion_matrix.png").is_file() and not (run / "plots" / "roc.png").exists()
    assert json.loads((run / "model" / "config.json").read_text()).get("label_thresholds") is None  # no thresholds

    rows = classify(str(tmp_path / "png" / "test" / "000001.png"), str(run / "model"))
    assert sorted(row["label"] for row in rows) == ["normal", "pneumonia"]
    assert sum(row["score"] for row in rows) == pytest.approx(1.0, abs=1e-5)  # softmax, not per-class sigmoids

    # the best model on MedMNIST's test split, counted here independently of the loop
    assert list(report["splits"]) == ["test"]
    test = sorted((tmp_path / "png" / "test").glob("*.png"))
    predicted = [max(classify(str(path), str(run / "model")), key=lambda row: row["score"])["label"] for path in test]
    truth = ["normal", "pneumonia"] * 4  # write_learnable_pneumoniamnist: label = index % 2
    assert len(test) == 8
    assert report["splits"]["test"]["accuracy"] == pytest.approx(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
    assert {"balanced_accuracy", "macro_auroc"} <= set(report["splits"]["test"])


def test_options_of_other_tasks_stop_the_run_before_any_data_is_read(tmp_path):
    path = write_recipe(tmp_path)
    with pytest.raises(RecipeError, match="remove training.pos_weight"):
        check_recipe(load_recipe(path, ["training.pos_weight=auto"]))
    with pytest.raises(RecipeError, match="evaluation.metric 'mean_auroc' is not computed; choose one of .*macro_auroc"):
        check_recipe(load_recipe(path, ["evaluation.metric=mean_auroc"]))
    assert not (tmp_path / "png").exists() and not (tmp_path / "run").exists()


def test_single_label_batches_reach_the_model_as_int64_class_indices(tmp_path):
    seen = []

    class Spy:
        def on_before_optimizer_step(self, state, model, batch, accelerator):
            seen.append(batch["labels"])

    train(load_recipe(write_recipe(tmp_path, epochs=1)), callbacks=[Spy()])
    assert seen and all(labels.dtype == torch.int64 and labels.ndim == 1 for labels in seen)


def test_a_recipe_without_classes_takes_the_data_class_names(tmp_path):
    path = write_recipe(tmp_path, classes={}, epochs=1, max_steps=1)
    # a metric named after a class waits for the data's names instead of failing on the preset's
    recipe = load_recipe(path, ["evaluation.metric=recall_pneumonia"])
    check_recipe(recipe)
    with pytest.raises(RecipeError, match="evaluation.metric 'recall_covid' is not computed; choose one of .*'recall_normal'"):
        prepare(load_recipe(path, ["evaluation.metric=recall_covid"]))  # once the data has named its classes
    with pytest.raises(RecipeError, match="evaluation.metric 'mae' is not computed"):
        check_recipe(load_recipe(path, ["evaluation.metric=mae"]))  # no class's metric: before any data is read
    run = tmp_path / "run"
    train(recipe)
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "normal", "1": "pneumonia"} and config["label2id"] == {"normal": 0, "pneumonia": 1}
    assert "id2label" not in yaml.safe_load((run / "recipe.yaml").read_text())["model"]["config"]  # as given
    assert json.loads((run / "metrics.json").read_text())["best"]["score"] is not None


def single_label_data(names):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"path": Value("string"), "labels": ClassLabel(names=names)})
    rows = {"path": ["a.png", "b.png"], "labels": [0, 1]}
    return DatasetDict({"train": Dataset.from_dict(rows, features=features)})


def test_recipe_classes_must_match_the_data(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path))
    data = single_label_data(["normal", "pneumonia"])
    assert recipe_with_data_classes(recipe, data) is recipe  # agreeing: unchanged
    with pytest.raises(RecipeError, match=r"^model.config.id2label has 2 classes \['normal', 'pneumonia'\] but the "
                       r"data \('medmnist'\) has 2 \['pneumonia', 'normal'\]: remove model.config.id2label"):
        recipe_with_data_classes(recipe, single_label_data(["pneumonia", "normal"]))  # the same names, other order
    with pytest.raises(RecipeError, match=r"has 2 classes .* but the data \('medmnist'\) has 3 "):
        recipe_with_data_classes(recipe, single_label_data(["normal", "pneumonia", "covid"]))
    counted = load_recipe(write_recipe(tmp_path, classes={"num_labels": 3}))
    with pytest.raises(RecipeError, match="model.config.num_labels is 3 but the data .* has 2 classes"):
        recipe_with_data_classes(counted, data)
    taken = recipe_with_data_classes(load_recipe(write_recipe(tmp_path, classes={"num_labels": 2})), data)
    assert taken.model.config["id2label"] == {0: "normal", 1: "pneumonia"} and "num_labels" not in taken.model.config
    # multi-label or regression data (no ClassLabel) leaves the recipe alone
    from datasets import Dataset, DatasetDict

    assert recipe_with_data_classes(counted, DatasetDict({"train": Dataset.from_dict({"labels": [[0.0, 1.0]]})})) is counted


def test_a_class_mismatch_stops_the_run_before_any_model_is_built(tmp_path):
    path = write_recipe(tmp_path, classes={"id2label": {0: "healthy", 1: "pneumonia"}})
    with pytest.raises(RecipeError, match=r"\['healthy', 'pneumonia'\] but the data \('medmnist'\) has 2 \['normal'"):
        prepare(load_recipe(path))
    assert not (tmp_path / "run" / "model").exists() and not (tmp_path / "run" / "recipe.yaml").exists()
    assert main([str(path)]) == 2


def test_extra_splits_are_those_besides_train_and_validation_over_the_same_classes():
    from datasets import DatasetDict

    from hfmed.train import extra_splits

    same, other = single_label_data(["a", "b"])["train"], single_label_data(["x", "y"])["train"]
    data = DatasetDict({"train": same, "validation": same, "test": same, "source": other, "test_ood": same})
    assert extra_splits(data) == ["test", "test_ood"]  # a pretraining set over other classes is not scored
    assert extra_splits(DatasetDict({"train": same, "validation": same})) == [] and extra_splits(None) == []
