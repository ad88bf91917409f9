"""DIAMANT (Yeganeh et al., "DIAMANT: Dual Image-Attention Map Encoders For Medical Image Segmentation",
arXiv 2304.14571): a convolutional segmenter with an image encoder and an encoder of frozen-DINO attention maps."""

from .configuration_diamant import PRESETS, SKIP_CONNECTIONS, DIAMANTConfig, diamant_config
from .image_processing_diamant import DIAMANTImageProcessor
from .modeling_diamant import (
    DIAMANTDinoViT,
    DIAMANTForSemanticSegmentation,
    DIAMANTModel,
    DIAMANTModelOutput,
    DIAMANTPreTrainedModel,
    DIAMANTSemanticSegmenterOutput,
    convert_dino_state_dict,
)

__all__ = [
    "PRESETS",
    "SKIP_CONNECTIONS",
    "DIAMANTConfig",
    "diamant_config",
    "DIAMANTImageProcessor",
    "DIAMANTDinoViT",
    "DIAMANTForSemanticSegmentation",
    "DIAMANTModel",
    "DIAMANTModelOutput",
    "DIAMANTPreTrainedModel",
    "DIAMANTSemanticSegmenterOutput",
    "convert_dino_state_dict",
]
