"""MoVL: the shared family checks (timm and CLIP backbones, frozen and full fine-tuning), then the method's own
facts: Bahng's prompt size, a frozen backbone that never moves, trainable parameters per strategy, the loss
against a re-computation written out here, the stage schedule, the prompt image and the backbone loaders.

References are computed here by hand: the prompt canvas is assembled by slicing, features come from the backbone
module called directly, and CE / BCE / MSE / cosine / KL are written out with `log_softmax` / `logsigmoid`.
"""

import json

import pytest
import timm
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from hfmed import MoVLForImageClassification, MoVLImageProcessor, MoVLModel, movl_config
from tests.model_tester import FamilyTester

LABELS3 = {0: "a", 1: "b", 2: "c"}


class TestMoVL(FamilyTester):
    base_class = MoVLModel
    head_class = MoVLForImageClassification

    @staticmethod
    def config_factory():
        # A random prompt, so the prompted and the plain image differ and the discrepancy term is not 0.
        return movl_config("movl-tiny", id2label=LABELS3, prompt_init="normal")

    @staticmethod
    def processor_factory(config):
        return MoVLImageProcessor(
            size={"height": config.image_size, "width": config.image_size},
            image_mean=config.image_mean,
            image_std=config.image_std,
        )

    def make_labels(self, config, batch_size=None, seed=1):
        g = torch.Generator().manual_seed(seed)
        batch = batch_size or self.batch_size
        if config.problem_type == "multi_label_classification":
            return torch.randint(0, 2, (batch, config.num_labels), generator=g).float()
        return torch.randint(0, config.num_labels, (batch,), generator=g)

    # MoVL adds no attention layer (the prompt is additive, the probe linear); a timm CNN has none, and CLIP's
    # attention kernels are transformers' own, tested there.
    test_attentions_returned_and_sdpa_matches_eager = None

    def test_base_model_outputs(self):
        # Replaces the mixin's check: MoVL's last features are the backbone's own (a CNN map or CLIP tokens), so
        # only the pooled / projected feature has the config's hidden_size.
        config = self.config_factory()
        model = self.build(self.base_class)
        inputs = self.make_inputs(config)
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
            backbone = model.backbone.model
            prompted = inputs["pixel_values"] + model.prompter.prompt()
            if config.backbone_type == "clip":
                ref = backbone(pixel_values=prompted, output_hidden_states=True)
                torch.testing.assert_close(out.pooler_output, ref.image_embeds)
                torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state)
                assert len(out.hidden_states) == config.clip_vision_config.num_hidden_layers + 1
            else:
                torch.testing.assert_close(out.last_hidden_state, backbone.forward_features(prompted))
                torch.testing.assert_close(out.pooler_output, backbone(prompted))
                stages = backbone.forward_intermediates(prompted, intermediates_only=True)
                assert [h.shape for h in out.hidden_states] == [s.shape for s in stages]
        assert out.pooler_output.shape == (self.batch_size, config.hidden_size)

    def test_loss_matches_reference(self):
        # Replaces the mixin's logits-only reference: MoVL's loss also needs the plain image's features.
        config = self.config_factory()
        model = self.build()
        inputs, labels = self.make_inputs(config), self.make_labels(config)
        out = model(**inputs, labels=labels)
        ce, discrepancy = reference_terms(model, inputs["pixel_values"], labels)
        torch.testing.assert_close(out.classification_loss, ce, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(out.discrepancy_loss, discrepancy, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out.loss, ce + config.discrepancy_weight * discrepancy, atol=1e-6, rtol=1e-6)
        assert out.discrepancy_loss > 0


class TestMoVLClip(TestMoVL):
    @staticmethod
    def config_factory():
        return movl_config("movl-clip-tiny", id2label=LABELS3, prompt_init="normal")


class TestMoVLFullFinetuneMultiLabel(TestMoVL):
    @staticmethod
    def config_factory():
        return movl_config(
            "movl-tiny", id2label=LABELS3, strategy="full_finetune", problem_type="multi_label_classification"
        )

    def test_loss_matches_reference(self):
        # No prompt in full fine-tuning: the loss is the mean BCE over batch and labels, nothing else.
        config = self.config_factory()
        model = self.build()
        inputs, labels = self.make_inputs(config), self.make_labels(config)
        out = model(**inputs, labels=labels)
        bce = -(labels * F_logsigmoid(out.logits) + (1 - labels) * F_logsigmoid(-out.logits)).mean()
        torch.testing.assert_close(out.loss, bce, atol=1e-6, rtol=1e-6)
        assert out.discrepancy_loss is None and model.movl.prompter is None

    def test_base_model_outputs(self):
        config = self.config_factory()
        model = self.build(self.base_class)
        x = self.make_inputs(config)["pixel_values"]
        with torch.no_grad():
            torch.testing.assert_close(model(x).pooler_output, model.backbone.model(x))


def F_logsigmoid(x):
    return torch.nn.functional.logsigmoid(x)


# --- the loss, written out ------------------------------------------------------------------------------------


def hand_prompt(model):
    """The full-size prompt canvas, assembled by slicing from the prompter's parameters."""
    prompter = model.base_model.prompter
    config = model.config
    s, p, c = config.image_size, config.prompt_size, config.num_channels
    canvas = torch.zeros(1, c, s, s)
    if config.prompt_type == "padding":
        canvas[:, :, :p, :] = prompter.pad_up
        canvas[:, :, s - p :, :] = prompter.pad_down
        canvas[:, :, p : s - p, :p] = prompter.pad_left
        canvas[:, :, p : s - p, s - p :] = prompter.pad_right
    elif config.prompt_type == "fixed_patch":
        canvas[:, :, :p, :p] = prompter.patch
    else:
        canvas[:] = prompter.full
    return canvas


def backbone_features(model, pixel_values):
    backbone = model.base_model.backbone.model
    if model.config.backbone_type == "clip":
        return backbone(pixel_values=pixel_values).image_embeds
    return backbone(pixel_values)


def reference_terms(model, pixel_values, labels):
    """(classification loss, unweighted discrepancy) computed without MoVL's forward."""
    config = model.config
    with torch.no_grad():
        features = backbone_features(model, pixel_values + hand_prompt(model))
        plain = backbone_features(model, pixel_values)
        if config.normalize_features:
            features = features / features.norm(dim=-1, keepdim=True)
            plain = plain / plain.norm(dim=-1, keepdim=True)
        weight, bias = model.classifier.weight, model.classifier.bias
        logits, plain_logits = features @ weight.T + bias, plain @ weight.T + bias
        if config.problem_type == "multi_label_classification":
            y = labels.float()
            ce = -(y * F_logsigmoid(logits) + (1 - y) * F_logsigmoid(-logits)).mean()
        else:
            ce = -torch.log_softmax(logits, dim=-1)[torch.arange(len(labels)), labels].mean()
        if config.discrepancy == "mse":
            discrepancy = ((features - plain) ** 2).mean()
        elif config.discrepancy == "cosine":
            cos = (features * plain).sum(-1) / (features.norm(dim=-1) * plain.norm(dim=-1))
            discrepancy = (1 - cos).mean()
        elif config.problem_type == "multi_label_classification":
            p, q = torch.sigmoid(plain_logits), torch.sigmoid(logits)
            discrepancy = (p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))).mean()
        else:
            p, q = torch.softmax(plain_logits, -1), torch.softmax(logits, -1)
            discrepancy = (p * torch.log(p / q)).sum(-1).mean()
    return ce, discrepancy


@pytest.mark.parametrize("discrepancy", ["mse", "cosine", "kl"])
@pytest.mark.parametrize("problem_type", ["single_label_classification", "multi_label_classification"])
@pytest.mark.parametrize("preset", ["movl-tiny", "movl-clip-tiny"])
def test_loss_terms_match_the_written_out_reference(discrepancy, problem_type, preset):
    config = movl_config(
        preset, id2label=LABELS3, prompt_init="normal", discrepancy=discrepancy, problem_type=problem_type,
        discrepancy_weight=0.7, normalize_features=preset == "movl-clip-tiny",
    )
    torch.manual_seed(0)
    model = MoVLForImageClassification(config).eval()
    x = torch.randn(3, 3, 32, 32)
    labels = (
        torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0]]) if problem_type.startswith("multi") else torch.tensor([2, 0, 1])
    )
    out = model(x, labels=labels)
    ce, d = reference_terms(model, x, labels)
    torch.testing.assert_close(out.classification_loss, ce, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.discrepancy_loss, d, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(out.loss, ce + 0.7 * d, atol=1e-6, rtol=1e-5)
    assert d > 0


def test_plain_branch_gets_no_gradient_and_the_prompt_gets_the_discrepancy_gradient():
    config = movl_config("movl-tiny", id2label=LABELS3, prompt_init="normal", discrepancy_weight=1.0)
    torch.manual_seed(0)
    model = MoVLForImageClassification(config).train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    out = model(x, labels=y)
    grads = torch.autograd.grad(out.discrepancy_loss, [model.movl.prompter.pad_up, model.classifier.weight],
                                allow_unused=True)
    assert grads[0] is not None and grads[0].abs().sum() > 0
    assert grads[1] is None  # mse on features: the probe is not part of the discrepancy


# --- the prompt --------------------------------------------------------------------------------------------------


def test_padding_prompt_has_bahngs_69840_parameters_at_width_30_and_224_px():
    for preset in ("movl-resnet50", "movl-clip-b32", "movl-clip-b16"):
        with torch.device("meta"):
            model = MoVLForImageClassification(movl_config(preset))
        count = sum(p.numel() for p in model.movl.prompter.parameters())
        assert count == 2 * 3 * 30 * 224 + 2 * 3 * 164 * 30 == 69_840
        assert model.config.num_prompt_parameters == count


@pytest.mark.parametrize(
    ("prompt_type", "size", "expected"),
    [("padding", 4, 2 * 3 * 4 * 32 + 2 * 3 * 24 * 4), ("fixed_patch", 16, 3 * 16 * 16), ("full", 4, 3 * 32 * 32)],
)
def test_prompt_layout_and_count(prompt_type, size, expected):
    config = movl_config("movl-tiny", prompt_type=prompt_type, prompt_size=size, prompt_init="normal")
    torch.manual_seed(0)
    model = MoVLModel(config).eval()
    assert sum(p.numel() for p in model.prompter.parameters()) == expected == config.num_prompt_parameters
    canvas = hand_prompt(model)
    with torch.no_grad():
        torch.testing.assert_close(model.prompter.prompt(), canvas, atol=0, rtol=0)
        # added to the normalised image, before the backbone
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(model(x).pooler_output, model.backbone.model(x + canvas))
        torch.testing.assert_close(model(x, apply_prompt=False).pooler_output, model.backbone.model(x))
    if prompt_type != "full":
        covered = (canvas != 0).sum().item()
        assert covered == expected  # zero where the prompt has no parameters (the image shows through)


def test_prompt_image_and_prompted_images_are_denormalised_uint8():
    config = movl_config("movl-tiny", prompt_init="normal", image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3])
    torch.manual_seed(0)
    model = MoVLForImageClassification(config).eval()
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    canvas = hand_prompt(model)[0].detach()
    image = model.prompt_image()
    assert image.shape == (32, 32, 3) and image.dtype.name == "uint8"
    expected = ((canvas * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert (image == expected).all()
    assert (image[16, 16] == [102, 128, 153]).all()  # centre: no prompt, the mean colour (0.4, 0.5, 0.6) * 255
    x = torch.randn(2, 3, 32, 32)
    seen = model.prompted_images(x)
    hand = (((x + canvas) * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert seen.shape == (2, 32, 32, 3) and (seen == hand).all()
    plain = MoVLForImageClassification(movl_config("movl-tiny", strategy="lp")).prompt_image()
    assert (plain == plain[0, 0]).all()  # no prompt: a flat mean-coloured image


# --- the frozen backbone ---------------------------------------------------------------------------------------


def backbone_snapshot(model):
    return {k: v.clone() for k, v in model.base_model.backbone.state_dict().items()}


@pytest.mark.parametrize("preset", ["movl-tiny", "movl-clip-tiny"])
@pytest.mark.parametrize("strategy", ["lp", "vp", "lp_then_vp", "joint", "movl"])
def test_frozen_backbone_is_bit_identical_after_training_and_keeps_batchnorm_statistics(preset, strategy):
    config = movl_config(preset, id2label=LABELS3, strategy=strategy, prompt_init="normal", lp_warmup_epochs=1)
    torch.manual_seed(0)
    model = MoVLForImageClassification(config)
    before = backbone_snapshot(model)
    head_before = model.classifier.weight.detach().clone()
    # The optimizer holds every parameter, with weight decay: a frozen one has no gradient, so it never moves.
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    g = torch.Generator().manual_seed(0)
    for epoch in range(2):
        model.set_training_stage(epoch)
        model.train()
        assert not model.movl.backbone.training and model.training
        assert all(not m.training for m in model.movl.backbone.modules())
        for _ in range(2):
            out = model(torch.randn(4, 3, 32, 32, generator=g), labels=torch.randint(0, 3, (4,), generator=g))
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
    after = model.movl.backbone.state_dict()
    assert set(after) == set(before)
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    assert not any(p.requires_grad for p in model.movl.backbone.parameters())
    learned = not torch.equal(model.classifier.weight, head_before)
    assert learned == (strategy != "vp")  # vp keeps the probe at its init
    if strategy != "lp":
        assert model.movl.prompter.pad_up.grad is not None


def test_full_finetune_trains_the_backbone_and_moves_batchnorm_statistics():
    # The contrast to the frozen test above: the same loop does move an unfrozen backbone.
    config = movl_config("movl-tiny", id2label=LABELS3, strategy="full_finetune")
    torch.manual_seed(0)
    model = MoVLForImageClassification(config).train()
    assert model.movl.backbone.training and model.config.freeze_backbone is False
    before = backbone_snapshot(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    out = model(torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    optimizer.step()
    after = model.movl.backbone.state_dict()
    assert not torch.equal(after["model.bn1.running_mean"], before["model.bn1.running_mean"])
    assert not torch.equal(after["model.conv1.0.weight"], before["model.conv1.0.weight"])


def test_a_loaded_model_keeps_its_backbone_frozen(tmp_path):
    model = MoVLForImageClassification(movl_config("movl-tiny", id2label=LABELS3))
    model.save_pretrained(tmp_path)
    again = MoVLForImageClassification.from_pretrained(tmp_path)
    trainable = sorted(n for n, p in again.named_parameters() if p.requires_grad)
    assert trainable == sorted(again.trainable_parameter_names()) == sorted(
        ["movl.prompter.pad_up", "movl.prompter.pad_down", "movl.prompter.pad_left", "movl.prompter.pad_right",
         "classifier.weight", "classifier.bias"]
    )
    assert again.train().movl.backbone.training is False
    base = MoVLModel.from_pretrained(tmp_path)
    assert not any(p.requires_grad for p in base.backbone.parameters())


# --- strategies: what trains when ------------------------------------------------------------------------------


def trainable_count(model, epoch):
    model.set_training_stage(epoch)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("preset", "backbone_parameters", "feature_width"),
    [("movl-resnet50", None, 2048), ("movl-clip-b32", None, 512)],
)
def test_trainable_parameters_per_strategy_on_the_meta_device(preset, backbone_parameters, feature_width):
    labels = {i: f"class{i}" for i in range(9)}
    with torch.device("meta"):  # real module trees, no memory and no download
        if preset == "movl-resnet50":
            reference = timm.create_model("resnet50", pretrained=False, num_classes=0)
        else:
            reference = CLIPVisionModelWithProjection(CLIPVisionConfig(patch_size=32))
        models = {
            s: MoVLForImageClassification(movl_config(preset, strategy=s, id2label=labels, lp_warmup_epochs=3))
            for s in ("lp", "vp", "lp_then_vp", "joint", "movl", "full_finetune")
        }
    backbone = sum(p.numel() for p in reference.parameters())
    head = feature_width * 9 + 9
    prompt = 69_840
    assert trainable_count(models["lp"], 0) == head
    assert trainable_count(models["vp"], 0) == prompt
    assert [trainable_count(models["lp_then_vp"], e) for e in (0, 2, 3, 9)] == [head, head, prompt, prompt]
    assert trainable_count(models["joint"], 0) == prompt + head
    assert [trainable_count(models["movl"], e) for e in (0, 2, 3, 9)] == [head, head, prompt + head, prompt + head]
    assert trainable_count(models["full_finetune"], 0) == backbone + head
    # total parameters: the backbone, the probe, and the prompt where the strategy has one
    assert sum(p.numel() for p in models["movl"].parameters()) == backbone + head + prompt
    assert sum(p.numel() for p in models["lp"].parameters()) == backbone + head


def test_movl_schedule_lp_warm_start_then_joint_with_the_discrepancy():
    config = movl_config("movl-tiny", id2label=LABELS3, prompt_init="normal", lp_warmup_epochs=2)
    torch.manual_seed(0)
    model = MoVLForImageClassification(config).train()
    assert [(s.name, s.first_epoch, s.trains, s.discrepancy) for s in model.training_stages()] == [
        ("lp", 0, ("head",), False),
        ("joint", 2, ("prompt", "head"), True),
    ]
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    prompt_names = {"movl.prompter.pad_up", "movl.prompter.pad_down", "movl.prompter.pad_left",
                    "movl.prompter.pad_right"}
    for epoch in (0, 1):
        stage = model.set_training_stage(epoch)
        assert stage.name == "lp" and not model.discrepancy_active
        out = model(x, labels=y)
        assert out.discrepancy_loss is None and torch.equal(out.loss, out.classification_loss)
        assert set(model.trainable_parameter_names(epoch)) == {"classifier.weight", "classifier.bias"}
        assert not model.movl.prompter.pad_up.requires_grad
    assert model.set_training_stage(2).name == "joint" and model.discrepancy_active
    out = model(x, labels=y)
    assert out.discrepancy_loss is not None and out.loss > out.classification_loss
    assert set(model.trainable_parameter_names(2)) == prompt_names | {"classifier.weight", "classifier.bias"}
    assert set(model.optimizer_parameter_names()) == prompt_names | {"classifier.weight", "classifier.bias"}
    assert model.no_weight_decay() == prompt_names
    groups = model.parameter_groups()
    assert set(groups["prompt"]) == prompt_names and groups["head"] == ["classifier.weight", "classifier.bias"]
    assert all(n.startswith("movl.backbone.") for n in groups["backbone"]) and groups["backbone"]
    # a new model is in the last stage; lp_warmup_epochs=0 starts joint at once
    assert MoVLForImageClassification(config).discrepancy_active
    assert movl_training_stage_names(movl_config("movl-tiny", lp_warmup_epochs=0)) == [("joint", 0)]
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        model.training_stage(-1)


def movl_training_stage_names(config):
    return [(s.name, s.first_epoch) for s in MoVLModel(config).training_stages()]


def test_other_strategies_keep_the_discrepancy_off_and_vp_freezes_the_probe():
    for strategy in ("vp", "lp_then_vp", "joint"):
        model = MoVLForImageClassification(movl_config("movl-tiny", strategy=strategy, prompt_init="normal"))
        out = model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 1]))
        assert out.discrepancy_loss is None, strategy
    vp = MoVLForImageClassification(movl_config("movl-tiny", strategy="vp"))
    assert not vp.classifier.weight.requires_grad and vp.movl.prompter.pad_up.requires_grad
    assert MoVLForImageClassification(movl_config("movl-tiny", strategy="lp")).movl.prompter is None
    # weight 0 turns the term off
    assert not MoVLForImageClassification(movl_config("movl-tiny", discrepancy_weight=0.0)).discrepancy_active


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"strategy": "prompt_tuning"}, r"strategy must be one of \['lp', 'vp', 'lp_then_vp', 'joint', 'movl', "),
        ({"prompt_size": 16}, "prompt_size 16 is at least half of image_size 32.*prompt_size < 16"),
        ({"prompt_type": "fixed_patch", "prompt_size": 17}, "wider than half of image_size 32.*prompt_type='full'"),
        ({"strategy": "full_finetune", "freeze_backbone": True}, "full_finetune.*freeze_backbone=True.*drop"),
        ({"freeze_backbone": False}, "keeps the backbone frozen.*strategy='full_finetune'"),
        ({"backbone": "openai/clip-vit-base-patch32"}, "is a Hub checkpoint \\(CLIP\\?\\), not a timm CNN.*movl-clip-b32"),
        ({"backbone": "resnet_does_not_exist"}, "unknown timm model 'resnet_does_not_exist'"),
        ({"discrepancy": "l1"}, r"discrepancy must be one of \['mse', 'cosine', 'kl'\]"),
        ({"prompt_init": "uniform"}, "prompt_init must be one of"),
        ({"problem_type": "regression"}, "problem_type must be one of"),
        ({"discrepancy_weight": -1.0}, "discrepancy_weight must be a number >= 0"),
        ({"lp_warmup_epochs": -1}, "lp_warmup_epochs must be an integer >= 0"),
        ({"loss_pos_weight": [1.0, 2.0]}, "loss_pos_weight weighs the positives of a multi-label BCE"),
        ({"image_mean": [0.5]}, r"image_mean must hold 3 numbers"),
        ({"backbone_type": "vit"}, "backbone_type must be one of"),
    ],
)
def test_config_rejects_bad_values_in_one_line(overrides, message):
    with pytest.raises(ValueError, match=message) as info:
        movl_config("movl-tiny", **overrides)
    assert "\n" not in str(info.value)


def test_clip_config_errors():
    with pytest.raises(ValueError, match="is a timm model but backbone_type is 'clip'"):
        movl_config("movl-clip-tiny", backbone="resnet50")
    with pytest.raises(ValueError, match="image_size 64 differs from clip_vision_config.image_size 32"):
        movl_config("movl-clip-tiny", image_size=64)
    with pytest.raises(ValueError, match="unknown MoVL preset"):
        movl_config("movl-huge")


def test_label_errors_name_the_fix():
    model = MoVLForImageClassification(movl_config("movl-tiny", id2label=LABELS3)).eval()
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        model(x, labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integer class indices: pass labels.long"):
        model(x, labels=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"channels but the backbone takes 3.*replicate grey"):
        model(x[:, :1])


# --- pretrained backbones ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("preset", "name"), [("movl-tiny", "test_resnet"), ("movl-clip-tiny", "openai/clip-vit")])
def test_pretrained_backbones_fail_offline_with_one_line_naming_the_way_out(preset, name):
    with pytest.raises(OSError, match=f"{name}.*HF_HUB_OFFLINE.*backbone_weights=<a local") as info:
        MoVLForImageClassification.from_pretrained_backbones(movl_config(preset))
    assert "\n" not in str(info.value)


def tiny_clip_folder(path, seed=5):
    vision = movl_config("movl-clip-tiny").clip_vision_config
    torch.manual_seed(seed)
    CLIPVisionModelWithProjection(vision).save_pretrained(path)
    return path


def test_pretrained_backbones_load_a_local_timm_file_and_a_local_clip_folder(tmp_path):
    torch.manual_seed(7)
    cnn = timm.create_model("test_resnet", pretrained=False)  # with its 1000-class head, as timm ships it
    save_file(cnn.state_dict(), str(tmp_path / "cnn.safetensors"))
    model = MoVLForImageClassification.from_pretrained_backbones(movl_config("movl-tiny"), tmp_path / "cnn.safetensors")
    assert torch.equal(model.movl.backbone.model.conv1[0].weight, cnn.conv1[0].weight)
    assert not model.movl.backbone.model.conv1[0].weight.requires_grad

    folder = tiny_clip_folder(tmp_path / "clip")
    reference = CLIPVisionModelWithProjection.from_pretrained(folder)
    model = MoVLForImageClassification.from_pretrained_backbones(movl_config("movl-clip-tiny"), folder)
    assert torch.equal(model.movl.backbone.model.visual_projection.weight, reference.visual_projection.weight)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = reference.eval()(pixel_values=x + model.movl.prompter.prompt()).image_embeds
        torch.testing.assert_close(model.eval().movl(x).pooler_output, expected)


def test_a_clip_checkpoint_passed_as_a_resnet_is_a_clear_error(tmp_path):
    folder = tiny_clip_folder(tmp_path / "clip")
    config = movl_config("movl-tiny")
    with pytest.raises(ValueError, match="is a CLIP checkpoint but this MoVL's backbone is the timm CNN.*movl-clip-b32"):
        MoVLForImageClassification.from_pretrained_backbones(config, folder)
    with pytest.raises(ValueError, match="is a CLIP checkpoint"):
        MoVLForImageClassification.from_pretrained_backbones(config, folder / "model.safetensors")
    with pytest.raises(ValueError, match="Hub id of a CLIP checkpoint"):
        MoVLForImageClassification.from_pretrained_backbones(config, "openai/clip-vit-base-patch32")
    # and the other way round
    save_file(timm.create_model("test_resnet").state_dict(), str(tmp_path / "cnn.safetensors"))
    with pytest.raises(ValueError, match="is not a CLIP checkpoint.*movl-resnet50"):
        MoVLForImageClassification.from_pretrained_backbones(movl_config("movl-clip-tiny"), tmp_path / "cnn.safetensors")
    # a CLIP of another size than the config's
    other = tmp_path / "clip16"
    vision = movl_config("movl-clip-tiny").clip_vision_config.to_dict()
    CLIPVisionModelWithProjection(CLIPVisionConfig(**{**vision, "patch_size": 4})).save_pretrained(other)
    with pytest.raises(ValueError, match="does not match config.clip_vision_config .*patch_size 4 vs 8"):
        MoVLForImageClassification.from_pretrained_backbones(movl_config("movl-clip-tiny"), other)
    assert json.loads((other / "config.json").read_text())["model_type"] == "clip_vision_model"


@pytest.mark.parametrize("preset", ["movl-tiny", "movl-clip-tiny"])
def test_activation_checkpointing_recomputes_the_frozen_backbone_for_the_prompt_gradient(preset):
    config = movl_config(preset, id2label=LABELS3, prompt_init="normal", discrepancy_weight=0.0)
    torch.manual_seed(0)
    model = MoVLForImageClassification(config).train()
    calls = []
    # The first convolution (a stem or CLIP's patch embedding): torch's non-reentrant recompute stops early, once
    # the saved tensors are back, so a hook on the whole backbone would not fire again.
    first_conv = next(m for m in model.movl.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda *_: calls.append(1))
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    model(x, labels=y).loss.backward()
    plain_grad = model.movl.prompter.pad_up.grad.clone()
    assert len(calls) == 1
    model.zero_grad()
    model.activation_checkpointing_enable()
    calls.clear()
    model(x, labels=y).loss.backward()
    assert len(calls) == 2  # forward, and again in backward: only the prompted input was kept
    torch.testing.assert_close(model.movl.prompter.pad_up.grad, plain_grad, atol=1e-6, rtol=1e-5)


def test_tuple_outputs():
    model = MoVLForImageClassification(movl_config("movl-tiny", id2label=LABELS3)).eval()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    loss, logits, features = model(x, labels=y, return_dict=False)
    out = model(x, labels=y)
    assert torch.equal(loss, out.loss) and torch.equal(logits, out.logits) and features.shape == (2, 96)
    assert len(model(x, return_dict=False)) == 2
