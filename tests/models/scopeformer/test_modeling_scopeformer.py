import pytest
import timm
import torch
from safetensors.torch import save_file

from hfmed import (
    ScopeformerForImageClassification,
    ScopeformerImageProcessor,
    ScopeformerModel,
    scopeformer_config,
)
from tests.model_tester import FamilyTester


class TestScopeformer(FamilyTester):
    base_class = ScopeformerModel
    head_class = ScopeformerForImageClassification

    @staticmethod
    def config_factory():
        return scopeformer_config("scopeformer-tiny")

    @staticmethod
    def processor_factory(config):
        return ScopeformerImageProcessor(size={"height": config.image_size, "width": config.image_size})

    def reference_loss(self, logits, labels, config):
        # RSNA 2019 weighted multi-label log loss, written out: "any" weighs 2, the five subtypes 1.
        p = torch.sigmoid(logits)
        log_loss = -(labels * torch.log(p) + (1 - labels) * torch.log(1 - p)).mean(0)
        w = torch.tensor([2.0, 1, 1, 1, 1, 1])
        return (log_loss * w).sum() / w.sum()


class TestScopeformerChannelTokensJointProjection(TestScopeformer):
    @staticmethod
    def config_factory():
        return scopeformer_config(
            "scopeformer-tiny", token_layout="channel", projection_type="joint", pooling="mean",
            feature_resize="bilinear", freeze_backbones=False,
        )


def trainable_parameters(preset):
    with torch.device("meta"):  # real module trees, no memory and no init cost
        model = ScopeformerForImageClassification(scopeformer_config(preset))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_presets_honour_the_papers_trainable_parameter_ratios():
    base = trainable_parameters("scopeformer-base")
    assert base / trainable_parameters("scopeformer-efficient") >= 8
    assert base / trainable_parameters("scopeformer-efficient-small") >= 17


def test_backbones_hold_no_layers_past_the_tap():
    # A stride-8 tap of an EfficientNet must not carry (dead) later stages.
    model = ScopeformerForImageClassification(scopeformer_config("scopeformer-tiny", freeze_backbones=False))
    model.train()
    out = model(**TestScopeformer().make_inputs(model.config), labels=torch.ones(2, 6))
    out.loss.backward()
    assert all(p.grad is not None for p in model.scopeformer.backbones.parameters())


def test_encoder_layer_equals_torch_transformer_encoder_layer():
    config = scopeformer_config("scopeformer-tiny")
    layer = ScopeformerModel(config).layers[0].eval()
    reference = torch.nn.TransformerEncoderLayer(
        config.hidden_size, config.num_attention_heads, config.intermediate_size, dropout=0.0,
        activation="gelu", layer_norm_eps=config.layer_norm_eps, batch_first=True, norm_first=True,
    ).eval()
    with torch.no_grad():
        reference.self_attn.in_proj_weight.copy_(layer.attention.qkv.weight)
        reference.self_attn.in_proj_bias.copy_(layer.attention.qkv.bias)
        reference.self_attn.out_proj.weight.copy_(layer.attention.output.weight)
        reference.self_attn.out_proj.bias.copy_(layer.attention.output.bias)
        reference.linear1.load_state_dict(layer.mlp.fc1.state_dict())
        reference.linear2.load_state_dict(layer.mlp.fc2.state_dict())
        reference.norm1.load_state_dict(layer.layernorm_before.state_dict())
        reference.norm2.load_state_dict(layer.layernorm_after.state_dict())
        x = torch.randn(2, config.num_tokens + 1, config.hidden_size)
        torch.testing.assert_close(layer(x)[0], reference(x), atol=1e-5, rtol=1e-5)


def test_tokens_follow_the_layout():
    config = scopeformer_config("scopeformer-tiny", token_layout="channel")
    out = ScopeformerModel(config).eval()(torch.randn(1, 3, 32, 32))
    # One token per projected channel (2 backbones x 16) plus CLS; the map keeps its 4x4 grid.
    assert out.last_hidden_state.shape == (1, 2 * 16 + 1, 32)
    assert out.feature_map.shape == (1, 32, 4, 4)
    spatial = ScopeformerModel(scopeformer_config("scopeformer-tiny")).eval()(torch.randn(1, 3, 32, 32))
    assert spatial.last_hidden_state.shape == (1, 4 * 4 + 1, 32)


def test_frozen_backbones_stay_in_eval_mode_and_out_of_the_graph():
    model = ScopeformerForImageClassification(scopeformer_config("scopeformer-tiny")).train()
    assert not model.scopeformer.backbones.training
    assert model.scopeformer.projection.training
    assert not any(p.requires_grad for p in model.scopeformer.backbones.parameters())
    unfrozen = ScopeformerForImageClassification(scopeformer_config("scopeformer-tiny", freeze_backbones=False))
    assert unfrozen.train().scopeformer.backbones.training


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backbones": ["resnet_does_not_exist"]}, "unknown timm model 'resnet_does_not_exist'"),
        ({"backbone_out_indices": [2]}, "one tap stage per backbone"),
        ({"projection_type": "attention"}, "projection_type must be one of"),
        ({"token_layout": "patch"}, "token_layout must be one of"),
        ({"pooling": "max"}, "pooling must be one of"),
        ({"num_attention_heads": 3}, "divisible by num_attention_heads"),
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"loss_label_weights": [1.0, 1.0]}, "one weight per label"),
        ({"problem_type": "single_label_classification"}, "must be 'multi_label_classification'"),
        ({"hidden_dropout_prob": 1.5}, r"hidden_dropout_prob must be in \[0, 1\)"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        scopeformer_config("scopeformer-tiny", **overrides)


def test_unknown_preset_and_missing_stage_are_clear_errors():
    with pytest.raises(ValueError, match="unknown Scopeformer preset"):
        scopeformer_config("scopeformer-huge")
    with pytest.raises(ValueError, match="cannot tap stage 9"):
        ScopeformerModel(scopeformer_config("scopeformer-tiny", backbone_out_indices=[9, 2]))


def test_label_count_follows_id2label():
    config = scopeformer_config("scopeformer-tiny", id2label={0: "a", 1: "b"}, loss_label_weights=[1.0, 3.0])
    assert config.num_labels == 2 and config.label2id == {"a": 0, "b": 1}
    logits = ScopeformerForImageClassification(config).eval()(torch.randn(1, 3, 32, 32)).logits
    assert logits.shape == (1, 2)


def test_pretrained_backbones_fail_offline_with_a_clear_message():
    with pytest.raises(OSError, match="could not load pretrained weights for backbone 'test_efficientnet'.*HF_HUB_OFFLINE"):
        ScopeformerForImageClassification.from_pretrained_backbones(scopeformer_config("scopeformer-tiny"))


def test_pretrained_backbones_load_local_safetensors(tmp_path):
    config = scopeformer_config("scopeformer-tiny")
    files = []
    for i, name in enumerate(config.backbones):
        torch.manual_seed(100 + i)
        reference = timm.create_model(name, pretrained=False)
        save_file(reference.state_dict(), str(tmp_path / f"{name}.safetensors"))
        files.append(tmp_path / f"{name}.safetensors")
    model = ScopeformerForImageClassification.from_pretrained_backbones(config, backbone_weights=files)
    torch.manual_seed(100)
    stem = timm.create_model(config.backbones[0], pretrained=False).conv_stem.weight
    loaded = dict(model.scopeformer.backbones.extractors[0].named_parameters())
    assert any(torch.equal(p, stem) for n, p in loaded.items() if n.endswith("conv_stem.weight"))
    with pytest.raises(ValueError, match=r"\.safetensors file"):
        ScopeformerForImageClassification.from_pretrained_backbones(config, backbone_weights=["w.pth", None])
    with pytest.raises(ValueError, match="one path"):
        ScopeformerForImageClassification.from_pretrained_backbones(config, backbone_weights=[None])


def test_frozen_backbones_stay_frozen_after_from_pretrained(tmp_path):
    from transformers import AutoModel, AutoModelForImageClassification

    config = scopeformer_config("scopeformer-tiny")
    assert config.freeze_backbones
    ScopeformerForImageClassification(config).save_pretrained(tmp_path)
    for loader in (ScopeformerForImageClassification, AutoModelForImageClassification, AutoModel):
        model = loader.from_pretrained(tmp_path)
        grads = {name: p.requires_grad for name, p in model.named_parameters()}
        backbone = [n for n in grads if ".backbones." in f".{n}"]
        assert backbone and not any(grads[n] for n in backbone), loader.__name__
        assert any(grads[n] for n in grads if n not in backbone)  # the projection and the ViT still train
