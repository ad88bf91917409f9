"""DIAMANT configuration.

Paper: Yeganeh, Farshad, Weinberger, Ahmadi, Adeli, Navab, "DIAMANT: Dual Image-Attention Map Encoders For
Medical Image Segmentation", arXiv 2304.14571 (2023). No official code exists.

What the paper states: a purely convolutional segmentation network with two encoder branches, one for the
image and one for the self-attention maps of the same image from a frozen self-supervised DINO ViT (one
channel per head; the paper's figure shows six heads, a ViT-S), and a decoder; it beats U-Net and transformer
segmenters on two public medical datasets at lower compute.

Everything else below is our choice, not the paper's, and each such field says so: the DINO backbone (ViT-S/8
at 224, DINO's own visualisation model), how the maps are made (exactly DINO's `get_last_selfattention`, CLS
row over the patches, nearest upsampling, min-max per head), the encoder / bottleneck / decoder widths, the
skip connections, the loss (cross-entropy + soft Dice) and its weights.
"""

import math

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

SKIP_CONNECTIONS = ("image", "attention", "both")
# One class per pixel; not one of transformers' classifier / regressor values.
PROBLEM_TYPE = "semantic_segmentation"


# Copied from hfmed.models.slice_cnn.configuration_slice_cnn._is_int
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Copied from hfmed.models.slice_cnn.configuration_slice_cnn._is_number
def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class DIAMANTConfig(PreTrainedConfig):
    r"""
    Configuration of a DIAMANT segmenter: a frozen DINO ViT whose last-block CLS attention maps (one per head) feed
    a convolutional attention-map encoder beside a convolutional image encoder; the two bottom features are
    concatenated into a bottleneck and a U-Net decoder (skips from the image encoder) predicts per-pixel logits.

    Frozen DINO ViT (the official DINO `VisionTransformer` structure; defaults are DINO ViT-S/8):
        image_size (`int`, defaults to 224): the input side the image processor resizes to, and the side of the
            position-embedding grid the DINO ViT was trained at (`image_size / patch_size` patches per side). Other
            input sizes work: the position embeddings are then interpolated exactly as DINO's
            `interpolate_pos_encoding` does. 224 is DINO's resolution; using it for DIAMANT is our choice.
        patch_size (`int`, defaults to 8): ViT patch side (8: DINO ViT-S/8, the model of DINO's attention figures;
            our choice, the paper does not name the patch size). 16 for ViT-S/16.
        num_channels (`int`, defaults to 3): image channels (RGB; grey images are replicated by the processor).
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size (`int`): ViT size; defaults are
            ViT-S (384 / 12 / 6 / 1536). `num_attention_heads` is also the number of attention maps, the input
            channels of the attention-map encoder (six in the paper's figure).
        hidden_act (`str`, defaults to `"gelu"`): MLP activation (exact GELU, as DINO).
        layer_norm_eps (`float`, defaults to 1e-6): LayerNorm epsilon of the ViT. DINO trains with 1e-6; the
            transformers copy `facebook/dino-vits8` declares 1e-12 in its config. The weights are the same:
            keep 1e-6 to reproduce DINO's own attention maps, or set 1e-12 to match that transformers model.
        qkv_bias (`bool`, defaults to `True`): bias on the fused query/key/value projection (DINO's ViTs).
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal init of the ViT's linear
            layers, CLS token and position embeddings (DINO's own init; used only without pretrained weights).
        pretrained_dino (`str`, *optional*, defaults to `"vit_small_patch8_224.dino"`): where
            `from_pretrained_backbones` takes the DINO weights: a timm model name (no '/') such as
            `"vit_small_patch8_224.dino"`, or a transformers Hub repo id of a `ViTModel` such as
            `"facebook/dino-vits8"`. `None`: the ViT stays randomly initialised (tests, CPU demos). Ignored by
            `from_pretrained`, which loads the DINO saved inside our checkpoint.

    Convolutional network (the paper gives two conv encoders, a bottleneck and a decoder; all sizes are ours):
        encoder_widths (`list[int]`, defaults to `[32, 64, 128, 128]`): output channels of the encoder stages;
            each stage is 2 x (conv3x3 - BatchNorm - ReLU) then 2x2 max-pooling, in both encoders. Our choice
            (Y-Net-shaped, the same authors' earlier dual-encoder network).
        bottleneck_width (`int`, defaults to 512): channels of the bottleneck (2 x conv3x3-BN-ReLU on the
            concatenated bottom features of the encoders). Our choice.
        decoder_widths (`list[int]`, defaults to `[256, 128, 64, 32]`): output channels of the decoder stages,
            one per encoder stage; each is a 2x2 stride-2 ConvTranspose, concatenation with the skip features,
            and 2 x conv3x3-BN-ReLU. A 1x1 conv then gives `num_labels` logits. Our choice.
        skip_connections (`str`, defaults to `"image"`): which encoder feeds the decoder's skips: `"image"`,
            `"attention"` or `"both"` (concatenated). Our choice; `"attention"` is needed when
            `use_image_encoder=False`.
        use_image_encoder (`bool`, defaults to `True`): ablation switch; `False` drops the image encoder (the
            network then sees the image only through the DINO attention maps).
        use_attention_encoder (`bool`, defaults to `True`): ablation switch; `False` drops the DINO ViT and the
            attention-map encoder: a plain U-Net of the same widths (the paper's main comparison).
        conv_bias (`bool`, defaults to `False`): bias on the 3x3 convolutions (they are followed by BatchNorm,
            which makes a bias redundant). Our choice. BatchNorm uses PyTorch's defaults (eps 1e-5, momentum 0.1).

    Loss (the paper does not state it; METHODS.md chooses cross-entropy + soft Dice):
        loss_ce_weight (`float`, defaults to 1.0): weight of the pixel-wise cross-entropy (mean over the pixels
            that are not ignored). Our choice, not the paper's.
        loss_dice_weight (`float`, defaults to 1.0): weight of the soft Dice loss `1 - mean_c Dice_c`, where
            `Dice_c = (2 sum(p_c g_c) + s) / (sum(p_c) + sum(g_c) + s)` over all non-ignored pixels of the batch,
            `p` the softmax probabilities and `g` the one-hot labels. Our choice, not the paper's.
        dice_smooth (`float`, defaults to 1.0): the smoothing term `s` above. Our choice, not the paper's.
        dice_include_background (`bool`, defaults to `True`): whether class 0 enters the Dice mean. Our choice,
            not the paper's.
        semantic_loss_ignore_index (`int`, defaults to 255): label value that the loss ignores (transformers'
            name and value for segmentation configs). Must lie outside `0..num_labels-1`.

    id2label / label2id: default `{0: "background", 1: "foreground"}` (binary lesion / polyp segmentation).
    problem_type (`str`, defaults to `"semantic_segmentation"`): the only value a DIAMANT config takes (one class
        per pixel); hfmed's task layer reads it. transformers' own values are for classifiers and regressors.
    """

    model_type = "diamant"

    image_size: int = 224
    patch_size: int = 8
    num_channels: int = 3
    hidden_size: int = 384
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    initializer_range: float = 0.02
    pretrained_dino: str | None = "vit_small_patch8_224.dino"
    encoder_widths: list[int] | None = None
    bottleneck_width: int = 512
    decoder_widths: list[int] | None = None
    skip_connections: str = "image"
    use_image_encoder: bool = True
    use_attention_encoder: bool = True
    conv_bias: bool = False
    loss_ce_weight: float = 1.0
    loss_dice_weight: float = 1.0
    dice_smooth: float = 1.0
    dice_include_background: bool = True
    semantic_loss_ignore_index: int = 255

    def __post_init__(self, **kwargs):
        if self.encoder_widths is None:
            self.encoder_widths = [32, 64, 128, 128]
        if self.decoder_widths is None:
            self.decoder_widths = [256, 128, 64, 32]
        if isinstance(self.encoder_widths, tuple):
            self.encoder_widths = list(self.encoder_widths)
        if isinstance(self.decoder_widths, tuple):
            self.decoder_widths = list(self.decoder_widths)
        if self.problem_type is None:
            self.problem_type = PROBLEM_TYPE
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = {0: "background", 1: "foreground"}
        super().__post_init__(**kwargs)
        if self.label2id is None or len(self.label2id) != len(self.id2label):
            self.label2id = {label: i for i, label in self.id2label.items()}
        self._validate()

    def _validate(self):
        for name in (
            "image_size",
            "patch_size",
            "num_channels",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "bottleneck_width",
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.problem_type != PROBLEM_TYPE:
            raise ValueError(
                f"problem_type must be {PROBLEM_TYPE!r} (DIAMANT predicts one class per pixel), got "
                f"{self.problem_type!r}: drop problem_type"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACT2FN:
            raise ValueError(
                f"hidden_act must be one of transformers' activations (e.g. 'gelu'), got {self.hidden_act!r}"
            )
        for name in ("qkv_bias", "use_image_encoder", "use_attention_encoder", "conv_bias", "dice_include_background"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not _is_number(value) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("loss_ce_weight", "loss_dice_weight", "dice_smooth"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.loss_ce_weight + self.loss_dice_weight <= 0:
            raise ValueError(
                "loss_ce_weight and loss_dice_weight are both 0, so there is no loss: give one a positive weight"
            )
        if self.pretrained_dino is not None and (not isinstance(self.pretrained_dino, str) or not self.pretrained_dino):
            raise ValueError(
                f"pretrained_dino must be None, a timm name or a Hub repo id, got {self.pretrained_dino!r}: e.g. "
                "'vit_small_patch8_224.dino' or 'facebook/dino-vits8'"
            )
        for name in ("encoder_widths", "decoder_widths"):
            value = getattr(self, name)
            if not isinstance(value, list) or not value or not all(_is_int(v) and v > 0 for v in value):
                raise ValueError(f"{name} must be a non-empty list of positive integers, got {value!r}")
        if len(self.decoder_widths) != len(self.encoder_widths):
            raise ValueError(
                f"decoder_widths has {len(self.decoder_widths)} stages but encoder_widths has "
                f"{len(self.encoder_widths)}: give one decoder stage per encoder stage (one upsampling per pooling)"
            )
        if self.skip_connections not in SKIP_CONNECTIONS:
            raise ValueError(f"skip_connections must be one of {list(SKIP_CONNECTIONS)}, got {self.skip_connections!r}")
        if not (self.use_image_encoder or self.use_attention_encoder):
            raise ValueError(
                "use_image_encoder and use_attention_encoder are both False, so the network sees nothing: keep "
                "at least one encoder"
            )
        if not self.use_image_encoder and self.skip_connections != "attention":
            raise ValueError(
                f"skip_connections={self.skip_connections!r} needs the image encoder but use_image_encoder=False: "
                "set skip_connections='attention'"
            )
        if not self.use_attention_encoder and self.skip_connections != "image":
            raise ValueError(
                f"skip_connections={self.skip_connections!r} needs the attention-map encoder but "
                "use_attention_encoder=False: set skip_connections='image'"
            )
        if self.image_size % self.size_multiple:
            raise ValueError(
                f"image_size ({self.image_size}) must be divisible by {self.size_multiple} (patch_size "
                f"{self.patch_size} and {len(self.encoder_widths)} poolings of 2): pick e.g. image_size="
                f"{max(1, round(self.image_size / self.size_multiple)) * self.size_multiple}"
            )
        if self.num_labels < 2:
            raise ValueError(
                f"num_labels must be at least 2 (background and one class; logits are softmaxed over classes), "
                f"got {self.num_labels}: pass id2label={{0: 'background', 1: 'lesion'}}"
            )
        ignore = self.semantic_loss_ignore_index
        if not _is_int(ignore) or 0 <= ignore < self.num_labels:
            raise ValueError(
                f"semantic_loss_ignore_index must be an integer outside 0..{self.num_labels - 1} (the class "
                f"indices), got {ignore!r}: e.g. 255"
            )

    @property
    def size_multiple(self) -> int:
        """Height and width of the input must be multiples of this: 2 ** (encoder stages), for the poolings,
        and the patch size when the DINO ViT runs."""
        pooling = 2 ** len(self.encoder_widths)
        return math.lcm(pooling, self.patch_size) if self.use_attention_encoder else pooling

    @property
    def grid_size(self) -> int:
        """Patches per side of the DINO ViT's position-embedding grid."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patch tokens of the position-embedding grid (CLS excluded)."""
        return self.grid_size**2


# Named presets: DINO ViT-S/8 and ViT-S/16 at 224, and a tiny one for tests.
PRESETS = {
    "diamant-vits8": {"patch_size": 8, "pretrained_dino": "vit_small_patch8_224.dino"},
    "diamant-vits16": {"patch_size": 16, "pretrained_dino": "vit_small_patch16_224.dino"},
    "diamant-tiny": {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "encoder_widths": [8, 16],
        "bottleneck_width": 32,
        "decoder_widths": [16, 8],
        "pretrained_dino": None,
    },
}


def diamant_config(preset: str, **overrides) -> DIAMANTConfig:
    """Build a `DIAMANTConfig` from a named preset (see `PRESETS`), with field overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown DIAMANT preset '{preset}'; choose one of {sorted(PRESETS)}")
    return DIAMANTConfig(**{**PRESETS[preset], **overrides})


__all__ = ["DIAMANTConfig", "diamant_config", "PRESETS", "SKIP_CONNECTIONS"]
