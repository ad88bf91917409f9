"""MoVL (Tian et al., "MoVL: Exploring Fusion Strategies for the Domain-Adaptive Application of Pretrained Models
in Medical Imaging Tasks", arXiv 2405.07411): a visual prompt and a linear probe around a frozen ResNet / CLIP."""

from .configuration_movl import DISCREPANCIES, PRESETS, PROMPT_TYPES, STRATEGIES, MoVLConfig, movl_config
from .image_processing_movl import MoVLImageProcessor, dicom_to_unit
from .modeling_movl import (
    MoVLForImageClassification,
    MoVLImageClassifierOutput,
    MoVLModel,
    MoVLModelOutput,
    MoVLPreTrainedModel,
    MoVLPrompter,
    MoVLTrainingStage,
    training_stages,
)

__all__ = [
    "DISCREPANCIES",
    "PRESETS",
    "PROMPT_TYPES",
    "STRATEGIES",
    "MoVLConfig",
    "movl_config",
    "MoVLForImageClassification",
    "MoVLImageProcessor",
    "MoVLImageClassifierOutput",
    "MoVLModel",
    "MoVLModelOutput",
    "MoVLPreTrainedModel",
    "MoVLPrompter",
    "MoVLTrainingStage",
    "dicom_to_unit",
    "training_stages",
]
