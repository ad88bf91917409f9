"""LT-ViT configuration.

Paper: Marikkar et al., "LT-ViT: A Vision Transformer for multi-label Chest X-ray classification",
arXiv 2311.07263 (ICIP 2023). No official code exists.

What the paper states: a ViT whose input is extended with randomly initialised auxiliary tokens, one per
label, that attend jointly with the image tokens and so aggregate information from several depths; it works
with different pretrained initialisations (ViT-S/16 and ViT-B/16 at 224 px) and is interpretable without
Grad-CAM. Label sets: NIH ChestX-ray14 (14 findings) and CheXpert (5 competition findings).

Everything below that the paper does not give is our choice, not the paper's, and each such field says so:
the number of blocks the label tokens join (4), their init std (0.02), the attention mask (image queries see
image keys only, so the pretrained image pathway is unchanged), the shared Linear(D -> 1) readout, the loss
weights, and the "ignore" policy for uncertain (-1) labels.
"""

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

NIH_LABELS = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
]
CHEXPERT_LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def _default_nih_id2label():
    return dict(enumerate(NIH_LABELS))


# Copied from hfmed.models.scopeformer.configuration_scopeformer._check_label_lists
def _check_label_lists(config) -> None:
    """`loss_pos_weight` and `label_thresholds`: one positive weight, one probability per label."""
    if config.loss_pos_weight is not None and (
        len(config.loss_pos_weight) != config.num_labels or any(w <= 0 for w in config.loss_pos_weight)
    ):
        raise ValueError(
            f"loss_pos_weight must hold one positive weight per label ({config.num_labels}), "
            f"got {config.loss_pos_weight}"
        )
    if config.label_thresholds is not None and (
        len(config.label_thresholds) != config.num_labels or any(not 0 <= t <= 1 for t in config.label_thresholds)
    ):
        raise ValueError(
            f"label_thresholds must hold one probability in [0, 1] per label ({config.num_labels}), "
            f"got {config.label_thresholds}"
        )


class LTViTConfig(PreTrainedConfig):
    r"""
    Configuration of an LT-ViT: a standard ViT image pathway plus one learned token per label that joins
    the last `num_label_blocks` blocks; each label token is read out by a shared Linear(D -> 1).

    The image pathway equals a timm `VisionTransformer` (CLS token, learned position embeddings, pre-norm
    blocks, final LayerNorm), so any standard ViT checkpoint loads into it (`LTViTModel.from_vit`).

    Args:
        image_size (`int`, defaults to 224): input height and width (the paper's resolution).
        patch_size (`int`, defaults to 16): patch side; must divide `image_size` (ViT-S/16, ViT-B/16).
        num_channels (`int`, defaults to 3): input channels (grey radiographs are replicated to 3 so that
            ImageNet / DINO ViT weights apply).
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size (`int`):
            ViT size; defaults are ViT-S/16 (384 / 12 / 6 / 1536, MLP ratio 4).
        hidden_act (`str`, defaults to `"gelu"`): MLP activation (exact GELU, as timm's ViT).
        layer_norm_eps (`float`, defaults to 1e-6): LayerNorm epsilon. timm ViTs use 1e-6, transformers
            `ViTModel` uses 1e-12: set it to match the checkpoint you initialise from.
        qkv_bias (`bool`, defaults to `True`): bias on the fused query/key/value projection.
        hidden_dropout_prob (`float`, defaults to 0.0): dropout after the embeddings, the attention output
            projection and in the MLP (timm's placement). Our choice, not the paper's.
        attention_probs_dropout_prob (`float`, defaults to 0.0): dropout on attention weights. Our choice.
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal init of linear and patch
            layers, the CLS token and the position embeddings (used only when training from scratch).
        num_label_blocks (`int`, defaults to 4): the label tokens are appended at the input of the last
            `num_label_blocks` blocks (`num_hidden_layers` means from the start). The paper studies this
            depth; 4 is our choice, not the paper's. Must be in 1..num_hidden_layers.
        label_token_init_std (`float`, defaults to 0.02): std of the truncated-normal init of the label
            tokens (the paper says "randomly initialised"; the value is our choice, not the paper's).
        loss_label_weights (`list[float]`, *optional*): per-label weights of the weighted mean of the
            per-label BCE losses; `None` means all 1. Our choice, not the paper's.
        loss_pos_weight (`list[float]`, *optional*): per-label positive-class weight (`pos_weight` of BCE),
            against class imbalance (Hernia is ~0.2 % of NIH images). Our choice, not the paper's; default none.
        pretrained_vit (`str`, *optional*):
            timm name of the ImageNet ViT whose weights `from_pretrained_backbones` loads into the image pathway
            (presets: the AugReg ImageNet-21k -> 1k ViT-S/16 and ViT-B/16; our choice, the paper allows any
            standard ViT). `None`: train from scratch.
        label_thresholds (`list[float]`, *optional*): per-label decision thresholds (positive iff probability
            >= threshold), chosen on the validation split after training. Our choice; default none (0.5).
        id2label / label2id: the labels; default the 14 NIH ChestX-ray14 findings (`NIH_LABELS`). For
            CheXpert pass `id2label=dict(enumerate(CHEXPERT_LABELS))`.
        problem_type (`str`): must be `"multi_label_classification"`.
    """

    model_type = "lt_vit"

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 384
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    num_label_blocks: int = 4
    label_token_init_std: float = 0.02
    loss_label_weights: list[float] | None = None
    loss_pos_weight: list[float] | None = None
    label_thresholds: list[float] | None = None
    pretrained_vit: str | None = None

    def __post_init__(self, **kwargs):
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = _default_nih_id2label()
        if self.problem_type is None:
            self.problem_type = "multi_label_classification"
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
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size}); "
                "pick e.g. image_size=224 with patch_size=16"
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
        if not isinstance(self.qkv_bias, bool):
            raise ValueError(f"qkv_bias must be True or False, got {self.qkv_bias!r}")
        for name in ("layer_norm_eps", "initializer_range", "label_token_init_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if (
            isinstance(self.num_label_blocks, bool)
            or not isinstance(self.num_label_blocks, int)
            or not 1 <= self.num_label_blocks <= self.num_hidden_layers
        ):
            raise ValueError(
                f"num_label_blocks must be an integer in 1..num_hidden_layers ({self.num_hidden_layers}), got "
                f"{self.num_label_blocks!r}: the label tokens join the last num_label_blocks blocks"
            )
        if self.problem_type != "multi_label_classification":
            raise ValueError(
                f"problem_type must be 'multi_label_classification' for LT-ViT, got {self.problem_type!r}"
            )
        if self.loss_label_weights is not None and (
            len(self.loss_label_weights) != self.num_labels
            or any(w < 0 for w in self.loss_label_weights)
            or sum(self.loss_label_weights) <= 0
        ):
            raise ValueError(
                f"loss_label_weights must hold one weight >= 0 per label ({self.num_labels}) with a positive "
                f"sum, got {self.loss_label_weights}"
            )
        _check_label_lists(self)

    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Number of patch tokens (CLS excluded)."""
        return self.grid_size**2

    @property
    def first_label_block(self) -> int:
        """Index of the first block whose input holds the label tokens."""
        return self.num_hidden_layers - self.num_label_blocks


# Named presets: the paper's two backbones, and a tiny one for tests and the CPU demo.
PRESETS = {
    "lt-vit-small": {  # ViT-S/16 at 224 (timm vit_small_patch16_224)
        "pretrained_vit": "vit_small_patch16_224.augreg_in21k_ft_in1k",
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 6,
        "intermediate_size": 1536,
    },
    "lt-vit-base": {  # ViT-B/16 at 224 (timm vit_base_patch16_224)
        "pretrained_vit": "vit_base_patch16_224.augreg2_in21k_ft_in1k",
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "lt-vit-tiny": {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "num_label_blocks": 1,
    },
}


def lt_vit_config(preset: str, **overrides) -> LTViTConfig:
    """Build an `LTViTConfig` from a named preset (see `PRESETS`), with field overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown LT-ViT preset '{preset}'; choose one of {sorted(PRESETS)}")
    return LTViTConfig(**{**PRESETS[preset], **overrides})


__all__ = ["LTViTConfig", "lt_vit_config", "PRESETS", "NIH_LABELS", "CHEXPERT_LABELS"]
