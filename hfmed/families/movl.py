"""MoVL (arXiv 2405.07411): a visual prompt and a linear probe around a frozen pretrained ResNet / CLIP.
Everything about the family outside its model folder `hfmed/models/movl/`."""

from ..family import Family
from ..models.movl import (
    PRESETS,
    MoVLConfig,
    MoVLForImageClassification,
    MoVLImageProcessor,
    MoVLModel,
    movl_config,
)
from ..policy import TrainingPolicy


class MoVLTrainingPolicy(TrainingPolicy):
    """The strategy's stages, which the model declares, decide what trains when: the optimizer holds every
    parameter some stage trains (`optimizer_parameter_names`), the rest (the frozen backbone) is frozen, and
    each epoch starts by applying its stage (`set_training_stage`: `requires_grad`, discrepancy term)."""

    def frozen(self, model) -> tuple[str, ...]:
        trains = set(model.optimizer_parameter_names())
        return tuple(name for name, _ in model.named_parameters() if name not in trains)

    def on_epoch_start(self, model, epoch: int) -> None:
        model.set_training_stage(epoch)


# The processor normalises with the backbone's own mean / std (ImageNet for timm ResNets, CLIP's for CLIP),
# which the config holds.
FAMILY = Family(
    name="movl",
    config_class=MoVLConfig,
    base_model_class=MoVLModel,
    heads={"AutoModelForImageClassification": MoVLForImageClassification},
    image_processor_class=MoVLImageProcessor,
    config_factory=movl_config,
    presets=PRESETS,
    default_preset="movl-resnet50",
    processor_kwargs=lambda config: {
        "size": {"height": config.image_size, "width": config.image_size},
        "image_mean": list(config.image_mean),
        "image_std": list(config.image_std),
    },
    training_policy=MoVLTrainingPolicy(),
    # Issue 12 (training, data, Hub, Space) adds these.
    pending=("demo recipe", "card facts"),
)

__all__ = ["FAMILY", "MoVLTrainingPolicy"]
