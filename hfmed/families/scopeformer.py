"""Scopeformer / Efficient Scopeformer (arXiv 2107.04575, 2302.00220): n CNNs, a feature projection and a
ViT; intracranial hemorrhage, 6 labels, head CT (DICOM). Everything about the family outside its model folder
`hfmed/models/scopeformer/`."""

from ..family import Family, FamilyCard, Paper
from ..models.scopeformer import (
    PRESETS,
    ScopeformerConfig,
    ScopeformerForImageClassification,
    ScopeformerModel,
    scopeformer_config,
)
from ..models.scopeformer.image_processing_scopeformer import ScopeformerImageProcessor

PAPERS = [
    Paper(
        title="Scopeformer: n-CNN-ViT Hybrid Model for Intracranial Hemorrhage Classification",
        arxiv="2107.04575",
        bibtex=(
            "@inproceedings{barhoumi2021scopeformer,\n"
            "  title={Scopeformer: n-CNN-ViT Hybrid Model for Intracranial Hemorrhage Classification},\n"
            "  author={Barhoumi, Yassine and Rasool, Ghulam},\n"
            "  booktitle={Medical Imaging with Deep Learning (MIDL)},\n"
            "  year={2021},\n"
            "  eprint={2107.04575},\n"
            "  archivePrefix={arXiv}\n"
            "}"
        ),
        summary=(
            "Several CNN feature extractors produce feature maps that are stacked, reduced by a feature "
            "projection and read by a Vision Transformer that classifies the six RSNA 2019 hemorrhage labels."
        ),
    ),
    Paper(
        title="Efficient Scopeformer: Towards Scalable and Rich Feature Extraction for Intracranial "
        "Hemorrhage Detection",
        arxiv="2302.00220",
        bibtex=(
            "@article{barhoumi2023efficient,\n"
            "  title={Efficient Scopeformer: Towards Scalable and Rich Feature Extraction for Intracranial\n"
            "         Hemorrhage Detection},\n"
            "  author={Barhoumi, Yassine and Bouaynaya, Nidhal Carla and Rasool, Ghulam},\n"
            "  journal={arXiv preprint arXiv:2302.00220},\n"
            "  year={2023}\n"
            "}"
        ),
        summary=(
            "Four different frozen ImageNet CNNs feed the ViT; with about 8x (or 17x) fewer trainable "
            "parameters than the base model the loss in accuracy is small."
        ),
    ),
]


def _pydicom_ct_slice() -> str:
    from pydicom.data import get_testdata_file

    return get_testdata_file("CT_small.dcm")


FAMILY = Family(
    name="scopeformer",
    config_class=ScopeformerConfig,
    base_model_class=ScopeformerModel,
    heads={"AutoModelForImageClassification": ScopeformerForImageClassification},
    image_processor_class=ScopeformerImageProcessor,
    config_factory=scopeformer_config,
    presets=PRESETS,
    default_preset="scopeformer-efficient",
    card=FamilyCard(
        papers=PAPERS,
        tags=["ct", "head-ct", "intracranial-hemorrhage", "dicom"],
        example_input="slice.dcm",
        example_dataset='"rsna_ich", root="data/rsna-ich"',
    ),
    demo_recipe="configs/scopeformer-efficient-demo.yaml",
    demo_input=_pydicom_ct_slice,  # pydicom's real CT slice
)

__all__ = ["FAMILY", "PAPERS"]
