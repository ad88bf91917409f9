"""Pretraining a small timm backbone on a twin's source set, once, cached as safetensors.

Frozen-backbone methods assume a backbone pretrained elsewhere (ImageNet, CLIP). Offline there are no such
weights, so a synthetic twin with a source domain (`synthetic_shift`) pretrains the config's timm CNN on it:
supervised classification of the source classes, then the classifier is dropped and the state dict is saved
as `backbone.safetensors`, the format `from_pretrained_backbones(config, backbone_weights=...)` reads.

The file is cached under `cache_root/<hash>/` keyed by everything that decides its weights (the backbone, its
input size and normalisation, the source images' list, the recipe below and its version), written beside
its target and renamed (`twin_cache.ensure_twin`), so it is trained once and never stale. `pretraining.json`
beside it records the recipe and the held-out source accuracy.

The pretraining recipe is ours (no paper gives one for this twin): AdamW, learning rate 2e-3, weight decay
0.05, cosine decay, batch 64, 15 epochs, horizontal flips, 10 % of the source images held out.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from .twin_cache import ensure_twin

PRETRAINING_VERSION = 1
PRETRAINING = {"epochs": 15, "batch_size": 64, "learning_rate": 2e-3, "weight_decay": 0.05, "held_out": 0.1,
               "seed": 0}  # fmt: skip
WEIGHTS_NAME = "backbone.safetensors"
REPORT_NAME = "pretraining.json"
MARKER_NAME = ".hfmed_source_backbone.json"


def _backbone_facts(config) -> dict:
    if getattr(config, "backbone_type", "timm") != "timm":
        raise ValueError(
            f"the twin's source set pretrains timm CNNs only, but this config's backbone_type is "
            f"{config.backbone_type!r}: use a timm backbone (e.g. preset 'movl-tiny'), or set "
            "model.backbone_weights to real pretrained weights"
        )
    return {
        "backbone": str(config.backbone),
        "image_size": int(config.image_size),
        "num_channels": int(config.num_channels),
        "image_mean": [float(v) for v in config.image_mean],
        "image_std": [float(v) for v in config.image_std],
    }


def load_images(paths, image_size: int, mean, std, num_channels: int = 3):
    """Normalised float32 tensors `(N, C, image_size, image_size)` of image files (RGB, bilinear resize)."""
    import torch
    from PIL import Image

    out = np.empty((len(paths), num_channels, image_size, image_size), dtype=np.float32)
    for index, path in enumerate(paths):
        with Image.open(path) as image:
            image = image.convert("RGB" if num_channels == 3 else "L")
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32).reshape(image_size, image_size, num_channels) / 255.0
        out[index] = pixels.transpose(2, 0, 1)
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return torch.from_numpy((out - mean) / std)


def pretrain(facts: dict, source: list[tuple[str, int]], num_classes: int, recipe: dict | None = None):
    """Trains the timm model `facts["backbone"]` to classify the source images; returns (state dict without
    the classifier, held-out accuracy). `recipe`: `PRETRAINING`'s keys (default: `PRETRAINING`)."""
    import timm
    import torch
    import torch.nn.functional as F

    recipe = dict(PRETRAINING if recipe is None else recipe)
    generator = torch.Generator().manual_seed(recipe["seed"])
    torch.manual_seed(recipe["seed"])
    order = torch.randperm(len(source), generator=generator).tolist()
    held = max(1, int(recipe["held_out"] * len(source)))
    train_ids, held_ids = order[held:], order[:held]
    images = load_images([p for p, _ in source], facts["image_size"], facts["image_mean"], facts["image_std"],
                         facts["num_channels"])  # fmt: skip
    labels = torch.tensor([label for _, label in source])
    model = timm.create_model(facts["backbone"], pretrained=False, num_classes=num_classes,
                              in_chans=facts["num_channels"])  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["learning_rate"], weight_decay=recipe["weight_decay"])
    batch = recipe["batch_size"]
    steps = recipe["epochs"] * math.ceil(len(train_ids) / batch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    train_ids = torch.tensor(train_ids)
    model.train()
    for _ in range(recipe["epochs"]):
        shuffled = train_ids[torch.randperm(len(train_ids), generator=generator)]
        for start in range(0, len(shuffled), batch):
            ids = shuffled[start:start + batch]
            x = images[ids]
            flip = torch.rand(len(ids), generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = F.cross_entropy(model(x), labels[ids])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    with torch.no_grad():
        held_ids = torch.tensor(held_ids)
        accuracy = float((model(images[held_ids]).argmax(-1) == labels[held_ids]).float().mean())
    model.reset_classifier(0)
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}, accuracy


def ensure_source_backbone(
    config, source: list[tuple[str, int]], num_classes: int, cache_root: Path, source_key: str | None = None
) -> Path:
    """The path of `backbone.safetensors` pretrained on `source` ((path, label) pairs over `num_classes`)
    for `config`'s timm backbone, trained first when not cached under `cache_root`.

    `source_key` identifies the source images (e.g. a deterministic twin's generation parameters, so a moved
    twin keeps its backbones); default: a hash of the (path, label) list."""
    facts = _backbone_facts(config)
    recipe = dict(PRETRAINING)
    listing = source_key if source_key is not None else hashlib.sha256(json.dumps(source).encode()).hexdigest()
    params = {"version": PRETRAINING_VERSION, **facts, "num_classes": int(num_classes), "source": listing,
              "recipe": recipe}  # fmt: skip

    def write(folder: Path) -> None:
        import torch
        from safetensors.torch import save_file

        with torch.random.fork_rng():  # the caller's global RNG (model init, shuffling) is left as it was
            state, accuracy = pretrain(facts, source, num_classes, recipe)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(state, str(folder / WEIGHTS_NAME))
        report = {**params, "num_source_images": len(source), "held_out_accuracy": round(accuracy, 4)}
        (folder / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")

    folder = ensure_twin(
        None, params, write, kind="source backbone", cache_root=Path(cache_root), marker=MARKER_NAME,
        known_entries={WEIGHTS_NAME, REPORT_NAME},
    )  # fmt: skip
    return folder / WEIGHTS_NAME


__all__ = ["PRETRAINING", "ensure_source_backbone", "load_images", "pretrain"]
