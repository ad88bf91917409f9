"""transformers.Trainer fine-tunes a Scopeformer with hfmed's collator and compute_metrics."""

import math

import torch
from transformers import AutoModelForImageClassification, Trainer, TrainingArguments

from hfmed import ScopeformerForImageClassification, ScopeformerImageProcessor, scopeformer_config
from hfmed.data import build_dataset
from hfmed.data.transforms import collate, make_transform
from hfmed.metrics import make_compute_metrics
from hfmed.models.scopeformer import RSNA_LABELS


def test_trainer_fine_tunes_reports_metrics_and_saves_a_reloadable_checkpoint(tmp_path):
    data = build_dataset(
        "synthetic_ct", root=str(tmp_path / "data"), num_patients=16, slices_per_patient=4, image_size=32,
        val_fraction=0.25, seed=0,
    )
    torch.manual_seed(0)
    config = scopeformer_config("scopeformer-tiny", freeze_backbones=False)
    model = ScopeformerForImageClassification(config)
    processor = ScopeformerImageProcessor(size={"height": 32, "width": 32})
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
        compute_metrics=make_compute_metrics(RSNA_LABELS, config.loss_label_weights),
    )
    first = trainer.evaluate()
    trainer.train()
    last = trainer.evaluate()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert last["eval_loss"] < first["eval_loss"]
    assert 0.0 <= last["eval_mean_auroc"] <= 1.0 and not math.isnan(last["eval_weighted_log_loss"])
    assert {f"eval_auroc_{name}" for name in RSNA_LABELS} <= set(last)

    trainer.save_model(tmp_path / "saved")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "saved").eval()
    batch = collate([data["validation"].with_transform(make_transform(processor))[0]])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=batch["pixel_values"]).logits,
                                   model(pixel_values=batch["pixel_values"]).logits)
