"""The one table of model families, and their registration with the transformers Auto classes.

Adding a family is one `Family(...)` entry in `FAMILIES`; everything generic (Auto registration,
`hfmed.hub.save_for_hub`, the pipeline, the training loop) reads this table.
"""

from dataclasses import dataclass, field

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
)

from .models.diamant import PRESETS as DIAMANT_PRESETS
from .models.diamant import (
    DIAMANTConfig,
    DIAMANTForSemanticSegmentation,
    DIAMANTImageProcessor,
    DIAMANTModel,
    diamant_config,
)
from .models.lt_vit import PRESETS as LT_VIT_PRESETS
from .models.lt_vit import (
    LTViTConfig,
    LTViTForImageClassification,
    LTViTImageProcessor,
    LTViTModel,
    lt_vit_config,
)
from .models.movl import PRESETS as MOVL_PRESETS
from .models.movl import (
    MoVLConfig,
    MoVLForImageClassification,
    MoVLImageProcessor,
    MoVLModel,
    movl_config,
)
from .models.scopeformer import (
    PRESETS as SCOPEFORMER_PRESETS,
)
from .models.scopeformer import (
    ScopeformerConfig,
    ScopeformerForImageClassification,
    ScopeformerModel,
    scopeformer_config,
)
from .models.scopeformer.image_processing_scopeformer import ScopeformerImageProcessor
from .models.slice_cnn import PRESETS as SLICE_CNN_PRESETS
from .models.slice_cnn import (
    SliceCNNConfig,
    SliceCNNForVolumePrediction,
    SliceCNNImageProcessor,
    SliceCNNModel,
    slice_cnn_config,
)

AUTO_CLASSES = {
    "AutoModel": AutoModel,
    "AutoModelForImageClassification": AutoModelForImageClassification,
    "AutoModelForSemanticSegmentation": AutoModelForSemanticSegmentation,
}


@dataclass(frozen=True)
class Family:
    """A model family: config, base model, task heads (keyed by Auto class name) and image processor."""

    name: str
    config_class: type
    base_model_class: type
    heads: dict = field(default_factory=dict)
    image_processor_class: type | None = None
    config_factory: object = None
    """`(preset, **overrides) -> config`."""
    presets: dict = field(default_factory=dict)
    """Named presets of the config (architecture sizes)."""
    head: str = "AutoModelForImageClassification"
    """The Auto class of the head that training and the Hub use."""
    processor_kwargs: object = None
    """`(config) -> dict`: the image processor arguments a config implies (input size). Default: a square
    `size` of `config.image_size`, what the 2-D families need."""

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    def make_config(self, preset: str, **overrides):
        return self.config_factory(preset, **overrides)

    def processor_kwargs_for(self, config) -> dict:
        if self.processor_kwargs is not None:
            return dict(self.processor_kwargs(config))
        return {"size": {"height": config.image_size, "width": config.image_size}}

    @property
    def head_class(self) -> type:
        return self.heads[self.head]

    def auto_map_classes(self) -> dict:
        """Auto class name -> class, for every Auto class this family answers."""
        return {"AutoModel": self.base_model_class, **self.heads}


FAMILIES = {
    "scopeformer": Family(
        name="scopeformer",
        config_class=ScopeformerConfig,
        base_model_class=ScopeformerModel,
        heads={"AutoModelForImageClassification": ScopeformerForImageClassification},
        image_processor_class=ScopeformerImageProcessor,
        config_factory=scopeformer_config,
        presets=SCOPEFORMER_PRESETS,
    ),
    "lt_vit": Family(
        name="lt_vit",
        config_class=LTViTConfig,
        base_model_class=LTViTModel,
        heads={"AutoModelForImageClassification": LTViTForImageClassification},
        image_processor_class=LTViTImageProcessor,
        config_factory=lt_vit_config,
        presets=LT_VIT_PRESETS,
    ),
    # 3-D volumes; one head for regression (brain age) and classification (AD): transformers has no
    # image-regression Auto class, and its image-level heads do regression through
    # `problem_type="regression"`, so the head answers AutoModelForImageClassification.
    "slice_cnn": Family(
        name="slice_cnn",
        config_class=SliceCNNConfig,
        base_model_class=SliceCNNModel,
        heads={"AutoModelForImageClassification": SliceCNNForVolumePrediction},
        image_processor_class=SliceCNNImageProcessor,
        config_factory=slice_cnn_config,
        presets=SLICE_CNN_PRESETS,
        processor_kwargs=lambda config: {"target_shape": list(config.volume_shape)},
    ),
    # The processor normalises with the backbone's own mean / std (ImageNet for timm ResNets, CLIP's for CLIP),
    # which the config holds.
    "movl": Family(
        name="movl",
        config_class=MoVLConfig,
        base_model_class=MoVLModel,
        heads={"AutoModelForImageClassification": MoVLForImageClassification},
        image_processor_class=MoVLImageProcessor,
        config_factory=movl_config,
        presets=MOVL_PRESETS,
        processor_kwargs=lambda config: {
            "size": {"height": config.image_size, "width": config.image_size},
            "image_mean": list(config.image_mean),
            "image_std": list(config.image_std),
        },
    ),
    # Segmentation: the processor also reads masks, so it needs the class count, the ignore index and the
    # multiple the model's input sides must have (patch size and poolings).
    "diamant": Family(
        name="diamant",
        config_class=DIAMANTConfig,
        base_model_class=DIAMANTModel,
        heads={"AutoModelForSemanticSegmentation": DIAMANTForSemanticSegmentation},
        image_processor_class=DIAMANTImageProcessor,
        config_factory=diamant_config,
        presets=DIAMANT_PRESETS,
        head="AutoModelForSemanticSegmentation",
        processor_kwargs=lambda config: {
            "size": {"height": config.image_size, "width": config.image_size},
            "num_labels": config.num_labels,
            "ignore_index": config.semantic_loss_ignore_index,
            "size_divisor": config.size_multiple,
        },
    ),
}


def family_for(config_or_model) -> Family:
    """The family of a config or model (by `model_type`), with a clear error for a foreign one."""
    config = getattr(config_or_model, "config", config_or_model)
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    raise ValueError(f"model_type {model_type!r} is not an hfmed family; known: {sorted(FAMILIES)}")


def register_all() -> None:
    """Register every family with AutoConfig, AutoModel, its heads' Auto classes and AutoImageProcessor."""
    for family in FAMILIES.values():
        AutoConfig.register(family.model_type, family.config_class, exist_ok=True)
        for auto_name, model_class in family.auto_map_classes().items():
            AUTO_CLASSES[auto_name].register(family.config_class, model_class, exist_ok=True)
        if family.image_processor_class is not None:
            AutoImageProcessor.register(
                family.config_class,
                image_processor_classes={"torchvision": family.image_processor_class},
                exist_ok=True,
            )
