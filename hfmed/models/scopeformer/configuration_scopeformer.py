"""Scopeformer / Efficient Scopeformer configuration.

Papers: Barhoumi & Rasool, "Scopeformer: n-CNN-ViT Hybrid Model for Intracranial Hemorrhage
Classification", arXiv 2107.04575 (MIDL 2021); Barhoumi, Bouaynaya & Rasool, "Efficient Scopeformer:
Towards Scalable and Rich Feature Extraction for Intracranial Hemorrhage Detection", arXiv 2302.00220.

What the papers state: n CNN feature extractors produce feature maps that are stacked, reduced by a
feature projection, and fed to a ViT that classifies the 6 RSNA 2019 hemorrhage labels. The base model
uses Xceptions; the efficient models use four different frozen CNNs and reach the base model's quality
with about 8x (or 17x) fewer trainable parameters.

Everything else below is our choice, not the papers' (no official code exists); each such field says so.
"""

from dataclasses import field

from transformers import PreTrainedConfig

RSNA_LABELS = ["any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"]

PROJECTION_TYPES = ("per_backbone", "joint")
TOKEN_LAYOUTS = ("spatial", "channel")
POOLING_TYPES = ("cls", "mean")
FEATURE_RESIZE_MODES = ("adaptive_avg", "bilinear")


def _default_rsna_id2label():
    return dict(enumerate(RSNA_LABELS))


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


class ScopeformerConfig(PreTrainedConfig):
    r"""
    Configuration of a Scopeformer: several timm CNNs -> feature projection -> ViT encoder -> multi-label head.

    Args:
        backbones (`list[str]`, defaults to the Efficient Scopeformer's four CNNs):
            timm model names of the CNN feature extractors, built with `features_only=True`. The papers use
            Xceptions (base) and four different ImageNet CNNs (efficient); the exact timm names are our choice.
        backbone_out_indices (`list[int]`, defaults to `[4, 4, 4, 4]`):
            One timm feature-stage index per backbone: how many convolutional blocks are used before the
            map is tapped (the papers report more blocks help; the default of the last stage is our choice).
        freeze_backbones (`bool`, defaults to `True`):
            Whether the CNNs are frozen (no gradient, BatchNorm kept in eval mode). Efficient Scopeformer
            freezes them; the base model trains them.
        feature_grid_size (`int`, defaults to 7):
            Every tapped map is resized to this square grid before projection (our choice: the grid of a
            stride-32 map at 224 px).
        feature_resize (`str`, defaults to `"adaptive_avg"`):
            How maps reach the grid: `"adaptive_avg"` pooling or `"bilinear"` interpolation (our choice).
        projection_type (`str`, defaults to `"per_backbone"`):
            `"per_backbone"`: a 1x1 conv + BatchNorm + GELU per backbone to `projection_dim` channels, then
            concatenation; `"joint"`: concatenation, then one 1x1 conv + BatchNorm + GELU to
            `projection_dim` channels. The papers name "feature projection" without its form: our choice.
        projection_dim (`int`, defaults to 96):
            Output channels of each projection (per backbone or joint). Our choice.
        token_layout (`str`, defaults to `"spatial"`):
            `"spatial"`: one token per grid cell (token features = projected channels); `"channel"`: one
            token per projected channel (token features = the flattened grid). The efficient paper compares
            ViT input configurations; these two are our reading of them.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size (`int`):
            ViT encoder size (defaults: ViT-S width with 8 blocks, our choice so that trainable parameters
            stay >= 8x below the base preset, as the efficient paper reports).
        hidden_act (`str`, defaults to `"gelu"`): MLP activation.
        hidden_dropout_prob, attention_probs_dropout_prob (`float`, default 0.0): dropout rates.
        layer_norm_eps (`float`, defaults to 1e-6): LayerNorm epsilon.
        qkv_bias (`bool`, defaults to `True`): bias on the query/key/value projections.
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal init of linear layers.
        pooling (`str`, defaults to `"cls"`):
            `"cls"` (CLS token) or `"mean"` (mean of the patch tokens) as the pooled output (our choice).
        image_size (`int`, defaults to 224): input height and width (our choice).
        num_channels (`int`, defaults to 3): input channels, one per Hounsfield window.
        loss_label_weights (`list[float]`, defaults to `[2, 1, 1, 1, 1, 1]`):
            Per-label weights of the weighted multi-label log loss (the RSNA 2019 metric: "any" counts 2).
        loss_pos_weight (`list[float]`, *optional*):
            Per-label positive-class weight in the loss (`pos_weight` of BCE), against class imbalance
            (epidural is ~0.4 % of RSNA slices). Our choice, not the papers'; default none.
        label_thresholds (`list[float]`, *optional*):
            Per-label decision thresholds (positive iff probability >= threshold), chosen on the validation
            split after training (Youden's J or a target sensitivity). Our choice; default none (0.5).
        id2label / label2id: the labels; default the 6 RSNA 2019 labels.
        problem_type (`str`): must be `"multi_label_classification"`.
    """

    model_type = "scopeformer"

    backbones: list[str] = field(
        default_factory=lambda: ["resnet50", "efficientnet_b0", "densenet121", "legacy_xception"]
    )
    backbone_out_indices: list[int] = field(default_factory=lambda: [4, 4, 4, 4])
    freeze_backbones: bool = True
    feature_grid_size: int = 7
    feature_resize: str = "adaptive_avg"
    projection_type: str = "per_backbone"
    projection_dim: int = 96
    token_layout: str = "spatial"
    hidden_size: int = 384
    num_hidden_layers: int = 8
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    initializer_range: float = 0.02
    pooling: str = "cls"
    image_size: int = 224
    num_channels: int = 3
    loss_label_weights: list[float] | None = None
    loss_pos_weight: list[float] | None = None
    label_thresholds: list[float] | None = None

    def __post_init__(self, **kwargs):
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = _default_rsna_id2label()
        if self.problem_type is None:
            self.problem_type = "multi_label_classification"
        super().__post_init__(**kwargs)
        if self.label2id is None or len(self.label2id) != len(self.id2label):
            self.label2id = {label: i for i, label in self.id2label.items()}
        if self.loss_label_weights is None:
            self.loss_label_weights = [2.0 if self.id2label[i] == "any" else 1.0 for i in range(self.num_labels)]
        self._validate()

    def _validate(self):
        if not self.backbones or not all(isinstance(b, str) and b for b in self.backbones):
            raise ValueError(f"backbones must be a non-empty list of timm model names, got {self.backbones!r}")
        import timm  # imported here so the config stays light to import

        for name in self.backbones:
            if not timm.is_model(name):
                raise ValueError(
                    f"backbones: unknown timm model '{name}'; pick a name from timm.list_models() "
                    "(e.g. 'resnet50', 'legacy_xception')"
                )
        if len(self.backbone_out_indices) != len(self.backbones):
            raise ValueError(
                f"backbone_out_indices has {len(self.backbone_out_indices)} entries but there are "
                f"{len(self.backbones)} backbones; give one tap stage per backbone"
            )
        if any(not isinstance(i, int) or i < 0 for i in self.backbone_out_indices):
            raise ValueError(
                f"backbone_out_indices must be non-negative timm stage indices, got {self.backbone_out_indices}"
            )
        _choice("projection_type", self.projection_type, PROJECTION_TYPES)
        _choice("token_layout", self.token_layout, TOKEN_LAYOUTS)
        _choice("pooling", self.pooling, POOLING_TYPES)
        _choice("feature_resize", self.feature_resize, FEATURE_RESIZE_MODES)
        for name in (
            "feature_grid_size",
            "projection_dim",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "image_size",
            "num_channels",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.problem_type != "multi_label_classification":
            raise ValueError(
                f"problem_type must be 'multi_label_classification' for Scopeformer, got {self.problem_type!r}"
            )
        if len(self.loss_label_weights) != self.num_labels:
            raise ValueError(
                f"loss_label_weights has {len(self.loss_label_weights)} entries but there are "
                f"{self.num_labels} labels; give one weight per label"
            )
        if any(w < 0 for w in self.loss_label_weights) or sum(self.loss_label_weights) <= 0:
            raise ValueError(f"loss_label_weights must be >= 0 with a positive sum, got {self.loss_label_weights}")
        _check_label_lists(self)

    @property
    def num_tokens(self) -> int:
        """Number of ViT input tokens, CLS excluded."""
        if self.token_layout == "spatial":
            return self.feature_grid_size**2
        return self.projected_channels

    @property
    def projected_channels(self) -> int:
        """Channels of the stacked map after projection."""
        if self.projection_type == "per_backbone":
            return self.projection_dim * len(self.backbones)
        return self.projection_dim


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


# Named presets. Sizes are our choices; the constraint they honour is the papers' trainable-parameter
# ratio (base / efficient >= 8, base / efficient-small >= 17), asserted in the tests.
PRESETS = {
    "scopeformer-base": {
        "backbones": ["legacy_xception", "legacy_xception", "legacy_xception"],
        "backbone_out_indices": [4, 4, 4],
        "freeze_backbones": False,
        "projection_dim": 256,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "scopeformer-efficient": {},
    "scopeformer-efficient-small": {
        "projection_dim": 48,
        "hidden_size": 192,
        "num_hidden_layers": 12,
        "num_attention_heads": 3,
        "intermediate_size": 768,
    },
    # Tiny, for tests and the CPU demo: two small timm test CNNs tapped at stride 8.
    "scopeformer-tiny": {
        "backbones": ["test_efficientnet", "test_resnet"],
        "backbone_out_indices": [2, 2],
        "feature_grid_size": 4,
        "projection_dim": 16,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": 32,
    },
}


def scopeformer_config(preset: str, **overrides) -> ScopeformerConfig:
    """Build a `ScopeformerConfig` from a named preset (see `PRESETS`), with field overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown Scopeformer preset '{preset}'; choose one of {sorted(PRESETS)}")
    return ScopeformerConfig(**{**PRESETS[preset], **overrides})


__all__ = ["ScopeformerConfig", "scopeformer_config", "PRESETS", "RSNA_LABELS"]
