"""PyTorch LT-ViT: label tokens for multi-label chest X-ray classification.

Paper: Marikkar et al., "LT-ViT: A Vision Transformer for multi-label Chest X-ray classification",
arXiv 2311.07263 (ICIP 2023). No official code exists.

What the paper states: randomly initialised auxiliary tokens, one per label, attend jointly with the image
tokens of a ViT and aggregate information from several depths; each label token gives that label's logit;
the attention of the label tokens over the patches explains the prediction without Grad-CAM; the model
starts from standard pretrained ViTs (ViT-S/16, ViT-B/16).

Our choices, not the paper's (see `LTViTConfig` for the fields):

- The image pathway is exactly a timm `VisionTransformer` (CLS token, learned position embeddings on CLS and
  patches, pre-norm blocks, final LayerNorm), so timm and transformers ViT weights load unchanged
  (`convert_timm_vit_state_dict`, `convert_hf_vit_state_dict`, `from_vit`).
- The label tokens (truncated normal, no position embedding) are appended at the input of the last
  `num_label_blocks` blocks. In those blocks image queries attend to image keys only, label queries attend to
  image and label keys: the image tokens are exactly those of the source ViT, whatever the label tokens hold.
  Two fused `scaled_dot_product_attention` calls (image queries over image keys, label queries over every
  key) instead of one masked call; explicit softmax only when attention weights are asked for. The
  classification head reads only the label tokens, so its last block computes only theirs (`labels_only`).
- Readout: the final LayerNorm, then one `Linear(D, 1)` shared by all label tokens.
- Loss: binary cross-entropy with logits, averaged per label over its known entries, then a weighted mean
  over labels; a label value of -1 means "unknown, ignore" (CheXpert's U-Ignore policy).
"""

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

from .configuration_lt_vit import LTViTConfig

IGNORE_LABEL = -1


# Copied from hfmed.models.scopeformer.modeling_scopeformer._skip_init_on_meta
def _skip_init_on_meta():
    """No weight init while the model is built on the meta device, as `from_pretrained` builds it.

    Meta tensors hold no values, so the init functions that timm and torch run in their constructors only cost
    time (timm's `normal_` on a meta tensor goes through torch's Python reference). Weights a checkpoint lacks
    are initialised after loading by `_init_weights`, as before. Built on a real device (a new model), every
    init runs unchanged.
    """
    return init.no_init_weights() if torch.get_default_device().type == "meta" else contextlib.nullcontext()


@dataclass
class LTViTModelOutput(BaseModelOutputWithPooling):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, 1 + num_patches, hidden_size)`):
        Image tokens after the final LayerNorm; position 0 is the CLS token. Equal to timm's
        `forward_features` of the source ViT.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        The final-normed CLS token.
    label_hidden_states (`torch.FloatTensor` of shape `(batch_size, num_labels, hidden_size)`):
        Label tokens after the final LayerNorm, in `config.id2label` order.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        `num_hidden_layers + 1` tensors: the embeddings and each layer's output, image tokens only, each
        `(batch_size, 1 + num_patches, hidden_size)` (before the final LayerNorm).
    attentions (`tuple(torch.FloatTensor)`, *optional*):
        Per layer, the attention weights. Before the label tokens join: `(batch_size, num_heads, S, S)` with
        `S = 1 + num_patches`; in the last `num_label_blocks` layers: `(batch_size, num_heads, T, T)` with
        `T = S + num_labels` (rows and columns: image tokens, then label tokens; image rows hold 0 on label
        columns because of the mask).
    label_attentions (`torch.FloatTensor` of shape `(batch_size, num_labels, grid, grid)`, *optional*):
        Label-token -> patch attention, averaged over heads and over the label blocks, renormalised to sum to
        1 over the patches (CLS and label keys dropped). Returned with `output_label_attentions=True`.
    """

    label_hidden_states: torch.FloatTensor | None = None
    label_attentions: torch.FloatTensor | None = None


@dataclass
class LTViTImageClassifierOutput(ImageClassifierOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*): the masked, label-weighted BCE (see `forward`).
    logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): one logit per label (sigmoid for
        probabilities).
    hidden_states, attentions: as in `LTViTModelOutput`.
    label_attentions (`torch.FloatTensor` of shape `(batch_size, num_labels, grid, grid)`, *optional*):
        as in `LTViTModelOutput`.
    """

    label_attentions: torch.FloatTensor | None = None


class LTViTPatchEmbeddings(nn.Module):
    """Non-overlapping patches -> tokens: Conv2d with kernel = stride = patch size (timm `PatchEmbed`)."""

    def __init__(self, config: LTViTConfig):
        super().__init__()
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class LTViTEmbeddings(nn.Module):
    """CLS + patch tokens with learned position embeddings; also holds the label tokens (no position)."""

    def __init__(self, config: LTViTConfig):
        super().__init__()
        self.patch_embeddings = LTViTPatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 1 + config.num_patches, config.hidden_size))
        self.label_tokens = nn.Parameter(torch.zeros(1, config.num_labels, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embeddings(pixel_values)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.position_embeddings
        return self.dropout(tokens)


class LTViTSelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm `Attention`), optionally masked."""

    def __init__(self, config: LTViTConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.proj_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        num_image_tokens: int | None = None,
        eager: bool = False,
        labels_only: bool = False,
        label_weights: bool = False,
    ):
        """`num_image_tokens`: in a label block, how many leading tokens are image tokens (they never attend
        to the label tokens after them); `None` elsewhere (plain self-attention). `eager`: explicit softmax,
        returning every query's weights `(batch, heads, T, T)`. In a label block: `label_weights` returns the
        label queries' weights `(batch, heads, labels, T)` only (the image queries stay on the fused kernel);
        `labels_only` returns the label tokens' outputs only, `(batch, labels, width)`."""
        batch, length, width = hidden_states.shape
        qkv = (
            self.qkv(hidden_states)
            .view(batch, length, 3, self.num_heads, self.head_dim)
            .permute(2, 0, 3, 1, 4)
        )
        query, key, value = qkv.unbind(0)
        dropout = self.attention_dropout if self.training else 0.0
        if eager and not labels_only:
            scores = (query @ key.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if num_image_tokens is not None:
                mask = label_token_attention_mask(num_image_tokens, length - num_image_tokens, scores.device)
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            context = F.dropout(weights, p=dropout, training=self.training) @ value
            return self.proj_dropout(self.proj(context.transpose(1, 2).reshape(batch, length, width))), weights
        if num_image_tokens is None:
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout)
            return self.proj_dropout(self.proj(context.transpose(1, 2).reshape(batch, length, width))), None
        # Label blocks: image queries attend to image keys only, so the image part runs unmasked through the
        # fused kernel and the label queries (which see every key, no mask) in a second, small call: the same
        # result as one masked call, without materialising a mask over the whole sequence.
        n = num_image_tokens
        weights = None
        if eager or label_weights:
            weights = ((query[:, :, n:] @ key.transpose(-2, -1)) / math.sqrt(self.head_dim)).softmax(dim=-1)
            labels = F.dropout(weights, p=dropout, training=self.training) @ value
        else:
            labels = F.scaled_dot_product_attention(query[:, :, n:], key, value, dropout_p=dropout)
        if labels_only:
            # Nothing reads the image tokens' outputs: only the label queries' context is projected.
            context = labels.transpose(1, 2).reshape(batch, length - n, width)
            return self.proj_dropout(self.proj(context)), weights
        image = F.scaled_dot_product_attention(query[:, :, :n], key[:, :, :n], value[:, :, :n], dropout_p=dropout)
        # Both results are written straight into the (batch, tokens, heads, head_dim) layout the projection
        # reads: one copy each, where concatenating them first would copy the whole context twice.
        context = image.new_empty(batch, length, self.num_heads, self.head_dim)
        context[:, :n] = image.transpose(1, 2)
        context[:, n:] = labels.transpose(1, 2)
        return self.proj_dropout(self.proj(context.view(batch, length, width))), weights


class LTViTMLP(nn.Module):
    def __init__(self, config: LTViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.act(self.fc1(hidden_states)))
        return self.dropout(self.fc2(hidden_states))


class LTViTLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block, as timm's ViT `Block` (no layer scale, no drop path)."""

    def __init__(self, config: LTViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = LTViTSelfAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = LTViTMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        num_image_tokens: int | None = None,
        eager: bool = False,
        labels_only: bool = False,
        label_weights: bool = False,
    ):
        """`labels_only` (a label block): the label tokens' outputs only; the image tokens' are not computed.
        `eager` / `label_weights`: every query's / the label queries' attention weights (`LTViTSelfAttention`)."""
        attended, weights = self.attention(
            self.norm1(hidden_states), num_image_tokens, eager, labels_only, label_weights
        )
        if labels_only:
            hidden_states = hidden_states[:, num_image_tokens:]
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.norm2(hidden_states))
        return hidden_states, weights


def label_token_attention_mask(num_image_tokens: int, num_labels: int, device=None) -> torch.Tensor:
    """Boolean SDPA mask `(1, 1, T, T)`, True = may attend: image queries see image keys only, label
    queries see every key (image and label)."""
    total = num_image_tokens + num_labels
    mask = torch.ones(total, total, dtype=torch.bool, device=device)
    mask[:num_image_tokens, num_image_tokens:] = False
    return mask[None, None]


class LTViTPreTrainedModel(PreTrainedModel):
    config_class = LTViTConfig
    config: LTViTConfig
    base_model_prefix = "lt_vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["LTViTLayer"]
    _supports_sdpa = True
    # The loss is a per-batch mean; Trainer must not rescale it by `num_items_in_batch`.
    accepts_loss_kwargs = False

    # Copied from hfmed.models.scopeformer.modeling_scopeformer.ScopeformerPreTrainedModel._base_model_names
    def _base_model_names(self, *names: str) -> set[str]:
        # Parameter names of the base model, as seen from this model (the head holds the base model).
        prefix = "" if self.base_model is self else f"{self.base_model_prefix}."
        return {prefix + name for name in names}

    def no_weight_decay(self) -> set[str]:
        """Parameters without weight decay besides the 0-/1-D ones (timm's convention; read by hfmed's
        training policy): the class, position and label tokens."""
        return self._base_model_names(
            "embeddings.cls_token", "embeddings.position_embeddings", "embeddings.label_tokens"
        )

    def learning_rate_groups(self) -> dict[str, set[str]]:
        """Groups a training recipe may give their own learning rate (read by hfmed's training policy):
        `label_tokens`, which start from scratch while the image pathway may be pretrained."""
        return {"label_tokens": self._base_model_names("embeddings.label_tokens")}

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, LTViTEmbeddings):
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            init.trunc_normal_(module.label_tokens, mean=0.0, std=self.config.label_token_init_std)

    # Copied from hfmed.models.scopeformer.modeling_scopeformer.ScopeformerPreTrainedModel._check_pixel_values with ScopeformerImageProcessor->LTViTImageProcessor, (one per Hounsfield window)->(grey radiographs are replicated)
    def _check_pixel_values(self, pixel_values: torch.Tensor):
        config = self.config
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must be 4-D (batch, channels, height, width), got shape {tuple(pixel_values.shape)}; "
                "add a batch dimension or use LTViTImageProcessor"
            )
        if pixel_values.shape[1] != config.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but config.num_channels is "
                f"{config.num_channels} (grey radiographs are replicated); use LTViTImageProcessor"
            )
        if tuple(pixel_values.shape[-2:]) != (config.image_size, config.image_size):
            raise ValueError(
                f"pixel_values is {pixel_values.shape[-2]}x{pixel_values.shape[-1]} but the model expects "
                f"{config.image_size}x{config.image_size} (config.image_size); resize with LTViTImageProcessor"
            )


class LTViTModel(LTViTPreTrainedModel):
    def __init__(self, config: LTViTConfig):
        super().__init__(config)
        self.config = config
        with _skip_init_on_meta():
            self.embeddings = LTViTEmbeddings(config)
            self.layers = nn.ModuleList(LTViTLayer(config) for _ in range(config.num_hidden_layers))
            self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_label_attentions: bool | None = None,
        return_dict: bool | None = None,
        labels_only: bool = False,
    ) -> LTViTModelOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
            Normalised images, e.g. from `LTViTImageProcessor`.
        output_label_attentions (`bool`, *optional*):
            Return `label_attentions`, the label-token -> patch maps `(batch_size, num_labels, grid, grid)`.
            Only the label queries of the label blocks then run the explicit-softmax attention.
        labels_only (`bool`, *optional*, defaults to `False`):
            Only the label tokens are read (the classification head): `last_hidden_state` and `pooler_output`
            are `None`, and the last block computes the label tokens' outputs only (~6 % of a ViT-S/16
            forward saved), unless `output_hidden_states` or `output_attentions` asks for the image tokens'.
        """
        config = self.config
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        output_label_attentions = bool(output_label_attentions)
        return_dict = return_dict if return_dict is not None else config.return_dict
        self._check_pixel_values(pixel_values)

        hidden_states = self.embeddings(pixel_values)
        num_image = hidden_states.shape[1]
        first_label_block = config.first_label_block
        last = len(self.layers) - 1
        labels_only = labels_only and not (output_hidden_states or output_attentions)

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        label_maps = []
        for index, layer in enumerate(self.layers):
            in_label_blocks = index >= first_label_block
            if index == first_label_block:
                labels = self.embeddings.label_tokens.expand(hidden_states.shape[0], -1, -1)
                hidden_states = torch.cat([hidden_states, labels.to(hidden_states.dtype)], dim=1)
            hidden_states, weights = layer(
                hidden_states,
                num_image if in_label_blocks else None,
                output_attentions,
                labels_only and index == last,
                output_label_attentions and in_label_blocks,
            )
            if output_hidden_states:
                all_hidden_states += (hidden_states[:, :num_image],)
            if output_attentions:
                all_attentions += (weights,)
            if output_label_attentions and in_label_blocks:
                # label queries -> patch keys (CLS at key 0 and the label keys dropped), mean over heads
                # (the last rows are the label queries, whether or not the image queries were computed)
                label_maps.append(weights[:, :, -config.num_labels :, 1:num_image].mean(dim=1))

        hidden_states = self.layernorm(hidden_states)
        if labels_only:
            last_hidden_state = pooled = None
            label_hidden_states = hidden_states
        else:
            last_hidden_state = hidden_states[:, :num_image]
            label_hidden_states = hidden_states[:, num_image:]
            pooled = last_hidden_state[:, 0]

        label_attentions = None
        if output_label_attentions:
            maps = torch.stack(label_maps).mean(dim=0)
            maps = maps / maps.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny)
            label_attentions = maps.reshape(maps.shape[0], maps.shape[1], config.grid_size, config.grid_size)

        if not return_dict:
            return tuple(
                v
                for v in (
                    last_hidden_state,
                    pooled,
                    label_hidden_states,
                    all_hidden_states,
                    all_attentions,
                    label_attentions,
                )
                if v is not None
            )
        return LTViTModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=pooled,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            label_hidden_states=label_hidden_states,
            label_attentions=label_attentions,
        )

    @classmethod
    def from_vit(cls, source, config: LTViTConfig):
        """A new model whose image pathway carries a standard ViT's weights; label tokens stay freshly initialised.

        Args:
            source: a timm `VisionTransformer`, a transformers `ViTModel` / `ViTForImageClassification`, or a
                state dict of either (detected from its keys). The source's classifier head is dropped.
            config (`LTViTConfig`): must match the source's size, patch size, image size and LayerNorm epsilon
                (timm: 1e-6; transformers ViT: 1e-12).
        """
        model = cls(config)
        _load_vit(model.base_model, source, config)
        return model

    @classmethod
    def from_pretrained_backbones(cls, config: LTViTConfig):
        """A new model whose image pathway carries timm's ImageNet weights for `config.pretrained_vit` (online)."""
        return cls.from_vit(_fetch_timm_vit(config), config)


class LTViTForImageClassification(LTViTPreTrainedModel):
    def __init__(self, config: LTViTConfig):
        super().__init__(config)
        self.lt_vit = LTViTModel(config)
        # One readout shared by every label token (the paper's "Linear(D -> 1) per label token").
        with _skip_init_on_meta():
            self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_label_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> LTViTImageClassifierOutput | tuple:
        r"""
        labels (`torch.Tensor` of shape `(batch_size, num_labels)`, *optional*):
            Targets per label: 1 positive, 0 negative (soft targets in [0, 1] allowed), and -1 for "unknown,
            ignore" (CheXpert's uncertain labels under the U-Ignore policy, or labels missing for an image).
            Entries equal to -1 are masked out of the loss. The loss is binary cross-entropy with logits
            (`config.loss_pos_weight` as `pos_weight` if set), averaged per label over that label's known
            entries, then averaged over labels with `config.loss_label_weights` (all 1 when `None`); a label
            with no known entry in the batch is left out of that mean. The loss is 0 if nothing is known.
        output_label_attentions (`bool`, *optional*):
            Return `label_attentions` (`(batch_size, num_labels, grid, grid)` label-token -> patch maps).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.lt_vit(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            output_label_attentions=output_label_attentions,
            return_dict=True,
            labels_only=True,
        )
        # The shared Linear(D, 1), written as multiply-and-sum: a (.., D) x (D, 1) GEMV's rounding depends on
        # the weight's memory alignment (safetensors maps it unaligned), so a reloaded model would differ in
        # the last bit; the elementwise product is exact and its sum runs over a fresh, aligned buffer.
        logits = (outputs.label_hidden_states * self.classifier.weight[0]).sum(dim=-1) + self.classifier.bias
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels)
        if not return_dict:
            rest = tuple(
                v
                for v in (outputs.hidden_states, outputs.attentions, outputs.label_attentions)
                if v is not None
            )
            return ((loss, logits) if loss is not None else (logits,)) + rest
        return LTViTImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            label_attentions=outputs.label_attentions,
        )

    def loss_function(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Masked, label-weighted BCE; see `forward`."""
        config = self.config
        if labels.shape != logits.shape:
            raise ValueError(
                f"labels has shape {tuple(labels.shape)} but logits have {tuple(logits.shape)}: pass one column "
                f"per label ({config.num_labels} labels: {list(config.label2id)}), 1/0, or -1 to ignore"
            )
        labels = labels.to(logits.dtype)
        known = labels != IGNORE_LABEL
        if bool(((labels < 0) | (labels > 1))[known].any()):
            raise ValueError(
                "labels must be in [0, 1], or -1 for 'unknown, ignore'; map other codes first (e.g. CheXpert's "
                "uncertain -1 is ignored, blank -> -1 or 0)"
            )
        pos_weight = None
        if config.loss_pos_weight is not None:
            pos_weight = torch.tensor(config.loss_pos_weight, dtype=logits.dtype, device=logits.device)
        targets = torch.where(known, labels, torch.zeros_like(labels))
        per_entry = F.binary_cross_entropy_with_logits(
            logits, targets, reduction="none", pos_weight=pos_weight
        )
        known = known.to(logits.dtype)
        count = known.sum(dim=0)
        per_label = (per_entry * known).sum(dim=0) / count.clamp_min(1.0)
        if config.loss_label_weights is None:
            weights = torch.ones(config.num_labels, dtype=logits.dtype, device=logits.device)
        else:
            weights = torch.tensor(config.loss_label_weights, dtype=logits.dtype, device=logits.device)
        weights = weights * (count > 0).to(logits.dtype)
        # clamp: with nothing known the loss is 0 (still in the graph) rather than 0/0
        return (per_label * weights).sum() / weights.sum().clamp_min(torch.finfo(logits.dtype).tiny)

    @classmethod
    def from_vit(cls, source, config: LTViTConfig):
        """See `LTViTModel.from_vit`; the classifier stays freshly initialised too."""
        model = cls(config)
        _load_vit(model.lt_vit, source, config)
        return model

    @classmethod
    def from_pretrained_backbones(cls, config: LTViTConfig):
        """A new model whose image pathway carries timm's ImageNet weights for `config.pretrained_vit` (online)."""
        return cls.from_vit(_fetch_timm_vit(config), config)


# --- initialisation from standard ViT checkpoints ------------------------------------------------------


def _layer_map(i: int) -> dict:
    return {
        f"blocks.{i}.norm1": f"layers.{i}.norm1",
        f"blocks.{i}.attn.qkv": f"layers.{i}.attention.qkv",
        f"blocks.{i}.attn.proj": f"layers.{i}.attention.proj",
        f"blocks.{i}.norm2": f"layers.{i}.norm2",
        f"blocks.{i}.mlp.fc1": f"layers.{i}.mlp.fc1",
        f"blocks.{i}.mlp.fc2": f"layers.{i}.mlp.fc2",
    }


def _check_converted(converted: dict, config: LTViTConfig, depth: int, source: str) -> dict:
    """Shape checks that name the config field to fix (load_state_dict's own message does not)."""
    if depth != config.num_hidden_layers:
        raise ValueError(
            f"{source} has {depth} blocks but config.num_hidden_layers is {config.num_hidden_layers}: use the "
            "preset that matches the checkpoint"
        )
    position = converted.get("embeddings.position_embeddings")
    if position is not None and tuple(position.shape[1:]) != (1 + config.num_patches, config.hidden_size):
        tokens = position.shape[1] - 1
        side = math.isqrt(max(tokens, 0))
        grid = f"{side}x{side}" if side * side == tokens else f"{tokens}-token"
        raise ValueError(
            f"{source} position embeddings have shape {tuple(position.shape)} ({grid} patch grid, width "
            f"{position.shape[-1]}) but the config needs (1, {1 + config.num_patches}, {config.hidden_size}) "
            f"({config.grid_size}x{config.grid_size} grid = image_size {config.image_size} / patch_size "
            f"{config.patch_size}): set image_size (and hidden_size) to the checkpoint's, or resize the "
            "checkpoint's position embeddings first (e.g. timm.layers.resample_abs_pos_embed)"
        )
    patch = converted.get("embeddings.patch_embeddings.projection.weight")
    expected = (config.hidden_size, config.num_channels, config.patch_size, config.patch_size)
    if patch is not None and tuple(patch.shape) != expected:
        raise ValueError(
            f"{source} patch embedding has shape {tuple(patch.shape)} but the config needs {expected} "
            "(hidden_size, num_channels, patch_size, patch_size): use the preset that matches the checkpoint"
        )
    return converted


def _depth(keys, prefix: str) -> int:
    """Number of blocks in a state dict whose block keys start with `prefix` + index."""
    indices = [int(k[len(prefix) :].split(".", 1)[0]) for k in keys if k.startswith(prefix)]
    return 1 + max(indices, default=-1)


def convert_timm_vit_state_dict(state_dict: Mapping[str, torch.Tensor], config: LTViTConfig) -> dict:
    """Renames a timm `VisionTransformer` state dict to `LTViTModel` keys (the classifier `head.*` is dropped).

    Supports the plain ViT layout: CLS token, position embeddings on CLS + patches, no register tokens, no
    layer scale, identity `norm_pre` / `fc_norm`. Anything else raises a `ValueError` that lists the keys.
    """
    fixed = {
        "cls_token": "embeddings.cls_token",
        "pos_embed": "embeddings.position_embeddings",
        "patch_embed.proj": "embeddings.patch_embeddings.projection",
        "norm": "layernorm",
    }
    for i in range(config.num_hidden_layers):
        fixed.update(_layer_map(i))
    converted, unknown = {}, []
    for key, value in state_dict.items():
        if key.startswith("head.") or key.startswith("head_drop."):
            continue
        prefix, _, leaf = key.rpartition(".")
        if key in fixed:
            converted[fixed[key]] = value
        elif prefix in fixed and leaf in ("weight", "bias"):
            converted[f"{fixed[prefix]}.{leaf}"] = value
        else:
            unknown.append(key)
    depth = _depth(state_dict, "blocks.")
    if unknown and depth == config.num_hidden_layers:
        raise ValueError(
            f"timm ViT state dict has keys LT-ViT cannot map: {unknown[:8]}; only plain ViTs (CLS token, no "
            "register tokens, layer scale, pre-norm or fc_norm) load"
        )
    return _check_converted(converted, config, depth, "timm ViT")


# transformers ViT layer parts -> (our name, or q / k / v for the fused projection). Checkpoints on the Hub use
# the v4 names (`encoder.layer.{i}.attention.attention.query`, ...); transformers >= 5 renames them on load
# to `layers.{i}.attention.q_proj`, ..., so both spellings are accepted.
_HF_LAYER_PARTS = {
    "attention.attention.query": "q",
    "attention.attention.key": "k",
    "attention.attention.value": "v",
    "attention.output.dense": "attention.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "attention.q_proj": "q",
    "attention.k_proj": "k",
    "attention.v_proj": "v",
    "attention.o_proj": "attention.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
}
_HF_LAYER_PREFIXES = ("encoder.layer.", "layers.")


def convert_hf_vit_state_dict(state_dict: Mapping[str, torch.Tensor], config: LTViTConfig) -> dict:
    """Renames a transformers `ViTModel` (or `ViTForImageClassification`) state dict to `LTViTModel` keys.

    Accepts both the checkpoint-file names (`encoder.layer.{i}.attention.attention.query`, ...) and the
    in-memory names of transformers >= 5 (`layers.{i}.attention.q_proj`, ...). query / key / value are
    concatenated into the fused qkv projection; a `vit.` prefix is stripped; the pooler, the classifier and
    the mask token are dropped. transformers ViT uses `layer_norm_eps=1e-12`: set `config.layer_norm_eps`
    to the source's value.
    """
    state = {}
    for key, value in state_dict.items():
        key = key[len("vit.") :] if key.startswith("vit.") else key
        if key.startswith(("pooler.", "classifier.")) or key == "embeddings.mask_token":
            continue
        state[key] = value
    fixed = {
        "embeddings.cls_token",
        "embeddings.position_embeddings",
        "embeddings.patch_embeddings.projection.weight",
        "embeddings.patch_embeddings.projection.bias",
        "layernorm.weight",
        "layernorm.bias",
    }
    converted, unknown, qkv, indices = {}, [], {}, set()
    for key, value in state.items():
        if key in fixed:
            converted[key] = value
            continue
        prefix = next((p for p in _HF_LAYER_PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            index, _, rest = key[len(prefix) :].partition(".")
            inner, _, leaf = rest.rpartition(".")
            target = _HF_LAYER_PARTS.get(inner)
            if index.isdigit() and target is not None and leaf in ("weight", "bias"):
                indices.add(int(index))
                if target in ("q", "k", "v"):
                    qkv.setdefault((index, leaf), {})[target] = value
                else:
                    converted[f"layers.{index}.{target}.{leaf}"] = value
                continue
        unknown.append(key)
    depth = 1 + max(indices, default=-1)
    if unknown and depth == config.num_hidden_layers:
        raise ValueError(f"transformers ViT state dict has keys LT-ViT cannot map: {unknown[:8]}")
    for (index, leaf), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(
                f"transformers ViT layer {index} lacks query/key/value {leaf}: got {sorted(parts)}"
            )
        converted[f"layers.{index}.attention.qkv.{leaf}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0
        )
    return _check_converted(converted, config, depth, "transformers ViT")


def _source_eps(source: nn.Module) -> float | None:
    for module in source.modules():
        if isinstance(module, nn.LayerNorm):
            return module.eps
    return None


def _load_vit(model: LTViTModel, source, config: LTViTConfig) -> None:
    if isinstance(source, nn.Module):
        eps = _source_eps(source)
        if eps is not None and not math.isclose(eps, config.layer_norm_eps, rel_tol=1e-6):
            raise ValueError(
                f"the source ViT uses LayerNorm eps {eps:g} but config.layer_norm_eps is {config.layer_norm_eps:g}: "
                f"build the config with layer_norm_eps={eps:g} (transformers ViT: 1e-12, timm: 1e-6)"
            )
        state_dict = source.state_dict()
    elif isinstance(source, Mapping):
        state_dict = source
    else:
        raise TypeError(
            f"from_vit takes a timm VisionTransformer, a transformers ViTModel or a state dict, got "
            f"{type(source).__name__}"
        )
    keys = set(state_dict)
    if "cls_token" in keys or any(k.startswith("blocks.") for k in keys):
        converted = convert_timm_vit_state_dict(state_dict, config)
    elif any(
        k.startswith(("encoder.layer.", "vit.encoder.layer."))
        or ".attention.q_proj." in k
        or ".attention.attention.query." in k
        for k in keys
    ):
        converted = convert_hf_vit_state_dict(state_dict, config)
    else:
        raise ValueError(
            f"cannot tell the ViT layout of this state dict (first keys {sorted(keys)[:4]}): expected timm keys "
            "('cls_token', 'blocks.0.attn.qkv.weight', ...) or transformers ViT keys ('encoder.layer.0.attention.attention.query.weight' or 'layers.0.attention.q_proj.weight')"
        )
    try:
        missing, unexpected = model.load_state_dict(converted, strict=False)
    except RuntimeError as err:  # size mismatches (intermediate_size, qkv shapes, ...)
        raise ValueError(
            f"the ViT checkpoint does not fit this LTViTConfig: {' '.join(str(err).split())}; use the preset "
            "that matches the checkpoint"
        ) from err
    # The label tokens are LT-ViT's own; everything else of the image pathway must come from the source.
    missing = [k for k in missing if k != "embeddings.label_tokens"]
    if missing or unexpected:
        raise ValueError(
            f"the ViT checkpoint does not cover LT-ViT's image pathway: missing {missing[:8]}, unexpected "
            f"{unexpected[:8]}; check qkv_bias and the preset against the checkpoint"
        )


def _fetch_timm_vit(config: LTViTConfig):
    import timm  # only here: building the model never needs it

    if not config.pretrained_vit:
        raise ValueError("config.pretrained_vit names no ViT: set it (e.g. 'vit_small_patch16_224') or use from_vit")
    try:
        return timm.create_model(config.pretrained_vit, pretrained=True, num_classes=0)
    except Exception as err:  # timm raises several types (hub, HTTP, file)
        raise OSError(
            f"could not load the pretrained ViT '{config.pretrained_vit}' from the Hugging Face Hub: "
            f"{type(err).__name__}: {err}. Go online (unset HF_HUB_OFFLINE) or build a timm/transformers ViT "
            "yourself and call from_vit(vit, config)"
        ) from err


__all__ = [
    "LTViTPreTrainedModel",
    "LTViTModel",
    "LTViTForImageClassification",
    "LTViTModelOutput",
    "LTViTImageClassifierOutput",
    "convert_timm_vit_state_dict",
    "convert_hf_vit_state_dict",
    "label_token_attention_mask",
]
