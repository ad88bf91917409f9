"""LT-ViT (Marikkar et al., "LT-ViT: A Vision Transformer for multi-label Chest X-ray classification",
arXiv 2311.07263, ICIP 2023): a ViT with one learned token per label."""

from .configuration_lt_vit import CHEXPERT_LABELS, NIH_LABELS, PRESETS, LTViTConfig, lt_vit_config
from .image_processing_lt_vit import LTViTImageProcessor
from .modeling_lt_vit import (
    LTViTForImageClassification,
    LTViTImageClassifierOutput,
    LTViTModel,
    LTViTModelOutput,
    LTViTPreTrainedModel,
    convert_hf_vit_state_dict,
    convert_timm_vit_state_dict,
)

__all__ = [
    "CHEXPERT_LABELS",
    "NIH_LABELS",
    "PRESETS",
    "LTViTConfig",
    "lt_vit_config",
    "LTViTImageProcessor",
    "LTViTForImageClassification",
    "LTViTImageClassifierOutput",
    "LTViTModel",
    "LTViTModelOutput",
    "LTViTPreTrainedModel",
    "convert_hf_vit_state_dict",
    "convert_timm_vit_state_dict",
]
