"""MoVL configuration.

Paper: Tian, Yue, Liu, Yang, Jiang, Wang, "MoVL: Exploring Fusion Strategies for the Domain-Adaptive
Application of Pretrained Models in Medical Imaging Tasks", arXiv 2405.07411 (2024). No official code and no
full text are available; only the abstract is known.

What the paper states: the pretrained backbone (ResNet or CLIP) stays frozen, its parameters and architecture
unchanged. A visual prompt (VP) on the input bridges the input gap and a linear probe (LP) on the output the
output gap; the paper studies strategies to couple the two. The joint loss is the classification loss plus a
discrepancy loss between the prompted and the original image. MoVL reaches 90.91 % mean accuracy on four
medical datasets (full fine-tuning: 91.13 %) and 90.33 % out of distribution (full fine-tuning: 85.15 %).

Everything else below is our choice, not the paper's, and each such field says so: the prompt's form (Bahng et
al. 2022's pixel-space padding prompt added to the normalised image), its size and init, the discrepancy's
distance and weight, the strategies' stage schedule and the head's init.
"""

import functools

from transformers import CLIPVisionConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
)

BACKBONE_TYPES = ("timm", "clip")
PROMPT_TYPES = ("padding", "fixed_patch", "full")
PROMPT_INITS = ("zeros", "normal")
STRATEGIES = ("lp", "vp", "lp_then_vp", "joint", "movl", "full_finetune")
DISCREPANCIES = ("mse", "cosine", "kl")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification")

# The strategies that put a prompt on the input (`lp` and `full_finetune` read the plain image).
PROMPTED_STRATEGIES = ("vp", "lp_then_vp", "joint", "movl")


@functools.lru_cache(maxsize=32)
def _timm_num_features(name: str, in_chans: int) -> int:
    """Width of a timm model's pooled feature, read from the model built on the meta device (no memory, no
    weights)."""
    import timm  # imported here so the config stays light to import
    import torch

    with torch.device("meta"):
        return int(timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans).num_features)


def _timm_mean_std(name: str) -> tuple[list[float], list[float]]:
    """The normalisation timm's pretrained weights for `name` expect; ImageNet's when timm has none."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    mean = getattr(cfg, "mean", None) or IMAGENET_DEFAULT_MEAN
    std = getattr(cfg, "std", None) or IMAGENET_DEFAULT_STD
    return [float(v) for v in mean], [float(v) for v in std]


class MoVLConfig(PreTrainedConfig):
    r"""
    Configuration of MoVL: a learned visual prompt added to the normalised image -> a frozen pretrained
    backbone (a timm CNN, or the transformers CLIP vision tower with its projection) -> a linear probe.

    Args:
        backbone_type (`str`, defaults to `"timm"`):
            `"timm"`: a timm model named by `backbone` (any timm CNN; global-pooled features). `"clip"`: a
            `CLIPVisionModelWithProjection` built from `clip_vision_config` (the projected image embedding).
            The paper uses ResNet and CLIP backbones.
        backbone (`str`, defaults to `"resnet50.tv_in1k"`):
            With `"timm"`: the timm model name, optionally with its weights tag, e.g. `"resnet50.tv_in1k"`
            (torchvision's original ImageNet ResNet-50; the tag is our choice). With `"clip"`: the Hub repo of the
            CLIP checkpoint whose vision tower `from_pretrained_backbones` loads, e.g.
            `"openai/clip-vit-base-patch32"` (Bahng et al.'s default, our choice). The architecture is built
            without weights (`pretrained=False`); weights come only through `from_pretrained_backbones` or a
            saved MoVL checkpoint.
        clip_vision_config (`CLIPVisionConfig` or `dict`, *optional*):
            The CLIP vision tower's config (`backbone_type="clip"` only; default: ViT-B/32 at 224 px).
        image_size (`int`, defaults to 224): input height and width; with CLIP it must equal
            `clip_vision_config.image_size`.
        num_channels (`int`, defaults to 3): input channels (grey images are replicated to 3 by the processor).
        image_mean, image_std (`list[float]`, *optional*):
            The normalisation the backbone's weights expect; the prompt lives in this normalised space.
            Default: timm's pretrained config of `backbone` (ImageNet for ResNet-50) or CLIP's mean / std.
        prompt_type (`str`, defaults to `"padding"`):
            `"padding"`: four learnable border strips of width `prompt_size` (Bahng et al.'s `PadPrompter`:
            69,840 parameters at width 30 and 224 px); `"fixed_patch"`: a learnable `prompt_size` square in the
            top-left corner; `"full"`: a learnable additive image of the input's size. Our choice (the paper
            does not give its prompt's form).
        prompt_size (`int`, defaults to 30): strip width (`padding`) or square side (`fixed_patch`); ignored by
            `full`. Must be less than half the image (padding) or at most half of it (fixed_patch). 30 is
            Bahng's default, our choice.
        prompt_init (`str`, defaults to `"zeros"`):
            `"zeros"` (the prompted image starts equal to the plain one, so an LP warm start sees the plain
            image and the discrepancy starts at 0) or `"normal"` (N(0, 1), Bahng's). Our choice.
        normalize_features (`bool`, defaults to `False`): L2-normalise the pooled / projected feature before
            the linear probe (an option for CLIP). Our choice.
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal init of the probe's weight
            (bias 0). Our choice.
        strategy (`str`, defaults to `"movl"`):
            What trains when (see `MoVLPreTrainedModel.training_stage`): `"lp"` the probe only (plain image);
            `"vp"` the prompt only, the probe fixed at its init; `"lp_then_vp"` the probe for
            `lp_warmup_epochs`, then the prompt with the probe frozen; `"joint"` prompt and probe from the start,
            classification loss only; `"movl"` the probe for `lp_warmup_epochs` (LP warm start), then prompt and
            probe with the discrepancy term; `"full_finetune"` backbone and probe, no prompt (the paper's full
            fine-tuning reference). The stage schedule is our choice; the paper names the coupling only.
        lp_warmup_epochs (`int`, defaults to 5): epochs of the probe-only stage of `lp_then_vp` and `movl`
            (the paper: "a few"; 5 is our choice).
        discrepancy (`str`, defaults to `"mse"`):
            Distance between the prompted and the plain image: `"mse"` or `"cosine"` between the backbone
            features the probe reads, or `"kl"` between the predictive distributions (plain -> prompted). The
            paper names "feature discrepancy" without its form: our choice.
        discrepancy_weight (`float`, defaults to 0.1): lambda in `loss = classification + lambda * discrepancy`
            (our choice).
        freeze_backbone (`bool`, *optional*):
            Resolved from `strategy` when not given: frozen in every strategy except `full_finetune`. Setting it
            against the strategy is an error (MoVL's premise is a frozen backbone; `full_finetune` trains it).
        loss_pos_weight (`list[float]`, *optional*): per-label positive-class weight of the multi-label BCE
            (multi-label only). Our choice; default none.
        label_thresholds (`list[float]`, *optional*): per-label decision thresholds for multi-label sets, chosen
            on the validation split after training. Our choice; default none (0.5).
        id2label / label2id: the classes.
        problem_type (`str`, defaults to `"single_label_classification"`): cross-entropy over classes, or
            `"multi_label_classification"` (BCE per label) for multi-label sets such as ChestMNIST.
    """

    model_type = "movl"
    sub_configs_defaults = {"clip_vision_config": SubConfigSpec(CLIPVisionConfig, optional=True)}
    # What `transformers.Trainer` leaves out of its predictions: the loss terms and features come before / after
    # the logits in the output, and the logits must be what `compute_metrics` receives.
    keys_to_ignore_at_inference = ["classification_loss", "discrepancy_loss", "features", "hidden_states"]

    backbone_type: str = "timm"
    backbone: str = "resnet50.tv_in1k"
    clip_vision_config: dict | CLIPVisionConfig | None = None
    image_size: int = 224
    num_channels: int = 3
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    prompt_type: str = "padding"
    prompt_size: int = 30
    prompt_init: str = "zeros"
    normalize_features: bool = False
    initializer_range: float = 0.02
    strategy: str = "movl"
    lp_warmup_epochs: int = 5
    discrepancy: str = "mse"
    discrepancy_weight: float = 0.1
    freeze_backbone: bool | None = None
    loss_pos_weight: list[float] | None = None
    label_thresholds: list[float] | None = None

    def __post_init__(self, **kwargs):
        if self.backbone_type == "clip" and self.clip_vision_config is None:
            self.clip_vision_config = CLIPVisionConfig(image_size=self.image_size)
        if self.problem_type is None:
            self.problem_type = "single_label_classification"
        super().__post_init__(**kwargs)
        if self.label2id is None or len(self.label2id) != len(self.id2label):
            self.label2id = {label: i for i, label in self.id2label.items()}
        self._validate()
        if self.freeze_backbone is None:
            self.freeze_backbone = self.strategy != "full_finetune"
        if self.image_mean is None or self.image_std is None:
            mean, std = (
                (list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD))
                if self.backbone_type == "clip"
                else _timm_mean_std(self.backbone)
            )
            self.image_mean = mean if self.image_mean is None else self.image_mean
            self.image_std = std if self.image_std is None else self.image_std
        self._validate_normalisation()

    def _validate(self):
        _choice("backbone_type", self.backbone_type, BACKBONE_TYPES)
        for name in ("image_size", "num_channels", "prompt_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ValueError(
                f"backbone must be a timm model name or a CLIP Hub repo id, got {self.backbone!r}"
            )
        if self.backbone_type == "timm":
            self._validate_timm_backbone()
        else:
            self._validate_clip_backbone()
        _choice("prompt_type", self.prompt_type, PROMPT_TYPES)
        _choice("prompt_init", self.prompt_init, PROMPT_INITS)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("discrepancy", self.discrepancy, DISCREPANCIES)
        _choice("problem_type", self.problem_type, PROBLEM_TYPES)
        half = self.image_size // 2
        if self.prompt_type == "padding" and 2 * self.prompt_size >= self.image_size:
            raise ValueError(
                f"prompt_size {self.prompt_size} is at least half of image_size {self.image_size}: the padding "
                f"prompt would cover the whole image; use prompt_size < {(self.image_size + 1) // 2} or "
                "prompt_type='full'"
            )
        if self.prompt_type == "fixed_patch" and self.prompt_size > half:
            raise ValueError(
                f"prompt_size {self.prompt_size} is wider than half of image_size {self.image_size}: use "
                f"prompt_size <= {half} or prompt_type='full' for a prompt over the whole image"
            )
        for name in ("normalize_features",):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("initializer_range",):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        value = self.discrepancy_weight
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(
                f"discrepancy_weight must be a number >= 0 (0 turns the term off), got {value!r}"
            )
        value = self.lp_warmup_epochs
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"lp_warmup_epochs must be an integer >= 0, got {value!r}")
        if self.freeze_backbone is not None and not isinstance(self.freeze_backbone, bool):
            raise ValueError(f"freeze_backbone must be True, False or None, got {self.freeze_backbone!r}")
        if self.strategy == "full_finetune" and self.freeze_backbone is True:
            raise ValueError(
                "strategy 'full_finetune' trains the backbone but freeze_backbone=True: drop freeze_backbone, or "
                "pick a frozen-backbone strategy (lp, vp, lp_then_vp, joint, movl)"
            )
        if self.strategy != "full_finetune" and self.freeze_backbone is False:
            raise ValueError(
                f"strategy {self.strategy!r} keeps the backbone frozen (MoVL's premise) but freeze_backbone=False: "
                "drop freeze_backbone, or use strategy='full_finetune' to train the backbone"
            )
        if self.loss_pos_weight is not None:
            if self.problem_type != "multi_label_classification":
                raise ValueError(
                    "loss_pos_weight weighs the positives of a multi-label BCE: set "
                    "problem_type='multi_label_classification' or drop loss_pos_weight"
                )
            if len(self.loss_pos_weight) != self.num_labels or any(w <= 0 for w in self.loss_pos_weight):
                raise ValueError(
                    f"loss_pos_weight must hold one positive weight per label ({self.num_labels}), "
                    f"got {self.loss_pos_weight}"
                )
        if self.label_thresholds is not None and (
            len(self.label_thresholds) != self.num_labels
            or any(not 0 <= t <= 1 for t in self.label_thresholds)
        ):
            raise ValueError(
                f"label_thresholds must hold one probability in [0, 1] per label ({self.num_labels}), "
                f"got {self.label_thresholds}"
            )

    def _validate_timm_backbone(self):
        import timm  # imported here so the config stays light to import

        if timm.is_model(self.backbone):
            return
        if "clip" in self.backbone.lower() or "/" in self.backbone:
            raise ValueError(
                f"backbone {self.backbone!r} is a Hub checkpoint (CLIP?), not a timm CNN, but backbone_type is "
                "'timm': for CLIP use backbone_type='clip' (presets 'movl-clip-b32' / 'movl-clip-b16'), for a "
                "ResNet name a timm model such as 'resnet50.tv_in1k'"
            )
        raise ValueError(
            f"backbone: unknown timm model {self.backbone!r}; pick a name from timm.list_models() "
            "(e.g. 'resnet50.tv_in1k')"
        )

    def _validate_clip_backbone(self):
        vision = self.clip_vision_config
        if not isinstance(vision, CLIPVisionConfig):
            raise ValueError(
                f"clip_vision_config must be a CLIPVisionConfig or a dict of its fields, got {type(vision).__name__}"
            )
        import timm

        if timm.is_model(self.backbone) and "clip" not in self.backbone.lower():
            raise ValueError(
                f"backbone {self.backbone!r} is a timm model but backbone_type is 'clip': use backbone_type='timm' "
                "(preset 'movl-resnet50'), or name a CLIP Hub repo such as 'openai/clip-vit-base-patch32'"
            )
        if vision.image_size != self.image_size:
            raise ValueError(
                f"image_size {self.image_size} differs from clip_vision_config.image_size {vision.image_size}: "
                "CLIP's position embeddings fix one input size; set both to the same value"
            )
        if vision.num_channels != self.num_channels:
            raise ValueError(
                f"num_channels {self.num_channels} differs from clip_vision_config.num_channels "
                f"{vision.num_channels}; set both to the same value"
            )

    def _validate_normalisation(self):
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if len(value) != self.num_channels or not all(isinstance(v, (int, float)) for v in value):
                raise ValueError(
                    f"{name} must hold {self.num_channels} numbers (one per channel), got {value!r}"
                )
        if any(v <= 0 for v in self.image_std):
            raise ValueError(f"image_std must be positive, got {self.image_std!r}")

    @property
    def hidden_size(self) -> int:
        """Width of the pooled (timm) or projected (CLIP) feature that the linear probe reads."""
        if self.backbone_type == "clip":
            return self.clip_vision_config.projection_dim
        return _timm_num_features(self.backbone, self.num_channels)

    @property
    def uses_prompt(self) -> bool:
        """Whether the strategy puts a prompt on the input (all but `lp` and `full_finetune`)."""
        return self.strategy in PROMPTED_STRATEGIES

    @property
    def num_prompt_parameters(self) -> int:
        """Learnable prompt values (0 without a prompt); Bahng's padding at width 30 / 224 px: 69,840."""
        if not self.uses_prompt:
            return 0
        size, pad, channels = self.image_size, self.prompt_size, self.num_channels
        if self.prompt_type == "padding":
            return 2 * channels * pad * size + 2 * channels * (size - 2 * pad) * pad
        if self.prompt_type == "fixed_patch":
            return channels * pad * pad
        return channels * size * size


# Copied from hfmed.models.scopeformer.configuration_scopeformer._choice
def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


# ViT-B/32 and ViT-B/16 vision towers as in openai/clip-vit-base-patch32 / -patch16 (CLIPVisionConfig's defaults
# are ViT-B/32's).
_CLIP_B = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "projection_dim": 512,
    "image_size": 224,
    "hidden_act": "quick_gelu",
}

# Named presets. The prompt (padding, width 30 at 224 px) is Bahng et al.'s; backbones as the paper's (ResNet and
# CLIP), weights tags our choice.
PRESETS = {
    "movl-resnet50": {"backbone_type": "timm", "backbone": "resnet50.tv_in1k"},
    "movl-clip-b32": {
        "backbone_type": "clip",
        "backbone": "openai/clip-vit-base-patch32",
        "clip_vision_config": {**_CLIP_B, "patch_size": 32},
    },
    "movl-clip-b16": {
        "backbone_type": "clip",
        "backbone": "openai/clip-vit-base-patch16",
        "clip_vision_config": {**_CLIP_B, "patch_size": 16},
    },
    # Tiny, for tests and the CPU demo: timm's 0.37 M-parameter test ResNet at 32 px.
    "movl-tiny": {
        "backbone_type": "timm",
        "backbone": "test_resnet",
        "image_size": 32,
        "prompt_size": 4,
        "lp_warmup_epochs": 1,
    },
    # Tiny CLIP vision tower (2 layers, width 32, patch 8 at 32 px), for tests.
    "movl-clip-tiny": {
        "backbone_type": "clip",
        "backbone": "openai/clip-vit-base-patch32",
        "image_size": 32,
        "prompt_size": 4,
        "lp_warmup_epochs": 1,
        "clip_vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "projection_dim": 16,
            "image_size": 32,
            "patch_size": 8,
        },
    },
}


def movl_config(preset: str, **overrides) -> MoVLConfig:
    """Build a `MoVLConfig` from a named preset (see `PRESETS`), with field overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown MoVL preset '{preset}'; choose one of {sorted(PRESETS)}")
    return MoVLConfig(**{**PRESETS[preset], **overrides})


__all__ = ["MoVLConfig", "movl_config", "PRESETS", "STRATEGIES", "PROMPT_TYPES", "DISCREPANCIES"]
