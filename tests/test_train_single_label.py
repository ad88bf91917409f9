"""The Accelerate loop (`hfmed train`) on a single-label MoVL recipe written here: MedMNIST-layout data, softmax
metrics chosen by the task, a confusion matrix, a model whose pipeline answers with softmax probabilities."""

import json

import numpy as np
import pytest
import torch
import yaml

from hfmed.recipe import RecipeError, load_recipe
from hfmed.train import check_recipe, main, train
from tests.test_trainer import write_learnable_pneumoniamnist


def write_recipe(tmp_path, **training):
    write_learnable_pneumoniamnist(tmp_path / "pneumoniamnist.npz")
    recipe = {
        "model": {"family": "movl", "preset": "movl-tiny",
                  "config": {"strategy": "movl", "lp_warmup_epochs": 1, "id2label": {0: "normal", 1: "pneumonia"}}},
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
