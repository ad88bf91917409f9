"""PyTorch Slice-CNN: position-encoded 2-D slice models for 3-D brain MRI.

Papers: Gupta et al., "Transferring Models Trained on Natural Images to 3D MRI via Position Encoded Slice
Models", arXiv 2303.01491 (ISBI 2023), and Gupta et al., "Improved Brain Age Estimation with Slice-based Set
Networks", arXiv 2102.04438 (ISBI 2021). Official code: github.com/umgupta/2d-slice-set-networks.

Architecture (as the official `MRI2DSlice` with `Encoder1_2D` / `ResNetEncoder`, `PositionEncodingUKBB`,
`MeanPool` / `MaxPool` / `PooledAttention`):

1. The z-scored volume `(batch, x, y, z)` is cut along `config.slice_axis`; with `in_channels = c`, the 2-D
   input number `i` stacks slices `i .. i + c - 1` as channels, so a volume gives `num_slices = n - c + 1`
   inputs. Every 2-D slice keeps the two other axes in their order (sagittal: (y, z), coronal: (x, z), axial:
   (x, y)), as the official code's transposes do.
2. All `batch * num_slices` slices go through one 2-D encoder as a single batch (in chunks of
   `config.slice_chunk_size` if set). encoder1: blocks of conv3x3 -> InstanceNorm -> MaxPool 2 -> ReLU, a 1x1
   conv to 64 + InstanceNorm + ReLU, and an average pool over the remaining map (the official AvgPool kernels
   [3, 2] / [2, 2] / [2, 3] are exactly the whole map for 91x109x91 volumes). ResNet: a timm ResNet (parameter
   names and counts equal torchvision's), the grey slice repeated to 3 channels, global average pool, Linear
   -> `hidden_size`.
3. Position encoding: a learned `(num_slices, features)` tensor added to the slice embeddings of each volume,
   then one LayerNorm over the whole `(num_slices, features)` block (at 64 features for encoder1, at
   `hidden_size` for ResNets). encoder1 then applies dropout (p=0.5 in the paper's runs) and a per-slice
   Linear 64 -> `hidden_size` (the official 1x1 conv).
4. Aggregation over slices: mean, max, or attention with one learned query (multi-head split of the
   `hidden_size` features, softmax over slices, LayerNorm, output Linear). Attention returns the slice
   weights.
5. Head: Linear(`hidden_size` -> 64), ReLU, Linear(64 -> 1). Regression: MSE, output bias initialised to
   `config.regression_target_mean`; classification: binary cross-entropy on the logit.

Our choices where the official code is silent or hard-coded (see `SliceCNNConfig`): any volume shape (the
average pool covers the whole final map), fewer encoder1 blocks for small volumes, ResNets through timm (the
official resnet34 path declares 1024 features but torchvision's ResNet-34 has 512: we use the true 512),
`in_channels` other than 1 or 3 for ResNets, the optional ImageNet normalisation, slice chunking, and the
per-volume position encoding with `in_channels > 1` (the official code splits its slice batch by a hard-coded
91 / 109 there, which breaks unless `in_channels == 1`).
"""

import contextlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

from .configuration_slice_cnn import SLICE_AXIS_NAMES, SliceCNNConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SliceCNNModelOutput(BaseModelOutputWithPooling):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_slices, hidden_size)`):
        Slice embeddings that the aggregation reads (after position encoding and LayerNorm, and for encoder1
        after the per-slice projection to `hidden_size`).
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        The aggregated volume embedding (mean, max, or attention output).
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        Per-slice features at each stage, each `(batch_size, num_slices, width)`: the 2-D encoder output, then
        (with position encoding) the position-encoded, LayerNormed block, then (encoder1) the projection to
        `hidden_size`. Returned with `output_hidden_states=True`.
    attentions (`tuple(torch.FloatTensor)`, *optional*):
        With attention aggregation and `output_attentions=True`: one tensor `(batch_size, num_heads, 1,
        num_slices)`, the query's softmax weights over slices per head.
    slice_weights (`torch.FloatTensor` of shape `(batch_size, num_slices)`, *optional*):
        Attention aggregation only: the weight of each slice (mean over heads), summing to 1 per volume; slice
        `i` starts at index `i` along `config.slice_axis`. `None` for mean / max aggregation.
    """

    slice_weights: torch.FloatTensor | None = None


@dataclass
class SliceCNNOutput(ImageClassifierOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*):
        MSE (regression) or binary cross-entropy with logits (classification), averaged over the batch.
    logits (`torch.FloatTensor` of shape `(batch_size, 1)`):
        The predicted age (regression) or the logit of the positive class, e.g. Alzheimer's disease
        (classification; sigmoid for the probability).
    hidden_states, attentions, slice_weights: as in `SliceCNNModelOutput`.
    """

    slice_weights: torch.FloatTensor | None = None


# Copied from hfmed.models.scopeformer.modeling_scopeformer._skip_init_on_meta
def _skip_init_on_meta():
    """No weight init while the model is built on the meta device, as `from_pretrained` builds it.

    Meta tensors hold no values, so the init functions that timm and torch run in their constructors only cost
    time (timm's `normal_` on a meta tensor goes through torch's Python reference). Weights a checkpoint lacks
    are initialised after loading by `_init_weights`, as before. Built on a real device (a new model), every
    init runs unchanged.
    """
    return init.no_init_weights() if torch.get_default_device().type == "meta" else contextlib.nullcontext()


class SliceCNNConvBlock(nn.Module):
    """One encoder1 block: conv3x3 -> InstanceNorm (no affine) -> MaxPool 2 -> ReLU (official
    `encoder1_blk`)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.InstanceNorm2d(out_channels)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.activation = nn.ReLU()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pool(self.norm(self.conv(hidden_states))))


class SliceCNNConvEncoder(GradientCheckpointingLayer):
    """encoder1: conv blocks, then a 1x1 conv + InstanceNorm + ReLU and an average over the remaining map.

    Maps `(num_inputs, in_channels, height, width)` slices to `(num_inputs, encoder1_feature_size)`.
    """

    def __init__(self, config: SliceCNNConfig):
        super().__init__()
        widths = [config.in_channels, *config.encoder_channels]
        self.blocks = nn.ModuleList(
            SliceCNNConvBlock(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.projection = nn.Conv2d(widths[-1], config.encoder1_feature_size, kernel_size=1)
        self.projection_norm = nn.InstanceNorm2d(config.encoder1_feature_size)
        self.activation = nn.ReLU()

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        hidden_states = slices
        for block in self.blocks:
            hidden_states = block(hidden_states)
        hidden_states = self.activation(self.projection_norm(self.projection(hidden_states)))
        # The official AvgPool2d kernel equals the whole final map (3x2, 2x2, 2x3 for 91x109x91 volumes).
        return hidden_states.mean(dim=(2, 3))


class SliceCNNResNetEncoder(GradientCheckpointingLayer):
    """A timm ResNet (torchvision layout, no classifier) + Linear to `hidden_size`, per slice.

    One grey channel is repeated to 3 (official); optional ImageNet normalisation (off by default, as
    official).
    """

    def __init__(self, config: SliceCNNConfig):
        super().__init__()
        self.in_channels = config.in_channels
        self.imagenet_normalize = config.imagenet_normalize
        # pretrained=False always: ImageNet weights come only through `from_pretrained_backbones`.
        self.resnet = timm.create_model(
            config.encoder, pretrained=False, num_classes=0, in_chans=_resnet_in_chans(config)
        )
        self.projection = nn.Linear(self.resnet.num_features, config.hidden_size)

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            slices = slices.expand(-1, 3, -1, -1)
        if self.imagenet_normalize:
            mean = torch.tensor(IMAGENET_MEAN, dtype=slices.dtype, device=slices.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, dtype=slices.dtype, device=slices.device).view(1, 3, 1, 1)
            slices = (slices - mean) / std
        return self.projection(self.resnet(slices))


def _resnet_in_chans(config: SliceCNNConfig) -> int:
    return 3 if config.in_channels in (1, 3) else config.in_channels


class SliceCNNPositionEncoding(nn.Module):
    """Learned per-slice vectors added to the slice embeddings, then one LayerNorm over the whole
    `(num_slices, features)` block of each volume (official `PositionEncodingUKBB`)."""

    def __init__(self, config: SliceCNNConfig):
        super().__init__()
        shape = (config.num_slices, config.position_encoding_size)
        self.position_embeddings = nn.Parameter(torch.zeros(1, *shape))
        self.layernorm = nn.LayerNorm(shape, eps=config.layer_norm_eps)

    def forward(self, slice_embeddings: torch.Tensor) -> torch.Tensor:
        return self.layernorm(slice_embeddings + self.position_embeddings)


class SliceCNNPointwiseLinear(nn.Linear):
    """A per-slice Linear that is a 1x1 Conv2d in the official code, so it gets the conv init."""


class SliceCNNOutputLinear(nn.Linear):
    """The head's output layer: PyTorch's default weight init, bias = mean target (regression) or 0."""


class SliceCNNSliceProjection(nn.Module):
    """encoder1 only: dropout and a per-slice Linear to `hidden_size` (the official 1x1 conv after the
    position encoding)."""

    def __init__(self, config: SliceCNNConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.encoder_dropout_prob)
        self.dense = SliceCNNPointwiseLinear(config.encoder1_feature_size, config.hidden_size)

    def forward(self, slice_embeddings: torch.Tensor) -> torch.Tensor:
        return self.dense(self.dropout(slice_embeddings))


class SliceCNNAttentionPooling(nn.Module):
    """One learned query attends over the slices (official `PooledAttention`, with `ln=True`).

    The query is used as is (no query projection); keys and values are Linear maps of the slice embeddings;
    the `hidden_size` features are split into `num_attention_heads` heads; the heads' outputs are
    concatenated, LayerNormed and mapped by an output Linear.
    """

    def __init__(self, config: SliceCNNConfig):
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = width // self.num_heads
        self.query = nn.Parameter(torch.zeros(1, width))
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.layernorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.output = nn.Linear(width, width)

    def forward(self, slice_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, num_slices, width = slice_embeddings.shape
        heads, head_dim = self.num_heads, self.head_dim
        keys = self.key(slice_embeddings).view(batch, num_slices, heads, head_dim)
        values = self.value(slice_embeddings).view(batch, num_slices, heads, head_dim)
        query = self.query.view(heads, head_dim)
        scores = torch.einsum("hd,bshd->bhs", query, keys) / math.sqrt(head_dim)
        weights = scores.softmax(dim=-1)  # (batch, heads, num_slices)
        pooled = torch.einsum("bhs,bshd->bhd", weights, values).reshape(batch, width)
        return self.output(self.layernorm(pooled)), weights


class SliceCNNPredictionHead(nn.Module):
    """Linear(hidden_size -> head_hidden_size), ReLU, Linear(head_hidden_size -> 1) (official `attn_post`,
    `regressor`)."""

    def __init__(self, config: SliceCNNConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.head_hidden_size)
        self.activation = nn.ReLU()
        self.output = SliceCNNOutputLinear(config.head_hidden_size, config.num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.output(self.activation(self.dense(pooled)))


def _torch_default_linear_init(module: nn.Linear) -> None:
    """PyTorch's own `nn.Linear` init (what the official code keeps for ResNet models and the last layer)."""
    init.kaiming_uniform_(module.weight, a=math.sqrt(5))
    if module.bias is not None:
        bound = 1.0 / math.sqrt(module.weight.shape[1]) if module.weight.shape[1] > 0 else 0.0
        init.uniform_(module.bias, -bound, bound)


class SliceCNNPreTrainedModel(PreTrainedModel):
    config_class = SliceCNNConfig
    config: SliceCNNConfig
    base_model_prefix = "slice_cnn"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["SliceCNNConvEncoder", "SliceCNNResNetEncoder"]
    # The loss is a per-batch mean; Trainer must not rescale it by `num_items_in_batch`.
    accepts_loss_kwargs = False

    # Copied from hfmed.models.scopeformer.modeling_scopeformer.ScopeformerPreTrainedModel._base_model_names
    def _base_model_names(self, *names: str) -> set[str]:
        # Parameter names of the base model, as seen from this model (the head holds the base model).
        prefix = "" if self.base_model is self else f"{self.base_model_prefix}."
        return {prefix + name for name in names}

    def no_weight_decay(self) -> set[str]:
        """Parameters without weight decay besides the 0-/1-D ones (timm's convention; read by hfmed's
        training policy): the slice position encoding (its embeddings and its LayerNorm over all slices,
        whose weight and bias are 2-D)."""
        return self._base_model_names("position_encoding.position_embeddings", "position_encoding.layernorm")

    def _init_weights(self, module):
        # The official init: encoder1 models use He-normal convs and N(0, 0.01) linears ("custom"); ResNet
        # models keep PyTorch's defaults (torchvision's He-normal convs, BatchNorm 1/0, PyTorch's linear
        # init); in both, the output bias is the mean target (regression) or 0 (classification). Custom inits
        # sit on the leaf layers (their types say which): transformers skips `_init_weights` for container
        # modules without parameters of their own in custom code.
        config = self.config
        if isinstance(module, (nn.Conv2d, SliceCNNPointwiseLinear)):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, SliceCNNOutputLinear):
            _torch_default_linear_init(module)
            target = config.regression_target_mean if config.task == "regression" else 0.0
            init.constant_(module.bias, float(target))
        elif isinstance(module, nn.Linear):
            if config.encoder == "encoder1":
                init.normal_(module.weight, mean=0.0, std=config.initializer_range)
                if module.bias is not None:
                    init.zeros_(module.bias)
            else:
                _torch_default_linear_init(module)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            super()._init_weights(module)
        elif isinstance(module, SliceCNNPositionEncoding):
            # official: kaiming_normal_(fan_out, linear) of a (1, F, S, 1, 1) tensor, i.e. std 1 / sqrt(S)
            init.normal_(module.position_embeddings, mean=0.0, std=1.0 / math.sqrt(config.num_slices))
        elif isinstance(module, SliceCNNAttentionPooling):
            init.xavier_uniform_(module.query)

    def _check_pixel_values(self, pixel_values: torch.Tensor):
        config = self.config
        shape = tuple(pixel_values.shape)
        if pixel_values.ndim == 5 and shape[1] == 1:
            raise ValueError(
                f"pixel_values must be 4-D (batch, x, y, z), got shape {shape}: drop the channel axis of the "
                "official (batch, 1, x, y, z) layout with pixel_values.squeeze(1)"
            )
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must be 4-D (batch, x, y, z), got shape {shape}; add a batch dimension "
                "(volume[None]) or use SliceCNNImageProcessor"
            )
        if list(shape[1:]) != list(config.volume_shape):
            raise ValueError(
                f"pixel_values holds {shape[1]}x{shape[2]}x{shape[3]} volumes but the model expects "
                f"{'x'.join(map(str, config.volume_shape))} (config.volume_shape); resample and crop/pad "
                "with SliceCNNImageProcessor (target_shape) or build the model for that shape"
            )
        chunk = config.slice_chunk_size
        if chunk is not None and chunk > config.num_slices:
            raise ValueError(
                f"slice_chunk_size ({chunk}) is larger than the volume's {config.num_slices} "
                f"{SLICE_AXIS_NAMES[config.slice_axis]} slices: the volume is smaller than one slice chunk; "
                f"set config.slice_chunk_size to at most {config.num_slices}, or None"
            )

    @classmethod
    def from_pretrained_backbones(cls, config: SliceCNNConfig):
        """A new, randomly initialised model whose ResNet carries ImageNet weights (the paper's starting
        point).

        The weights are timm's `config.pretrained_backbone`, by default `"<encoder>.tv_in1k"`: torchvision's
        original ImageNet weights, which the official code loads. Needs the Hugging Face Hub (or its cache).
        """
        if config.encoder == "encoder1":
            raise ValueError(
                "encoder1 has no ImageNet weights (the official code trains it from scratch): build the "
                f"model with {cls.__name__}(config), or pick encoder='resnet18' / 'resnet34' / 'resnet50'"
            )
        name = config.pretrained_backbone or f"{config.encoder}.tv_in1k"
        if name.split(".", 1)[0] != config.encoder:
            raise ValueError(
                f"pretrained_backbone '{name}' is not a {config.encoder}: name weights of that "
                f"architecture, e.g. '{config.encoder}.tv_in1k'"
            )
        model = cls(config)
        try:
            source = timm.create_model(
                name, pretrained=True, num_classes=0, in_chans=_resnet_in_chans(config)
            )
        except Exception as err:  # timm raises several types (hub, HTTP, file)
            detail = " ".join(f"{type(err).__name__}: {err}".split())
            if len(detail) > 240:
                detail = detail[:237] + "..."
            raise OSError(
                f"could not load the ImageNet weights '{name}' for the slice encoder from the Hugging Face "
                f"Hub ({detail}); go online once (unset HF_HUB_OFFLINE) to cache them, or train from "
                f"scratch with {cls.__name__}(config)"
            ) from None
        model.base_model.slice_encoder.resnet.load_state_dict(source.state_dict())
        return model


class SliceCNNModel(SliceCNNPreTrainedModel):
    """2-D encoder on every slice, optional position encoding, aggregation over slices (no head)."""

    def __init__(self, config: SliceCNNConfig):
        super().__init__(config)
        self.config = config
        with _skip_init_on_meta():
            if config.encoder == "encoder1":
                self.slice_encoder = SliceCNNConvEncoder(config)
            else:
                self.slice_encoder = SliceCNNResNetEncoder(config)
            self.position_encoding = SliceCNNPositionEncoding(config) if config.use_position_encoding else None
            self.slice_projection = SliceCNNSliceProjection(config) if config.encoder == "encoder1" else None
            self.pooler = SliceCNNAttentionPooling(config) if config.aggregation == "attention" else None
        self.gradient_checkpointing = False
        self.post_init()

    def slices(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Cut `(batch, x, y, z)` volumes into the 2-D encoder's batch
        `(batch * num_slices, in_channels, h, w)`, volume-major (all slices of volume 0, then volume 1, ...).
        """
        config = self.config
        batch = pixel_values.shape[0]
        stack = pixel_values.movedim(config.slice_axis, 1)  # (batch, n, h, w): h, w keep the (x, y, z) order
        channels = config.in_channels
        if channels == 1:
            windows = stack.unsqueeze(2)
        else:
            windows = stack.unfold(1, channels, 1).permute(0, 1, 4, 2, 3)  # (batch, n - c + 1, c, h, w)
        height, width = windows.shape[-2:]
        return windows.reshape(batch * config.num_slices, channels, height, width)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SliceCNNModelOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, x, y, z)`):
            Z-scored volumes in RAS voxel order with shape `config.volume_shape`, e.g. from
            `SliceCNNImageProcessor`.
        output_attentions (`bool`, *optional*):
            With attention aggregation, also return the per-head slice weights as `attentions`.
        """
        config = self.config
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else config.return_dict
        self._check_pixel_values(pixel_values)
        if not pixel_values.is_floating_point() or pixel_values.dtype != self.dtype:
            pixel_values = pixel_values.to(self.dtype)

        batch = pixel_values.shape[0]
        slices = self.slices(pixel_values)
        chunk = config.slice_chunk_size or slices.shape[0]
        features = torch.cat([self.slice_encoder(part) for part in slices.split(chunk)], dim=0)
        hidden_states = features.view(batch, config.num_slices, -1)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        if self.position_encoding is not None:
            hidden_states = self.position_encoding(hidden_states)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        if self.slice_projection is not None:
            hidden_states = self.slice_projection(hidden_states)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)

        weights = None
        if config.aggregation == "mean":
            pooled = hidden_states.mean(dim=1)
        elif config.aggregation == "max":
            pooled = hidden_states.max(dim=1).values
        else:
            pooled, weights = self.pooler(hidden_states)
        slice_weights = weights.mean(dim=1) if weights is not None else None
        attentions = (weights.unsqueeze(2),) if output_attentions and weights is not None else None

        if not return_dict:
            return tuple(
                v
                for v in (hidden_states, pooled, all_hidden_states, attentions, slice_weights)
                if v is not None
            )
        return SliceCNNModelOutput(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            hidden_states=all_hidden_states,
            attentions=attentions,
            slice_weights=slice_weights,
        )


class SliceCNNForVolumePrediction(SliceCNNPreTrainedModel):
    """Slice-CNN with its one-output head; `config.task` picks regression (age) or binary classification."""

    def __init__(self, config: SliceCNNConfig):
        super().__init__(config)
        self.slice_cnn = SliceCNNModel(config)
        with _skip_init_on_meta():
            self.head = SliceCNNPredictionHead(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SliceCNNOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, x, y, z)`):
            Z-scored volumes with shape `config.volume_shape` (see `SliceCNNModel.forward`).
        labels (`torch.Tensor` of shape `(batch_size,)` or `(batch_size, 1)`, *optional*):
            Regression: the target (age in years); the loss is the mean squared error (official).
            Classification: 0 / 1 (e.g. control / Alzheimer's disease); the loss is binary cross-entropy with
            logits (official).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.slice_cnn(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.head(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels)
        if not return_dict:
            rest = tuple(
                v for v in (outputs.hidden_states, outputs.attentions, outputs.slice_weights) if v is not None
            )
            return ((loss, logits) if loss is not None else (logits,)) + rest
        return SliceCNNOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            slice_weights=outputs.slice_weights,
        )

    def loss_function(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """MSE (regression) or BCE with logits (classification), batch mean."""
        config = self.config
        given = tuple(labels.shape)
        if labels.ndim == 1:
            labels = labels.unsqueeze(1)
        if labels.shape != logits.shape:
            raise ValueError(
                f"labels has shape {given} but logits have {tuple(logits.shape)}: pass one target per "
                f"volume, shape (batch,) or (batch, 1), i.e. one value per label ({list(config.label2id)})"
            )
        labels = labels.to(logits.dtype)
        if config.task == "regression":
            return F.mse_loss(logits, labels)
        if bool(((labels < 0) | (labels > 1)).any()):
            raise ValueError(
                "labels must be 0 or 1 (soft targets in [0, 1]) for task='classification'; map diagnoses "
                "first (e.g. CN -> 0, AD -> 1)"
            )
        return F.binary_cross_entropy_with_logits(logits, labels)


class SliceCNNForVolumeRegression(SliceCNNForVolumePrediction):
    """`SliceCNNForVolumePrediction` that insists on `config.task == "regression"` (brain age)."""

    def __init__(self, config: SliceCNNConfig):
        if config.task != "regression":
            raise ValueError(
                f"SliceCNNForVolumeRegression needs config.task='regression', got {config.task!r}; use "
                "SliceCNNForVolumeClassification or SliceCNNForVolumePrediction"
            )
        super().__init__(config)


class SliceCNNForVolumeClassification(SliceCNNForVolumePrediction):
    """`SliceCNNForVolumePrediction` that insists on `config.task == "classification"` (e.g. AD vs
    control)."""

    def __init__(self, config: SliceCNNConfig):
        if config.task != "classification":
            raise ValueError(
                f"SliceCNNForVolumeClassification needs config.task='classification', got {config.task!r}; "
                "use SliceCNNForVolumeRegression or SliceCNNForVolumePrediction"
            )
        super().__init__(config)


# --- checkpoints of the official code ----------------------------------------------------------------------

_OFFICIAL_RENAMES = (  # official prefix -> ours, in `SliceCNNForVolumePrediction`
    ("encoder_2d.post_proc_conv.0.", "slice_cnn.slice_encoder.projection."),
    ("encoder_2d.post_proc.0.", "slice_cnn.slice_encoder.projection."),
    ("encoder_2d.post_position_encoding.1.", "slice_cnn.slice_projection.dense."),
    ("encoder_2d.position_encoder.ln.", "slice_cnn.position_encoding.layernorm."),
    ("pooled_attention.fc_k.", "slice_cnn.pooler.key."),
    ("pooled_attention.fc_v.", "slice_cnn.pooler.value."),
    ("pooled_attention.ln0.", "slice_cnn.pooler.layernorm."),
    ("pooled_attention.fc_o.", "slice_cnn.pooler.output."),
    ("attn_post.", "head.dense."),
    ("regressor.1.", "head.output."),
)
_OFFICIAL_PARAMETERS = {
    "encoder_2d.position_encoder.position_encoding": "slice_cnn.position_encoding.position_embeddings",
    "pooled_attention.S": "slice_cnn.pooler.query",
}
_ENCODER1_BLOCK = re.compile(r"encoder_2d\.encoder_2d\.(\d+)\.0\.(weight|bias)")


def _strip_wrappers(state_dict: Mapping) -> dict:
    """Unwraps the official trainer's `{"model": state_dict, "optimizer": ...}` file and its `net.` /
    `module.` prefixes (the official `Regression` / `BinaryClassifier` wrapper and DataParallel)."""
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    stripped = {}
    for key, value in state_dict.items():
        while key.startswith(("net.", "module.")):
            key = key.split(".", 1)[1]
        stripped[key] = value
    return stripped


def _slices_major(tensor: torch.Tensor, features: int) -> torch.Tensor:
    """Official (F, S) layout with unit axes -> our (S, F)."""
    return tensor.reshape(features, -1).transpose(0, 1).contiguous()


def convert_original_state_dict(state_dict: Mapping[str, torch.Tensor], config: SliceCNNConfig) -> dict:
    """Maps a checkpoint of the official code (github.com/umgupta/2d-slice-set-networks, `MRI2DSlice`) onto
    `SliceCNNForVolumePrediction` keys, ready for `load_state_dict(..., strict=True)`.

    Accepts the model's own state dict or the official trainer's file (`{"model": ..., "optimizer": ...}`);
    the `net.` (trainer wrapper) and `module.` (DataParallel) prefixes are stripped. Mapping (official ->
    ours):

    - `encoder_2d.encoder_2d.{i}.0.{weight,bias}` (encoder1 block conv) ->
      `slice_cnn.slice_encoder.blocks.{i}.conv.*`
    - `encoder_2d.post_proc_conv.0.*` (encoder1 1x1 conv) -> `slice_cnn.slice_encoder.projection.*`
    - `encoder_2d.encoder_2d.<torchvision ResNet name>` -> `slice_cnn.slice_encoder.resnet.<same name>`
      (timm's ResNet uses torchvision's names; the official model deletes `fc`)
    - `encoder_2d.post_proc.0.*` (ResNet Linear) -> `slice_cnn.slice_encoder.projection.*`
    - `encoder_2d.position_encoder.position_encoding`, shape `(1, F, S, 1, 1)` / `(1, F, 1, S, 1)` /
      `(1, F, 1, 1, S)` for slice axis 1 / 2 / 3 -> `slice_cnn.position_encoding.position_embeddings`
      `(1, S, F)` (transposed)
    - `encoder_2d.position_encoder.ln.{weight,bias}` `(F, S, 1, 1)` etc. ->
      `slice_cnn.position_encoding.layernorm.*` `(S, F)` (transposed; LayerNorm over the whole block is the
      same function in either layout)
    - `encoder_2d.post_position_encoding.1.*` (1x1 conv, weight `(D, F, 1, 1)`) ->
      `slice_cnn.slice_projection.dense.*` (weight `(D, F)`)
    - `pooled_attention.S` `(1, D)` -> `slice_cnn.pooler.query`; `pooled_attention.{fc_k,fc_v,ln0,fc_o}.*` ->
      `slice_cnn.pooler.{key,value,layernorm,output}.*`
    - `attn_post.*` -> `head.dense.*`; `regressor.1.*` -> `head.output.*`

    Raises `ValueError` on keys that do not map, on keys the config needs that the checkpoint lacks, on shape
    mismatches and on a position encoding along another slice axis, each naming the config field to fix. The
    official ResNet-34 path declares 1024 features (torchvision's ResNet-34 has 512), so its checkpoints
    cannot exist and do not convert. BatchNorm `num_batches_tracked` counters, if absent, are filled with 0.

    Input orientation: the official code reads the NIfTI voxel array as stored (`get_fdata()`), without
    reorienting; feed volumes in the array order the checkpoint was trained on.
    """
    with torch.device("meta"):
        expected = {k: v.shape for k, v in SliceCNNForVolumePrediction(config).state_dict().items()}
    is_encoder1 = config.encoder == "encoder1"
    features = config.position_encoding_size
    converted, unknown = {}, []
    for key, value in _strip_wrappers(state_dict).items():
        target = None
        if key in _OFFICIAL_PARAMETERS:
            target = _OFFICIAL_PARAMETERS[key]
        elif key.startswith("encoder_2d.encoder_2d."):
            match = _ENCODER1_BLOCK.fullmatch(key)
            if is_encoder1 and match:
                target = f"slice_cnn.slice_encoder.blocks.{match.group(1)}.conv.{match.group(2)}"
            elif not is_encoder1:
                target = "slice_cnn.slice_encoder.resnet." + key[len("encoder_2d.encoder_2d.") :]
        else:
            for official, ours in _OFFICIAL_RENAMES:
                if key.startswith(official):
                    target = ours + key[len(official) :]
                    break
        if target is None or target not in expected:
            unknown.append(key)
            continue
        if target == "slice_cnn.position_encoding.position_embeddings":
            _check_position_axis(value, config)
            value = _slices_major(value, features).unsqueeze(0) if value.ndim == 5 else value
        elif target.startswith("slice_cnn.position_encoding.layernorm.") and value.ndim == 4:
            value = _slices_major(value, features)
        elif target == "slice_cnn.slice_projection.dense.weight" and value.ndim == 4:
            value = value.flatten(1)
        converted[target] = value

    for key in expected:
        if key.endswith("num_batches_tracked") and key not in converted:
            converted[key] = torch.zeros((), dtype=torch.long)
    missing = [k for k in expected if k not in converted]
    if unknown or missing:
        raise ValueError(
            "the official checkpoint does not match this SliceCNNConfig: keys that do not map "
            f"{unknown[:6]}, keys the config needs but the checkpoint lacks {missing[:6]}; "
            f"{_config_hint(unknown, missing, config)}"
        )
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs config {tuple(expected[k])}"
        for k, v in converted.items()
        if tuple(v.shape) != tuple(expected[k])
    ]
    if wrong:
        raise ValueError(
            f"the official checkpoint's shapes do not fit this SliceCNNConfig: {wrong[:4]}; match encoder, "
            "volume_shape, slice_axis, in_channels, hidden_size and encoder_channels to the checkpoint's "
            "training settings"
        )
    return converted


def _check_position_axis(value: torch.Tensor, config: SliceCNNConfig) -> None:
    if value.ndim != 5:
        return  # the shape check reports it
    long_axes = [axis for axis, size in enumerate(value.shape[2:], start=1) if size != 1]
    if len(long_axes) == 1 and long_axes[0] != config.slice_axis:
        raise ValueError(
            f"the official position encoding {tuple(value.shape)} runs along slice axis {long_axes[0]} "
            f"({SLICE_AXIS_NAMES[long_axes[0]]}) but config.slice_axis is {config.slice_axis}; build the "
            f"config with slice_axis={long_axes[0]}"
        )


def _config_hint(unknown: list, missing: list, config: SliceCNNConfig) -> str:
    hints = []
    if any(k.startswith("pooled_attention.") for k in unknown):
        hints.append("the checkpoint aggregates with attention: set aggregation='attention'")
    if any(k.startswith("slice_cnn.pooler.") for k in missing):
        hints.append("the checkpoint has no attention pooling: set aggregation='mean' or 'max'")
    if any(k.startswith("encoder_2d.position_encoder.") for k in unknown):
        hints.append("the checkpoint has a position encoding: set use_position_encoding=True")
    if any(k.startswith("slice_cnn.position_encoding.") for k in missing):
        hints.append("the checkpoint has no position encoding: set use_position_encoding=False")
    if any(k.startswith("encoder_2d.post_proc.") for k in unknown) or any(
        k.startswith("encoder_2d.post_proc_conv.") for k in unknown
    ):
        hints.append(f"the checkpoint's 2-D encoder differs from encoder={config.encoder!r}")
    if not hints:
        hints.append(
            "match encoder, encoder_channels, use_position_encoding and aggregation to the checkpoint"
        )
    return "; ".join(hints)


__all__ = [
    "SliceCNNPreTrainedModel",
    "SliceCNNModel",
    "SliceCNNForVolumePrediction",
    "SliceCNNForVolumeRegression",
    "SliceCNNForVolumeClassification",
    "SliceCNNModelOutput",
    "SliceCNNOutput",
    "convert_original_state_dict",
]
