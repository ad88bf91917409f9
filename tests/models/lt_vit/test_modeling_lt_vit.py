"""LT-ViT: the shared family checks, plus parity with timm / transformers ViTs, the label-token mask, the
label-attention maps, the masked loss, config validation and preset sizes.

References are computed independently: timm's and transformers' own ViT forward passes, and the loss
written out below with explicit logs.
"""

import ast
from pathlib import Path

import pytest
import timm
import torch
from transformers import ViTConfig, ViTModel

from hfmed.models.lt_vit import (
    CHEXPERT_LABELS,
    NIH_LABELS,
    LTViTConfig,
    LTViTForImageClassification,
    LTViTImageProcessor,
    LTViTModel,
    convert_hf_vit_state_dict,
    convert_timm_vit_state_dict,
    lt_vit_config,
)
from tests.model_tester import FamilyTester


def reference_bce(logits, labels, weights=None, pos_weight=None):
    """Weighted mean over labels of the per-label mean BCE over the entries whose label is not -1."""
    p = torch.sigmoid(logits.double())
    y = labels.double()
    pw = (
        torch.ones(logits.shape[1], dtype=torch.double)
        if pos_weight is None
        else torch.tensor(pos_weight).double()
    )
    w = torch.ones(logits.shape[1], dtype=torch.double) if weights is None else torch.tensor(weights).double()
    total, weight_sum = 0.0, 0.0
    for j in range(logits.shape[1]):
        terms = [
            -(pw[j] * y[i, j] * torch.log(p[i, j]) + (1 - y[i, j]) * torch.log(1 - p[i, j]))
            for i in range(logits.shape[0])
            if y[i, j] != -1
        ]
        if terms:
            total = total + w[j] * torch.stack(terms).mean()
            weight_sum = weight_sum + w[j]
    return (total / weight_sum).to(logits.dtype)


class TestLTViT(FamilyTester):
    base_class = LTViTModel
    head_class = LTViTForImageClassification

    @staticmethod
    def config_factory():
        return lt_vit_config("lt-vit-tiny")

    @staticmethod
    def processor_factory(config):
        return LTViTImageProcessor(size={"height": config.image_size, "width": config.image_size})

    def reference_loss(self, logits, labels, config):
        return reference_bce(logits, labels, config.loss_label_weights, config.loss_pos_weight)


# --- parity with standard ViTs -----------------------------------------------------------------------


def randomise(module, seed):
    # Random values in every parameter (LayerNorms too), so that a swapped key cannot go unnoticed.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def tiny_timm_vit(seed=0):
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        mlp_ratio=2.0,
        num_classes=0,
    )
    return randomise(model, seed).eval()


@pytest.mark.parametrize("num_label_blocks", [1, 2])
def test_image_tokens_equal_timm_forward_features(num_label_blocks):
    source = tiny_timm_vit()
    config = lt_vit_config("lt-vit-tiny", num_label_blocks=num_label_blocks)
    model = LTViTModel(config).eval()
    missing, unexpected = model.load_state_dict(
        convert_timm_vit_state_dict(source.state_dict(), config), strict=False
    )
    assert missing == ["embeddings.label_tokens"] and unexpected == []
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = source.forward_features(x)
        out = model(x)
    assert out.last_hidden_state.shape == expected.shape == (3, 17, 32)
    torch.testing.assert_close(out.last_hidden_state, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooler_output, expected[:, 0], atol=1e-5, rtol=1e-5)
    head = LTViTForImageClassification.from_vit(source, config).eval()
    with torch.no_grad():
        torch.testing.assert_close(head.lt_vit(x).last_hidden_state, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            LTViTModel.from_vit(source.state_dict(), config)(x).last_hidden_state,
            expected,
            atol=1e-5,
            rtol=1e-5,
        )


def tiny_hf_vit(seed=1):
    vit_config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        layer_norm_eps=1e-12,
        hidden_act="gelu",
    )
    return randomise(ViTModel(vit_config, add_pooling_layer=False), seed).eval()


def v4_names(state_dict):
    """transformers v5 ViT keys -> the v4 names stored in Hub checkpoints (google/vit-base-patch16-224)."""
    parts = {
        "attention.q_proj": "attention.attention.query",
        "attention.k_proj": "attention.attention.key",
        "attention.v_proj": "attention.attention.value",
        "attention.o_proj": "attention.output.dense",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
        "layernorm_before": "layernorm_before",
        "layernorm_after": "layernorm_after",
    }
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("layers."):
            _, index, rest = key.split(".", 2)
            inner, leaf = rest.rsplit(".", 1)
            key = f"encoder.layer.{index}.{parts[inner]}.{leaf}"
        renamed[key] = value
    assert any(k.startswith("encoder.layer.1.attention.attention.query") for k in renamed)
    return renamed


@pytest.mark.parametrize("num_label_blocks", [1, 2])
def test_image_tokens_equal_transformers_vit(num_label_blocks):
    source = tiny_hf_vit()
    config = lt_vit_config("lt-vit-tiny", num_label_blocks=num_label_blocks, layer_norm_eps=1e-12)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = source(pixel_values=x).last_hidden_state
        model = LTViTModel(config).eval()
        missing, _ = model.load_state_dict(
            convert_hf_vit_state_dict(source.state_dict(), config), strict=False
        )
        assert missing == ["embeddings.label_tokens"]
        torch.testing.assert_close(model(x).last_hidden_state, expected, atol=1e-5, rtol=1e-5)
        # Checkpoint files on the Hub keep the transformers v4 names: load those too.
        torch.testing.assert_close(
            LTViTModel.from_vit(v4_names(source.state_dict()), config).eval()(x).last_hidden_state,
            expected,
            atol=1e-5,
            rtol=1e-5,
        )
        # A `vit.`-prefixed state dict (ViTForImageClassification) and the module itself load the same way.
        prefixed = {f"vit.{k}": v for k, v in source.state_dict().items()} | {
            "classifier.weight": torch.zeros(3, 32)
        }
        torch.testing.assert_close(
            LTViTModel.from_vit(prefixed, config).eval()(x).last_hidden_state, expected, atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            LTViTModel.from_vit(source, config).eval()(x).last_hidden_state, expected, atol=1e-5, rtol=1e-5
        )


def test_from_vit_keeps_label_tokens_and_classifier_fresh_and_refuses_mismatches():
    source = tiny_timm_vit()
    config = lt_vit_config("lt-vit-tiny")
    torch.manual_seed(5)
    fresh = LTViTForImageClassification(config)
    torch.manual_seed(5)
    loaded = LTViTForImageClassification.from_vit(source, config)
    assert torch.equal(loaded.lt_vit.embeddings.label_tokens, fresh.lt_vit.embeddings.label_tokens)
    assert torch.equal(loaded.classifier.weight, fresh.classifier.weight)
    assert torch.equal(loaded.lt_vit.layers[1].attention.qkv.weight, source.blocks[1].attn.qkv.weight)
    with pytest.raises(ValueError, match=r"4x4 patch grid.*resize the checkpoint's position embeddings"):
        LTViTModel.from_vit(source.state_dict(), lt_vit_config("lt-vit-tiny", image_size=48))
    with pytest.raises(ValueError, match=r"layer_norm_eps=1e-06"):
        LTViTModel.from_vit(source, lt_vit_config("lt-vit-tiny", layer_norm_eps=1e-12))
    with pytest.raises(ValueError, match=r"has 2 blocks but config.num_hidden_layers is 3"):
        LTViTModel.from_vit(source.state_dict(), lt_vit_config("lt-vit-tiny", num_hidden_layers=3))
    with pytest.raises(ValueError, match=r"does not fit this LTViTConfig"):
        LTViTModel.from_vit(source.state_dict(), lt_vit_config("lt-vit-tiny", intermediate_size=48))
    with pytest.raises(ValueError, match=r"cannot tell the ViT layout"):
        LTViTModel.from_vit({"weight": torch.zeros(1)}, config)
    with pytest.raises(ValueError, match=r"keys LT-ViT cannot map: \['reg_token'\]"):
        LTViTModel.from_vit({**source.state_dict(), "reg_token": torch.zeros(1, 4, 32)}, config)


# --- the label-token mask ------------------------------------------------------------------------------


@pytest.mark.parametrize("num_label_blocks", [1, 2])
def test_label_tokens_do_not_change_image_tokens_but_read_them(num_label_blocks):
    model = LTViTModel(lt_vit_config("lt-vit-tiny", num_label_blocks=num_label_blocks)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x, output_hidden_states=True)
        model.embeddings.label_tokens.add_(torch.randn_like(model.embeddings.label_tokens))
        after = model(x, output_hidden_states=True)
        assert torch.equal(after.last_hidden_state, before.last_hidden_state)
        for a, b in zip(after.hidden_states, before.hidden_states, strict=True):
            assert torch.equal(a, b)
        assert (after.label_hidden_states - before.label_hidden_states).abs().max() > 1e-3
        # Image tokens feed the label tokens: one changed patch changes the label outputs.
        x2 = x.clone()
        x2[:, :, :8, :8] += 1.0
        moved = model(x2)
    assert (moved.label_hidden_states - after.label_hidden_states).abs().max() > 1e-4


@pytest.mark.parametrize("num_label_blocks", [1, 2])
def test_sdpa_with_mask_equals_eager_and_masked_weights_are_zero(num_label_blocks):
    config = lt_vit_config("lt-vit-tiny", num_label_blocks=num_label_blocks)
    model = LTViTForImageClassification(config).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused = model(x).logits
        eager = model(x, output_attentions=True)
        label_only = model(x, output_label_attentions=True)
    torch.testing.assert_close(eager.logits, fused, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(label_only.logits, fused, atol=1e-5, rtol=1e-5)
    num_image, total = 1 + config.num_patches, 1 + config.num_patches + config.num_labels
    for index, weights in enumerate(eager.attentions):
        length = total if index >= config.num_hidden_layers - num_label_blocks else num_image
        assert weights.shape == (2, config.num_attention_heads, length, length)
        if length == total:
            assert torch.all(weights[:, :, :num_image, num_image:] == 0)
            assert torch.all(weights[:, :, num_image:, num_image:] > 0)


@pytest.mark.parametrize("num_label_blocks", [1, 2])
def test_the_heads_label_only_paths_equal_the_full_forward(num_label_blocks):
    # The head computes only the label tokens in its last block, and label maps from the label queries' weights
    # only; the full forward (hidden states / every attention asked for) computes every token and weight.
    # Same logits, label maps and gradients.
    config = lt_vit_config("lt-vit-tiny", num_label_blocks=num_label_blocks, hidden_dropout_prob=0.0)
    model = LTViTForImageClassification(config)
    x, labels = torch.randn(3, 3, 32, 32), torch.randint(0, 2, (3, config.num_labels)).float()
    with torch.no_grad():
        base = model.lt_vit(x, labels_only=True)
        assert base.last_hidden_state is None and base.pooler_output is None
        assert base.label_hidden_states.shape == (3, config.num_labels, config.hidden_size)
        short = model.eval()(x, output_label_attentions=True)
        full = model(x, output_label_attentions=True, output_hidden_states=True)
        eager = model(x, output_label_attentions=True, output_attentions=True)  # every query's weights
    torch.testing.assert_close(short.logits, full.logits, atol=1e-6, rtol=1e-6)
    for other in (full, eager):
        torch.testing.assert_close(short.label_attentions, other.label_attentions, atol=1e-6, rtol=1e-6)
    gradients = []
    for hidden in (False, True):
        model.zero_grad()
        model.train()(x, labels=labels, output_hidden_states=hidden).loss.backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) == len(list(model.parameters()))
    for name in gradients[0]:
        torch.testing.assert_close(gradients[0][name], gradients[1][name], atol=1e-6, rtol=1e-5)


def test_label_attentions_shape_and_normalisation():
    config = lt_vit_config("lt-vit-tiny", num_label_blocks=2)
    model = LTViTForImageClassification(config).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32), output_label_attentions=True, output_attentions=True)
    maps = out.label_attentions
    assert maps.shape == (3, config.num_labels, config.grid_size, config.grid_size)
    assert torch.all(maps >= 0)
    torch.testing.assert_close(maps.sum(dim=(-1, -2)), torch.ones(3, config.num_labels), atol=1e-5, rtol=0)
    # Written out: label rows, patch columns, mean over heads and label blocks, renormalised.
    num_image = 1 + config.num_patches
    rows = torch.stack([a[:, :, num_image:, 1:num_image].mean(1) for a in out.attentions]).mean(0)
    expected = (rows / rows.sum(-1, keepdim=True)).reshape(maps.shape)
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=1e-6)
    as_tuple = model(torch.randn(1, 3, 32, 32), output_label_attentions=True, return_dict=False)
    assert as_tuple[-1].shape == (1, config.num_labels, 4, 4)


# --- the masked loss -------------------------------------------------------------------------------------


def test_ignored_labels_are_masked_out_of_the_loss():
    config = lt_vit_config(
        "lt-vit-tiny",
        loss_label_weights=[float(i + 1) for i in range(14)],
        loss_pos_weight=[1.0 + 0.5 * (i % 3) for i in range(14)],
    )
    model = LTViTForImageClassification(config).eval()
    x = torch.randn(4, 3, 32, 32)
    labels = torch.randint(0, 2, (4, 14), generator=torch.Generator().manual_seed(3)).float()
    labels[0, 1] = labels[2, 5] = labels[3, 7] = -1
    labels[:, 9] = -1  # label 9 unknown for the whole batch: must leave the weighted mean
    out = model(x, labels=labels)
    reference = reference_bce(out.logits, labels, config.loss_label_weights, config.loss_pos_weight)
    torch.testing.assert_close(out.loss, reference, atol=1e-6, rtol=1e-6)
    without_9 = [j for j in range(14) if j != 9]
    sub = reference_bce(
        out.logits[:, without_9],
        labels[:, without_9],
        [config.loss_label_weights[j] for j in without_9],
        [config.loss_pos_weight[j] for j in without_9],
    )
    torch.testing.assert_close(out.loss, sub, atol=1e-6, rtol=1e-6)
    out.loss.backward()
    assert model.classifier.weight.grad is not None
    nothing = model(x, labels=torch.full((4, 14), -1.0))
    assert nothing.loss.item() == 0.0 and nothing.loss.requires_grad
    integer = model(x, labels=labels.long())
    torch.testing.assert_close(integer.loss, out.loss)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\], or -1"):
        model(x, labels=torch.full((4, 14), 2.0))


# --- config and presets ----------------------------------------------------------------------------------


def test_defaults_follow_the_brief():
    config = LTViTConfig()
    assert [config.id2label[i] for i in range(14)] == NIH_LABELS and config.num_labels == 14
    assert config.problem_type == "multi_label_classification"
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, 12, 6)
    assert config.num_label_blocks == 4 and config.first_label_block == 8 and config.num_patches == 196
    assert config.loss_label_weights is None and config.label_thresholds is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_label_blocks": 0}, r"num_label_blocks must be an integer in 1..num_hidden_layers \(2\)"),
        ({"num_label_blocks": 3}, r"num_label_blocks must be an integer in 1..num_hidden_layers"),
        ({"patch_size": 5}, "image_size .* must be divisible by patch_size"),
        ({"num_attention_heads": 3}, "divisible by num_attention_heads"),
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"hidden_act": "swishy"}, "hidden_act must be one of"),
        ({"qkv_bias": "yes"}, "qkv_bias must be True or False"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps must be a positive number"),
        ({"label_token_init_std": -1.0}, "label_token_init_std must be a positive number"),
        ({"initializer_range": 0}, "initializer_range must be a positive number"),
        ({"attention_probs_dropout_prob": 1.0}, r"attention_probs_dropout_prob must be in \[0, 1\)"),
        (
            {"loss_label_weights": [1.0, 1.0]},
            r"loss_label_weights must hold one weight >= 0 per label \(14\)",
        ),
        ({"loss_pos_weight": [0.0] * 14}, "loss_pos_weight must hold one positive weight per label"),
        ({"label_thresholds": [1.5] * 14}, r"label_thresholds must hold one probability in \[0, 1\]"),
        ({"problem_type": "single_label_classification"}, "must be 'multi_label_classification'"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        lt_vit_config("lt-vit-tiny", **overrides)


def test_unknown_preset_and_label_sets():
    with pytest.raises(ValueError, match="unknown LT-ViT preset"):
        lt_vit_config("lt-vit-huge")
    config = lt_vit_config("lt-vit-tiny", id2label=dict(enumerate(CHEXPERT_LABELS)))
    assert config.num_labels == 5 and config.label2id["Pleural Effusion"] == 4
    assert LTViTForImageClassification(config).eval()(torch.randn(1, 3, 32, 32)).logits.shape == (1, 5)


@pytest.mark.parametrize(
    ("preset", "timm_name"),
    [("lt-vit-small", "vit_small_patch16_224"), ("lt-vit-base", "vit_base_patch16_224")],
)
def test_presets_have_the_timm_image_pathway(preset, timm_name):
    config = lt_vit_config(preset)
    with torch.device("meta"):  # real module trees, no memory and no init cost
        head = LTViTForImageClassification(config)
        reference = timm.create_model(timm_name, pretrained=False, num_classes=0)
    timm_count = sum(p.numel() for p in reference.parameters())
    base = sum(p.numel() for p in head.lt_vit.parameters())
    extra = config.num_labels * config.hidden_size  # the label tokens
    assert base - extra == timm_count
    assert sum(p.numel() for p in head.parameters()) == timm_count + extra + config.hidden_size + 1
    # Same keys and shapes after conversion, so the converter covers the full image pathway.
    converted = convert_timm_vit_state_dict(reference.state_dict(), config)
    shapes = {k: v.shape for k, v in head.lt_vit.state_dict().items() if k != "embeddings.label_tokens"}
    assert {k: v.shape for k, v in converted.items()} == shapes


def test_reload_gives_bit_identical_logits_for_any_label_count(tmp_path):
    # safetensors maps weights at unaligned addresses; the readout must not depend on alignment.
    config = lt_vit_config("lt-vit-tiny", num_label_blocks=2, id2label=dict(enumerate(CHEXPERT_LABELS)))
    model = LTViTForImageClassification(config).eval()
    model.save_pretrained(tmp_path)
    again = LTViTForImageClassification.from_pretrained(tmp_path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x).logits, again(x).logits)


def test_model_folder_imports_stay_hub_safe():
    # Files are copied flat to the Hub: only `from .configuration_lt_vit import ...`, never hfmed.
    folder = Path(__file__).resolve().parents[3] / "hfmed" / "models" / "lt_vit"
    for name in ("configuration_lt_vit.py", "modeling_lt_vit.py", "image_processing_lt_vit.py"):
        for node in ast.walk(ast.parse((folder / name).read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not node.level or (node.level == 1 and node.module == "configuration_lt_vit"), (
                    name,
                    node.module,
                )
                assert not (node.module or "").startswith("hfmed"), name
            elif isinstance(node, ast.Import):
                assert not any(alias.name.split(".")[0] == "hfmed" for alias in node.names), name


def test_pretrained_backbones_fail_offline_with_a_clear_message():
    config = lt_vit_config("lt-vit-tiny", pretrained_vit="vit_tiny_patch16_224")
    with pytest.raises(OSError, match="could not load the pretrained ViT 'vit_tiny_patch16_224'.*HF_HUB_OFFLINE"):
        LTViTForImageClassification.from_pretrained_backbones(config)
    with pytest.raises(ValueError, match="pretrained_vit names no ViT"):
        LTViTModel.from_pretrained_backbones(lt_vit_config("lt-vit-tiny"))
    assert lt_vit_config("lt-vit-small").pretrained_vit.startswith("vit_small_patch16_224")
