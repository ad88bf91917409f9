"""hfmed: medical-imaging research models as Hugging Face citizens.

`import hfmed` registers every family with the transformers Auto classes and the
`medical-image-classification` and `medical-volume-prediction` pipeline tasks.
"""

from .models.diamant import (
    DIAMANTConfig,
    DIAMANTForSemanticSegmentation,
    DIAMANTImageProcessor,
    DIAMANTModel,
    convert_dino_state_dict,
    diamant_config,
)
from .models.lt_vit import (
    LTViTConfig,
    LTViTForImageClassification,
    LTViTImageProcessor,
    LTViTModel,
    lt_vit_config,
)
from .models.movl import (
    MoVLConfig,
    MoVLForImageClassification,
    MoVLImageProcessor,
    MoVLModel,
    movl_config,
)
from .models.scopeformer import (
    ScopeformerConfig,
    ScopeformerForImageClassification,
    ScopeformerModel,
    scopeformer_config,
)
from .models.scopeformer.image_processing_scopeformer import ScopeformerImageProcessor
from .models.slice_cnn import (
    SliceCNNConfig,
    SliceCNNForVolumeClassification,
    SliceCNNForVolumePrediction,
    SliceCNNForVolumeRegression,
    SliceCNNImageProcessor,
    SliceCNNModel,
    convert_original_state_dict,
    slice_cnn_config,
)
from .pipelines import register_pipelines
from .registry import FAMILIES, family_for, register_all

__version__ = "0.1.0"

register_all()
register_pipelines()

__all__ = [
    "FAMILIES",
    "LTViTConfig",
    "LTViTForImageClassification",
    "LTViTImageProcessor",
    "LTViTModel",
    "lt_vit_config",
    "ScopeformerConfig",
    "ScopeformerForImageClassification",
    "ScopeformerImageProcessor",
    "ScopeformerModel",
    "SliceCNNConfig",
    "SliceCNNForVolumeClassification",
    "SliceCNNForVolumePrediction",
    "SliceCNNForVolumeRegression",
    "SliceCNNImageProcessor",
    "SliceCNNModel",
    "convert_original_state_dict",
    "family_for",
    "scopeformer_config",
    "slice_cnn_config",
    "MoVLConfig",
    "MoVLForImageClassification",
    "MoVLImageProcessor",
    "MoVLModel",
    "movl_config",
    "DIAMANTConfig",
    "DIAMANTForSemanticSegmentation",
    "DIAMANTImageProcessor",
    "DIAMANTModel",
    "convert_dino_state_dict",
    "diamant_config",
]
