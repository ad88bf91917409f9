"""Model cards for hfmed runs: Hub metadata, the method, intended use, input contract, results, usage.

The card is built from three sources only: the family's facts (`FAMILY_CARDS`: papers, tags, an example
input), the trained folder
(config + image processor, whose `input_contract()` speaks MONAI's metadata vocabulary) and the run's
`metrics.json` / `recipe.yaml`.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData


@dataclass(frozen=True)
class Paper:
    title: str
    arxiv: str
    bibtex: str
    summary: str


@dataclass(frozen=True)
class FamilyCard:
    papers: list
    tags: list
    """Hub tags beyond hfmed / family / medical (modality, anatomy, task)."""
    example_input: str
    """A file name the usage snippets classify."""
    example_dataset: str
    """`build_dataset` call arguments shown in the Trainer snippet."""
    usage: str = ""
    """The usage section (a template with {repo_id}, {example}, {dataset}); empty: the image one."""
    pipeline_tag: str | None = "image-classification"
    """The Hub pipeline tag; `None` where no Hub task fits (3-D volume regression)."""
    input_kind: str = "image"
    """What one input is, for the intended-use sentence ("image", "volume")."""


PAPERS = {
    "scopeformer": [
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
    ],
}

PAPERS["lt_vit"] = [
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

PAPERS["slice_cnn"] = [
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

VOLUME_USAGE = '''\
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

FAMILY_CARDS = {
    "scopeformer": FamilyCard(
        papers=PAPERS["scopeformer"],
        tags=["ct", "head-ct", "intracranial-hemorrhage", "dicom"],
        example_input="slice.dcm",
        example_dataset='"rsna_ich", root="data/rsna-ich"',
    ),
    "lt_vit": FamilyCard(
        papers=PAPERS["lt_vit"],
        tags=["x-ray", "chest-x-ray", "radiography", "interpretability"],
        example_input="chest.png",
        example_dataset='"nih_chestxray14", root="data/nih-chestxray14"',
    ),
    "slice_cnn": FamilyCard(
        papers=PAPERS["slice_cnn"],
        tags=["mri", "brain-mri", "3d", "nifti", "brain-age", "alzheimers-disease"],
        example_input="T1w.nii.gz",
        example_dataset='"nifti_csv", csv_path="data/brain-age/participants.csv", target="age"',
        usage=VOLUME_USAGE,
        # The Hub has no task for a value (or a probability) per 3-D volume.
        pipeline_tag=None,
        input_kind="volume",
    ),
}

TASK_METRICS = {
    "multi_label_classification": [
        ("mean_auroc", "roc_auc", "mean AUROC"),
        ("weighted_log_loss", "log_loss", "weighted log loss"),
        ("mean_log_loss", "log_loss", "mean log loss"),
        ("mean_accuracy", "accuracy", "mean per-label accuracy at 0.5"),
        ("balanced_accuracy", "balanced_accuracy", "balanced accuracy at 0.5"),
    ],
    "regression": [
        ("mae", "mae", "mean absolute error"),
        ("rmse", "rmse", "root mean squared error"),
        ("pearson_r", "pearsonr", "Pearson r"),
    ],
}
TASK_TAGS = {"multi_label_classification": "multi-label-classification", "regression": "regression"}


def _results(metrics: dict) -> dict:
    best = (metrics or {}).get("best") or {}
    return best.get("metrics") or {}


def card_data(config, metrics: dict | None, recipe: dict | None, repo_id: str, license: str):
    results = _results(metrics)
    dataset_name = ((recipe or {}).get("data") or {}).get("builder", "unknown")
    family = FAMILY_CARDS[config.model_type]
    eval_results = [
        EvalResult(
            task_type=family.pipeline_tag or config.problem_type,
            dataset_type=dataset_name,
            dataset_name=dataset_name,
            dataset_split="validation",
            metric_type=metric_type,
            metric_name=name,
            metric_value=round(float(results[key]), 4),
        )
        for key, metric_type, name in TASK_METRICS.get(config.problem_type, [])
        if key in results and results[key] is not None
    ]
    papers = family.papers
    return ModelCardData(
        library_name="transformers",
        pipeline_tag=family.pipeline_tag,
        license=license,
        tags=["hfmed", config.model_type, "medical", "medical-imaging", *family.tags,
              TASK_TAGS.get(config.problem_type, config.problem_type), "custom_code"],
        datasets=[dataset_name],
        # The metrics this card reports (all of the task's when the run recorded none yet).
        metrics=[r.metric_type for r in eval_results]
        or list(dict.fromkeys(metric_type for _, metric_type, _ in TASK_METRICS.get(config.problem_type, []))),
        base_model=None,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
        arxiv=[p.arxiv for p in papers] or None,
    )


USAGE = '''\
### With hfmed installed

```python
import hfmed  # registers the family with the Auto classes
from hfmed.pipelines import classify

classify("{example}", "{repo_id}")  # every label with its probability
```

### Without hfmed (transformers + timm only)

```python
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

model = AutoModelForImageClassification.from_pretrained("{repo_id}", trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
inputs = processor("{example}", return_tensors="pt")  # a path, bytes, a pydicom.Dataset or an array
with torch.no_grad():
    probabilities = model(**inputs).logits.sigmoid()[0]
print(dict(zip(model.config.id2label.values(), probabilities.tolist())))
```

### A pipeline on a medical file (DICOM and more)

```python
from transformers import pipeline
import hfmed  # adds the "medical-image-classification" task, which reads DICOM

pipe = pipeline("medical-image-classification", model="{repo_id}")
pipe("{example}")
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
trainer = Trainer(
    model=model,
    args=TrainingArguments("out", eval_strategy="epoch", remove_unused_columns=False, label_names=["labels"]),
    train_dataset=data["train"].with_transform(make_transform(processor, train=True)),
    eval_dataset=data["validation"].with_transform(make_transform(processor)),
    data_collator=collate,
    processing_class=processor,
    compute_metrics=make_compute_metrics(list(model.config.id2label.values())),
)
trainer.train()
```
'''


def _results_table(metrics: dict | None) -> str:
    results = _results(metrics)
    if not results:
        return "No evaluation results were recorded for this checkpoint."
    rows = ["| metric | value |", "| --- | --- |"]
    rows += [f"| {k} | {v:.4f} |" for k, v in sorted(results.items()) if isinstance(v, (int, float))]
    best = metrics["best"]
    points = ((metrics.get("thresholds") or {}).get("operating_points")) or {}
    text = f"Validation split, best epoch {best.get('epoch')} (step {best.get('step')}).\n\n" + "\n".join(rows)
    if points:
        text += "\n\nDecision thresholds chosen on validation (" + metrics["thresholds"]["method"] + "):\n\n"
        text += "| label | threshold | sensitivity | specificity |\n| --- | --- | --- | --- |\n"
        for label, p in points.items():
            sens = "n/a" if p.get("sensitivity") is None else f"{p['sensitivity']:.3f}"
            spec = "n/a" if p.get("specificity") is None else f"{p['specificity']:.3f}"
            text += f"| {label} | {p['threshold']:.4f} | {sens} | {spec} |\n"
    return text


def build_model_card(config, processor, repo_id: str, metrics: dict | None = None, recipe: dict | None = None,
                     license: str = "apache-2.0") -> ModelCard:
    data = card_data(config, metrics, recipe, repo_id, license)
    contract = processor.input_contract()
    family = FAMILY_CARDS[config.model_type]
    papers = family.papers
    labels = [config.id2label[i] for i in range(config.num_labels)]
    if config.problem_type == "regression":
        task_words = "regression"
        labels_text = f"{', '.join(f'`{label}`' for label in labels)} (regression: the model outputs the value)."
    else:
        task_words = "classification"
        labels_text = f"{', '.join(f'`{label}`' for label in labels)} (multi-label: one independent probability each)."
    method = "\n".join(f"- **{p.title}** ([arXiv {p.arxiv}](https://arxiv.org/abs/{p.arxiv})): {p.summary}"
                       for p in papers)
    bibtex = "\n\n".join(p.bibtex for p in papers)
    recipe_excerpt = yaml.safe_dump(
        {k: (recipe or {}).get(k) for k in ("model", "data", "training", "evaluation") if (recipe or {}).get(k)},
        sort_keys=False,
    ).strip()
    contract_rows = "\n".join(f"| {k} | {json.dumps(v)} |" for k, v in contract.items())
    thresholds = getattr(config, "label_thresholds", None)
    body = f"""
# {repo_id.split("/")[-1]}

**Research use only. Not for diagnosis or any clinical decision.** This model has not been cleared or
approved by any regulator and must not be used to guide patient care.

## Method

{method}

Architecture: `{config.model_type}`; defaults that the papers do not state are ours and are documented
in the config class (`configuration_{config.model_type}.py`).

## Intended use

Research on {contract["modality"]} {family.input_kind} {task_words}: benchmarking, method development, teaching.
Out of scope: diagnosis, triage, screening, or any use on patients.

## Input contract

| field | value |
| --- | --- |
{contract_rows}

## Labels

{labels_text}
{"Per-label decision thresholds (chosen on validation): `" + json.dumps(thresholds) + "`." if thresholds else ""}

## Training recipe

```yaml
{recipe_excerpt}
```

## Results

{_results_table(metrics)}

## Usage

{(family.usage or USAGE).format(repo_id=repo_id, example=family.example_input, dataset=family.example_dataset)}

## Citation

```bibtex
{bibtex}
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def build_model_card_for_run(run_dir, repo_id: str, license: str = "apache-2.0") -> ModelCard:
    """The card of a training run folder (`model/`, `metrics.json`, `recipe.yaml`)."""
    from transformers import AutoConfig, AutoImageProcessor

    run_dir = Path(run_dir)
    config = AutoConfig.from_pretrained(run_dir / "model")
    processor = AutoImageProcessor.from_pretrained(run_dir / "model")
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else None
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) if (run_dir / "recipe.yaml").is_file() else None
    return build_model_card(config, processor, repo_id, metrics, recipe, license)


__all__ = ["FAMILY_CARDS", "FamilyCard", "PAPERS", "Paper", "build_model_card", "build_model_card_for_run"]
