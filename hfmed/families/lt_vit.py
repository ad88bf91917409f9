"""LT-ViT (arXiv 2311.07263): a ViT with one learned token per label; multi-label chest X-ray (NIH 14 /
CheXpert 5). Everything about the family outside its model folder `hfmed/models/lt_vit/`."""

from ..family import REPO, Family, FamilyCard, Paper
from ..models.lt_vit import (
    PRESETS,
    LTViTConfig,
    LTViTForImageClassification,
    LTViTImageProcessor,
    LTViTModel,
    lt_vit_config,
)

PAPERS = [
    Paper(
        title="LT-ViT: A Vision Transformer for multi-label Chest X-ray classification",
        arxiv="2311.07263",
        bibtex=(
            "@inproceedings{marikkar2023ltvit,\n"
            "  title={LT-ViT: A Vision Transformer for multi-label Chest X-ray classification},\n"
            "  author={Marikkar, Umar and Atito, Sara and Awais, Muhammad and Mahdi, Adam},\n"
            "  booktitle={IEEE International Conference on Image Processing (ICIP)},\n"
            "  year={2023},\n"
            "  eprint={2311.07263},\n"
            "  archivePrefix={arXiv}\n"
            "}"
        ),
        summary=(
            "Randomly initialised auxiliary tokens, one per label, attend jointly with the image tokens in the "
            "last blocks and aggregate information from several depths; their attention to the patches "
            "explains each prediction without Grad-CAM."
        ),
    )
]



def _space_example() -> str | None:
    # No real chest X-ray ships in a package: the Space's synthetic example.
    found = sorted((REPO / "spaces" / "lt_vit" / "examples").glob("*.png"))
    return str(found[0]) if found else None


FAMILY = Family(
    name="lt_vit",
    config_class=LTViTConfig,
    base_model_class=LTViTModel,
    heads={"AutoModelForImageClassification": LTViTForImageClassification},
    image_processor_class=LTViTImageProcessor,
    config_factory=lt_vit_config,
    presets=PRESETS,
    default_preset="lt-vit-small",
    card=FamilyCard(
        papers=PAPERS,
        tags=["x-ray", "chest-x-ray", "radiography", "interpretability"],
        example_input="chest.png",
        example_dataset='"nih_chestxray14", root="data/nih-chestxray14"',
    ),
    demo_recipe="configs/lt-vit-demo.yaml",
    demo_input=_space_example,
)

__all__ = ["FAMILY", "PAPERS"]
