"""From dataset rows to model batches: the `Dataset.with_transform` function, collate, sampler, pos_weight.

    train_set = data["train"].with_transform(make_transform(processor, {"hflip": 0.5}, train=True))
    loader = DataLoader(train_set, batch_size=16, shuffle=True, collate_fn=collate, num_workers=4)

Decoding (DICOM -> Hounsfield units -> windows -> resize -> normalise) is the image processor's job and runs
in the DataLoader workers; augmentations run after it, on the normalised tensor. A segmentation dataset has a
`mask_path` (or `mask`) column: the processor turns the masks into int64 (B, H, W) `labels`
(`segmentation_maps=`), and each augmentation moves image and mask together (the mask with nearest neighbours).
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

AUGMENT_KEYS = ("hflip", "rotate_degrees", "scale", "translate")
MASK_COLUMNS = ("mask_path", "mask")
"""Columns that hold a segmentation mask per row (a file path, or an image `datasets` decodes)."""


def _check_augment(augment: Mapping[str, Any] | None) -> dict[str, Any]:
    if augment is None:
        return {"hflip": 0.0, "rotate_degrees": 0.0, "scale": None, "translate": 0.0}
    if not isinstance(augment, Mapping):
        raise ValueError(f"augment must be a dict with keys from {list(AUGMENT_KEYS)}, got {augment!r}")
    unknown = sorted(set(augment) - set(AUGMENT_KEYS))
    if unknown:
        raise ValueError(f"unknown augment key(s) {unknown}: allowed keys are {list(AUGMENT_KEYS)}")

    def number(key, default):
        value = augment.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"augment[{key!r}] must be a number, got {value!r}")
        return float(value)

    hflip = number("hflip", 0.0)
    if not 0.0 <= hflip <= 1.0:
        raise ValueError(f"augment['hflip'] is a probability in [0, 1], got {hflip}")
    rotate = number("rotate_degrees", 0.0)
    if not 0.0 <= rotate <= 180.0:
        raise ValueError(f"augment['rotate_degrees'] must be in [0, 180] (a +- range), got {rotate}")
    translate = number("translate", 0.0)
    if not 0.0 <= translate < 1.0:
        raise ValueError(f"augment['translate'] is a fraction of the image size in [0, 1), got {translate}")
    scale = augment.get("scale")
    if scale is not None:
        if (
            isinstance(scale, (str, bytes))
            or not isinstance(scale, Sequence)
            or len(scale) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale)
            or not 0.0 < scale[0] <= scale[1]
        ):
            raise ValueError(f"augment['scale'] must be [min, max] with 0 < min <= max, got {scale!r}")
        scale = (float(scale[0]), float(scale[1]))
    return {"hflip": hflip, "rotate_degrees": rotate, "scale": scale, "translate": translate}


def _background(image_processor: Any, num_channels: int) -> list[float]:
    """The normalised value of a black (0) windowed pixel, per channel: what affine moves bring in."""
    if not getattr(image_processor, "do_normalize", False):
        return [0.0] * num_channels
    mean, std = image_processor.image_mean, image_processor.image_std
    mean = list(mean) if isinstance(mean, Sequence) else [mean] * num_channels
    std = list(std) if isinstance(std, Sequence) else [std] * num_channels
    return [-float(m) / float(s) for m, s in zip(mean, std, strict=True)]


def _num_channels(image_processor: Any) -> int:
    """Channels of the processor's output: its `input_contract()["num_channels"]` (every hfmed processor), else
    one per `image_mean` entry, else 3 (an RGB processor)."""
    contract = getattr(image_processor, "input_contract", None)
    if callable(contract):
        return int(contract()["num_channels"])
    mean = getattr(image_processor, "image_mean", None)
    return len(mean) if isinstance(mean, Sequence) and not isinstance(mean, str) else 3


def build_augmentation(augment: Mapping[str, Any] | None, fill: Sequence[float] | float = 0.0,
                       mask_fill: int | None = None):
    """The torchvision v2 pipeline for `augment`, or `None` when it changes nothing.

    Random numbers come from torch's global generator, so `torch.manual_seed` (and DataLoader's per-worker
    seeding) makes runs reproducible. With `mask_fill`, the pipeline takes `(tv_tensors.Image,
    tv_tensors.Mask)` pairs: one draw moves both, the mask with nearest neighbours, and mask pixels moved in
    from outside get `mask_fill` (the ignore index: nobody labelled them).
    """
    from torchvision import tv_tensors
    from torchvision.transforms import InterpolationMode, v2

    settings = _check_augment(augment)
    if mask_fill is not None:
        fill = {tv_tensors.Image: list(fill) if isinstance(fill, Sequence) else fill, tv_tensors.Mask: mask_fill}
    steps = []
    if settings["hflip"] > 0:
        steps.append(v2.RandomHorizontalFlip(p=settings["hflip"]))
    translate = settings["translate"]
    if settings["rotate_degrees"] > 0 or translate > 0 or settings["scale"] is not None:
        steps.append(
            v2.RandomAffine(
                degrees=settings["rotate_degrees"],
                translate=(translate, translate) if translate > 0 else None,
                scale=settings["scale"],
                interpolation=InterpolationMode.BILINEAR,
                fill=list(fill) if isinstance(fill, Sequence) else fill,
            )
        )
    if not steps:
        return None
    return steps[0] if len(steps) == 1 else v2.Compose(steps)


def make_transform(
    image_processor: Any, augment: Mapping[str, Any] | None = None, train: bool = False, seed: int | None = None
) -> Callable[[dict], dict]:
    """A function for `Dataset.with_transform`: a batch of rows -> `pixel_values` and `labels` tensors.

    Args:
        image_processor: called as `image_processor(inputs, return_tensors="pt")` on the batch's `path`
            column (DICOM / PNG / JPEG paths; the processor decodes them) or, when there is no `path`, its
            `image` column (PIL images decoded by `datasets`).
        augment: `{"hflip": p, "rotate_degrees": d, "scale": [min, max], "translate": f}`; all optional
            (defaults: none). Unknown keys raise `ValueError` at once, in train and eval mode alike.
        train: apply `augment` (per example, after normalisation; pixels moved in from outside the image are
            the normalised value of black, i.e. air). Evaluation (`train=False`) never augments.
        seed: when given, each example's augmentation draws from its own generator seeded by
            (seed, epoch, the example's `path` / `image_id`), set the epoch with `transform.set_epoch(e)`.
            The draw then depends neither on the global RNG nor on worker, batch or resume position, which
            is what makes a resumed run bit-identical. `None`: torch's global generator.

    Returns:
        `transform(batch) -> {"pixel_values": float32 (B, C, H, W), "labels": float32 (B, L)}` (`labels` only
        when the batch has them; an integer `labels` column, one class index per row, gives int64 (B,)). A
        `mask_path` or `mask` column (segmentation) goes to the processor as `segmentation_maps` and gives int64
        (B, H, W) `labels`; augmentations then move each image and its mask together (mask pixels moved in
        from outside get the processor's `ignore_index`).
    """
    return BatchTransform(image_processor, augment, train, seed)


class BatchTransform:
    """The callable `make_transform` returns; a class (not a closure) so that DataLoader workers started with
    `spawn` (macOS, Windows) can pickle it."""

    def __init__(
        self,
        image_processor: Any,
        augment: Mapping[str, Any] | None = None,
        train: bool = False,
        seed: int | None = None,
    ):
        self.image_processor = image_processor
        self.seed = seed
        self.epoch = 0
        self.augment = _check_augment(augment)
        self.train = bool(train)
        num_channels = _num_channels(image_processor)
        background = _background(image_processor, num_channels)
        self.augmentation = build_augmentation(self.augment, background) if self.train else None
        # Image + mask pairs: the same moves, nearest for the mask, unlabelled pixels moved in are ignored.
        self.mask_augmentation = (
            build_augmentation(self.augment, background, mask_fill=int(getattr(image_processor, "ignore_index", 255)))
            if self.train
            else None
        )

    def __call__(self, batch: dict) -> dict:
        if "path" in batch:
            inputs = list(batch["path"])
        elif "image" in batch:
            inputs = list(batch["image"])
        else:
            raise KeyError(f"the batch has no 'path' or 'image' column, only {sorted(batch)}")
        masks = next((list(batch[column]) for column in MASK_COLUMNS if column in batch), None)
        if masks is not None and "labels" in batch:
            raise ValueError(
                "the batch has both a mask column and a 'labels' column: a segmentation dataset's labels come from "
                "its masks; remove the 'labels' column"
            )
        if masks is None:
            pixel_values = self.image_processor(inputs, return_tensors="pt")["pixel_values"].to(torch.float32)
            labels = _labels_tensor(batch["labels"]) if "labels" in batch else None
        else:
            encoded = self.image_processor(inputs, segmentation_maps=masks, return_tensors="pt")
            pixel_values, labels = encoded["pixel_values"].to(torch.float32), encoded["labels"].to(torch.int64)
        if self.augmentation is not None:
            keys = batch.get("path") or batch.get("image_id")
            if masks is not None:
                pixel_values, labels = self._augment_pairs(pixel_values, labels, keys)
            elif self.seed is None or keys is None:
                pixel_values = torch.stack([self.augmentation(image) for image in pixel_values])
            else:
                pixel_values = torch.stack(
                    [self._augment_seeded(image, key) for image, key in zip(pixel_values, keys, strict=True)]
                )
        out = {"pixel_values": pixel_values}
        if labels is not None:
            out["labels"] = labels
        return out

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _augment_seeded(self, image: torch.Tensor, key: Any, augmentation=None) -> Any:
        example_seed = zlib.crc32(f"{self.seed}:{self.epoch}:{key}".encode())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(example_seed)
            return (augmentation or self.augmentation)(image)

    def _augment_pairs(self, pixel_values: torch.Tensor, labels: torch.Tensor, keys) -> tuple:
        from torchvision import tv_tensors

        images, masks = [], []
        for index, (image, mask) in enumerate(zip(pixel_values, labels, strict=True)):
            pair = (tv_tensors.Image(image), tv_tensors.Mask(mask))
            if self.seed is None or keys is None:
                image, mask = self.mask_augmentation(pair)
            else:
                image, mask = self._augment_seeded(pair, keys[index], self.mask_augmentation)
            images.append(image.as_subclass(torch.Tensor))
            masks.append(mask.as_subclass(torch.Tensor))
        return torch.stack(images), torch.stack(masks)

    def __repr__(self) -> str:
        return f"BatchTransform(train={self.train}, augment={self.augment}, seed={self.seed})"


def _labels_tensor(labels: Any) -> torch.Tensor:
    """A batch's `labels` column as a tensor: integer class indices (single-label classification, one int per
    row) stay int64, anything else (0/1 per label, regression targets) becomes float32."""
    array = np.asarray(labels)
    if array.dtype.kind in "iu" and array.ndim == 1:
        return torch.as_tensor(array.astype(np.int64))
    return torch.as_tensor(array.astype(np.float32))


def collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stacks per-example dicts (from a `with_transform` dataset) into one batch dict, for `DataLoader`.

    Tensors are stacked, numbers become a tensor, anything else is kept as a list.
    """
    if not batch:
        raise ValueError("collate got an empty batch")
    keys = list(batch[0])
    for index, example in enumerate(batch):
        if set(example) != set(keys):
            raise ValueError(f"example {index} has keys {sorted(example)} but example 0 has {sorted(keys)}")
    out = {}
    for key in keys:
        values = [example[key] for example in batch]
        if all(isinstance(v, torch.Tensor) for v in values):
            out[key] = torch.stack(values)
        elif all(isinstance(v, (int, float, np.number, np.ndarray)) for v in values):
            out[key] = torch.as_tensor(np.asarray(values))
        else:
            out[key] = values
    return out


def labels_matrix(dataset: Any, num_classes: int | None = None) -> np.ndarray:
    """The (N, L) float64 label matrix of a dataset with a `labels` column (or of an array of labels).

    With `num_classes`, a column of class indices (single-label classification: one integer per row) becomes
    its one-hot (N, num_classes) matrix.
    """
    if hasattr(dataset, "column_names") and hasattr(dataset, "with_format"):
        if "labels" not in dataset.column_names:
            raise ValueError(f"the dataset has no 'labels' column, only {dataset.column_names}")
        # with_format drops any transform, so no image is decoded.
        values = dataset.with_format("numpy", columns=["labels"])[:]["labels"]
    else:
        values = dataset
    array = np.asarray(values)
    if num_classes is not None and array.ndim == 1 and array.dtype.kind in "iu":
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            raise ValueError(
                f"labels hold class indices {int(array.min())}..{int(array.max())} outside [0, {num_classes}) for "
                f"{num_classes} classes: fix the labels or the class names"
            )
        return np.eye(num_classes, dtype=np.float64)[array]
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"labels must form an (N, L) matrix, got shape {matrix.shape}")
    return matrix


def balanced_sampler(dataset: Any, label_names: Sequence[str], seed: int = 0) -> WeightedRandomSampler:
    """A `WeightedRandomSampler` (with replacement, `len(dataset)` draws per epoch) that evens out labels.

    Rule: with `n_j` the number of examples positive for label j (a label counts as positive when >= 0.5)
    and `n_0` the number of all-negative examples, an example positive for the labels P gets weight
    `1 / min_{j in P} n_j` (the inverse frequency of its rarest positive label), and an all-negative example
    gets `1 / n_0`. So the rare subtypes are drawn about as often as the common ones, and negatives as often
    as the rarest-label group they would otherwise swamp. With class indices (single-label classification),
    every class is one label: each class is drawn about equally often.

    Args:
        dataset: a dataset with a `labels` column (a transform, if set, is bypassed), or an (N, L) array, or
            (N,) integer class indices.
        label_names: the names of the L labels (checked against the label width; named in warnings).
        seed: seeds the sampler's own `torch.Generator`, so the draws are reproducible.
    """
    names = list(label_names)
    labels = labels_matrix(dataset, num_classes=len(names))
    if len(names) != labels.shape[1]:
        raise ValueError(
            f"label_names has {len(names)} names but the labels have {labels.shape[1]} values per example"
        )
    if labels.shape[0] == 0:
        raise ValueError("balanced_sampler needs a non-empty dataset")
    positive = labels >= 0.5
    counts = positive.sum(axis=0)
    absent = [name for name, count in zip(names, counts, strict=True) if count == 0]
    if absent:
        warnings.warn(
            f"no positive example for label(s) {absent}: they play no part in the weights",
            UserWarning,
            stacklevel=2,
        )
    inverse = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    weights = np.max(np.where(positive, inverse[None, :], 0.0), axis=1)
    negatives = ~positive.any(axis=1)
    if negatives.any():
        weights[negatives] = 1.0 / negatives.sum()
    generator = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double),
        num_samples=len(weights),
        replacement=True,
        generator=generator,
    )


def pos_weight_from_data(dataset: Any) -> list[float]:
    """Per-label `negatives / positives` (label >= 0.5 is positive), for `BCEWithLogitsLoss(pos_weight=...)`.

    Labels of -1 (unknown, masked out of the loss) count as neither. A label without positives gets 1.0
    (with a warning), since its ratio is undefined.
    """
    labels = labels_matrix(dataset)
    positive = (labels >= 0.5).sum(axis=0)
    negative = ((labels >= 0.0) & (labels < 0.5)).sum(axis=0)
    if (positive == 0).any():
        warnings.warn(
            f"label(s) at index {np.flatnonzero(positive == 0).tolist()} have no positive example: pos_weight 1.0",
            UserWarning,
            stacklevel=2,
        )
    return [float(n / p) if p > 0 else 1.0 for n, p in zip(negative.tolist(), positive.tolist(), strict=True)]


__all__ = [
    "AUGMENT_KEYS",
    "MASK_COLUMNS",
    "BatchTransform",
    "balanced_sampler",
    "build_augmentation",
    "collate",
    "labels_matrix",
    "make_transform",
    "pos_weight_from_data",
]
