"""PyTorch Scopeformer / Efficient Scopeformer.

Papers: Barhoumi & Rasool, arXiv 2107.04575 (MIDL 2021) and Barhoumi, Bouaynaya & Rasool, arXiv
2302.00220 (2023). Section "method" of both: n CNNs extract feature maps, a feature projection reduces
their redundancy, and a ViT classifies the stacked features. No official code exists: the projection
form, token layouts, grid resizing, pooling and initialisation are our choices and are config fields
(see `ScopeformerConfig`).
"""

import contextlib
import math
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

from .configuration_scopeformer import ScopeformerConfig


@dataclass
class ScopeformerModelOutput(BaseModelOutputWithPooling):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, 1 + num_tokens, hidden_size)`):
        Encoder output after the final LayerNorm; position 0 is the CLS token.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        CLS token or mean of the other tokens, per `config.pooling`.
    feature_map (`torch.FloatTensor` of shape `(batch_size, projected_channels, grid, grid)`):
        The stacked, projected CNN features that the ViT reads.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        Embeddings plus each layer's output, each `(batch_size, 1 + num_tokens, hidden_size)`.
    attentions (`tuple(torch.FloatTensor)`, *optional*):
        Per layer, `(batch_size, num_heads, 1 + num_tokens, 1 + num_tokens)` attention weights.
    """

    feature_map: torch.FloatTensor | None = None


def _skip_init_on_meta():
    """No weight init while the model is built on the meta device, as `from_pretrained` builds it.

    Meta tensors hold no values, so the init functions that timm and torch run in their constructors only cost
    time (timm's `normal_` on a meta tensor goes through torch's Python reference). Weights a checkpoint lacks
    are initialised after loading by `_init_weights`, as before. Built on a real device (a new model), every
    init runs unchanged.
    """
    return init.no_init_weights() if torch.get_default_device().type == "meta" else contextlib.nullcontext()


def _create_cnn(name: str, index: int, in_chans: int, **kwargs) -> nn.Module:
    """A timm CNN that returns the map of stage `index` and holds no layers past it.

    timm's `feature_cls="getter"` prunes the stages after the tap (the default feature wrappers of some
    models, e.g. EfficientNet and Xception, keep them: dead parameters that break DDP and inflate counts).
    Models without `forward_intermediates` fall back to timm's default feature wrapper.
    """
    common = dict(features_only=True, out_indices=(index,), in_chans=in_chans, **kwargs)
    try:
        return timm.create_model(name, feature_cls="getter", **common)
    except (AttributeError, NotImplementedError, TypeError):
        return timm.create_model(name, **common)


class ScopeformerBackbones(nn.Module):
    """The n timm CNNs, each tapped at one feature stage and resized to the common grid."""

    def __init__(self, config: ScopeformerConfig):
        super().__init__()
        self.config = config
        self.extractors = nn.ModuleList()
        self.channels = []
        for name, index in zip(config.backbones, config.backbone_out_indices, strict=True):
            # pretrained=False always: from_pretrained builds on the meta device and then loads our own
            # safetensors; ImageNet weights come only through `from_pretrained_backbones`.
            try:
                cnn = _create_cnn(name, index, config.num_channels, pretrained=False)
            except (AssertionError, IndexError) as err:
                raise ValueError(
                    f"backbone_out_indices: cannot tap stage {index} of '{name}' ({err}); pick a smaller index"
                ) from err
            self.extractors.append(cnn)
            self.channels.append(cnn.feature_info.channels()[-1])

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        grid = self.config.feature_grid_size
        maps = []
        for cnn in self.extractors:
            feature = cnn(pixel_values)[-1]
            if self.config.feature_resize == "adaptive_avg":
                feature = F.adaptive_avg_pool2d(feature, grid)
            else:
                feature = F.interpolate(feature, size=(grid, grid), mode="bilinear", align_corners=False)
            maps.append(feature)
        return maps


class ScopeformerProjection(nn.Module):
    """Feature projection: 1x1 conv + BatchNorm + GELU, per backbone or jointly on the concatenation."""

    def __init__(self, config: ScopeformerConfig, in_channels: list[int]):
        super().__init__()
        self.per_backbone = config.projection_type == "per_backbone"
        widths = in_channels if self.per_backbone else [sum(in_channels)]
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(width, config.projection_dim, kernel_size=1, bias=False),
                nn.BatchNorm2d(config.projection_dim),
                nn.GELU(),
            )
            for width in widths
        )

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        if self.per_backbone:
            return torch.cat([block(m) for block, m in zip(self.blocks, maps, strict=True)], dim=1)
        return self.blocks[0](torch.cat(maps, dim=1))


class ScopeformerEmbeddings(nn.Module):
    """Projected feature map -> token sequence with a CLS token and learned position embeddings."""

    def __init__(self, config: ScopeformerConfig):
        super().__init__()
        self.token_layout = config.token_layout
        token_features = (
            config.projected_channels if config.token_layout == "spatial" else config.feature_grid_size**2
        )
        self.token_projection = nn.Linear(token_features, config.hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_tokens + 1, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        tokens = feature_map.flatten(2)  # (batch, channels, cells)
        if self.token_layout == "spatial":
            tokens = tokens.transpose(1, 2)
        tokens = self.token_projection(tokens)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.position_embeddings
        return self.dropout(tokens)


class ScopeformerSelfAttention(nn.Module):
    """Multi-head self-attention: fused SDPA, or an eager path when attention weights are requested."""

    def __init__(self, config: ScopeformerConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.output_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False):
        batch, length, width = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        dropout = self.attention_dropout if self.training else 0.0
        weights = None
        if output_attentions:
            scores = (query @ key.transpose(-2, -1)) / math.sqrt(self.head_dim)
            weights = scores.softmax(dim=-1)
            context = F.dropout(weights, p=dropout, training=self.training) @ value
        else:
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout)
        context = context.transpose(1, 2).reshape(batch, length, width)
        return self.output_dropout(self.output(context)), weights


class ScopeformerMLP(nn.Module):
    def __init__(self, config: ScopeformerConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(hidden_states))))


class ScopeformerLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block, as in ViT."""

    def __init__(self, config: ScopeformerConfig):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = ScopeformerSelfAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ScopeformerMLP(config)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False):
        attended, weights = self.attention(self.layernorm_before(hidden_states), output_attentions)
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.layernorm_after(hidden_states))
        return hidden_states, weights


class ScopeformerPreTrainedModel(PreTrainedModel):
    config_class = ScopeformerConfig
    config: ScopeformerConfig
    base_model_prefix = "scopeformer"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ScopeformerLayer"]
    _supports_sdpa = True
    # The loss is a per-batch mean; Trainer must not rescale it by `num_items_in_batch`.
    accepts_loss_kwargs = False

    def _base_model_names(self, *names: str) -> set[str]:
        # Parameter names of the base model, as seen from this model (the head holds the base model).
        prefix = "" if self.base_model is self else f"{self.base_model_prefix}."
        return {prefix + name for name in names}

    def no_weight_decay(self) -> set[str]:
        """Parameters without weight decay besides the 0-/1-D ones (timm's convention; read by hfmed's
        training policy): the class token and the position embeddings."""
        return self._base_model_names("embeddings.cls_token", "embeddings.position_embeddings")

    def frozen_parameters(self) -> set[str]:
        """Parameters that never train (read by hfmed's training policy): the CNNs when `freeze_backbones`."""
        return self._base_model_names("backbones") if self.config.freeze_backbones else set()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        # transformers puts every loaded tensor into a new Parameter with requires_grad=True: freeze again what
        # the model declares frozen, so Trainer or a user's own loop never hands the CNNs to an optimizer.
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        for name in model.frozen_parameters():
            model.get_submodule(name).requires_grad_(False)
        return loaded

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Conv2d):
            # CNN layers (timm backbones when trained from scratch, projections): He init for ReLU-family nets.
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)):
            super()._init_weights(module)
        elif isinstance(module, ScopeformerEmbeddings):
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)

    def _check_pixel_values(self, pixel_values: torch.Tensor):
        config = self.config
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must be 4-D (batch, channels, height, width), got shape {tuple(pixel_values.shape)}; "
                "add a batch dimension or use ScopeformerImageProcessor"
            )
        if pixel_values.shape[1] != config.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but config.num_channels is "
                f"{config.num_channels} (one per Hounsfield window); use ScopeformerImageProcessor"
            )
        if tuple(pixel_values.shape[-2:]) != (config.image_size, config.image_size):
            raise ValueError(
                f"pixel_values is {pixel_values.shape[-2]}x{pixel_values.shape[-1]} but the model expects "
                f"{config.image_size}x{config.image_size} (config.image_size); resize with ScopeformerImageProcessor"
            )


class ScopeformerModel(ScopeformerPreTrainedModel):
    def __init__(self, config: ScopeformerConfig):
        super().__init__(config)
        self.config = config
        with _skip_init_on_meta():
            self.backbones = ScopeformerBackbones(config)
            self.projection = ScopeformerProjection(config, self.backbones.channels)
            self.embeddings = ScopeformerEmbeddings(config)
            self.layers = nn.ModuleList(ScopeformerLayer(config) for _ in range(config.num_hidden_layers))
            self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        # The declared frozen parameters never train, in hfmed's loop (which reads the same declaration) or not.
        for name in self.frozen_parameters():
            self.get_submodule(name).requires_grad_(False)
        self.post_init()

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.config.freeze_backbones:
            # Frozen CNNs keep their ImageNet BatchNorm statistics (the head's `train` reaches here through its
            # children; `eval()` needs nothing more, so loading does not walk the CNNs twice).
            self.backbones.eval()
        return self

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ScopeformerModelOutput | tuple:
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._check_pixel_values(pixel_values)

        if self.config.freeze_backbones:
            with torch.no_grad():
                maps = self.backbones(pixel_values)
        else:
            maps = self.backbones(pixel_values)
        feature_map = self.projection(maps)
        hidden_states = self.embeddings(feature_map)

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)

        last_hidden_state = self.layernorm(hidden_states)
        if self.config.pooling == "cls":
            pooled = last_hidden_state[:, 0]
        else:
            pooled = last_hidden_state[:, 1:].mean(dim=1)

        if not return_dict:
            return tuple(
                v
                for v in (last_hidden_state, pooled, all_hidden_states, all_attentions, feature_map)
                if v is not None
            )
        return ScopeformerModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=pooled,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            feature_map=feature_map,
        )

    @classmethod
    def from_pretrained_backbones(cls, config: ScopeformerConfig, backbone_weights: list | None = None):
        """Build a randomly initialised model whose CNNs carry ImageNet (or given) weights: the start of training.

        `backbone_weights`: optional list, one entry per backbone, of a local `.safetensors` file holding that
        timm model's state dict, or `None` to fetch timm's default pretrained weights from the Hub.
        """
        model = cls(config)
        _load_backbone_weights(model.base_model.backbones, config, backbone_weights)
        return model


class ScopeformerForImageClassification(ScopeformerPreTrainedModel):
    def __init__(self, config: ScopeformerConfig):
        super().__init__(config)
        self.scopeformer = ScopeformerModel(config)
        with _skip_init_on_meta():
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ImageClassifierOutput | tuple:
        r"""
        labels (`torch.Tensor` of shape `(batch_size, num_labels)`, *optional*):
            0/1 targets per label. When given, the loss is the RSNA weighted multi-label log loss:
            per-label mean binary cross-entropy (with `config.loss_pos_weight` if set), averaged with
            `config.loss_label_weights`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.scopeformer(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels)
        if not return_dict:
            rest = tuple(v for v in (outputs.hidden_states, outputs.attentions) if v is not None)
            return ((loss, logits) if loss is not None else (logits,)) + rest
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def loss_function(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.shape != logits.shape:
            raise ValueError(
                f"labels has shape {tuple(labels.shape)} but logits have {tuple(logits.shape)}: pass one 0/1 "
                f"column per label ({self.config.num_labels} labels: {list(self.config.label2id)})"
            )
        weights = torch.tensor(self.config.loss_label_weights, dtype=logits.dtype, device=logits.device)
        pos_weight = None
        if self.config.loss_pos_weight is not None:
            pos_weight = torch.tensor(self.config.loss_pos_weight, dtype=logits.dtype, device=logits.device)
        per_label = F.binary_cross_entropy_with_logits(
            logits, labels.to(logits.dtype), reduction="none", pos_weight=pos_weight
        ).mean(0)
        return (per_label * weights).sum() / weights.sum()

    @classmethod
    def from_pretrained_backbones(cls, config: ScopeformerConfig, backbone_weights: list | None = None):
        """See `ScopeformerModel.from_pretrained_backbones`."""
        model = cls(config)
        _load_backbone_weights(model.scopeformer.backbones, config, backbone_weights)
        return model


def _load_backbone_weights(backbones: ScopeformerBackbones, config: ScopeformerConfig, sources):
    sources = [None] * len(config.backbones) if sources is None else list(sources)
    if len(sources) != len(config.backbones):
        raise ValueError(
            f"backbone_weights has {len(sources)} entries but there are {len(config.backbones)} backbones; "
            "give one path (or None for timm's default weights) per backbone"
        )
    for extractor, name, index, source in zip(
        backbones.extractors, config.backbones, config.backbone_out_indices, sources, strict=True
    ):
        overlay = None
        if source is not None:
            if not str(source).endswith(".safetensors"):
                raise ValueError(f"backbone weights must be a .safetensors file, got {source!r}")
            overlay = {"file": str(source)}
        try:
            pretrained = _create_cnn(name, index, config.num_channels, pretrained=True, pretrained_cfg_overlay=overlay)
        except Exception as err:  # timm raises several types (hub, HTTP, file, RuntimeError)
            where = source or f"the Hugging Face Hub (timm '{name}')"
            raise OSError(
                f"could not load pretrained weights for backbone '{name}' from {where}: "
                f"{type(err).__name__}: {err}. Go online (unset HF_HUB_OFFLINE) or pass "
                "backbone_weights=[<local .safetensors>, ...]"
            ) from err
        extractor.load_state_dict(pretrained.state_dict())


__all__ = [
    "ScopeformerPreTrainedModel",
    "ScopeformerModel",
    "ScopeformerForImageClassification",
    "ScopeformerModelOutput",
]
