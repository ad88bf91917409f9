"""hfmed: medical-imaging research models as Hugging Face citizens.

`import hfmed` registers every family with the transformers Auto classes and the
`medical-image-classification` pipeline task.
"""

from .models.lt_vit import (
    LTViTConfig,
    LTViTForImageClassification,
    LTViTImageProcessor,
    LTViTModel,
    lt_vit_config,
)
from .models.scopeformer import (
    ScopeformerConfig,
    ScopeformerForImageClassification,
    ScopeformerModel,
    scopeformer_config,
)
from .models.scopeformer.image_processing_scopeformer import ScopeformerImageProcessor
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
    "family_for",
    "scopeformer_config",
]
