"""Slice-CNN (arXiv 2303.01491, 2102.04438): a 2-D encoder on every slice of a 3-D MRI volume, slice
position encoding, pooling over slices; brain age (regression) / Alzheimer's disease (binary), NIfTI.
Everything about the family outside its model folder `hfmed/models/slice_cnn/`."""

from ..family import Family, FamilyCard, Paper
from ..models.slice_cnn import (
    PRESETS,
    SliceCNNConfig,
    SliceCNNForVolumePrediction,
    SliceCNNImageProcessor,
    SliceCNNModel,
    slice_cnn_config,
)

PAPERS = [
    Paper(
        title="Transferring Models Trained on Natural Images to 3D MRI via Position Encoded Slice Models",
        arxiv="2303.01491",
        bibtex=(
            "@inproceedings{gupta2023transferring,\n"
            "  title={Transferring Models Trained on Natural Images to 3D MRI via Position Encoded Slice Models},\n"
            "  author={Gupta, Umang and Chattopadhyay, Tamoghna and Dhinagar, Nikhil and Thompson, Paul M. and\n"
            "          Ver Steeg, Greg},\n"
            "  booktitle={IEEE International Symposium on Biomedical Imaging (ISBI)},\n"
            "  year={2023},\n"
            "  eprint={2303.01491},\n"
            "  archivePrefix={arXiv}\n"
            "}"
        ),
        summary=(
            "A 2-D encoder (an ImageNet ResNet-18 or a small CNN) embeds every slice of a 3-D MRI volume; a "
            "learned per-slice position encoding and a LayerNorm over all slices restore where each slice "
            "lies, and mean pooling over slices feeds a small head (brain age, Alzheimer's disease)."
        ),
    ),
    Paper(
        title="Improved Brain Age Estimation with Slice-based Set Networks",
        arxiv="2102.04438",
        bibtex=(
            "@inproceedings{gupta2021improved,\n"
            "  title={Improved Brain Age Estimation with Slice-based Set Networks},\n"
            "  author={Gupta, Umang and Lam, Pradeep K. and Ver Steeg, Greg and Thompson, Paul M.},\n"
            "  booktitle={IEEE International Symposium on Biomedical Imaging (ISBI)},\n"
            "  year={2021},\n"
            "  eprint={2102.04438},\n"
            "  archivePrefix={arXiv}\n"
            "}"
        ),
        summary=(
            "The slice-set architecture: a shared 2-D CNN over slices and permutation-invariant aggregation "
            "(mean, max or attention, which returns a weight per slice) for brain age regression."
        ),
    ),
]

USAGE = '''\
### With hfmed installed

```python
from hfmed.pipelines import predict_volume

predict_volume("{example}", "{repo_id}")  # {{"task", "predictions", "slice_weights", "slice_axis"}}
```

### Without hfmed (transformers + timm + nibabel)

```python
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

model = AutoModelForImageClassification.from_pretrained("{repo_id}", trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
inputs = processor("{example}", return_tensors="pt")  # RAS, resampled, cropped / padded, z-scored
with torch.no_grad():
    outputs = model(**inputs)
if model.config.problem_type == "regression":
    print(model.config.id2label[0], outputs.logits[0, 0].item())  # e.g. brain age in years
else:
    print(model.config.id2label[0], outputs.logits[0, 0].sigmoid().item())  # probability
print(outputs.slice_weights)  # per-slice weights with attention pooling, else None
```

### Fine-tuning with `Trainer`

```python
from transformers import AutoImageProcessor, AutoModelForImageClassification, Trainer, TrainingArguments
from hfmed.data import build_dataset
from hfmed.data.transforms import collate, make_transform
from hfmed.metrics import make_compute_metrics

model = AutoModelForImageClassification.from_pretrained("{repo_id}", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
data = build_dataset({dataset})
task = "regression" if model.config.problem_type == "regression" else "binary"
trainer = Trainer(
    model=model,
    args=TrainingArguments("out", eval_strategy="epoch", remove_unused_columns=False, label_names=["labels"]),
    train_dataset=data["train"].with_transform(make_transform(processor, train=True)),
    eval_dataset=data["validation"].with_transform(make_transform(processor)),
    data_collator=collate,
    processing_class=processor,
    compute_metrics=make_compute_metrics(list(model.config.id2label.values()), task=task),
)
trainer.train()
```
'''



def _nibabel_anatomical() -> str:
    import os

    from nibabel.testing import data_path

    return os.path.join(data_path, "anatomical.nii")


# 3-D volumes; one head for regression (brain age) and classification (AD): transformers has no
# image-regression Auto class, and its image-level heads do regression through
# `problem_type="regression"`, so the head answers AutoModelForImageClassification.
FAMILY = Family(
    name="slice_cnn",
    config_class=SliceCNNConfig,
    base_model_class=SliceCNNModel,
    heads={"AutoModelForImageClassification": SliceCNNForVolumePrediction},
    image_processor_class=SliceCNNImageProcessor,
    config_factory=slice_cnn_config,
    presets=PRESETS,
    default_preset="slice-cnn-resnet18",
    processor_kwargs=lambda config: {"target_shape": list(config.volume_shape)},
    card=FamilyCard(
        papers=PAPERS,
        tags=["mri", "brain-mri", "3d", "nifti", "brain-age", "alzheimers-disease"],
        example_input="T1w.nii.gz",
        example_dataset='"nifti_csv", csv_path="data/brain-age/participants.csv", target="age"',
        usage=USAGE,
        # The Hub has no task for a value (or a probability) per 3-D volume.
        pipeline_tag=None,
        input_kind="volume",
    ),
    demo_recipe="configs/slice-cnn-demo.yaml",
    pipeline_task="medical-volume-prediction",
    demo_input=_nibabel_anatomical,  # nibabel's real (small) MRI volume
)

__all__ = ["FAMILY", "PAPERS", "USAGE"]
