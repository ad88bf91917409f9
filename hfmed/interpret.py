"""Checks that a model's label attention looks where each finding is.

For models that return `label_attentions` (batch, labels, grid_h, grid_w) when called with
`output_label_attentions=True` (models with one token per label), `attention_peak_hits` counts, per label, the positive validation
images whose attention peak falls inside that label's known region (the synthetic twins draw each finding
in a fixed box).
"""

import torch
from torch.utils.data import DataLoader


def peak_in_box(attention: torch.Tensor, box) -> bool:
    """Whether the hottest cell's centre of a (grid_h, grid_w) map lies in `box` = (y0, x0, y1, x1) fractions."""
    grid_h, grid_w = attention.shape
    index = int(torch.argmax(attention))
    y = (index // grid_w + 0.5) / grid_h
    x = (index % grid_w + 0.5) / grid_w
    y0, x0, y1, x1 = box
    return y0 <= y <= y1 and x0 <= x <= x1


def attention_peak_hits(model, dataset, regions: dict, batch_size: int = 32, collate_fn=None) -> dict:
    """Per label: `{"hits": h, "positives": n, "fraction": h / n}` over the images positive for it.

    `dataset` yields `pixel_values` and `labels` (a `with_transform` split); `regions` maps label names to
    (y0, x0, y1, x1) boxes in image fractions. Labels without a region are skipped.
    """
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    counts = {name: {"hits": 0, "positives": 0} for name in names if name in regions}
    model.eval()
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn):
            maps = model(pixel_values=batch["pixel_values"], output_label_attentions=True).label_attentions
            for image_maps, labels in zip(maps, batch["labels"], strict=True):
                for j, name in enumerate(names):
                    if name in counts and labels[j] == 1:
                        counts[name]["positives"] += 1
                        counts[name]["hits"] += int(peak_in_box(image_maps[j], regions[name]))
    for value in counts.values():
        value["fraction"] = value["hits"] / value["positives"] if value["positives"] else None
    return counts


def check_run(run_dir) -> dict:
    """Attention-region hits of a finished run on its validation split, for data whose builder declares where
    each finding is drawn (`Builder.label_regions`: the synthetic twins); writes `attention_regions.json`
    into the run folder."""
    import json
    from pathlib import Path

    import yaml
    from transformers import AutoImageProcessor

    from .data import build_dataset, builder_spec
    from .data.transforms import collate, make_transform
    from .hub import trust_remote_code_for
    from .registry import load_model

    run_dir = Path(run_dir)
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    builder = recipe["data"]["builder"]
    regions = builder_spec(builder).label_regions
    if not regions:
        raise ValueError(
            f"{run_dir}: the {builder!r} builder declares no finding regions; only synthetic twins that draw each "
            "finding in a fixed box (Builder.label_regions) can be checked"
        )
    trust = trust_remote_code_for(run_dir / "model")  # the installed classes; never a prompt
    model = load_model(run_dir / "model", trust_remote_code=trust)
    processor = AutoImageProcessor.from_pretrained(run_dir / "model", trust_remote_code=trust)
    validation = build_dataset(builder, **recipe["data"]["args"])["validation"]
    counts = attention_peak_hits(
        model, validation.with_transform(make_transform(processor)), regions, collate_fn=collate
    )
    (run_dir / "attention_regions.json").write_text(json.dumps(counts, indent=2) + "\n")
    return counts


if __name__ == "__main__":
    import sys

    import hfmed  # noqa: F401  (registers the families)

    for label, value in check_run(sys.argv[1]).items():
        print(f"{label:<14} {value['hits']}/{value['positives']} attention peaks inside the finding's region")


__all__ = ["attention_peak_hits", "check_run", "peak_in_box"]
