"""The task layer: one object per prediction task, owning everything that differs between tasks.

A task decides how a model's logits become scores, which validation metrics a run computes (and which of them
may select the best checkpoint), what happens at the end of a run (decision thresholds, plots), what a model card
says (metrics, tags, label sentence), how the volume pipeline reports a prediction, what `hfmed demo` prints,
and the `compute_metrics` function for `transformers.Trainer`. The training loop, cards, CLI, pipelines and
interpret code ask `task_for(config)` and never branch on the task themselves.

    multi_label_classification   independent sigmoid per label (hemorrhage subtypes, chest findings): AUROC,
                                 log loss, accuracy
    binary                       one sigmoid output (AD vs CN): the above plus balanced accuracy
    single_label_classification  softmax over classes, one class per example (MedMNIST tissue types): accuracy,
                                 balanced accuracy, macro one-vs-rest AUROC, a confusion matrix
    regression                   raw outputs (brain age): MAE, RMSE, Pearson r
    semantic_segmentation        softmax over classes per pixel (polyps, skin lesions): Dice per class and
                                 foreground mean, IoU per class and mean, overlays of validation images

Adding a task (segmentation, say) is one `Task` subclass here, put in `TASKS`, plus its metric module under
`hfmed/metrics/`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .metrics import (
    binary_metrics,
    class_indices,
    classification_metrics,
    one_output,
    regression_metrics,
    segmentation_metrics,
    sigmoid,
    single_label_metrics,
    softmax,
    to_numpy,
)


class Task:
    """The interface every task implements (see the module docstring)."""

    name: str = ""
    """The task's name (`make_compute_metrics(task=...)`)."""
    report_name: str = ""
    """The `task` field of a run's metrics.json, and of the volume pipeline's answer."""
    config_problem_type: str = ""
    """The transformers `problem_type` of the task's models (a card's task type where no Hub pipeline fits)."""
    card_words: str = ""
    """The task in the card's intended-use sentence."""
    card_tag: str = ""
    """The task's Hub tag."""
    card_metrics: tuple = ()
    """(metrics key, Hub metric type, name) of the results a card reports."""
    progress_keys: tuple = ()
    """Metrics printed after each epoch besides the loss and the selection metric."""
    card_usage: str = ""
    """The card's usage section (a template with {repo_id}, {example}, {dataset}, {auto_class}) when the family
    gives none; empty: the image-classification one (`hfmed.cards.USAGE`)."""
    keep_inputs: int = 0
    """How many validation inputs (`pixel_values`, the first in order) the training loop keeps for
    `finish_inputs` (e.g. to draw the predictions on them)."""

    def handles(self, config) -> bool:
        """Whether a model config belongs to this task (by default: its `problem_type` is the task's)."""
        return getattr(config, "problem_type", None) == self.config_problem_type

    def check_recipe(self, recipe) -> None:
        """Reject recipe options that do not apply to this task (a `RecipeError` naming the fix)."""

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Evaluation scores from logits: what the metrics and the end-of-run steps read."""
        raise NotImplementedError

    def metric_names(self, config, label_names: Sequence[str]) -> list[str]:
        """The keys `metrics` returns for a model config: the choices for `evaluation.metric`, checked before
        training."""
        raise NotImplementedError

    def metrics(self, config, scores: np.ndarray, labels: np.ndarray, label_names: Sequence[str]) -> dict:
        """The validation metrics of one evaluation."""
        raise NotImplementedError

    def finish(self, scores, labels, label_names, evaluation, model_dir: Path, plots_dir: Path) -> dict:
        """End-of-run work on the best epoch's validation scores (plots, thresholds); returns the entries it
        adds to metrics.json."""
        return {}

    def finish_inputs(self, config, inputs, scores, labels, label_names, plots_dir: Path) -> dict:
        """End-of-run work on the kept validation inputs (`keep_inputs` of them, with the best epoch's scores and
        labels of those inputs); returns the entries it adds to metrics.json."""
        return {}

    def labels_text(self, labels: Sequence[str]) -> str:
        """The card's sentence about the outputs."""
        raise NotImplementedError

    def card_labels_extra(self, config) -> str:
        """A line after the card's label sentence (e.g. the decision thresholds in the config)."""
        return ""

    def card_results_extra(self, report: dict) -> str:
        """Text after the card's results table, from the run's metrics.json."""
        return ""

    def predictions(self, logits: torch.Tensor, label_names: Sequence[str]) -> list[dict]:
        """One example's logits (1-D) as the volume pipeline's `predictions` entries."""
        raise NotImplementedError

    def prediction_lines(self, rows: list[dict]) -> list[str]:
        """Pipeline answer rows (`predictions`, or the image pipeline's list) as printed lines."""
        return [f"{row['label']:<18} {row['score']:.3f}" for row in rows]

    def report_lines(self, report: dict) -> list[str]:
        """What `hfmed demo` prints about a finished run (its metrics.json)."""
        best = report["best"]
        return [f"{key:<18} {best['metrics'][key]:.4f}" for key, *_ in self.card_metrics if key in best["metrics"]]

    def headline(self, report: dict) -> tuple[str, float]:
        """`(name, value)` of the task's headline validation metric in a run's metrics.json: the first of
        `card_metrics` the best epoch holds (the row of `hfmed demo`'s table)."""
        best = report["best"]["metrics"]
        for key, _, name in self.card_metrics:
            if key in best:
                return name, float(best[key])
        raise ValueError(
            f"metrics.json holds none of the {self.name} headline metrics {[k for k, *_ in self.card_metrics]}; "
            "train the run again (make demo RETRAIN=1)"
        )

    def compute_metrics(self, label_names, label_weights=None, thresholds=None) -> Callable[..., dict]:
        """A `compute_metrics(eval_pred)` for `transformers.Trainer` (logits are the first prediction)."""
        raise NotImplementedError


def _first(values):
    return values[0] if isinstance(values, (tuple, list)) else values


class MultiLabelClassification(Task):
    """Independent sigmoid probabilities per label; per-label decision thresholds chosen on validation."""

    name = "multi_label_classification"
    report_name = "classification"
    config_problem_type = "multi_label_classification"
    card_words = "classification"
    card_tag = "multi-label-classification"
    card_metrics = (
        ("mean_auroc", "roc_auc", "mean AUROC"),
        ("weighted_log_loss", "log_loss", "weighted log loss"),
        ("mean_log_loss", "log_loss", "mean log loss"),
        ("mean_accuracy", "accuracy", "mean per-label accuracy at 0.5"),
        ("balanced_accuracy", "balanced_accuracy", "balanced accuracy at 0.5"),
    )
    progress_keys = ("weighted_log_loss", "mean_log_loss", "mean_accuracy")

    def scores(self, logits):
        return logits.float().sigmoid()

    def metric_names(self, config, label_names):
        names = [str(name) for name in label_names]
        # `classification_metrics` names the log loss for what it computes: weighted only when weights differ.
        log_loss = "weighted_log_loss" if np.ptp(self._label_weights(config, names)) > 0 else "mean_log_loss"
        return [log_loss, "mean_auroc", *(f"auroc_{n}" for n in names), "mean_accuracy",
                *(f"accuracy_{n}" for n in names)]

    def metrics(self, config, scores, labels, label_names):
        weights = self._label_weights(config, label_names)
        return classification_metrics(scores, labels, label_names, label_weights=weights)

    @staticmethod
    def _label_weights(config, label_names) -> list[float]:
        # A family without loss weights gets plain averaging, not the metric's RSNA default ("any" x2).
        return list(getattr(config, "loss_label_weights", None) or [1.0] * len(label_names))

    def finish(self, scores, labels, label_names, evaluation, model_dir, plots_dir):
        from .checkpoint import write_text_atomic
        from .plots import plot_roc
        from .thresholds import choose_thresholds, operating_points

        thresholds = choose_thresholds(
            scores, labels, method=evaluation.threshold_method, target_sensitivity=evaluation.target_sensitivity
        )
        path = Path(model_dir) / "config.json"
        config = json.loads(path.read_text())
        config["label_thresholds"] = [float(t) for t in thresholds]
        write_text_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
        plot_roc(scores, labels, label_names, Path(plots_dir) / "roc.png", thresholds=thresholds)
        return {
            "thresholds": {
                "method": evaluation.threshold_method,
                "operating_points": operating_points(scores, labels, thresholds, label_names),
            }
        }

    def labels_text(self, labels):
        return f"{', '.join(f'`{label}`' for label in labels)} (multi-label: one independent probability each)."

    def card_labels_extra(self, config):
        thresholds = getattr(config, "label_thresholds", None)
        if not thresholds:
            return ""
        return "Per-label decision thresholds (chosen on validation): `" + json.dumps(thresholds) + "`."

    def card_results_extra(self, report):
        points = ((report.get("thresholds") or {}).get("operating_points")) or {}
        if not points:
            return ""
        text = "\n\nDecision thresholds chosen on validation (" + report["thresholds"]["method"] + "):\n\n"
        text += "| label | threshold | sensitivity | specificity |\n| --- | --- | --- | --- |\n"
        for label, p in points.items():
            sens = "n/a" if p.get("sensitivity") is None else f"{p['sensitivity']:.3f}"
            spec = "n/a" if p.get("specificity") is None else f"{p['specificity']:.3f}"
            text += f"| {label} | {p['threshold']:.4f} | {sens} | {spec} |\n"
        return text

    def predictions(self, logits, label_names):
        scores = torch.sigmoid(logits.float()).tolist()
        return [{"label": n, "score": float(p)} for n, p in zip(label_names, scores, strict=True)]

    def report_lines(self, report):
        lines = super().report_lines(report)
        for label, point in ((report.get("thresholds") or {}).get("operating_points") or {}).items():
            sens, spec = point.get("sensitivity"), point.get("specificity")
            shown = "n/a" if sens is None or spec is None else f"sensitivity {sens:.2f}, specificity {spec:.2f}"
            lines.append(f"{label:<18} threshold {point['threshold']:.3f}  {shown}")
        return lines

    def compute_metrics(self, label_names, label_weights=None, thresholds=None):
        label_names = self._check_label_names(label_names)

        def compute_metrics(eval_pred):
            probabilities = sigmoid(to_numpy(_first(eval_pred.predictions)))
            return classification_metrics(
                probabilities, _first(eval_pred.label_ids), label_names, label_weights, thresholds
            )

        return compute_metrics

    def _check_label_names(self, label_names):
        return [str(name) for name in label_names]


class BinaryClassification(MultiLabelClassification):
    """One sigmoid output (e.g. AD = 1 vs CN = 0): the multi-label metrics plus accuracy, balanced accuracy
    and AUROC of the single label. Its card reads as the multi-label one (the config's `problem_type` is
    "multi_label_classification": independent sigmoid outputs)."""

    name = "binary"

    def handles(self, config) -> bool:
        return super().handles(config) and getattr(config, "num_labels", None) == 1

    def metric_names(self, config, label_names):
        return [*super().metric_names(config, label_names), "accuracy", "balanced_accuracy", "auroc"]

    def metrics(self, config, scores, labels, label_names):
        metrics = super().metrics(config, scores, labels, label_names)
        metrics.update(binary_metrics(scores[:, 0], labels[:, 0]))
        return metrics

    def compute_metrics(self, label_names, label_weights=None, thresholds=None):
        label_names = self._check_label_names(label_names)
        threshold = 0.5
        if thresholds is not None:
            values = np.asarray(thresholds, dtype=np.float64).reshape(-1)
            if values.shape[0] != 1:
                raise ValueError(f"task 'binary' takes one threshold, got {thresholds!r}")
            threshold = float(values[0])

        def compute_metrics(eval_pred):
            probabilities = one_output(sigmoid(to_numpy(_first(eval_pred.predictions))), "logits")[:, None]
            label_ids = one_output(_first(eval_pred.label_ids), "labels")[:, None]
            results = classification_metrics(probabilities, label_ids, label_names, label_weights, thresholds)
            results.update(binary_metrics(probabilities, label_ids, threshold))
            return results

        return compute_metrics

    def _check_label_names(self, label_names):
        return _one_label(self.name, label_names)


SINGLE_LABEL_USAGE = '''\
### With hfmed installed

```python
import hfmed  # registers the family with the Auto classes
from hfmed.pipelines import classify

classify("{example}", "{repo_id}")  # every class with its softmax probability, the most probable first
```

### Without hfmed (transformers + timm only)

```python
import torch
from transformers import AutoImageProcessor, {auto_class}

model = {auto_class}.from_pretrained("{repo_id}", trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
inputs = processor("{example}", return_tensors="pt")  # a path, bytes, a pydicom.Dataset or an array
with torch.no_grad():
    probabilities = model(**inputs).logits.softmax(-1)[0]  # one class per image: probabilities sum to 1
print(model.config.id2label[int(probabilities.argmax())], dict(zip(model.config.id2label.values(), probabilities.tolist())))
```

### Fine-tuning with `Trainer`

```python
from transformers import AutoImageProcessor, {auto_class}, Trainer, TrainingArguments
from hfmed.data import build_dataset
from hfmed.data.transforms import collate, make_transform
from hfmed.metrics import make_compute_metrics

model = {auto_class}.from_pretrained("{repo_id}", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
data = build_dataset({dataset})  # `labels`: one class index per image
trainer = Trainer(
    model=model,
    args=TrainingArguments("out", eval_strategy="epoch", remove_unused_columns=False, label_names=["labels"]),
    train_dataset=data["train"].with_transform(make_transform(processor, train=True)),
    eval_dataset=data["validation"].with_transform(make_transform(processor)),
    data_collator=collate,
    processing_class=processor,
    compute_metrics=make_compute_metrics(list(model.config.id2label.values()), task="single_label_classification"),
)
trainer.train()
```
'''


class SingleLabelClassification(Task):
    """One class per example (cross-entropy models): softmax probabilities over the classes, the argmax is the
    prediction. Labels are class indices (int64 (N,)). No decision thresholds: the end of a run draws and
    records the confusion matrix of the best epoch instead."""

    name = "single_label_classification"
    report_name = "single_label_classification"
    config_problem_type = "single_label_classification"
    card_words = "classification"
    card_tag = "multi-class-classification"
    card_metrics = (
        ("accuracy", "accuracy", "accuracy"),
        ("balanced_accuracy", "balanced_accuracy", "balanced accuracy"),
        ("macro_auroc", "roc_auc", "macro AUROC (one-vs-rest)"),
    )
    progress_keys = ("accuracy", "balanced_accuracy", "macro_auroc")
    card_usage = SINGLE_LABEL_USAGE

    def check_recipe(self, recipe) -> None:
        from .recipe import EvaluationSection, RecipeError

        if recipe.training.pos_weight is not None:
            raise RecipeError(
                "training.pos_weight weighs the positives of a per-label sigmoid loss; a single-label classifier "
                "uses cross-entropy over classes: remove training.pos_weight (data.balanced_sampler evens out "
                "classes)"
            )
        default = EvaluationSection()
        evaluation = recipe.evaluation
        if (evaluation.threshold_method, evaluation.target_sensitivity) != (
            default.threshold_method, default.target_sensitivity
        ):
            raise RecipeError(
                "evaluation.threshold_method / target_sensitivity choose per-label sigmoid thresholds; a single-label "
                "classifier predicts the most probable class: remove them"
            )
        if not evaluation.greater_is_better:
            raise RecipeError(
                f"evaluation.greater_is_better: false would keep the worst epoch: every single-label metric "
                f"({evaluation.metric!r} included) is better higher; set it to true"
            )

    def scores(self, logits):
        return logits.float().softmax(dim=-1)

    def metric_names(self, config, label_names):
        names = [str(name) for name in label_names]
        return ["accuracy", "balanced_accuracy", "macro_auroc", *(f"recall_{n}" for n in names),
                *(f"auroc_{n}" for n in names)]

    def metrics(self, config, scores, labels, label_names):
        return single_label_metrics(scores, labels, label_names)

    def finish(self, scores, labels, label_names, evaluation, model_dir, plots_dir):
        from .plots import confusion_counts, plot_confusion_matrix

        names = [str(name) for name in label_names]
        counts = confusion_counts(np.argmax(scores, axis=1), class_indices(labels), len(names))
        plot_confusion_matrix(counts, names, Path(plots_dir) / "confusion_matrix.png")
        return {"confusion_matrix": {"labels": names, "counts": counts.tolist()}}

    def labels_text(self, labels):
        return (
            f"{', '.join(f'`{label}`' for label in labels)} (single-label: one softmax probability per class, "
            "summing to 1; the prediction is the most probable class)."
        )

    def card_results_extra(self, report):
        matrix = report.get("confusion_matrix") or {}
        names, counts = matrix.get("labels"), matrix.get("counts")
        if not names or not counts:
            return ""
        text = "\n\nConfusion matrix of the best epoch on validation (rows: true class, columns: predicted):\n\n"
        text += "| true \\ predicted | " + " | ".join(names) + " |\n"
        text += "| --- |" + " --- |" * len(names) + "\n"
        for name, row in zip(names, counts, strict=True):
            text += f"| {name} | " + " | ".join(str(c) for c in row) + " |\n"
        return text

    def predictions(self, logits, label_names):
        scores = torch.softmax(logits.float(), dim=-1).tolist()
        return [{"label": n, "score": float(p)} for n, p in zip(label_names, scores, strict=True)]

    def report_lines(self, report):
        lines = super().report_lines(report)
        matrix = report.get("confusion_matrix") or {}
        for index, (name, row) in enumerate(zip(matrix.get("labels") or (), matrix.get("counts") or (), strict=False)):
            total = sum(row)
            recall = "n/a" if not total else f"{row[index] / total:.2f}"
            lines.append(f"{name:<18} recall {recall} ({total} images)")
        return lines

    def compute_metrics(self, label_names, label_weights=None, thresholds=None):
        label_names = [str(name) for name in label_names]
        if len(label_names) < 2:
            raise ValueError(
                f"task {self.name!r} needs at least two classes, got label_names {label_names}; a single output "
                "is task 'binary'"
            )
        if label_weights is not None or thresholds is not None:
            raise ValueError(
                f"label_weights and thresholds are for sigmoid outputs; task {self.name!r} (softmax, argmax) takes "
                "neither"
            )

        def compute_metrics(eval_pred):
            probabilities = softmax(to_numpy(_first(eval_pred.predictions)))
            return single_label_metrics(probabilities, _first(eval_pred.label_ids), label_names)

        return compute_metrics


class Regression(Task):
    """One raw output per example (e.g. brain age in years), MSE loss; no thresholds."""

    name = "regression"
    report_name = "regression"
    config_problem_type = "regression"
    card_words = "regression"
    card_tag = "regression"
    card_metrics = (
        ("mae", "mae", "mean absolute error"),
        ("rmse", "rmse", "root mean squared error"),
        ("pearson_r", "pearsonr", "Pearson r"),
    )
    progress_keys = ("mae", "pearson_r")

    def check_recipe(self, recipe) -> None:
        from .recipe import RecipeError

        if recipe.training.pos_weight is not None:
            raise RecipeError("training.pos_weight applies to classification; remove it for a regression model")
        if recipe.data.balanced_sampler:
            raise RecipeError(
                "data.balanced_sampler evens out labels of a classifier; set it to false for regression"
            )

    def scores(self, logits):
        return logits.float()

    def metric_names(self, config, label_names):
        return ["mae", "rmse", "pearson_r"]

    def metrics(self, config, scores, labels, label_names):
        if len(label_names) != 1:
            raise ValueError(f"regression evaluation expects one target, the model has {len(label_names)}")
        return regression_metrics(scores[:, 0], labels[:, 0])

    def finish(self, scores, labels, label_names, evaluation, model_dir, plots_dir):
        from .plots import plot_regression

        plot_regression(scores[:, 0], labels[:, 0], Path(plots_dir) / "predictions.png", label_names[0])
        return {}

    def labels_text(self, labels):
        return f"{', '.join(f'`{label}`' for label in labels)} (regression: the model outputs the value)."

    def predictions(self, logits, label_names):
        return [{"label": n, "value": float(v)} for n, v in zip(label_names, logits.float().tolist(), strict=True)]

    def prediction_lines(self, rows):
        return [f"{row['label']:<18} {row['value']:.3f}" for row in rows]

    def compute_metrics(self, label_names, label_weights=None, thresholds=None):
        _one_label(self.name, label_names)
        if label_weights is not None or thresholds is not None:
            raise ValueError("label_weights and thresholds are for classification; task 'regression' takes neither")

        def compute_metrics(eval_pred):
            return regression_metrics(_first(eval_pred.predictions), _first(eval_pred.label_ids))

        return compute_metrics


SEGMENTATION_USAGE = '''\
### With hfmed installed

```python
import hfmed  # registers the family with the Auto classes
from hfmed.pipelines import segment

# One 0/255 mask per class present, at the image's size; a PNG / JPEG / DICOM path, bytes or an array.
# Images larger than the model's input are segmented at their own size by a sliding window.
segment("{example}", "{repo_id}")
```

### Without hfmed (transformers only)

```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, {auto_class}

model = {auto_class}.from_pretrained("{repo_id}", trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
image = Image.open("{example}")
with torch.no_grad():
    outputs = model(**processor(image, return_tensors="pt"))  # logits (1, num_labels, H, W), no softmax
mask = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
```

### The `image-segmentation` pipeline

```python
from transformers import pipeline

pipe = pipeline("image-segmentation", model="{repo_id}", trust_remote_code=True)
pipe("{example}")  # one row per class present: its label and a 0/255 mask (score None)
```

### Fine-tuning with `Trainer`

```python
from transformers import AutoImageProcessor, {auto_class}, Trainer, TrainingArguments
from hfmed.data import build_dataset
from hfmed.data.transforms import collate, make_transform
from hfmed.metrics import make_compute_metrics

model = {auto_class}.from_pretrained("{repo_id}", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
data = build_dataset({dataset})  # rows with an image and a mask (`path` + `mask_path`, or `image` + `mask`)
trainer = Trainer(
    model=model,
    args=TrainingArguments("out", eval_strategy="epoch", remove_unused_columns=False, label_names=["labels"]),
    train_dataset=data["train"].with_transform(make_transform(processor, {{"hflip": 0.5}}, train=True)),
    eval_dataset=data["validation"].with_transform(make_transform(processor)),
    data_collator=collate,
    processing_class=processor,
    compute_metrics=make_compute_metrics(list(model.config.id2label.values()), task="semantic_segmentation"),
)
trainer.train()
```
'''


class SemanticSegmentation(Task):
    """One class per pixel: softmax probabilities over the classes at every pixel, the argmax is the predicted
    mask. Labels are int64 (N, H, W) class maps, the config's `semantic_loss_ignore_index` where a pixel counts
    nowhere. Metrics pool every validation pixel (`segmentation_metrics`); the end of a run draws the best
    epoch's predictions over the first validation images (plots/overlays.png)."""

    name = "semantic_segmentation"
    report_name = "semantic_segmentation"
    config_problem_type = "semantic_segmentation"
    card_words = "semantic segmentation"
    card_tag = "image-segmentation"
    card_metrics = (
        ("mean_dice", "dice", "foreground mean Dice"),
        ("mean_iou", "mean_iou", "mean IoU"),
    )
    progress_keys = ("mean_dice", "mean_iou")
    keep_inputs = 4
    card_usage = SEGMENTATION_USAGE

    def check_recipe(self, recipe) -> None:
        from .recipe import RecipeError

        if recipe.training.pos_weight is not None:
            raise RecipeError(
                "training.pos_weight weighs the positives of a per-label sigmoid loss; a segmentation model's loss "
                "is per pixel (set its weights in the model config): remove training.pos_weight"
            )
        if recipe.data.balanced_sampler:
            raise RecipeError(
                "data.balanced_sampler evens out the labels of whole images; a segmentation model has a class per "
                "pixel: set data.balanced_sampler to false"
            )
        if not recipe.evaluation.greater_is_better:
            raise RecipeError(
                f"evaluation.greater_is_better is false, but every segmentation metric (Dice, IoU; here "
                f"{recipe.evaluation.metric!r}) is better when greater: set it to true"
            )
        defaults = type(recipe.evaluation)()
        for key in ("threshold_method", "target_sensitivity"):
            if getattr(recipe.evaluation, key) != getattr(defaults, key):
                raise RecipeError(
                    f"evaluation.{key} chooses decision thresholds of sigmoid outputs; a segmentation model takes "
                    f"the most probable class per pixel: remove evaluation.{key}"
                )

    def scores(self, logits):
        return logits.float().softmax(dim=1)

    def metric_names(self, config, label_names):
        names = [str(name) for name in label_names]
        return ["mean_dice", *(f"dice_{n}" for n in names), "mean_iou", *(f"iou_{n}" for n in names)]

    def metrics(self, config, scores, labels, label_names):
        return segmentation_metrics(np.argmax(scores, axis=1), labels, label_names, _ignore_index(config))

    def finish_inputs(self, config, inputs, scores, labels, label_names, plots_dir):
        from .plots import plot_segmentation_overlays

        count = min(len(inputs), self.keep_inputs)
        if count == 0:
            return {}
        plot_segmentation_overlays(
            inputs[:count], np.argmax(scores[:count], axis=1), labels[:count], label_names,
            Path(plots_dir) / "overlays.png", ignore_index=_ignore_index(config),
        )
        return {}

    def labels_text(self, labels):
        return (
            f"{', '.join(f'`{label}`' for label in labels)} (semantic segmentation: one softmax probability per "
            "class at every pixel; the mask is the most probable class, the first class is the background)."
        )

    def card_results_extra(self, report):
        if not _results_of(report):
            return ""
        return (
            "\n\nDice and IoU count every validation pixel together (not a mean of per-image scores); the mean "
            "Dice averages the foreground classes, the mean IoU every class, background included."
        )

    def predictions(self, logits, label_names):
        raise ValueError(
            "a segmentation model answers a mask per pixel: use pipeline('image-segmentation') or "
            "hfmed.pipelines.segment, not the volume pipeline"
        )

    def prediction_lines(self, rows):
        # The image-segmentation pipeline's rows: one per class present, with a 0/255 mask.
        return [f"{row['label']:<18} {float(np.mean(np.asarray(row['mask']) > 0)):.1%} of the image" for row in rows]

    def report_lines(self, report):
        lines = super().report_lines(report)
        metrics = report["best"]["metrics"]
        lines += [f"{key:<18} {value:.4f}" for key, value in metrics.items()
                  if key.startswith("dice_") and value is not None]
        return lines

    def compute_metrics(self, label_names, label_weights=None, thresholds=None, ignore_index: int = 255):
        label_names = [str(name) for name in label_names]
        if len(label_names) < 2:
            raise ValueError(
                f"task {self.name!r} needs at least two classes (background and one more), got {label_names}"
            )
        if label_weights is not None or thresholds is not None:
            raise ValueError(
                f"label_weights and thresholds are for sigmoid outputs; task {self.name!r} (argmax per pixel) takes "
                "neither"
            )

        def compute_metrics(eval_pred):
            logits = np.asarray(_first(eval_pred.predictions))
            labels = np.asarray(_first(eval_pred.label_ids)).astype(np.int64)
            # Trainer pads label maps of different sizes with -100 when it concatenates batches.
            labels = np.where(labels == -100, ignore_index, labels)
            return segmentation_metrics(np.argmax(logits, axis=1), labels, label_names, ignore_index)

        return compute_metrics


def _ignore_index(config) -> int:
    return int(getattr(config, "semantic_loss_ignore_index", 255))


def _results_of(report) -> dict:
    return ((report or {}).get("best") or {}).get("metrics") or {}


def _one_label(task: str, label_names) -> list[str]:
    names = [str(name) for name in label_names]
    if len(names) != 1:
        raise ValueError(f"task {task!r} has one output, but label_names has {len(names)}: {names}")
    return names


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        SemanticSegmentation(),
        Regression(),
        BinaryClassification(),
        MultiLabelClassification(),
        SingleLabelClassification(),
    )
}
"""Every task by name, most specific first: `task_for` takes the first that handles a config."""


def get_task(name: str) -> Task:
    """The task called `name` (a key of `TASKS`)."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {name!r}")
    return TASKS[name]


def task_for(config) -> Task:
    """The task of a model config (its `problem_type` and number of labels)."""
    config = getattr(config, "config", config)
    for task in TASKS.values():
        if task.handles(config):
            return task
    raise ValueError(
        f"no hfmed task handles problem_type {getattr(config, 'problem_type', None)!r}; known tasks: {list(TASKS)}"
    )


__all__ = [
    "BinaryClassification",
    "MultiLabelClassification",
    "Regression",
    "SemanticSegmentation",
    "SingleLabelClassification",
    "TASKS",
    "Task",
    "get_task",
    "task_for",
]
