"""Model cards for hfmed runs: Hub metadata, the method, intended use, input contract, results, usage.

The card is built from four sources only: the family's facts (`Family.card`: papers, tags, an example input,
a usage template; `Family.card_model_facts`: what this model's parts are and which of them train; see
`hfmed/families/`), the task's (`hfmed.tasks`: metrics, tag, label sentence), the trained folder (config + image
processor, whose `input_contract()` speaks MONAI's metadata vocabulary) and the run's `metrics.json` (validation
metrics of the best epoch, and its `splits`: the best model on each extra split) / `recipe.yaml`.
"""

import json
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .family import FamilyCard, Paper
from .registry import FAMILIES, family_for
from .tasks import task_for

# Every family's card facts by model_type.
FAMILY_CARDS = {family.model_type: family.card for family in FAMILIES.values()}


def _results(metrics: dict) -> dict:
    best = (metrics or {}).get("best") or {}
    return best.get("metrics") or {}


def _split_results(metrics: dict | None) -> dict:
    """`{split: metrics}` of the best model on the extra splits the run evaluated (metrics.json `splits`)."""
    return (metrics or {}).get("splits") or {}


def card_data(config, metrics: dict | None, recipe: dict | None, repo_id: str, license: str):
    dataset_name = ((recipe or {}).get("data") or {}).get("builder", "unknown")
    family = family_for(config).card
    task = task_for(config)
    eval_results = [
        EvalResult(
            task_type=family.pipeline_tag or task.config_problem_type,
            dataset_type=dataset_name,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=metric_type,
            metric_name=name if split == "validation" else f"{name} ({split})",
            metric_value=round(float(results[key]), 4),
        )
        for split, results in {"validation": _results(metrics), **_split_results(metrics)}.items()
        for key, metric_type, name in task.card_metrics
        if results.get(key) is not None
    ]
    papers = family.papers
    return ModelCardData(
        library_name="transformers",
        pipeline_tag=family.pipeline_tag,
        license=license,
        tags=["hfmed", config.model_type, "medical", "medical-imaging", *family.tags,
              task.card_tag, "custom_code"],
        datasets=[dataset_name],
        # The metrics this card reports (all of the task's when the run recorded none yet).
        metrics=[r.metric_type for r in eval_results]
        or list(dict.fromkeys(metric_type for _, metric_type, _ in task.card_metrics)),
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
from transformers import AutoImageProcessor, {auto_class}

model = {auto_class}.from_pretrained("{repo_id}", trust_remote_code=True).eval()
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
from transformers import AutoImageProcessor, {auto_class}, Trainer, TrainingArguments
from hfmed.data import build_dataset
from hfmed.data.transforms import collate, make_transform
from hfmed.metrics import make_compute_metrics

model = {auto_class}.from_pretrained("{repo_id}", trust_remote_code=True)
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


def _results_table(metrics: dict | None, task) -> str:
    results = _results(metrics)
    if not results:
        return "No evaluation results were recorded for this checkpoint."
    rows = ["| metric | value |", "| --- | --- |"]
    rows += [f"| {k} | {v:.4f} |" for k, v in sorted(results.items()) if isinstance(v, (int, float))]
    best = metrics["best"]
    text = f"Validation split, best epoch {best.get('epoch')} (step {best.get('step')}).\n\n" + "\n".join(rows)
    return text + task.card_results_extra(metrics) + _splits_tables(metrics, task)


def _splits_tables(metrics: dict | None, task) -> str:
    """One table per extra split (an in-distribution `test`, an out-of-distribution `test_ood`): the task's card
    metrics of the best model, evaluated once after training."""
    tables = []
    for split, results in _split_results(metrics).items():
        rows = [f"| {name} | {'-' if results.get(key) is None else f'{results[key]:.4f}'} |"
                for key, _, name in task.card_metrics if key in results]
        if rows:
            tables.append(f"### Split `{split}`\n\nThe best epoch's model, evaluated after training.\n\n"
                          "| metric | value |\n| --- | --- |\n" + "\n".join(rows))
    return "".join(f"\n\n{table}" for table in tables)


def model_facts(config) -> str:
    """The family's facts about this model (`Family.card_model_facts`), as a list; empty where it gives none."""
    import torch

    family = family_for(config)
    if family.card_model_facts is None:
        return ""
    with torch.device("meta"):  # shapes only: no weights are read or allocated
        model = family.head_class(config)
    return "\n".join(f"- {fact}" for fact in family.card_model_facts(model))


def build_model_card(config, processor, repo_id: str, metrics: dict | None = None, recipe: dict | None = None,
                     license: str = "apache-2.0") -> ModelCard:
    data = card_data(config, metrics, recipe, repo_id, license)
    contract = processor.input_contract()
    family = family_for(config).card
    task = task_for(config)
    papers = family.papers
    labels = [config.id2label[i] for i in range(config.num_labels)]
    method = "\n".join(f"- **{p.title}** ([arXiv {p.arxiv}](https://arxiv.org/abs/{p.arxiv})): {p.summary}"
                       for p in papers)
    bibtex = "\n\n".join(p.bibtex for p in papers)
    recipe_excerpt = yaml.safe_dump(
        {k: (recipe or {}).get(k) for k in ("model", "data", "training", "evaluation") if (recipe or {}).get(k)},
        sort_keys=False,
    ).strip()
    contract_rows = "\n".join(f"| {k} | {json.dumps(v)} |" for k, v in contract.items())
    facts = model_facts(config)
    facts_section = f"\n## This model\n\n{facts}\n" if facts else ""
    body = f"""
# {repo_id.split("/")[-1]}

**Research use only. Not for diagnosis or any clinical decision.** This model has not been cleared or
approved by any regulator and must not be used to guide patient care.

## Method

{method}

Architecture: `{config.model_type}`; defaults that the papers do not state are ours and are documented
in the config class (`configuration_{config.model_type}.py`).
{facts_section}
## Intended use

Research on {contract["modality"]} {family.input_kind} {task.card_words}: benchmarking, method development, teaching.
Out of scope: diagnosis, triage, screening, or any use on patients.

## Input contract

| field | value |
| --- | --- |
{contract_rows}

## Labels

{task.labels_text(labels)}
{task.card_labels_extra(config)}

## Training recipe

```yaml
{recipe_excerpt}
```

## Results

{_results_table(metrics, task)}

## Usage

{(family.usage or task.card_usage or USAGE).format(repo_id=repo_id, example=family.example_input, dataset=family.example_dataset,
                                auto_class=family_for(config).head)}

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


__all__ = ["FAMILY_CARDS", "FamilyCard", "Paper", "build_model_card", "build_model_card_for_run"]
