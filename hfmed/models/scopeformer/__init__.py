from .configuration_scopeformer import PRESETS, RSNA_LABELS, ScopeformerConfig, scopeformer_config
from .modeling_scopeformer import (
    ScopeformerForImageClassification,
    ScopeformerModel,
    ScopeformerModelOutput,
    ScopeformerPreTrainedModel,
)

__all__ = [
    "PRESETS",
    "RSNA_LABELS",
    "ScopeformerConfig",
    "scopeformer_config",
    "ScopeformerForImageClassification",
    "ScopeformerModel",
    "ScopeformerModelOutput",
    "ScopeformerPreTrainedModel",
]
