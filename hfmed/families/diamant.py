"""DIAMANT (arXiv 2304.14571): image and frozen-DINO attention-map encoders with a U-Net decoder; semantic
segmentation. Everything about the family outside its model folder `hfmed/models/diamant/`."""

from ..family import Family
from ..models.diamant import (
    PRESETS,
    DIAMANTConfig,
    DIAMANTForSemanticSegmentation,
    DIAMANTImageProcessor,
    DIAMANTModel,
    diamant_config,
)

# Segmentation: the processor also reads masks, so it needs the class count, the ignore index and the
# multiple the model's input sides must have (patch size and poolings).
FAMILY = Family(
    name="diamant",
    config_class=DIAMANTConfig,
    base_model_class=DIAMANTModel,
    heads={"AutoModelForSemanticSegmentation": DIAMANTForSemanticSegmentation},
    image_processor_class=DIAMANTImageProcessor,
    config_factory=diamant_config,
    presets=PRESETS,
    default_preset="diamant-vits8",
    head="AutoModelForSemanticSegmentation",
    processor_kwargs=lambda config: {
        "size": {"height": config.image_size, "width": config.image_size},
        "num_labels": config.num_labels,
        "ignore_index": config.semantic_loss_ignore_index,
        "size_divisor": config.size_multiple,
    },
    pipeline_task="image-segmentation",
    # Issue 13 (the segmentation task, data, training, Hub, Space) adds these.
    pending=("demo recipe", "card facts"),
)

__all__ = ["FAMILY"]
