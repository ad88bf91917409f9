"""PyTorch DIAMANT: dual image / DINO-attention-map encoders for medical image segmentation.

Paper: Yeganeh, Farshad, Weinberger, Ahmadi, Adeli, Navab, "DIAMANT: Dual Image-Attention Map Encoders For
Medical Image Segmentation", arXiv 2304.14571 (2023). No official code exists.

What the paper states: a purely convolutional network with two encoder branches, the image in one and the
self-attention maps of the same image from a frozen self-supervised DINO ViT (one channel per head; six heads
in the paper's figure, a ViT-S) in the other; a decoder predicts the segmentation.

Our choices, not the paper's (see `DIAMANTConfig` for the fields):

- The frozen DINO ViT is written in the structure of DINO's official `vision_transformer.py`
  (github.com/facebookresearch/dino), with the official parameter names (`patch_embed.proj`, `cls_token`,
  `pos_embed`, `blocks.N.norm1 / attn.qkv / attn.proj / norm2 / mlp.fc1 / mlp.fc2`, `norm`), so an official
  checkpoint loads unchanged and timm / transformers DINO checkpoints through `convert_dino_state_dict`. It lives
  inside the model and is saved with it.
- The attention maps are DINO's `get_last_selfattention` (last block, post-softmax), the CLS query row over the
  patch keys, per head, reshaped to the patch grid, upsampled by the patch size with nearest neighbours (as
  DINO's `visualize_attention.py`) and min-max normalised to [0, 1] per head and image (a constant map gives 0).
  Position embeddings are interpolated as DINO's `interpolate_pos_encoding` when the input grid differs from
  the trained one. The blocks before the last use PyTorch's fused attention; only the last one forms the
  attention matrix explicitly.
- Two convolutional encoders (image; attention maps), each stage 2 x (conv3x3-BN-ReLU) then 2x2 max-pooling;
  the bottom features of both are concatenated into a bottleneck (2 x conv3x3-BN-ReLU); a U-Net decoder (2x2
  stride-2 ConvTranspose, concatenation with skips from the image encoder, or the attention encoder, or both,
  then 2 x conv3x3-BN-ReLU); a 1x1 conv to `num_labels` logits at the input size, no softmax.
- Loss: cross-entropy + soft Dice (weights, smoothing and the background's part in the config); pixels labelled
  `semantic_loss_ignore_index` count in neither.
"""

import contextlib
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.utils import ModelOutput

from .configuration_diamant import DIAMANTConfig


def _one_line(text) -> str:
    # Third-party messages can span lines; ours promise one line (logs, Gradio toasts).
    return " ".join(str(text).split())


@dataclass
class DIAMANTModelOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, decoder_widths[-1], height, width)`):
        Features of the last decoder stage, at the input size.
    attention_maps (`torch.FloatTensor` of shape `(batch_size, num_attention_heads, height, width)`, *optional*):
        The DINO attention maps the attention encoder read (computed, or the ones passed in), in [0, 1].
        Returned with `output_attention_maps=True` when the model has an attention encoder.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        Returned with `output_hidden_states=True`: the image encoder's stage outputs (before pooling, one per
        stage, if the model has an image encoder), then the attention encoder's (if it has one), then the
        bottleneck output, then each decoder stage's output; each `(batch_size, channels, h, w)`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    attention_maps: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class DIAMANTSemanticSegmenterOutput(SemanticSegmenterOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*): `loss_ce_weight * CE + loss_dice_weight * soft Dice`.
    logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height, width)`): per-pixel class scores at
        the input size (no softmax).
    hidden_states: as in `DIAMANTModelOutput`.
    attentions: always `None` (the DINO attention is returned as `attention_maps`).
    attention_maps (`torch.FloatTensor` of shape `(batch_size, num_attention_heads, height, width)`, *optional*):
        as in `DIAMANTModelOutput`.
    """

    attention_maps: torch.FloatTensor | None = None


# --- the frozen DINO ViT, in the official structure -------------------------------------------------------


# Copied from hfmed.models.scopeformer.modeling_scopeformer._skip_init_on_meta
def _skip_init_on_meta():
    """No weight init while the model is built on the meta device, as `from_pretrained` builds it.

    Meta tensors hold no values, so the init functions that timm and torch run in their constructors only cost
    time (timm's `normal_` on a meta tensor goes through torch's Python reference). Weights a checkpoint lacks
    are initialised after loading by `_init_weights`, as before. Built on a real device (a new model), every
    init runs unchanged.
    """
    return init.no_init_weights() if torch.get_default_device().type == "meta" else contextlib.nullcontext()


class DIAMANTDinoPatchProjection(nn.Conv2d):
    """DINO's patch projection (a Conv2d with kernel = stride = patch size); a subclass only so that
    `_init_weights` can tell it from the U-Net's convolutions."""


class DIAMANTDinoPatchEmbed(nn.Module):
    def __init__(self, config: DIAMANTConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.proj = DIAMANTDinoPatchProjection(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_values).flatten(2).transpose(1, 2)


class DIAMANTDinoAttention(nn.Module):
    def __init__(self, config: DIAMANTConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.scale = (config.hidden_size // config.num_attention_heads) ** -0.5
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, return_attention: bool = False):
        batch, length, width = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, length, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if return_attention:
            # DINO's own formula: scaled scores, softmax over the keys; this matrix is what we return.
            return ((query @ key.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        context = F.scaled_dot_product_attention(query, key, value, scale=self.scale)
        return self.proj(context.transpose(1, 2).reshape(batch, length, width))


class DIAMANTDinoMlp(nn.Module):
    def __init__(self, config: DIAMANTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class DIAMANTDinoBlock(nn.Module):
    """DINO's pre-norm `Block` (no drop path: the ViT is frozen)."""

    def __init__(self, config: DIAMANTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = DIAMANTDinoAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = DIAMANTDinoMlp(config)

    def forward(self, hidden_states: torch.Tensor, return_attention: bool = False) -> torch.Tensor:
        if return_attention:
            return self.attn(self.norm1(hidden_states), return_attention=True)
        hidden_states = hidden_states + self.attn(self.norm1(hidden_states))
        return hidden_states + self.mlp(self.norm2(hidden_states))


class DIAMANTDinoViT(nn.Module):
    """DINO's `VisionTransformer` (no classifier head). Only `get_last_selfattention` is used; the last block's
    projection and MLP and the final `norm` are kept so that DINO checkpoints load whole and strictly."""

    def __init__(self, config: DIAMANTConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.patch_embed = DIAMANTDinoPatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.num_patches, config.hidden_size))
        self.blocks = nn.ModuleList(DIAMANTDinoBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def interpolate_pos_encoding(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """DINO's rule: the trained embeddings when the grid is the trained one, else bicubic interpolation of
        the patch embeddings by the scale factor (grid + 0.1) / trained grid (DINO's guard against rounding)."""
        num_patches = tokens.shape[1] - 1
        trained = self.pos_embed.shape[1] - 1
        if num_patches == trained and height == width:
            return self.pos_embed
        side = int(math.sqrt(trained))
        dim = tokens.shape[-1]
        rows = height // self.patch_size + 0.1
        cols = width // self.patch_size + 0.1
        patch_pos = F.interpolate(
            self.pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2),
            scale_factor=(rows / side, cols / side),
            mode="bicubic",
        )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat([self.pos_embed[:, :1], patch_pos], dim=1)

    def prepare_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        height, width = pixel_values.shape[-2:]
        tokens = self.patch_embed(pixel_values)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.interpolate_pos_encoding(tokens, height, width)

    def get_last_selfattention(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The last block's post-softmax attention, `(batch, heads, 1 + patches, 1 + patches)`, as DINO's."""
        hidden_states = self.prepare_tokens(pixel_values)
        for block in self.blocks[:-1]:
            hidden_states = block(hidden_states)
        return self.blocks[-1](hidden_states, return_attention=True)

    def attention_maps(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLS -> patch attention per head at the image size, min-max normalised per head to [0, 1]."""
        batch, _, height, width = pixel_values.shape
        attention = self.get_last_selfattention(pixel_values)
        heads = attention.shape[1]
        maps = attention[:, :, 0, 1:].reshape(batch, heads, height // self.patch_size, width // self.patch_size)
        maps = F.interpolate(maps, scale_factor=self.patch_size, mode="nearest")
        flat = maps.flatten(2)
        low = flat.min(dim=-1, keepdim=True).values
        span = flat.max(dim=-1, keepdim=True).values - low
        normalised = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny), 0.0)
        return normalised.reshape(maps.shape)


# --- the convolutional network ---------------------------------------------------------------------------


class DIAMANTConvBlock(GradientCheckpointingLayer):
    """2 x (conv3x3 - BatchNorm - ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.relu(self.bn1(self.conv1(hidden_states)))
        return F.relu(self.bn2(self.conv2(hidden_states)))


class DIAMANTEncoder(nn.Module):
    """Conv blocks, each followed by 2x2 max-pooling; returns the pre-pooling features and the pooled bottom."""

    def __init__(self, in_channels: int, config: DIAMANTConfig):
        super().__init__()
        widths = [in_channels, *config.encoder_widths]
        self.stages = nn.ModuleList(
            DIAMANTConvBlock(widths[i], widths[i + 1], config.conv_bias) for i in range(len(config.encoder_widths))
        )

    def forward(self, hidden_states: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        features = []
        for stage in self.stages:
            hidden_states = stage(hidden_states)
            features.append(hidden_states)
            hidden_states = F.max_pool2d(hidden_states, 2)
        return features, hidden_states


class DIAMANTDecoderStage(nn.Module):
    """2x2 stride-2 ConvTranspose, concatenation with the skip features, conv block."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, bias: bool):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.block = DIAMANTConvBlock(out_channels + skip_channels, out_channels, bias)

    def forward(self, hidden_states: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.upsample(hidden_states), skip], dim=1))


class DIAMANTPreTrainedModel(PreTrainedModel):
    config_class = DIAMANTConfig
    config: DIAMANTConfig
    base_model_prefix = "diamant"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["DIAMANTDinoBlock", "DIAMANTConvBlock"]
    # The loss is a per-batch mean; Trainer must not rescale it by `num_items_in_batch`.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, DIAMANTDinoPatchProjection) or isinstance(module, nn.Linear):
            # DINO's init (only the ViT has linear layers); the ViT is normally loaded from DINO weights.
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            # He init for the ReLU network (our choice, as torchvision's CNNs).
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            super()._init_weights(module)
        elif isinstance(module, DIAMANTDinoViT):
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            init.trunc_normal_(module.pos_embed, mean=0.0, std=std)

    def _check_pixel_values(self, pixel_values: torch.Tensor):
        config = self.config
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must be 4-D (batch, channels, height, width), got shape {tuple(pixel_values.shape)}; "
                "add a batch dimension or use DIAMANTImageProcessor"
            )
        if pixel_values.shape[1] != config.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but config.num_channels is "
                f"{config.num_channels} (grey images are replicated to RGB); use DIAMANTImageProcessor"
            )
        height, width = pixel_values.shape[-2:]
        multiple = config.size_multiple
        if height % multiple or width % multiple:
            why = f"{len(config.encoder_widths)} poolings of 2"
            if config.use_attention_encoder:
                why = f"patch_size {config.patch_size} and {why}"
            raise ValueError(
                f"pixel_values is {height}x{width} but DIAMANT needs height and width divisible by {multiple} "
                f"({why}): resize with DIAMANTImageProcessor (to {config.image_size}x{config.image_size} by "
                f"default) or pad the image to a multiple of {multiple}"
            )

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        # transformers puts every loaded tensor into a new Parameter with requires_grad=True: freeze DINO again.
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        for module in model.modules():
            if isinstance(module, DIAMANTDinoViT):
                module.requires_grad_(False)
        return loaded

    @classmethod
    def from_dino(cls, source, config: DIAMANTConfig):
        """A new model whose frozen ViT carries the weights of `source`: a DINO ViT module (official, timm or
        transformers `ViTModel`) or its state dict in any of those layouts (see `convert_dino_state_dict`).
        Everything else stays freshly initialised."""
        model = cls(config)
        base = model if isinstance(model, DIAMANTModel) else model.diamant
        if base.dino is None:
            raise ValueError(
                "this config has use_attention_encoder=False, so the model has no DINO ViT to load weights into"
            )
        _load_dino(base.dino, source, config)
        return model

    @classmethod
    def from_pretrained_backbones(cls, config: DIAMANTConfig):
        """A new model whose frozen ViT carries the DINO weights named by `config.pretrained_dino` (online, or
        from the Hugging Face cache): a timm name (`vit_small_patch8_224.dino`) or a transformers repo id
        (`facebook/dino-vits8`). The ViT runs with `config.layer_norm_eps` (DINO's 1e-6 by default)."""
        if not config.use_attention_encoder:
            return cls(config)
        return cls.from_dino(_fetch_dino_state_dict(config), config)


class DIAMANTModel(DIAMANTPreTrainedModel):
    def __init__(self, config: DIAMANTConfig):
        super().__init__(config)
        self.config = config
        with _skip_init_on_meta():
            self.dino = DIAMANTDinoViT(config) if config.use_attention_encoder else None
            self.image_encoder = DIAMANTEncoder(config.num_channels, config) if config.use_image_encoder else None
            self.attention_encoder = (
                DIAMANTEncoder(config.num_attention_heads, config) if config.use_attention_encoder else None
            )
            bottom = config.encoder_widths[-1] * (int(config.use_image_encoder) + int(config.use_attention_encoder))
            self.bottleneck = DIAMANTConvBlock(bottom, config.bottleneck_width, config.conv_bias)
            skip_factor = 2 if config.skip_connections == "both" else 1
            widths = [config.bottleneck_width, *config.decoder_widths]
            skips = config.encoder_widths[::-1]
            self.decoder = nn.ModuleList(
                DIAMANTDecoderStage(widths[i], skip_factor * skips[i], widths[i + 1], config.conv_bias)
                for i in range(len(config.decoder_widths))
            )
        if self.dino is not None:
            self.dino.requires_grad_(False)  # frozen, as in the paper
        self.gradient_checkpointing = False
        self.post_init()

    def get_attention_maps(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen DINO's attention maps of `pixel_values` (normalised images, e.g. from
        `DIAMANTImageProcessor`): `(batch, num_attention_heads, height, width)` in [0, 1]; what `forward`
        computes when no `attention_maps` are passed, so training may cache these."""
        if self.dino is None:
            raise ValueError("this model has no DINO ViT (use_attention_encoder=False), so no attention maps")
        self._check_pixel_values(pixel_values)
        with torch.no_grad():
            return self.dino.attention_maps(pixel_values)

    def dino_fingerprint(self) -> str:
        """SHA-256 of the DINO weights and of the config fields the maps depend on: a cache key part that
        changes whenever the attention maps could."""
        if self.dino is None:
            raise ValueError("this model has no DINO ViT (use_attention_encoder=False)")
        config = self.config
        digest = hashlib.sha256(
            repr(
                (config.patch_size, config.num_attention_heads, float(config.layer_norm_eps), config.hidden_act)
            ).encode()
        )
        for name, tensor in sorted(self.dino.state_dict().items()):
            value = tensor.detach().to("cpu", torch.float32).contiguous()
            digest.update(f"{name}:{tuple(value.shape)}".encode())
            digest.update(np.ascontiguousarray(value.numpy()).tobytes())
        return digest.hexdigest()

    def _check_attention_maps(self, attention_maps: torch.Tensor, pixel_values: torch.Tensor):
        config = self.config
        expected = (pixel_values.shape[0], config.num_attention_heads, *pixel_values.shape[-2:])
        fix = "compute them with model.get_attention_maps(pixel_values) (or pass none and let the model do it)"
        if not isinstance(attention_maps, torch.Tensor) or attention_maps.ndim != 4:
            shape = tuple(attention_maps.shape) if hasattr(attention_maps, "shape") else type(attention_maps).__name__
            raise ValueError(
                f"attention_maps must be a 4-D tensor (batch, heads, height, width) = {expected}, got {shape}: {fix}"
            )
        if attention_maps.shape[1] != config.num_attention_heads:
            raise ValueError(
                f"attention_maps has {attention_maps.shape[1]} maps per image but this DINO ViT has "
                f"{config.num_attention_heads} heads (config.num_attention_heads): the cache was made by another "
                f"ViT; {fix}"
            )
        if tuple(attention_maps.shape) != expected:
            raise ValueError(
                f"attention_maps has shape {tuple(attention_maps.shape)} but pixel_values needs {expected} "
                f"(batch, heads, height, width): {fix}"
            )

    def forward(
        self,
        pixel_values: torch.Tensor,
        attention_maps: torch.Tensor | None = None,
        output_attention_maps: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> DIAMANTModelOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Normalised images (e.g. from `DIAMANTImageProcessor`); height and width divisible by
            `config.size_multiple`.
        attention_maps (`torch.FloatTensor` of shape `(batch_size, num_attention_heads, height, width)`, *optional*):
            Precomputed DINO maps of these images (`get_attention_maps`); the ViT is then not run.
        output_attention_maps (`bool`, *optional*):
            Return the attention maps the attention encoder read (`None` for a model without one).
        """
        config = self.config
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else config.return_dict
        self._check_pixel_values(pixel_values)
        if self.dino is None:
            if attention_maps is not None:
                raise ValueError(
                    "attention_maps were given but this model has no attention encoder (use_attention_encoder="
                    "False): drop attention_maps"
                )
        elif attention_maps is None:
            with torch.no_grad():
                attention_maps = self.dino.attention_maps(pixel_values)
        else:
            self._check_attention_maps(attention_maps, pixel_values)
            attention_maps = attention_maps.to(pixel_values.dtype)

        hidden = []
        image_skips = attention_skips = None
        bottoms = []
        if self.image_encoder is not None:
            image_skips, bottom = self.image_encoder(pixel_values)
            hidden.extend(image_skips)
            bottoms.append(bottom)
        if self.attention_encoder is not None:
            attention_skips, bottom = self.attention_encoder(attention_maps)
            hidden.extend(attention_skips)
            bottoms.append(bottom)
        hidden_states = self.bottleneck(torch.cat(bottoms, dim=1))
        hidden.append(hidden_states)
        for level, stage in enumerate(self.decoder, start=1):
            if config.skip_connections == "image":
                skip = [image_skips[-level]]
            elif config.skip_connections == "attention":
                skip = [attention_skips[-level]]
            else:
                skip = [image_skips[-level], attention_skips[-level]]
            hidden_states = stage(hidden_states, torch.cat(skip, dim=1))
            hidden.append(hidden_states)

        maps = attention_maps if output_attention_maps else None
        all_hidden = tuple(hidden) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (hidden_states, maps, all_hidden) if v is not None)
        return DIAMANTModelOutput(last_hidden_state=hidden_states, attention_maps=maps, hidden_states=all_hidden)


class DIAMANTForSemanticSegmentation(DIAMANTPreTrainedModel):
    def __init__(self, config: DIAMANTConfig):
        super().__init__(config)
        self.diamant = DIAMANTModel(config)
        with _skip_init_on_meta():
            self.classifier = nn.Conv2d(config.decoder_widths[-1], config.num_labels, kernel_size=1)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        attention_maps: torch.Tensor | None = None,
        output_attention_maps: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> DIAMANTSemanticSegmenterOutput | tuple:
        r"""
        pixel_values, attention_maps, output_attention_maps: see `DIAMANTModel.forward`.
        labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
            One class index in `0..num_labels-1` per pixel, or `config.semantic_loss_ignore_index` for pixels
            the loss skips (e.g. from `DIAMANTImageProcessor(images, segmentation_maps=masks)`). Gives
            `loss = loss_ce_weight * CE + loss_dice_weight * (1 - mean Dice)`; see `DIAMANTConfig`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.diamant(
            pixel_values,
            attention_maps=attention_maps,
            output_attention_maps=output_attention_maps,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(outputs.last_hidden_state)
        loss = None if labels is None else self.loss_function(logits, labels)
        if not return_dict:
            rest = tuple(v for v in (outputs.hidden_states, outputs.attention_maps) if v is not None)
            return ((loss, logits) if loss is not None else (logits,)) + rest
        return DIAMANTSemanticSegmenterOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attention_maps=outputs.attention_maps
        )

    def _check_labels(self, logits: torch.Tensor, labels: torch.Tensor):
        config = self.config
        expected = (logits.shape[0], *logits.shape[-2:])
        if labels.ndim == 4 and labels.shape[1] == 1:
            raise ValueError(
                f"labels has shape {tuple(labels.shape)}, with a channel axis: pass (batch, height, width) class "
                "indices, e.g. labels.squeeze(1)"
            )
        if tuple(labels.shape) != expected:
            raise ValueError(
                f"labels has shape {tuple(labels.shape)} but the logits need {expected} (batch, height, width): pass "
                "one class index per pixel at the input size, e.g. from DIAMANTImageProcessor(images, "
                "segmentation_maps=masks)"
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(
                f"labels has dtype {labels.dtype} but must hold integer class indices: convert with labels.long()"
            )
        ignore = config.semantic_loss_ignore_index
        bad = ((labels < 0) | (labels >= config.num_labels)) & (labels != ignore)
        if bool(bad.any()):
            values = sorted(int(v) for v in labels[bad].unique()[:8])
            raise ValueError(
                f"labels hold values {values} outside the classes 0..{config.num_labels - 1} and the ignore index "
                f"{ignore}: map the mask values first (DIAMANTImageProcessor's mask_binarize_threshold or "
                "label_mapping)"
            )

    def loss_function(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CE + soft Dice over the non-ignored pixels; see `DIAMANTConfig`."""
        config = self.config
        self._check_labels(logits, labels)
        labels = labels.long()
        valid = labels != config.semantic_loss_ignore_index
        targets = torch.where(valid, labels, torch.zeros_like(labels))
        weight = valid.to(logits.dtype)
        count = weight.sum()
        # No pixel left: both terms are 0 (and stay in the graph) rather than 0 / 0.
        ce = (F.cross_entropy(logits, targets, reduction="none") * weight).sum() / count.clamp_min(1.0)

        probabilities = logits.softmax(dim=1) * weight[:, None]
        one_hot = F.one_hot(targets, config.num_labels).permute(0, 3, 1, 2).to(logits.dtype) * weight[:, None]
        intersection = (probabilities * one_hot).sum(dim=(0, 2, 3))
        denominator = probabilities.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
        smooth = config.dice_smooth
        dice = torch.where(
            denominator + smooth > 0,
            (2 * intersection + smooth) / (denominator + smooth).clamp_min(torch.finfo(logits.dtype).tiny),
            torch.ones_like(denominator),  # an empty class with no smoothing: nothing to get wrong
        )
        if not config.dice_include_background:
            dice = dice[1:]
        return config.loss_ce_weight * ce + config.loss_dice_weight * (1.0 - dice.mean())


# --- DINO checkpoints: official, timm and transformers layouts ----------------------------------------------

# transformers ViT layer parts -> official DINO names (q / k / v are fused into attn.qkv). Hub files keep the v4
# names (`encoder.layer.N.attention.attention.query`); transformers >= 5 models hold `layers.N.attention.q_proj`.
_HF_PARTS = {
    "attention.attention.query": "q",
    "attention.attention.key": "k",
    "attention.attention.value": "v",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "attention.q_proj": "q",
    "attention.k_proj": "k",
    "attention.v_proj": "v",
    "attention.o_proj": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
}
_HF_FIXED = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_OFFICIAL_BLOCK_PARTS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")


def _from_hf_layout(state: dict) -> tuple[dict, list]:
    converted, unknown, qkv = {}, [], {}
    for key, value in state.items():
        if key in _HF_FIXED:
            converted[_HF_FIXED[key]] = value
            continue
        prefix = next((p for p in ("encoder.layer.", "layers.") if key.startswith(p)), None)
        if prefix is not None:
            index, _, rest = key[len(prefix) :].partition(".")
            inner, _, leaf = rest.rpartition(".")
            target = _HF_PARTS.get(inner)
            if index.isdigit() and target is not None and leaf in ("weight", "bias"):
                if target in ("q", "k", "v"):
                    qkv.setdefault((index, leaf), {})[target] = value
                else:
                    converted[f"blocks.{index}.{target}.{leaf}"] = value
                continue
        unknown.append(key)
    for (index, leaf), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"transformers ViT layer {index} lacks query/key/value {leaf}: got {sorted(parts)}")
        converted[f"blocks.{index}.attn.qkv.{leaf}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return converted, unknown


def _from_official_layout(state: dict) -> tuple[dict, list]:
    fixed = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    converted, unknown = {}, []
    for key, value in state.items():
        if key in fixed:
            converted[key] = value
            continue
        if key.startswith("blocks."):
            index, _, rest = key[len("blocks.") :].partition(".")
            inner, _, leaf = rest.rpartition(".")
            if index.isdigit() and inner in _OFFICIAL_BLOCK_PARTS and leaf in ("weight", "bias"):
                converted[key] = value
                continue
        unknown.append(key)
    return converted, unknown


def convert_dino_state_dict(state_dict: Mapping[str, torch.Tensor], config: DIAMANTConfig) -> dict:
    """Returns the weights of a DINO ViT in the official key layout, which is that of `DIAMANTModel.dino`.

    Accepts:
    - the official layout (`dino_deitsmall8_pretrain.pth`; also a DINO training checkpoint, whose `teacher`
      weights are taken and whose `module.` / `backbone.` prefixes are stripped);
    - timm (`vit_small_patch8_224.dino`: the same names; `head.*` is dropped);
    - transformers `ViTModel` (`facebook/dino-vits8`; v4 file names or v5 module names, optional `vit.` prefix;
      query / key / value are fused; the pooler, classifier and mask token are dropped).

    LayerNorm eps is not in a state dict: `config.layer_norm_eps` decides (DINO: 1e-6; the transformers config of
    `facebook/dino-vits8` says 1e-12). Shape mismatches raise a `ValueError` naming the config field to change.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"convert_dino_state_dict takes a state dict (a mapping), got {type(state_dict).__name__}")
    if "teacher" in state_dict and isinstance(state_dict["teacher"], Mapping):
        state_dict = state_dict["teacher"]
    state = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "backbone.", "vit."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if key.startswith(("head.", "pooler.", "classifier.")) or key in ("embeddings.mask_token", "fc_norm.weight"):
            continue
        state[key] = value
    if any(k.startswith(("embeddings.", "encoder.layer.", "layers.")) for k in state):
        converted, unknown = _from_hf_layout(state)
        source = "transformers ViT"
    elif "cls_token" in state or any(k.startswith("blocks.") for k in state):
        converted, unknown = _from_official_layout(state)
        source = "DINO / timm ViT"
    else:
        raise ValueError(
            f"cannot tell the ViT layout of this state dict (first keys {sorted(state)[:4]}): expected DINO / timm keys "
            "('cls_token', 'blocks.0.attn.qkv.weight', ...) or transformers ViT keys "
            "('embeddings.cls_token', 'encoder.layer.0.attention.attention.query.weight', ...)"
        )
    if unknown:
        raise ValueError(
            f"{source} state dict has keys DIAMANT's DINO ViT cannot map: {unknown[:8]}; only plain ViTs (CLS "
            "token, no register tokens, no layer scale) load"
        )
    return _check_converted(converted, config, source)


def _check_converted(converted: dict, config: DIAMANTConfig, source: str) -> dict:
    """Shape checks that name the config field to fix (load_state_dict's own message does not)."""
    indices = {int(k.split(".")[1]) for k in converted if k.startswith("blocks.")}
    depth = 1 + max(indices, default=-1)
    if depth != config.num_hidden_layers:
        raise ValueError(
            f"{source} has {depth} blocks but config.num_hidden_layers is {config.num_hidden_layers}: use the "
            "preset that matches the checkpoint"
        )
    patch = converted.get("patch_embed.proj.weight")
    expected = (config.hidden_size, config.num_channels, config.patch_size, config.patch_size)
    if patch is not None and tuple(patch.shape) != expected:
        raise ValueError(
            f"{source} patch embedding has shape {tuple(patch.shape)} but the config needs {expected} (hidden_size, "
            "num_channels, patch_size, patch_size): use the preset that matches the checkpoint (diamant-vits8 or "
            "diamant-vits16)"
        )
    position = converted.get("pos_embed")
    if position is not None and tuple(position.shape[1:]) != (1 + config.num_patches, config.hidden_size):
        tokens = position.shape[1] - 1
        side = math.isqrt(max(tokens, 0))
        grid = f"{side}x{side}" if side * side == tokens else f"{tokens}-token"
        hint = f"image_size={side * config.patch_size}" if side * side == tokens else "the checkpoint's image_size"
        raise ValueError(
            f"{source} position embeddings have shape {tuple(position.shape)} ({grid} patch grid) but the config "
            f"needs (1, {1 + config.num_patches}, {config.hidden_size}) ({config.grid_size}x{config.grid_size} grid = "
            f"image_size {config.image_size} / patch_size {config.patch_size}): set {hint}; other input sizes still "
            "work, the position embeddings are interpolated at run time"
        )
    return converted


def _source_eps(source: nn.Module) -> float | None:
    for module in source.modules():
        if isinstance(module, nn.LayerNorm):
            return module.eps
    eps = getattr(getattr(source, "config", None), "layer_norm_eps", None)
    return eps


def _load_dino(dino: DIAMANTDinoViT, source, config: DIAMANTConfig) -> None:
    if isinstance(source, nn.Module):
        eps = _source_eps(source)
        if eps is not None and not math.isclose(eps, config.layer_norm_eps, rel_tol=1e-6):
            raise ValueError(
                f"the source ViT runs LayerNorm eps {eps:g} but config.layer_norm_eps is {config.layer_norm_eps:g}: "
                f"build the config with layer_norm_eps={eps:g} to reproduce that module, or pass its state_dict() to "
                "run the same weights with the config's eps"
            )
        state_dict = source.state_dict()
    elif isinstance(source, Mapping):
        state_dict = source
    else:
        raise TypeError(
            f"from_dino takes a DINO ViT module (official, timm or transformers) or its state dict, got "
            f"{type(source).__name__}"
        )
    converted = convert_dino_state_dict(state_dict, config)
    try:
        dino.load_state_dict(converted, strict=True)
    except RuntimeError as err:  # size mismatches (intermediate_size, qkv_bias, ...)
        raise ValueError(
            f"the DINO checkpoint does not fit this DIAMANTConfig: {_one_line(err)}; use the preset that matches "
            "the checkpoint (check intermediate_size and qkv_bias)"
        ) from err


def _fetch_dino_state_dict(config: DIAMANTConfig) -> dict:
    name = config.pretrained_dino
    if not name:
        raise ValueError(
            "config.pretrained_dino names no DINO weights: set it (e.g. 'vit_small_patch8_224.dino' or "
            "'facebook/dino-vits8') or load a ViT yourself with from_dino(state_dict, config)"
        )
    try:
        if "/" in name:  # a transformers Hub repo of a ViTModel
            from transformers import ViTModel

            return ViTModel.from_pretrained(name, add_pooling_layer=False).state_dict()
        import timm  # only here: building the model never needs it

        return timm.create_model(name, pretrained=True, num_classes=0).state_dict()
    except Exception as err:  # hub, HTTP, file and timm errors come in many types
        raise OSError(
            f"could not load the DINO weights {name!r} from the Hugging Face Hub: {type(err).__name__}: "
            f"{_one_line(err)[:300]}. Go online (unset HF_HUB_OFFLINE), or load a DINO state dict yourself and call "
            "from_dino(state_dict, config)"
        ) from err


__all__ = [
    "DIAMANTPreTrainedModel",
    "DIAMANTModel",
    "DIAMANTForSemanticSegmentation",
    "DIAMANTModelOutput",
    "DIAMANTSemanticSegmenterOutput",
    "DIAMANTDinoViT",
    "convert_dino_state_dict",
]
