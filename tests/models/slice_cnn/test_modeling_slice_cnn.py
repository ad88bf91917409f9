"""Slice-CNN model tests: parameter counts of the official implementation, a numeric equivalence test
against an independent re-implementation of the official forward (github.com/umgupta/2d-slice-set-networks)
loaded through `convert_original_state_dict`, slicing / chunking / permutation behaviour, initialisation and
bad input."""

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from hfmed.models.slice_cnn import (
    SliceCNNConfig,
    SliceCNNForVolumeClassification,
    SliceCNNForVolumePrediction,
    SliceCNNForVolumeRegression,
    SliceCNNImageProcessor,
    SliceCNNModel,
    convert_original_state_dict,
    slice_cnn_config,
)
from tests.model_tester import FamilyTester

TINY_SHAPE = [16, 20, 16]


def parameter_count(**fields) -> int:
    with torch.device("meta"):  # real module trees, no memory and no init cost
        model = SliceCNNForVolumePrediction(SliceCNNConfig(**fields))
    return sum(p.numel() for p in model.parameters())


def tiny(**overrides) -> SliceCNNConfig:
    return slice_cnn_config("slice-cnn-tiny", **overrides)


def volumes(config, batch=2, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *config.volume_shape, generator=g)


def build(config, cls=SliceCNNForVolumePrediction, seed=0):
    torch.manual_seed(seed)
    return cls(config).eval()


# --- independent re-implementation of the official forward (own code, official parameter names) -------------


class OfficialPositionEncoding(nn.Module):
    """Official layout: a (1, F, S, 1, 1) / (1, F, 1, S, 1) / (1, F, 1, 1, S) tensor and a LayerNorm over all
    dims but the batch, applied to the slice-major (S * B, F, 1, 1) encoder batch."""

    def __init__(self, features, slice_axis, num_slices):
        super().__init__()
        shape = [1, features, 1, 1, 1]
        shape[1 + slice_axis] = num_slices
        self.position_encoding = nn.Parameter(torch.randn(*shape))
        self.ln = nn.LayerNorm(shape[1:])
        self.slice_dim = 1 + slice_axis
        self.num_slices = num_slices

    def forward(self, encoded):
        batch = encoded.shape[0] // self.num_slices
        block = torch.stack(encoded.split(batch, dim=0), dim=self.slice_dim)
        block = self.ln(block + self.position_encoding)
        return torch.cat(block.unbind(dim=self.slice_dim), dim=0)


class OfficialEncoder1(nn.Module):
    def __init__(self, channels, in_channels, features, out_size, slice_axis, num_slices, pool, use_pe):
        super().__init__()
        blocks, previous = [], in_channels
        for width in channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(previous, width, 3, padding=1),
                    nn.InstanceNorm2d(width),
                    nn.MaxPool2d(2, 2),
                    nn.ReLU(),
                )
            )
            previous = width
        self.encoder_2d = nn.Sequential(*blocks)
        self.post_proc_conv = nn.Sequential(
            nn.Conv2d(previous, features, 1), nn.InstanceNorm2d(features), nn.ReLU(), nn.AvgPool2d(pool)
        )
        self.position_encoder = (
            OfficialPositionEncoding(features, slice_axis, num_slices) if use_pe else nn.Identity()
        )
        self.post_position_encoding = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(features, out_size, 1))

    def forward(self, slices):
        return self.post_position_encoding(
            self.position_encoder(self.post_proc_conv(self.encoder_2d(slices)))
        )


class OfficialResNetEncoder(nn.Module):
    def __init__(self, arch, out_size, slice_axis, num_slices, use_pe):
        super().__init__()
        resnet = getattr(torchvision.models, arch)(weights=None)
        width = resnet.fc.in_features
        del resnet.fc
        self.encoder_2d = resnet
        self.post_proc = nn.Sequential(nn.Linear(width, out_size))
        self.position_encoder = (
            OfficialPositionEncoding(out_size, slice_axis, num_slices) if use_pe else nn.Identity()
        )

    def forward(self, slices):
        if slices.shape[1] == 1:
            slices = torch.cat([slices] * 3, dim=1)
        net = self.encoder_2d
        hidden = net.maxpool(net.relu(net.bn1(net.conv1(slices))))
        hidden = net.layer4(net.layer3(net.layer2(net.layer1(hidden))))
        hidden = net.avgpool(hidden).flatten(1)
        return self.position_encoder(self.post_proc(hidden)[:, :, None, None])


class OfficialPooledAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.S = nn.Parameter(torch.randn(1, dim))
        self.fc_k = nn.Linear(dim, dim)
        self.fc_v = nn.Linear(dim, dim)
        self.ln0 = nn.LayerNorm(dim)
        self.fc_o = nn.Linear(dim, dim)
        self.heads = heads

    def forward(self, embeddings):  # (B, S, D)
        batch, _, dim = embeddings.shape
        split = dim // self.heads
        query = self.S.expand(batch, 1, dim)
        keys, values = self.fc_k(embeddings), self.fc_v(embeddings)
        q, k, v = (torch.cat(t.split(split, dim=2), dim=0) for t in (query, keys, values))
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(split), dim=2)  # (heads * B, 1, S)
        out = torch.cat((weights @ v).split(batch, dim=0), dim=2)
        return self.fc_o(self.ln0(out)).squeeze(1), weights


class OfficialSliceNet(nn.Module):
    """The official `MRI2DSlice` forward: input (B, 1, x, y, z), slice-major 2-D batch, official
    transposes."""

    def __init__(self, config: SliceCNNConfig):
        super().__init__()
        self.config = config
        axis, slices = config.slice_axis, config.num_slices
        if config.encoder == "encoder1":
            self.encoder_2d = OfficialEncoder1(
                config.encoder_channels,
                config.in_channels,
                config.encoder1_feature_size,
                config.hidden_size,
                axis,
                slices,
                config.encoder1_output_size,
                config.use_position_encoding,
            )
        else:
            self.encoder_2d = OfficialResNetEncoder(
                config.encoder, config.hidden_size, axis, slices, config.use_position_encoding
            )
        if config.aggregation == "attention":
            self.pooled_attention = OfficialPooledAttention(config.hidden_size, config.num_attention_heads)
        self.attn_post = nn.Linear(config.hidden_size, config.head_hidden_size)
        self.regressor = nn.Sequential(nn.ReLU(), nn.Linear(config.head_hidden_size, 1))

    def forward(self, scan):
        config = self.config
        volume = scan[:, 0]
        batch = volume.shape[0]
        pieces = []
        for start in range(config.num_slices):
            window = list(range(start, start + config.in_channels))
            if config.slice_axis == 1:
                pieces.append(volume[:, window])
            elif config.slice_axis == 2:
                pieces.append(volume[:, :, window].transpose(1, 2))
            else:
                pieces.append(volume[:, :, :, window].permute(0, 3, 1, 2))
        encoded = self.encoder_2d(torch.cat(pieces, dim=0))  # (S * B, D, 1, 1)
        embeddings = torch.stack(encoded.split(batch, dim=0), dim=1).flatten(2)  # (B, S, D)
        attention = None
        if config.aggregation == "mean":
            pooled = embeddings.mean(dim=1)
        elif config.aggregation == "max":
            pooled = embeddings.max(dim=1).values
        else:
            pooled, attention = self.pooled_attention(embeddings)
        return self.regressor(self.attn_post(pooled)), attention


def randomise(module: nn.Module, seed: int) -> None:
    """Random values for the parameters default init leaves trivial (norms, BN statistics, biases)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
            elif (
                name.endswith(("running_mean", "bias"))
                or ".ln" in name
                or "bn" in name
                or "downsample.1" in name
            ):
                tensor.copy_(
                    torch.randn(tensor.shape, generator=g) * 0.3 + (1.0 if name.endswith("weight") else 0.0)
                )


NUMERIC_CASES = {
    "encoder1-mean-pe-sagittal": dict(encoder="encoder1", aggregation="mean"),
    "encoder1-attention-pe-coronal": dict(encoder="encoder1", aggregation="attention", slice_axis=2),
    "encoder1-attention-nope-axial-2heads": dict(
        encoder="encoder1",
        aggregation="attention",
        slice_axis=3,
        use_position_encoding=False,
        num_attention_heads=2,
    ),
    "encoder1-max-pe-coronal-3adjacent": dict(
        encoder="encoder1", aggregation="max", slice_axis=2, in_channels=3
    ),
    "encoder1-mean-nope-sagittal": dict(encoder="encoder1", aggregation="mean", use_position_encoding=False),
    "resnet18-mean-pe-sagittal": dict(encoder="resnet18", aggregation="mean"),
    "resnet18-attention-nope-axial": dict(
        encoder="resnet18", aggregation="attention", slice_axis=3, use_position_encoding=False
    ),
    "resnet18-mean-pe-sagittal-3adjacent": dict(encoder="resnet18", aggregation="mean", in_channels=3),
}


@pytest.mark.parametrize("fields", NUMERIC_CASES.values(), ids=NUMERIC_CASES.keys())
def test_converted_official_checkpoint_reproduces_the_official_forward(fields):
    config = tiny(**fields)
    torch.manual_seed(0)
    official = OfficialSliceNet(config)
    randomise(official, seed=1)
    official.eval()
    # The official trainer wraps the network as `net` and saves {"model": state_dict, ...}.
    checkpoint = {"model": {f"net.{k}": v for k, v in official.state_dict().items()}, "epoch": 3}
    model = SliceCNNForVolumePrediction(config)
    model.load_state_dict(convert_original_state_dict(checkpoint, config), strict=True)
    model.eval()
    pixel_values = volumes(config)
    with torch.no_grad():
        expected, attention = official(pixel_values[:, None])
        out = model(pixel_values=pixel_values)
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
    if config.aggregation == "attention":
        heads = config.num_attention_heads
        per_head = attention.view(heads, pixel_values.shape[0], config.num_slices)
        torch.testing.assert_close(out.slice_weights, per_head.mean(0), atol=1e-6, rtol=1e-5)
    else:
        assert out.slice_weights is None


# --- parameter counts of the official implementation (91x109x91, attention dim 32, one head) -----------


@pytest.mark.parametrize(
    ("encoder", "position", "expected"),
    [
        ("encoder1", True, 1_016_097),
        ("resnet18", True, 11_203_841),
        ("encoder1", False, 998_625),
        ("resnet18", False, 11_195_105),
    ],
)
def test_sagittal_mean_parameter_counts_equal_the_official_ones(encoder, position, expected):
    fields = dict(encoder=encoder, use_position_encoding=position, aggregation="mean", slice_axis=1)
    assert parameter_count(**fields) == expected
    with torch.device("meta"):
        official = OfficialSliceNet(SliceCNNConfig(**fields))
    assert sum(p.numel() for p in official.parameters()) == expected


@pytest.mark.parametrize("encoder", ["encoder1", "resnet18"])
def test_other_slice_axes_differ_only_by_the_position_encoding_size(encoder):
    features = 64 if encoder == "encoder1" else 32
    without = parameter_count(encoder=encoder, use_position_encoding=False)
    for axis, slices in ((1, 91), (2, 109), (3, 91)):
        assert parameter_count(encoder=encoder, use_position_encoding=False, slice_axis=axis) == without
        # position tensor (F x S) plus the LayerNorm's weight and bias over the same block
        assert parameter_count(encoder=encoder, slice_axis=axis) == without + 3 * features * slices


def test_attention_aggregation_adds_the_official_pooled_attention_parameters():
    dim = 32  # query S (1 x D), fc_k, fc_v, fc_o (D x D + D each), ln0 (2 D)
    official = dim + 3 * (dim * dim + dim) + 2 * dim
    for encoder in ("encoder1", "resnet18"):
        assert (
            parameter_count(encoder=encoder, aggregation="attention") - parameter_count(encoder=encoder)
            == official
        )
        assert parameter_count(encoder=encoder, aggregation="max") == parameter_count(encoder=encoder)


def test_adjacent_slices_shrink_the_position_encoding():
    base = parameter_count(encoder="resnet18", in_channels=3)
    assert base == parameter_count(encoder="resnet18") - 3 * 32 * 2  # 89 slice inputs instead of 91


def test_resnet_presets_build_on_meta():
    for encoder, width in (("resnet34", 512), ("resnet50", 2048)):
        with torch.device("meta"):
            model = SliceCNNModel(SliceCNNConfig(encoder=encoder))
        assert model.slice_encoder.projection.in_features == width


# --- slicing, chunking, permutation ----------------------------------------------------------------------


@pytest.mark.parametrize("axis", [1, 2, 3])
def test_slices_follow_the_official_layout(axis):
    config = tiny(slice_axis=axis, in_channels=2)
    model = build(config, SliceCNNModel)
    pixel_values = volumes(config)
    cut = model.slices(pixel_values)
    index = [slice(None)] * 4
    for b in range(2):
        for s in (0, config.num_slices - 1):
            for c in range(2):
                index[axis] = s + c
                index[0] = b
                torch.testing.assert_close(cut[b * config.num_slices + s, c], pixel_values[tuple(index)])
    assert cut.shape[-2:] == config.slice_size


@pytest.mark.parametrize("encoder", ["encoder1", "resnet18"])
def test_slice_chunks_give_the_same_outputs(encoder):
    config = tiny(encoder=encoder, aggregation="attention")
    model = build(config)
    pixel_values = volumes(config)
    with torch.no_grad():
        whole = model(pixel_values=pixel_values)
        model.config.slice_chunk_size = 5  # 2 x 16 slices in 7 chunks, the last one short
        chunked = model(pixel_values=pixel_values)
    torch.testing.assert_close(chunked.logits, whole.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.slice_weights, whole.slice_weights, atol=1e-6, rtol=1e-5)


def test_a_volume_smaller_than_one_slice_chunk_is_a_clear_error():
    with pytest.raises(ValueError, match=r"slice_chunk_size \(17\).*16 sagittal slices.*at most 16"):
        tiny(slice_chunk_size=17)
    model = build(tiny(slice_chunk_size=16))
    model.config.slice_chunk_size = 40
    with pytest.raises(ValueError, match="smaller than one slice chunk"):
        model(pixel_values=volumes(model.config))


def test_gradient_checkpointing_with_chunks_gives_the_same_loss():
    config = tiny(slice_chunk_size=8, encoder_dropout_prob=0.0)
    model = build(config).train()
    inputs, labels = volumes(config), torch.tensor([60.0, 70.0])
    plain = model(pixel_values=inputs, labels=labels).loss
    model.activation_checkpointing_enable()
    checkpointed = model(pixel_values=inputs, labels=labels).loss
    checkpointed.backward()
    torch.testing.assert_close(checkpointed, plain, atol=1e-5, rtol=1e-5)
    assert model.slice_cnn.slice_encoder.blocks[0].conv.weight.grad is not None


def test_without_position_encoding_mean_aggregation_ignores_slice_order():
    config = tiny(use_position_encoding=False, aggregation="mean")
    model = build(config, SliceCNNModel)
    pixel_values = volumes(config)
    order = torch.randperm(config.volume_shape[0], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = model(pixel_values=pixel_values).pooler_output
        shuffled = model(pixel_values=pixel_values[:, order]).pooler_output
    torch.testing.assert_close(shuffled, plain, atol=1e-5, rtol=1e-5)


def test_position_encoding_makes_the_output_depend_on_slice_order():
    config = tiny(aggregation="mean")
    model = build(config, SliceCNNModel)
    with (
        torch.no_grad()
    ):  # a trained LayerNorm affine; at init (1, 0) the order acts only through the LN scale
        model.position_encoding.layernorm.weight.normal_(1.0, 0.5)
    pixel_values = volumes(config)
    with torch.no_grad():
        plain = model(pixel_values=pixel_values).pooler_output
        reversed_ = model(pixel_values=pixel_values.flip(1)).pooler_output
    assert (plain - reversed_).abs().max() > 1e-2 * plain.abs().max()


# --- outputs, heads, loss, initialisation ----------------------------------------------------------------


def test_attention_returns_slice_weights_that_sum_to_one():
    config = tiny(aggregation="attention", num_attention_heads=2, slice_axis=2)
    out = build(config)(pixel_values=volumes(config), output_attentions=True, output_hidden_states=True)
    assert out.slice_weights.shape == (2, config.num_slices) == (2, 20)
    torch.testing.assert_close(out.slice_weights.sum(-1), torch.ones(2))
    assert (out.slice_weights >= 0).all()
    assert out.attentions[0].shape == (2, 2, 1, 20)
    assert [tuple(h.shape) for h in out.hidden_states] == [(2, 20, 16), (2, 20, 16), (2, 20, 32)]


def test_base_model_outputs_and_tuple_form():
    config = tiny(encoder="resnet18", aggregation="max")
    model = build(config, SliceCNNModel)
    out = model(pixel_values=volumes(config))
    assert out.last_hidden_state.shape == (2, 16, 32)
    assert out.pooler_output.shape == (2, 32)
    assert out.slice_weights is None
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state.max(dim=1).values)
    as_tuple = model(pixel_values=volumes(config), return_dict=False)
    torch.testing.assert_close(as_tuple[1], out.pooler_output)


def test_regression_head_starts_at_the_mean_target_and_uses_mse():
    config = tiny(regression_target_mean=70.5)
    model = build(config, SliceCNNForVolumeRegression)
    assert model.head.output.bias.item() == pytest.approx(70.5)
    labels = torch.tensor([60.0, 75.0])
    out = model(pixel_values=volumes(config), labels=labels)
    assert out.logits.shape == (2, 1)
    torch.testing.assert_close(out.loss, ((out.logits[:, 0] - labels) ** 2).mean())
    again = model(pixel_values=volumes(config), labels=labels[:, None])
    torch.testing.assert_close(again.loss, out.loss)
    resnet = build(tiny(encoder="resnet18"))
    assert resnet.head.output.bias.item() == pytest.approx(62.68)


def test_classification_uses_bce_and_starts_at_bias_zero():
    config = tiny(task="classification")
    assert config.problem_type == "multi_label_classification"
    assert config.id2label == {0: "AD"}
    model = build(config, SliceCNNForVolumeClassification)
    assert model.head.output.bias.item() == 0.0
    labels = torch.tensor([0.0, 1.0])
    out = model(pixel_values=volumes(config), labels=labels)
    p = torch.sigmoid(out.logits[:, 0])
    reference = -(labels * torch.log(p) + (1 - labels) * torch.log(1 - p)).mean()
    torch.testing.assert_close(out.loss, reference)
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        model(pixel_values=volumes(config), labels=torch.tensor([0.0, 2.0]))


def test_task_specific_heads_check_the_task():
    with pytest.raises(ValueError, match="task='regression'"):
        SliceCNNForVolumeRegression(tiny(task="classification"))
    with pytest.raises(ValueError, match="task='classification'"):
        SliceCNNForVolumeClassification(tiny())


def test_official_initialisation():
    encoder1 = build(tiny(aggregation="attention"))
    assert encoder1.head.dense.weight.std().item() == pytest.approx(0.01, rel=0.2)  # official N(0, 0.01)
    assert encoder1.slice_cnn.pooler.key.bias.abs().max().item() == 0.0
    position = encoder1.slice_cnn.position_encoding.position_embeddings
    assert position.std().item() == pytest.approx(1 / math.sqrt(16), rel=0.25)  # kaiming fan_out, linear gain
    resnet = build(tiny(encoder="resnet18"))
    bn = resnet.slice_cnn.slice_encoder.resnet.layer1[0].bn2
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))  # torchvision: no zero-init of the last BN
    bound = 1 / math.sqrt(512)  # PyTorch's default Linear init
    assert resnet.slice_cnn.slice_encoder.projection.weight.abs().max().item() <= bound


def test_save_and_reload_gives_the_same_outputs(tmp_path):
    config = tiny(aggregation="attention")
    model = build(config)
    model.save_pretrained(tmp_path)
    again = SliceCNNForVolumePrediction.from_pretrained(tmp_path).eval()
    pixel_values = volumes(config)
    with torch.no_grad():
        torch.testing.assert_close(
            again(pixel_values=pixel_values).logits, model(pixel_values=pixel_values).logits
        )


def test_from_pretrained_backbones_offline_is_a_one_line_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached
    with pytest.raises(OSError, match="resnet18.tv_in1k.*HF_HUB_OFFLINE") as info:
        SliceCNNForVolumePrediction.from_pretrained_backbones(tiny(encoder="resnet18"))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="encoder1 has no ImageNet weights"):
        SliceCNNForVolumePrediction.from_pretrained_backbones(tiny())


# --- bad input ---------------------------------------------------------------------------------------------


def test_wrong_rank_and_shape_are_clear_errors():
    config = tiny()
    model = build(config)
    pixel_values = volumes(config)
    with pytest.raises(ValueError, match=r"must be 4-D \(batch, x, y, z\).*volume\[None\]"):
        model(pixel_values=pixel_values[0])
    with pytest.raises(ValueError, match=r"must be 4-D.*squeeze\(1\)"):
        model(pixel_values=pixel_values[:, None])
    with pytest.raises(ValueError, match=r"16x20x17 volumes.*16x20x16 \(config.volume_shape\)"):
        model(pixel_values=torch.nn.functional.pad(pixel_values, (0, 1)))


@pytest.mark.parametrize("labels", [torch.zeros(2, 2), torch.zeros(3), torch.zeros(2, 1, 1)])
def test_wrong_label_shape_is_a_clear_error(labels):
    config = tiny()
    with pytest.raises(ValueError, match=r"labels has shape .* per label"):
        build(config)(pixel_values=volumes(config), labels=labels)


def test_integer_volumes_are_cast():
    config = tiny()
    model = build(config)
    pixel_values = (volumes(config) * 10).round()
    with torch.no_grad():
        torch.testing.assert_close(
            model(pixel_values=pixel_values.long()).logits, model(pixel_values=pixel_values).logits
        )


# --- config ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(encoder="vgg16"), r"encoder must be one of \['encoder1', 'resnet18', 'resnet34', 'resnet50'\]"),
        (dict(aggregation="sum"), r"aggregation must be one of \['mean', 'max', 'attention'\]"),
        (dict(slice_axis=0), "slice_axis must be one of 1 \\(sagittal\\), 2 \\(coronal\\), 3 \\(axial\\)"),
        (dict(task="segmentation"), r"task must be one of \['regression', 'classification'\]"),
        (dict(volume_shape=[91, 109]), "volume_shape must be three positive integers"),
        (dict(hidden_size=30, num_attention_heads=4), "hidden_size .* divisible by num_attention_heads"),
        (dict(slice_chunk_size=0), "slice_chunk_size must be None"),
        (dict(encoder_dropout_prob=1.0), r"encoder_dropout_prob must be in \[0, 1\)"),
        (dict(in_channels=200), "in_channels .* at most"),
        (
            dict(problem_type="multi_label_classification"),
            "problem_type must be 'regression' for task='regression'",
        ),
        (dict(id2label={0: "age", 1: "sex"}), "num_labels must be 1"),
        (dict(encoder="encoder1", imagenet_normalize=True), "imagenet_normalize applies to ResNet"),
        (dict(encoder="encoder1", volume_shape=[16, 20, 16]), "encoder1 needs at least 2 positions"),
        (dict(encoder="encoder1", pretrained_backbone="resnet18.tv_in1k"), "pretrained_backbone"),
    ],
)
def test_bad_config_values_name_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        SliceCNNConfig(**fields)


def test_config_defaults_and_presets():
    config = SliceCNNConfig()
    assert config.volume_shape == [91, 109, 91]
    assert config.encoder_channels == [32, 64, 128, 256, 256]
    assert (config.encoder, config.slice_axis, config.aggregation, config.hidden_size) == (
        "resnet18",
        1,
        "mean",
        32,
    )
    assert config.problem_type == "regression" and config.id2label == {0: "age"}
    assert config.num_slices == 91 and config.slice_size == (109, 91)
    assert SliceCNNConfig(encoder="encoder1").encoder1_output_size == (3, 2)  # the official AvgPool kernel
    assert SliceCNNConfig(encoder="encoder1", slice_axis=2).encoder1_output_size == (2, 2)
    assert SliceCNNConfig(encoder="encoder1", slice_axis=3).encoder1_output_size == (2, 3)
    assert slice_cnn_config("slice-cnn-resnet18").pretrained_backbone == "resnet18.tv_in1k"
    assert slice_cnn_config("slice-cnn-encoder1").encoder == "encoder1"
    with pytest.raises(ValueError, match="unknown Slice-CNN preset"):
        slice_cnn_config("slice-cnn-huge")


def test_config_json_round_trip(tmp_path):
    config = tiny(
        task="classification", slice_axis=3, in_channels=3, slice_chunk_size=4, aggregation="attention"
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "slice_cnn" and saved["volume_shape"] == TINY_SHAPE
    again = SliceCNNConfig.from_pretrained(tmp_path)
    assert again.to_dict() == config.to_dict()
    assert again.id2label == {0: "AD"} and again.num_slices == 14


# --- conversion errors -------------------------------------------------------------------------------------


def official_state(**fields):
    config = tiny(**fields)
    torch.manual_seed(0)
    return config, OfficialSliceNet(config).state_dict()


def test_conversion_rejects_unknown_and_missing_keys():
    config, state = official_state(aggregation="attention")
    with pytest.raises(ValueError, match="aggregates with attention: set aggregation='attention'"):
        convert_original_state_dict(state, tiny(aggregation="mean"))
    with pytest.raises(ValueError, match="lacks .*regressor|lacks .*head.output"):
        convert_original_state_dict({k: v for k, v in state.items() if not k.startswith("regressor")}, config)
    with pytest.raises(ValueError, match=r"do not map \['mystery.weight'\]"):
        convert_original_state_dict({**state, "mystery.weight": torch.zeros(1)}, config)
    with pytest.raises(ValueError, match="has no position encoding: set use_position_encoding=False"):
        convert_original_state_dict(official_state(use_position_encoding=False)[1], config)


def test_conversion_checks_slice_axis_and_shapes():
    _, state = official_state(slice_axis=3)
    with pytest.raises(ValueError, match="runs along slice axis 3 .* slice_axis=3"):
        convert_original_state_dict(state, tiny(slice_axis=1))
    _, state = official_state(hidden_size=16)
    with pytest.raises(ValueError, match="shapes do not fit .*hidden_size"):
        convert_original_state_dict(state, tiny())


# --- the shared family checks (tests/model_tester.py), for both tasks ------------------------------------------


class _SliceCNNTester(FamilyTester):
    base_class = SliceCNNModel
    head_class = SliceCNNForVolumePrediction
    config_overrides: dict = {}

    # No multi-head self-attention layers (nothing to compare SDPA with); attention pooling is tested above.
    test_attentions_returned_and_sdpa_matches_eager = None
    # Volumes are not images: the NIfTI pipeline test below replaces `pipeline("image-classification")`.
    test_image_classification_pipeline_on_an_image_file = None

    def config_factory(self):
        return tiny(**self.config_overrides)

    @staticmethod
    def processor_factory(config):
        return SliceCNNImageProcessor(target_shape=list(config.volume_shape))

    def make_inputs(self, config, batch_size=None, seed=0):
        return {"pixel_values": volumes(config, batch=batch_size or self.batch_size, seed=seed)}

    def expected_num_hidden_states(self, config):
        # slice features, + after the position encoding, + after encoder1's 1x1 projection
        return 1 + int(config.use_position_encoding) + int(config.encoder == "encoder1")

    def bad_pixel_values(self, config, pixels):
        return [
            (pixels[0], "must be 4-D"),
            (pixels.unsqueeze(1), "must be 4-D"),
            (torch.nn.functional.pad(pixels, (0, 2)), "config.volume_shape"),
        ]

    def test_volume_pipeline_on_a_nifti_file(self, tmp_path):
        from hfmed.hub import save_for_hub
        from hfmed.pipelines import predict_volume

        config = self.config_factory()
        model = self.build()
        processor = self.processor_factory(config)
        folder = save_for_hub(model, processor, tmp_path / "hub")
        rng = np.random.default_rng(0)
        affine = np.diag([-2.0, 2.0, 2.0, 1.0])  # LAS: the processor flips x back to RAS
        path = tmp_path / "brain.nii.gz"
        nib.save(nib.Nifti1Image(rng.normal(size=config.volume_shape).astype(np.float32), affine), path)
        result = predict_volume(str(path), str(folder))
        with torch.no_grad():
            reference = model(**processor(str(path), return_tensors="pt"))
        name = config.id2label[0]
        if config.task == "regression":
            assert result["task"] == "regression"
            assert result["predictions"] == [{"label": name, "value": pytest.approx(reference.logits.item(), abs=1e-5)}]
        else:
            assert result["task"] == "classification"
            expected = torch.sigmoid(reference.logits).item()
            assert result["predictions"] == [{"label": name, "score": pytest.approx(expected, abs=1e-6)}]
        if config.aggregation == "attention":
            assert result["slice_weights"] == pytest.approx(reference.slice_weights[0].tolist(), abs=1e-6)
            assert sum(result["slice_weights"]) == pytest.approx(1.0, abs=1e-5)
        else:
            assert result["slice_weights"] is None
        assert result["slice_axis"] == config.slice_axis


class TestSliceCNNRegression(_SliceCNNTester):
    config_overrides = {"task": "regression", "aggregation": "attention"}

    def make_labels(self, config, batch_size=None, seed=1):
        g = torch.Generator().manual_seed(seed)
        return 60.0 + 10.0 * torch.randn(batch_size or self.batch_size, 1, generator=g)

    def reference_loss(self, logits, labels, config):
        return ((logits - labels) ** 2).mean()


class TestSliceCNNClassification(_SliceCNNTester):
    config_overrides = {"task": "classification", "aggregation": "mean"}

    def reference_loss(self, logits, labels, config):
        p = torch.sigmoid(logits)
        return -(labels * torch.log(p) + (1 - labels) * torch.log(1 - p)).mean()
