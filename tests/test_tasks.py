"""The task layer: which task a config has, and what each task computes, reports and rejects."""

import json
import math
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
    with pytest.raises(ValueError, match="no hfmed task handles problem_type 'ordinal_regression'"):
        task_for(SimpleNamespace(problem_type="ordinal_regression", num_labels=3))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_metric_names_are_the_keys_the_metrics_return(name):
    # `evaluation.metric` is checked against metric_names before training: they must be what is computed.
    task = TASKS[name]
    label_names = ["a", "b", "c"] if name.endswith("_classification") else ["a"]
    rng = np.random.default_rng(0)
    labels = (rng.random((40, len(label_names))) > 0.5).astype(np.float32)
    labels[:2] = [0.0], [1.0]
    scores = rng.random((40, len(label_names))).astype(np.float32)
    if name == "regression":
        labels = rng.normal(60, 10, (40, 1)).astype(np.float32)
    if name == "single_label_classification":
        labels = rng.integers(0, len(label_names), 40)
    if name == "semantic_segmentation":  # (N, C, H, W) per-pixel scores, (N, H, W) class maps
        label_names = ["background", "polyp", "tool"]
        scores = rng.random((4, 3, 8, 8)).astype(np.float32)
        labels = rng.integers(0, 3, (4, 8, 8))
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


# --- single-label classification (softmax over classes, class-index labels) ----------------------------------


def single_label_config(num_labels=3):
    from hfmed import movl_config

    return movl_config("movl-tiny", id2label={i: f"class{i}" for i in range(num_labels)})


def test_a_single_label_config_gets_the_softmax_task():
    config = single_label_config()
    assert config.problem_type == "single_label_classification"
    assert task_for(config).name == "single_label_classification"
    assert task_for(single_label_config().__class__(**{**config.to_dict(), "problem_type": None})).name == (
        "single_label_classification"
    )


def test_single_label_scores_are_a_softmax_over_classes():
    logits = torch.tensor([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]])
    scores = get_task("single_label_classification").scores(logits)
    expected = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    torch.testing.assert_close(scores, expected / expected.sum(dim=1, keepdim=True))
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(2))
    rows = get_task("single_label_classification").predictions(torch.tensor([0.0, math.log(3.0)]), ["x", "y"])
    assert rows == [{"label": "x", "score": pytest.approx(0.25)}, {"label": "y", "score": pytest.approx(0.75)}]


def test_single_label_metrics_equal_sklearn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score, roc_auc_score

    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, 120)
    logits = rng.normal(size=(120, 4)) + 1.5 * np.eye(4)[labels]
    scores = get_task("single_label_classification").scores(torch.tensor(logits)).numpy()
    names = ["adipose", "debris", "lymphocytes", "mucus"]
    metrics = get_task("single_label_classification").metrics(None, scores, labels, names)
    predicted = scores.argmax(axis=1)
    assert 0.4 < metrics["accuracy"] < 0.95  # neither trivial nor perfect: the comparison means something
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert metrics["macro_auroc"] == pytest.approx(roc_auc_score(labels, scores, multi_class="ovr", average="macro"))
    recalls = recall_score(labels, predicted, average=None)
    for c, name in enumerate(names):
        assert metrics[f"recall_{name}"] == pytest.approx(recalls[c])
        assert metrics[f"auroc_{name}"] == pytest.approx(roc_auc_score(labels == c, scores[:, c]))


def test_single_label_trainer_compute_metrics_applies_the_softmax_and_refuses_thresholds():
    from sklearn.metrics import roc_auc_score

    task = get_task("single_label_classification")
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [0.5, 0.0, 1.0], [3.0, 0.0, 2.0], [-1.0, 1.0, 0.0]])
    labels = np.array([0, 1, 2, 2, 1])
    result = task.compute_metrics(["a", "b", "c"])(EvalPrediction(predictions=(logits,), label_ids=labels))
    assert result["accuracy"] == pytest.approx(4 / 5)
    assert result["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert result["macro_auroc"] == pytest.approx(roc_auc_score(labels, probabilities, multi_class="ovr"))
    from hfmed.metrics import make_compute_metrics

    same = make_compute_metrics(["a", "b", "c"], task="single_label_classification")
    assert same(EvalPrediction(predictions=logits, label_ids=labels[:, None])) == result
    with pytest.raises(ValueError, match="takes neither"):
        task.compute_metrics(["a", "b", "c"], thresholds=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="at least two classes"):
        task.compute_metrics(["a"])
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        task.compute_metrics(["a", "b", "c"])(EvalPrediction(predictions=logits[:, :2], label_ids=labels))
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        task.compute_metrics(["a", "b", "c"])(EvalPrediction(predictions=logits, label_ids=labels + 1))


def test_single_label_finish_records_and_draws_the_confusion_matrix(tmp_path):
    scores = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, 1, 2, 2])
    extra = get_task("single_label_classification").finish(
        scores, labels, ["a", "b", "c"], Recipe().evaluation, tmp_path / "model", tmp_path / "plots"
    )
    # Rows are the true classes: one "b" was called "a"; everything else is right.
    assert extra == {"confusion_matrix": {"labels": ["a", "b", "c"], "counts": [[1, 0, 0], [1, 1, 0], [0, 0, 2]]}}
    assert (tmp_path / "plots" / "confusion_matrix.png").stat().st_size > 1000
    assert not (tmp_path / "model").exists()  # no thresholds to write into the config

    report = {"best": {"metrics": {"accuracy": 0.8, "balanced_accuracy": 0.8333, "macro_auroc": 0.9}}, **extra}
    task = get_task("single_label_classification")
    assert task.report_lines(report) == [
        f"{'accuracy':<18} 0.8000", f"{'balanced_accuracy':<18} 0.8333", f"{'macro_auroc':<18} 0.9000",
        f"{'a':<18} recall 1.00 (1 images)", f"{'b':<18} recall 0.50 (2 images)", f"{'c':<18} recall 1.00 (2 images)",
    ]
    assert task.headline(report) == ("accuracy", 0.8)
    table = task.card_results_extra(report)
    assert "| b | 1 | 1 | 0 |" in table and "| true \\ predicted | a | b | c |" in table


def test_single_label_rejects_options_of_sigmoid_tasks():
    recipe = Recipe()
    recipe.training.pos_weight = "auto"
    with pytest.raises(RecipeError, match="remove training.pos_weight"):
        get_task("single_label_classification").check_recipe(recipe)
    recipe.training.pos_weight = None
    recipe.data.balanced_sampler = True
    get_task("single_label_classification").check_recipe(recipe)  # evens out classes: allowed
    recipe.evaluation.threshold_method = "sensitivity"
    with pytest.raises(RecipeError, match="predicts the most probable class: remove them"):
        get_task("single_label_classification").check_recipe(recipe)
    recipe.evaluation.threshold_method = "youden"
    recipe.evaluation.greater_is_better = False
    with pytest.raises(RecipeError, match="would keep the worst epoch"):
        get_task("single_label_classification").check_recipe(recipe)


def test_single_label_card_metrics_are_computed_and_the_label_sentence_says_softmax():
    task = get_task("single_label_classification")
    names = task.metric_names(single_label_config(), ["a", "b"])
    assert [key for key, *_ in task.card_metrics] == ["accuracy", "balanced_accuracy", "macro_auroc"]
    assert {key for key, *_ in task.card_metrics} | set(task.progress_keys) <= set(names)
    assert "summing to 1" in task.labels_text(["a", "b"])


# --- semantic segmentation ---------------------------------------------------------------------------------


def test_a_segmentation_config_gets_the_segmentation_task():
    from hfmed import diamant_config

    assert task_for(diamant_config("diamant-tiny")).name == "semantic_segmentation"
    assert task_for(diamant_config("diamant-tiny", use_attention_encoder=False)).name == "semantic_segmentation"


def test_segmentation_scores_are_a_softmax_over_the_class_axis():
    logits = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    scores = get_task("semantic_segmentation").scores(logits)
    torch.testing.assert_close(scores, torch.exp(logits) / torch.exp(logits).sum(dim=1, keepdim=True))
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(2, 4, 5))


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("training", "pos_weight", "auto", "remove training.pos_weight"),
        ("data", "balanced_sampler", True, "set data.balanced_sampler to false"),
        ("evaluation", "greater_is_better", False, "set it to true"),
        ("evaluation", "threshold_method", "sensitivity", "remove evaluation.threshold_method"),
        ("evaluation", "target_sensitivity", 0.95, "remove evaluation.target_sensitivity"),
    ],
)
def test_segmentation_rejects_options_that_do_not_apply(section, key, value, message):
    task = get_task("semantic_segmentation")
    recipe = Recipe()
    task.check_recipe(recipe)  # the defaults are fine
    setattr(getattr(recipe, section), key, value)
    with pytest.raises(RecipeError, match=message):
        task.check_recipe(recipe)


def test_segmentation_metrics_ignore_pixels_with_the_configs_ignore_index():
    task = get_task("semantic_segmentation")
    labels = np.array([[[0, 1], [1, 7]]])
    scores = np.zeros((1, 2, 2, 2), dtype=np.float32)
    scores[0, 1] = [[0.0, 1.0], [0.0, 1.0]]  # predicted: [[0, 1], [0, 1]]
    # Pixel (1, 1) is ignored under index 7: polyp Dice = 2 * 1 / (1 + 2).
    config = SimpleNamespace(semantic_loss_ignore_index=7)
    metrics = task.metrics(config, scores, labels, ["background", "polyp"])
    assert metrics["dice_polyp"] == pytest.approx(2 / 3) and metrics["mean_dice"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="outside the classes 0..1"):
        task.metrics(SimpleNamespace(), scores, labels, ["background", "polyp"])  # 7 is a class value under 255


def test_segmentation_report_lines_and_headline():
    report = {"best": {"metrics": {"mean_dice": 0.81, "dice_background": 0.97, "dice_polyp": 0.81,
                                   "mean_iou": 0.8, "iou_background": 0.95, "iou_polyp": 0.65}}}
    task = get_task("semantic_segmentation")
    assert task.report_lines(report) == [f"{'mean_dice':<18} 0.8100", f"{'mean_iou':<18} 0.8000",
                                         f"{'dice_background':<18} 0.9700", f"{'dice_polyp':<18} 0.8100"]
    assert task.headline(report) == ("foreground mean Dice", 0.81)


def test_segmentation_pipeline_rows_print_the_share_of_the_image_per_class():
    from PIL import Image

    mask = np.zeros((4, 5), dtype=np.uint8)
    mask[:2, :2] = 255
    rows = [{"score": None, "label": "polyp", "mask": Image.fromarray(mask)}]
    assert get_task("semantic_segmentation").prediction_lines(rows) == [f"{'polyp':<18} 20.0% of the image"]


def test_segmentation_finish_draws_the_kept_validation_inputs(tmp_path):
    task = get_task("semantic_segmentation")
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(6, 3, 16, 16)).astype(np.float32)
    scores = rng.random((6, 2, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 2, (6, 16, 16))
    assert task.finish_inputs(SimpleNamespace(), inputs, scores, labels, ["background", "polyp"], tmp_path) == {}
    from PIL import Image

    with Image.open(tmp_path / "overlays.png") as image:
        # keep_inputs rows of (reference, prediction): taller than wide.
        assert image.size[1] > image.size[0]


def test_segmentation_trainer_metrics_take_the_argmax_and_skip_trainers_padding():
    compute = get_task("semantic_segmentation").compute_metrics(["background", "polyp"])
    logits = np.zeros((1, 2, 2, 3), dtype=np.float32)
    logits[0, 1, 0, :] = 5.0  # row 0 predicted polyp
    labels = np.array([[[1, 1, 0], [0, 0, -100]]])
    result = compute(EvalPrediction(predictions=logits, label_ids=labels))
    # polyp: predicted 3 pixels, labelled 2, overlap 2 -> 4 / 5; background: 2 predicted (1 padded), 3 labelled.
    assert result["dice_polyp"] == pytest.approx(0.8) and result["mean_dice"] == pytest.approx(0.8)
    assert result["iou_background"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="takes neither"):
        get_task("semantic_segmentation").compute_metrics(["background", "polyp"], thresholds=0.5)


def test_the_segmentation_card_usage_is_a_template_that_formats():
    text = get_task("semantic_segmentation").card_usage.format(
        repo_id="org/seg", example="polyp.png", dataset='"seg_folder", root="data"',
        auto_class="AutoModelForSemanticSegmentation",
    )
    assert 'segment("polyp.png", "org/seg")' in text and 'task="semantic_segmentation"' in text
    assert '{"hflip": 0.5}' in text and "{" not in text.replace("{\"hflip\": 0.5}", "")


def test_a_single_label_card_reports_its_metrics_confusion_matrix_and_softmax_usage():
    from hfmed import MoVLImageProcessor
    from hfmed.cards import build_model_card

    config = single_label_config(2)
    metrics = {"best": {"epoch": 2, "step": 8, "metrics": {"accuracy": 0.75, "balanced_accuracy": 0.5,
                                                           "macro_auroc": 0.875}},
               "confusion_matrix": {"labels": ["class0", "class1"], "counts": [[3, 1], [0, 4]]}}
    card = build_model_card(config, MoVLImageProcessor(size={"height": 32, "width": 32}), "org/m", metrics,
                            {"data": {"builder": "medmnist"}})
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        ("accuracy", 0.75), ("balanced_accuracy", 0.5), ("roc_auc", 0.875)
    ]
    assert "multi-class-classification" in card.data.tags
    text = str(card)
    assert "| class0 | 3 | 1 |" in text and "summing to 1" in text
    assert "logits.softmax(-1)" in text and 'task="single_label_classification"' in text
    assert "sigmoid" not in text


def test_confusion_counts_equal_sklearn_and_reject_foreign_classes():
    from sklearn.metrics import confusion_matrix

    from hfmed.plots import confusion_counts

    rng = np.random.default_rng(3)
    labels, predicted = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    np.testing.assert_array_equal(confusion_counts(predicted, labels, 5), confusion_matrix(labels, predicted, labels=range(5)))
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 4\)"):
        confusion_counts(predicted % 4, labels, 4)
