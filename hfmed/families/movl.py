"""MoVL (arXiv 2405.07411): a visual prompt and a linear probe around a frozen pretrained ResNet / CLIP.
Everything about the family outside its model folder `hfmed/models/movl/`."""

from ..family import REPO, Family, FamilyCard, Paper
from ..models.movl import (
    PRESETS,
    MoVLConfig,
    MoVLForImageClassification,
    MoVLImageProcessor,
    MoVLModel,
    movl_config,
)
from ..policy import TrainingPolicy, parameter_counts


class MoVLTrainingPolicy(TrainingPolicy):
    """The strategy's stages, which the model declares, decide what trains when: the optimizer holds every
    parameter some stage trains (`optimizer_parameter_names`), the rest (the frozen backbone) is frozen, and
    each epoch starts by applying its stage (`set_training_stage`: `requires_grad`, discrepancy term)."""

    def frozen(self, model) -> tuple[str, ...]:
        trains = set(model.optimizer_parameter_names())
        return tuple(name for name, _ in model.named_parameters() if name not in trains)

    def on_epoch_start(self, model, epoch: int) -> None:
        model.set_training_stage(epoch)

PAPERS = [
    Paper(
        title=(
            "MoVL: Exploring Fusion Strategies for the Domain-Adaptive Application of Pretrained Models in Medical "
            "Imaging Tasks"
        ),
        arxiv="2405.07411",
        bibtex=(
            "@article{tian2024movl,\n"
            "  title={MoVL: Exploring Fusion Strategies for the Domain-Adaptive Application of Pretrained Models\n"
            "         in Medical Imaging Tasks},\n"
            "  author={Tian and Yue and Liu and Yang and Jiang and Wang},\n"
            "  journal={arXiv preprint arXiv:2405.07411},\n"
            "  year={2024}\n"
            "}"
        ),
        summary=(
            "A frozen pretrained backbone (ResNet or CLIP) adapted to medical images by a visual prompt on the input "
            "and a linear probe on the output, coupled by a strategy and trained with the classification loss plus "
            "a discrepancy loss between the prompted and the original image: 90.91 % mean accuracy on four medical "
            "sets (full fine-tuning 91.13 %), 90.33 % out of distribution (full fine-tuning 85.15 %)."
        ),
    ),
    Paper(
        title="Exploring Visual Prompts for Adapting Large-Scale Models",
        arxiv="2203.17274",
        bibtex=(
            "@article{bahng2022visual,\n"
            "  title={Exploring Visual Prompts for Adapting Large-Scale Models},\n"
            "  author={Bahng, Hyojin and Jahanian, Ali and Sankaranarayanan, Swami and Isola, Phillip},\n"
            "  journal={arXiv preprint arXiv:2203.17274},\n"
            "  year={2022}\n"
            "}"
        ),
        summary=(
            "The pixel-space visual prompt used here (our choice: the MoVL abstract does not give the prompt's "
            "form): learnable border strips added to every input image of a frozen model."
        ),
    ),
]

# The variants `hfmed experiment` compares: every coupling strategy and full fine-tuning, on the same data. The
# learning rates follow METHODS.md's defaults: the prompt at 1e-2 (ILM-VP's Adam rate), the probe at the
# recipe's `training.learning_rate`; under full fine-tuning the backbone at 1e-4 (our choice: the common
# tenth of the head's rate for a pretrained backbone). `module_learning_rates` is replaced per variant because
# `lp` and `full_finetune` have no prompt to name.
_PROMPT_RATE = "training.module_learning_rates={movl.prompter: 1.0e-2}"
EXPERIMENTS = {
    "lp": ("model.config.strategy=lp", "training.module_learning_rates={}"),
    "vp": ("model.config.strategy=vp", _PROMPT_RATE),
    "lp_then_vp": ("model.config.strategy=lp_then_vp", _PROMPT_RATE),
    "joint": ("model.config.strategy=joint", _PROMPT_RATE),
    "movl": ("model.config.strategy=movl", _PROMPT_RATE),
    "full_finetune": ("model.config.strategy=full_finetune", "training.module_learning_rates={movl.backbone: 1.0e-4}"),
}


_GROUP_WORDS = {"prompt": "prompt", "head": "linear probe", "backbone": "backbone"}
_PROMPTS = {
    "padding": "four border strips {size} px wide",
    "fixed_patch": "a {size} px square in the top-left corner",
    "full": "an additive image of the whole input",
}


def card_model_facts(model) -> list[str]:
    """The card's facts about a MoVL model: its strategy and stages, trainable vs total parameters (what the
    optimizer holds under the strategy, as `hfmed experiment` counts them), the prompt and the backbone."""
    config = model.config
    sizes = {group: sum(dict(model.named_parameters())[name].numel() for name in names)
             for group, names in model.parameter_groups().items()}  # fmt: skip
    trainable, total = parameter_counts(model, MoVLTrainingPolicy())
    stages = "; ".join(
        f"from epoch {stage.first_epoch + 1}: {' + '.join(_GROUP_WORDS[group] for group in stage.trains)}"
        + (f" with the `{config.discrepancy}` discrepancy term (lambda {config.discrepancy_weight})"
           if stage.discrepancy else "")
        for stage in model.training_stages()
    )  # fmt: skip
    prompt = (
        f"`{config.prompt_type}`, {_PROMPTS[config.prompt_type].format(size=config.prompt_size)} "
        f"({sizes['prompt']:,} parameters), added to the normalised {config.image_size} px image"
        if config.uses_prompt else f"none (strategy `{config.strategy}` reads the plain image)"
    )  # fmt: skip
    kind = (f"CLIP vision tower `{config.backbone}` ({config.hidden_size}-d projected embedding)"
            if config.backbone_type == "clip" else f"timm `{config.backbone}` ({config.hidden_size}-d pooled features)")
    frozen = config.freeze_backbone
    return [
        f"Strategy: `{config.strategy}` ({stages})",
        f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f} %): prompt "
        f"{sizes['prompt']:,}, linear probe {sizes['head']:,}, backbone {sizes['backbone']:,} "
        f"({'frozen' if frozen else 'fine-tuned'})",
        f"Prompt: {prompt}",
        f"Backbone: {kind}, " + ("frozen (requires_grad off, kept in eval mode)" if frozen else "fine-tuned"),
    ]


def _space_example() -> str | None:
    # The Space's in-distribution example from the synthetic_shift twin (no medical image ships in a package).
    found = sorted((REPO / "spaces" / "movl" / "examples").glob("in_distribution_*.png"))
    return str(found[0]) if found else None


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
    card=FamilyCard(
        papers=PAPERS,
        tags=["visual-prompting", "linear-probe", "parameter-efficient-fine-tuning", "domain-adaptation",
              "medmnist"],  # fmt: skip
        example_input="image.png",
        example_dataset='"synthetic_shift"',
    ),
    demo_input=_space_example,
    training_policy=MoVLTrainingPolicy(),
    demo_recipe="configs/movl-demo.yaml",
    experiments=EXPERIMENTS,
    card_model_facts=card_model_facts,
)

__all__ = ["EXPERIMENTS", "FAMILY", "PAPERS", "MoVLTrainingPolicy", "card_model_facts"]
