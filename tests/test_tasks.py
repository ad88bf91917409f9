"""The task layer: which task a config has, and what each task computes, reports and rejects."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from hfmed import lt_vit_config, scopeformer_config, slice_cnn_config
from hfmed.recipe import Recipe, RecipeError
from hfmed.tasks import TASKS, get_task, task_for


@pytest.mark.parametrize(
    ("config", "task"),
    [
        (lambda: scopeformer_config("scopeformer-tiny"), "multi_label_classification"),
        (lambda: lt_vit_config("lt-vit-tiny"), "multi_label_classification"),
        (lambda: slice_cnn_config("slice-cnn-tiny", task="regression"), "regression"),
        (lambda: slice_cnn_config("slice-cnn-tiny", task="classification"), "binary"),
    ],
)
def test_task_for_reads_problem_type_and_label_count(config, task):
    assert task_for(config()).name == task


def test_an_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="task must be one of"):
        get_task("ordinal")
    with pytest.raises(ValueError, match="no hfmed task handles problem_type 'single_label_classification'"):
        task_for(SimpleNamespace(problem_type="single_label_classification", num_labels=3))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_metric_names_are_the_keys_the_metrics_return(name):
    # `evaluation.metric` is checked against metric_names before training: they must be what is computed.
    task = TASKS[name]
    label_names = ["a", "b", "c"] if name == "multi_label_classification" else ["a"]
    rng = np.random.default_rng(0)
    labels = (rng.random((40, len(label_names))) > 0.5).astype(np.float32)
    labels[:2] = [0.0], [1.0]
    scores = rng.random((40, len(label_names))).astype(np.float32)
    if name == "regression":
        labels = rng.normal(60, 10, (40, 1)).astype(np.float32)
    # Equal label weights give a mean log loss, RSNA-style weights a weighted one: the names follow.
    for weights in (None, [2.0] + [1.0] * (len(label_names) - 1)):
        config = SimpleNamespace(loss_label_weights=weights)
        computed = task.metrics(config, scores, labels, label_names)
        assert sorted(computed) == sorted(task.metric_names(config, label_names))


def test_scores_are_sigmoid_for_classifiers_and_raw_for_regression():
    logits = torch.tensor([[-2.0, 0.0, 3.0]])
    torch.testing.assert_close(get_task("multi_label_classification").scores(logits), torch.sigmoid(logits))
    torch.testing.assert_close(get_task("regression").scores(logits), logits)


def test_pipeline_predictions_and_printed_lines():
    logits = torch.tensor([0.0, 2.0])
    rows = get_task("multi_label_classification").predictions(logits, ["x", "y"])
    assert rows == [{"label": "x", "score": 0.5}, {"label": "y", "score": pytest.approx(1 / (1 + np.exp(-2)))}]
    assert get_task("regression").predictions(torch.tensor([71.5]), ["age"]) == [{"label": "age", "value": 71.5}]
    assert get_task("regression").prediction_lines([{"label": "age", "value": 71.5}]) == [f"{'age':<18} 71.500"]


def test_cli_report_of_a_regression_run_has_no_thresholds_and_shows_the_errors():
    report = {"best": {"epoch": 3, "metrics": {"mae": 4.25, "rmse": 5.5, "pearson_r": 0.8}}}
    lines = get_task("regression").report_lines(report)
    assert lines == [f"{'mae':<18} 4.2500", f"{'rmse':<18} 5.5000", f"{'pearson_r':<18} 0.8000"]


def test_cli_report_of_a_classifier_lists_its_thresholds():
    report = {
        "best": {"metrics": {"mean_auroc": 0.9, "weighted_log_loss": 0.3}},
        "thresholds": {"operating_points": {"any": {"threshold": 0.25, "sensitivity": 0.8, "specificity": None}}},
    }
    lines = get_task("multi_label_classification").report_lines(report)
    assert lines == [f"{'mean_auroc':<18} 0.9000", f"{'weighted_log_loss':<18} 0.3000",
                     f"{'any':<18} threshold 0.250  n/a"]


def test_classification_finish_writes_thresholds_into_the_config_and_draws_the_roc(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "x"}))
    scores = np.array([[0.1], [0.2], [0.35], [0.8]], dtype=np.float32)
    labels = np.array([[0], [0], [1], [1]], dtype=np.float32)
    extra = get_task("binary").finish(
        scores, labels, ["AD"], Recipe().evaluation, tmp_path / "model", tmp_path / "plots"
    )
    thresholds = json.loads((tmp_path / "model" / "config.json").read_text())["label_thresholds"]
    # Youden's J: 0.35 is the one threshold that separates the classes (J = 1); 0.8 misses a positive.
    assert thresholds == [pytest.approx(0.35)]
    assert extra["thresholds"]["operating_points"]["AD"]["threshold"] == thresholds[0]
    assert (tmp_path / "plots" / "roc.png").is_file()


def test_regression_rejects_classifier_options():
    recipe = Recipe()
    recipe.training.pos_weight = "auto"
    with pytest.raises(RecipeError, match="pos_weight applies to classification"):
        get_task("regression").check_recipe(recipe)
    get_task("multi_label_classification").check_recipe(recipe)  # fine for a classifier


def test_trainer_compute_metrics_come_from_the_task():
    compute = get_task("regression").compute_metrics(["age"])
    result = compute(EvalPrediction(predictions=np.array([[60.0], [70.0]]), label_ids=np.array([[62.0], [67.0]])))
    assert result["mae"] == pytest.approx(2.5)
