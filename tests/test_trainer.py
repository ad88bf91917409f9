"""transformers.Trainer fine-tunes each family with hfmed's collator and compute_metrics."""

import math

import pytest
import torch
from transformers import AutoModelForImageClassification, Trainer, TrainingArguments

from hfmed import (
    LTViTForImageClassification,
    LTViTImageProcessor,
    ScopeformerForImageClassification,
    ScopeformerImageProcessor,
    lt_vit_config,
    scopeformer_config,
)
from hfmed.data import build_dataset
from hfmed.data.synthetic_cxr import SYNTHETIC_CXR_LABELS
from hfmed.data.transforms import collate, make_transform
from hfmed.metrics import make_compute_metrics


def scopeformer_setup(tmp_path):
    data = build_dataset(
        "synthetic_ct", root=str(tmp_path / "data"), num_patients=16, slices_per_patient=4, image_size=32,
        val_fraction=0.25, seed=0,
    )
    config = scopeformer_config("scopeformer-tiny", freeze_backbones=False)
    return data, ScopeformerForImageClassification(config), ScopeformerImageProcessor(size={"height": 32, "width": 32})


def lt_vit_setup(tmp_path):
    data = build_dataset(
        "synthetic_cxr", root=str(tmp_path / "data"), num_patients=24, images_per_patient=3, image_size=32,
        val_fraction=0.25, seed=0,
    )
    config = lt_vit_config("lt-vit-tiny", id2label=dict(enumerate(SYNTHETIC_CXR_LABELS)))
    return data, LTViTForImageClassification(config), LTViTImageProcessor(size={"height": 32, "width": 32})


@pytest.mark.parametrize("setup", [scopeformer_setup, lt_vit_setup], ids=["scopeformer", "lt_vit"])
def test_trainer_fine_tunes_reports_metrics_and_saves_a_reloadable_checkpoint(tmp_path, setup):
    torch.manual_seed(0)
    data, model, processor = setup(tmp_path)
    config = model.config
    label_names = [config.id2label[i] for i in range(config.num_labels)]
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        num_train_epochs=4,
        learning_rate=2e-3,
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=1,
        remove_unused_columns=False,  # the transform needs `path`; the model never sees it
        # Trainer guesses label keys from forward's parameter names; LT-ViT's `output_label_attentions`
        # would count as one and switch evaluation losses off.
        label_names=["labels"],
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["train"].with_transform(make_transform(processor, train=True)),
        eval_dataset=data["validation"].with_transform(make_transform(processor)),
        data_collator=collate,
        processing_class=processor,
        compute_metrics=make_compute_metrics(label_names, config.loss_label_weights or [1.0] * config.num_labels),
    )
    first = trainer.evaluate()
    trainer.train()
    last = trainer.evaluate()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert last["eval_loss"] < first["eval_loss"]
    # Scopeformer weights "any" twice (RSNA); LT-ViT's log loss is a plain mean over labels.
    log_loss = "eval_weighted_log_loss" if len(set(config.loss_label_weights or [1.0])) > 1 else "eval_mean_log_loss"
    assert 0.0 <= last["eval_mean_auroc"] <= 1.0 and not math.isnan(last[log_loss])
    assert {f"eval_auroc_{name}" for name in label_names} <= set(last)

    trainer.save_model(tmp_path / "saved")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "saved").eval()
    batch = collate([data["validation"].with_transform(make_transform(processor))[0]])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=batch["pixel_values"]).logits,
                                   model(pixel_values=batch["pixel_values"]).logits)


def test_trainer_fine_tunes_a_slice_cnn_brain_age_model_with_regression_metrics(tmp_path):
    from hfmed import SliceCNNForVolumePrediction, SliceCNNImageProcessor, slice_cnn_config

    torch.manual_seed(0)
    data = build_dataset(
        "synthetic_brain", root=str(tmp_path / "data"), num_subjects=16, shape=[24, 28, 24], spacing=8.0,
        val_fraction=0.25, seed=0,
    )
    config = slice_cnn_config(
        "slice-cnn-tiny", volume_shape=[24, 28, 24], task="regression", regression_target_mean=65.0
    )
    model = SliceCNNForVolumePrediction(config)
    processor = SliceCNNImageProcessor(target_spacing=[8.0, 8.0, 8.0], target_shape=[24, 28, 24])
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=4, per_device_eval_batch_size=8,
        num_train_epochs=4, learning_rate=3e-3, eval_strategy="epoch", save_strategy="no", logging_steps=1,
        remove_unused_columns=False, label_names=["labels"], report_to=[], use_cpu=True, seed=0,
    )
    trainer = Trainer(
        model=model, args=args,
        train_dataset=data["train"].with_transform(make_transform(processor, train=True)),
        eval_dataset=data["validation"].with_transform(make_transform(processor)),
        data_collator=collate, processing_class=processor,
        compute_metrics=make_compute_metrics(["age"], task="regression"),
    )
    trainer.train()
    last = trainer.evaluate()
    # Trainer's eval loss is the MSE over the split: the RMSE metric must agree with it
    assert last["eval_rmse"] == pytest.approx(math.sqrt(last["eval_loss"]), rel=1e-4)
    predicted = trainer.predict(data["validation"].with_transform(make_transform(processor)))
    errors = predicted.predictions[:, 0] - predicted.label_ids[:, 0]
    assert last["eval_mae"] == pytest.approx(float(abs(errors).mean()), rel=1e-5)
    assert len(trainer.state.log_history) > 3 and -1.0 <= last["eval_pearson_r"] <= 1.0


def write_learnable_pneumoniamnist(path, size=32, seed=0):
    """A PneumoniaMNIST-layout .npz whose class shows as a bright disc (class 1) or a dark one (class 0)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    arrays = {}
    for prefix, n in (("train", 32), ("val", 16), ("test", 8)):
        labels = np.arange(n) % 2
        images = rng.normal(110, 20, (n, size, size))
        images[:, disc] += np.where(labels == 1, 90.0, -70.0)[:, None]
        arrays[f"{prefix}_images"] = np.clip(images, 0, 255).astype(np.uint8)
        arrays[f"{prefix}_labels"] = labels.astype(np.uint8)[:, None]
    np.savez(path, **arrays)


def test_trainer_fine_tunes_prompt_and_head_of_a_single_label_checkpoint_and_never_the_backbone(tmp_path):
    from hfmed import MoVLForImageClassification, MoVLImageProcessor, movl_config
    from hfmed.data.medmnist import MEDMNIST_2D

    torch.manual_seed(0)
    write_learnable_pneumoniamnist(tmp_path / "pneumoniamnist.npz")
    data = build_dataset("medmnist", npz_path=str(tmp_path / "pneumoniamnist.npz"), cache_dir=str(tmp_path / "png"))
    names = list(MEDMNIST_2D["pneumoniamnist"].labels)
    config = movl_config("movl-tiny", id2label=dict(enumerate(names)), strategy="movl")
    MoVLForImageClassification(config).save_pretrained(tmp_path / "checkpoint")
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "checkpoint")
    processor = MoVLImageProcessor(size={"height": 32, "width": 32}, image_mean=config.image_mean,
                                   image_std=config.image_std)
    groups = model.parameter_groups()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(groups["prompt"]) | set(groups["head"]) and groups["prompt"] and groups["backbone"]
    before = {k: v.clone() for k, v in model.state_dict().items()}

    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=8, per_device_eval_batch_size=16,
        num_train_epochs=4, learning_rate=1e-2, eval_strategy="epoch", save_strategy="no", logging_steps=1,
        remove_unused_columns=False, label_names=["labels"], report_to=[], use_cpu=True, seed=0,
    )
    trainer = Trainer(
        model=model, args=args,
        train_dataset=data["train"].with_transform(make_transform(processor, train=True)),
        eval_dataset=data["validation"].with_transform(make_transform(processor)),
        data_collator=collate, processing_class=processor,
        compute_metrics=make_compute_metrics(names, task="single_label_classification"),
    )
    first = trainer.evaluate()
    trainer.train()
    last = trainer.evaluate()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert last["eval_loss"] < first["eval_loss"]

    # Only the prompt and the probe moved; the backbone (weights and BatchNorm statistics) is bit-identical.
    after = model.state_dict()
    backbone = [k for k in before if k.startswith("movl.backbone.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)
    assert any(not torch.equal(before[k], after[k]) for k in groups["prompt"])
    assert any(not torch.equal(before[k], after[k]) for k in groups["head"])

    # The task's metrics equal a count from the raw predictions.
    predicted = trainer.predict(data["validation"].with_transform(make_transform(processor)))
    logits = predicted.predictions
    assert logits.shape == (16, 2)
    accuracy = float((logits.argmax(axis=1) == predicted.label_ids).mean())
    assert last["eval_accuracy"] == pytest.approx(accuracy) and accuracy > 0.5
    assert 0.0 <= last["eval_balanced_accuracy"] <= 1.0 and 0.0 <= last["eval_macro_auroc"] <= 1.0
    assert {f"eval_recall_{n}" for n in names} | {f"eval_auroc_{n}" for n in names} <= set(last)

    trainer.save_model(tmp_path / "saved")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "saved").eval()
    batch = collate([data["validation"].with_transform(make_transform(processor))[0]])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=batch["pixel_values"]).logits,
                                   model(pixel_values=batch["pixel_values"]).logits)


def test_trainer_fine_tunes_a_segmentation_checkpoint_with_dice_and_iou(tmp_path):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    from hfmed import DIAMANTForSemanticSegmentation, DIAMANTImageProcessor, diamant_config
    from tests.test_train_segmentation import write_folder

    torch.manual_seed(0)
    write_folder(tmp_path / "data", count=16)
    data = build_dataset(
        "seg_folder", root=str(tmp_path / "data"), layout="generic", image_dir="images", mask_dir="masks",
        val_fraction=0.25, seed=0,
    )
    # The checkpoint: a saved model folder, loaded back through the Auto classes as a user would.
    DIAMANTForSemanticSegmentation(diamant_config("diamant-tiny")).save_pretrained(tmp_path / "checkpoint")
    DIAMANTImageProcessor(size={"height": 32, "width": 32}, size_divisor=8, mask_binarize_threshold=128).save_pretrained(
        tmp_path / "checkpoint"
    )
    model = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "checkpoint")
    processor = AutoImageProcessor.from_pretrained(tmp_path / "checkpoint")
    dino_before = {k: v.clone() for k, v in model.state_dict().items() if ".dino." in k}
    label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=4, per_device_eval_batch_size=8,
        num_train_epochs=10, learning_rate=5e-3, eval_strategy="no", save_strategy="no", logging_steps=1,
        remove_unused_columns=False, label_names=["labels"], report_to=[], use_cpu=True, seed=0,
    )
    trainer = Trainer(
        model=model, args=args,
        train_dataset=data["train"].with_transform(make_transform(processor, {"hflip": 0.5}, train=True)),
        eval_dataset=data["validation"].with_transform(make_transform(processor)),
        data_collator=collate, processing_class=processor,
        compute_metrics=make_compute_metrics(label_names, task="semantic_segmentation"),
    )
    first = trainer.evaluate()
    trainer.train()
    last = trainer.evaluate()
    assert last["eval_loss"] < first["eval_loss"]
    assert last["eval_mean_dice"] > first["eval_mean_dice"] and last["eval_mean_dice"] > 0.5
    # The Trainer's metrics are the task's on the same predictions (argmax per pixel, Dice pooled over pixels).
    predicted = trainer.predict(data["validation"].with_transform(make_transform(processor)))
    hits = predicted.predictions.argmax(1) == 1
    truth = predicted.label_ids == 1
    assert last["eval_dice_foreground"] == pytest.approx(2 * (hits & truth).sum() / (hits.sum() + truth.sum()))
    # The frozen DINO ViT did not move.
    after = model.state_dict()
    assert dino_before and all(torch.equal(after[k], v) for k, v in dino_before.items())

    trainer.save_model(tmp_path / "saved")
    reloaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "saved").eval()
    batch = collate([data["validation"].with_transform(make_transform(processor))[0]])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=batch["pixel_values"]).logits,
                                   model(pixel_values=batch["pixel_values"]).logits)
