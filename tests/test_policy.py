"""The training policy: what the model declares (no decay, learning-rate groups, frozen parameters), and the
loop's one extension point (an epoch hook that changes what trains, and the loss)."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from hfmed import lt_vit_config, scopeformer_config, slice_cnn_config
from hfmed.models.lt_vit import LTViTForImageClassification
from hfmed.models.scopeformer import ScopeformerForImageClassification
from hfmed.models.slice_cnn import SliceCNNForVolumePrediction
from hfmed.policy import TrainingPolicy, covers, parameter_groups
from hfmed.recipe import RecipeError, TrainingSection, load_recipe
from hfmed.registry import FAMILIES
from hfmed.train import train

ROOT = Path(__file__).resolve().parents[1]


def by_name(groups) -> dict:
    return {name: (g["lr"], g["weight_decay"]) for g in groups for name in g["names"]}


def test_covers_matches_whole_name_components():
    assert covers("backbones.0.weight", ["backbones"]) and covers("backbones", ["backbones"])
    assert not covers("backbones_extra.weight", ["backbones"])


def test_label_tokens_get_their_own_learning_rate_through_the_declared_group():
    model = LTViTForImageClassification(lt_vit_config("lt-vit-tiny"))
    training = TrainingSection(learning_rate=1e-4, weight_decay=0.05, module_learning_rates={"label_tokens": 1e-3})
    rates = by_name(parameter_groups(model, training))
    assert rates["lt_vit.embeddings.label_tokens"] == (1e-3, 0.0)  # declared: no decay either
    assert {lr for name, (lr, _) in rates.items() if name != "lt_vit.embeddings.label_tokens"} == {1e-4}
    with pytest.raises(RecipeError, match="no parameter name starts with 'label_tokenz'.*groups: \\['label_tokens'\\]"):
        parameter_groups(model, TrainingSection(module_learning_rates={"label_tokenz": 1e-3}))


def test_declared_no_decay_names_cover_two_dimensional_parameters():
    # The slice position encoding's LayerNorm spans (slices, features): its weight is 2-D, yet it takes no decay.
    model = SliceCNNForVolumePrediction(slice_cnn_config("slice-cnn-tiny", task="regression"))
    rates = by_name(parameter_groups(model, TrainingSection(weight_decay=0.1)))
    parameters = dict(model.named_parameters())
    assert parameters["slice_cnn.position_encoding.layernorm.weight"].ndim == 2
    for name, (_, decay) in rates.items():
        declared = covers(name, model.no_weight_decay())
        assert decay == (0.0 if declared or parameters[name].ndim <= 1 else 0.1), name


def test_frozen_parameters_are_declared_switched_off_and_left_out():
    model = ScopeformerForImageClassification(scopeformer_config("scopeformer-tiny", freeze_backbones=True))
    assert model.frozen_parameters() == {"scopeformer.backbones"}
    assert model.scopeformer.frozen_parameters() == {"backbones"}
    names = set(by_name(parameter_groups(model, TrainingSection())))
    assert names == {n for n, p in model.named_parameters() if not n.startswith("scopeformer.backbones.")}
    assert not any(p.requires_grad for p in model.scopeformer.backbones.parameters())
    free = ScopeformerForImageClassification(scopeformer_config("scopeformer-tiny", freeze_backbones=False))
    assert free.frozen_parameters() == set()


class StagedPolicy(TrainingPolicy):
    """The head trains from the second epoch on; the loss gains a constant term."""

    def __init__(self):
        self.epochs = []

    def on_epoch_start(self, model, epoch):
        self.epochs.append(epoch)
        model.classifier.requires_grad_(epoch >= 1)

    def loss(self, model, batch, outputs):
        return outputs.loss + 100.0


class HeadProbe:
    def __init__(self):
        self.seen = []

    def on_before_optimizer_step(self, state, model, batch, accelerator):
        self.seen.append((state.epoch, model.classifier.weight.grad is None))


def test_the_epoch_hook_changes_what_trains_and_the_loss_hook_adds_a_term(tmp_path, monkeypatch):
    policy = StagedPolicy()
    monkeypatch.setitem(FAMILIES, "scopeformer", dataclasses.replace(FAMILIES["scopeformer"], training_policy=policy))
    overrides = {
        "training.output_dir": tmp_path / "run", "model.config.image_size": 32, "model.config.feature_grid_size": 4,
        "model.config.hidden_size": 32, "model.config.intermediate_size": 64, "model.config.num_attention_heads": 2,
        "model.config.projection_dim": 16, "data.args.root": tmp_path / "data", "data.args.num_patients": 8,
        "data.args.slices_per_patient": 2, "data.args.image_size": 32, "data.args.val_fraction": 0.34,
        "training.batch_size": 4, "training.epochs": 2, "training.log_every_steps": 1,
    }
    recipe = load_recipe(ROOT / "configs" / "scopeformer-efficient-demo.yaml", [f"{k}={v}" for k, v in overrides.items()])
    probe = HeadProbe()
    run = train(recipe, callbacks=[probe])
    assert policy.epochs == [0, 1]
    # In the optimizer from the start, the head had no gradient in epoch 0 and one in epoch 1.
    assert {epoch for epoch, _ in probe.seen} == {0, 1}
    assert all(no_grad == (epoch == 0) for epoch, no_grad in probe.seen)
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert all(100.0 < record["train_loss"] < 102.0 for record in history)
    assert all(record["eval_loss"] < 2.0 for record in history)  # evaluation reads the model's own loss


def test_the_default_policy_changes_nothing():
    model = torch.nn.Linear(2, 1)
    policy = TrainingPolicy()
    policy.apply(model)
    policy.on_epoch_start(model, 0)
    assert all(p.requires_grad for p in model.parameters())
    outputs = type("Out", (), {"loss": torch.tensor(1.5)})()
    assert policy.loss(model, {}, outputs) is outputs.loss
    assert policy.frozen(model) == () and policy.learning_rate_groups(model) == {}


def test_a_staged_strategy_trains_through_the_extension_point():
    # MoVL declares its stages; its family's policy applies them at every epoch, with no MoVL branch in the loop.
    from hfmed import MoVLForImageClassification, movl_config

    family = FAMILIES["movl"]
    config = movl_config("movl-tiny", strategy="lp_then_vp", lp_warmup_epochs=1, id2label={0: "a", 1: "b"})
    model = MoVLForImageClassification(config)
    policy = family.training_policy
    policy.apply(model)
    groups = model.parameter_groups()
    in_optimizer = set(by_name(parameter_groups(model, TrainingSection(), policy)))
    assert in_optimizer == {*groups["prompt"], *groups["head"]} and groups["backbone"]
    trainable = {}
    for epoch in (0, 1, 2):
        policy.on_epoch_start(model, epoch)
        trainable[epoch] = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable[0] == set(groups["head"])  # linear probe first
    assert trainable[1] == trainable[2] == set(groups["prompt"])  # then the visual prompt alone
