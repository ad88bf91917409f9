"""One-call inference on medical files: pipelines that hand raw inputs to the family's processor.

`pipeline("image-classification")` decodes every input with PIL, which cannot read DICOM or NIfTI.
`MedicalImageClassificationPipeline` passes paths, bytes, `pydicom.Dataset`s and arrays untouched to the
model's image processor (which knows the modality) and returns a sigmoid / softmax score per label.
`MedicalVolumePipeline` does the same for 3-D volumes (NIfTI paths, nibabel images, arrays) and returns
the model's prediction (a value for a regression model, a probability per label for a classifier) with
the per-slice attention weights when the model has them. `MedicalImageSegmentationPipeline` answers a mask per
class present, as `pipeline("image-segmentation")` does, for the same raw inputs; an image larger than the
model's input size is segmented at its own resolution by a sliding window (overlapping model-sized tiles, their
logits blended), not shrunk.
"""

import math
import os
from pathlib import Path

import torch
from transformers import (
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    ImageClassificationPipeline,
    ImageSegmentationPipeline,
    Pipeline,
    pipeline,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .hub import trust_remote_code_for
from .tasks import task_for

TASK = "medical-image-classification"
VOLUME_TASK = "medical-volume-prediction"
SEGMENTATION_TASK = "medical-image-segmentation"
BLENDS = ("gaussian", "constant")


class MedicalImageClassificationPipeline(ImageClassificationPipeline):
    """Image classification whose inputs go to the image processor as they are (DICOM path, bytes, array...)."""

    # No video processor: left at None, `pipeline()` looks for one, derives its `auto_map` entry from the
    # image processor's and, finding no registered class, asks on the terminal whether to run custom code.
    _load_video_processor = False

    def preprocess(self, image, timeout=None):
        model_inputs = self.image_processor(images=image, return_tensors="pt")
        return model_inputs.to(self.dtype)

    def postprocess(self, model_outputs, function_to_apply=None, top_k=None):
        # Every label by default: a clinician-facing multi-label answer must not drop findings.
        top_k = self.model.config.num_labels if top_k is None else top_k
        return super().postprocess(model_outputs, function_to_apply=function_to_apply, top_k=top_k)


class MedicalVolumePipeline(Pipeline):
    """Prediction on one 3-D volume per call (a NIfTI path, bytes, a nibabel image or an array).

    Returns `{"task", "predictions", "slice_weights", "slice_axis"}`: `task` is "regression" or
    "classification"; `predictions` has one entry per output, `{"label", "value"}` (regression, in the
    target's unit) or `{"label", "score"}` (sigmoid probability); `slice_weights` is the list of per-slice
    weights of an attention-pooling model (summing to 1, in slice order along `slice_axis`), else `None`.
    """

    _load_processor = False
    _load_image_processor = True
    _load_video_processor = False  # see MedicalImageClassificationPipeline
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, **kwargs):
        if kwargs:
            raise ValueError(f"{VOLUME_TASK} takes no call arguments, got {sorted(kwargs)}")
        return {}, {}, {}

    def preprocess(self, inputs):
        return self.image_processor(inputs, return_tensors="pt")

    def _forward(self, model_inputs):
        outputs = self.model(pixel_values=model_inputs["pixel_values"].to(self.dtype))
        weights = getattr(outputs, "slice_weights", None)
        return {"logits": outputs.logits, "slice_weights": weights}

    def postprocess(self, model_outputs):
        config = self.model.config
        names = [config.id2label[i] for i in range(config.num_labels)]
        task = task_for(config)
        weights = model_outputs["slice_weights"]
        return {
            "task": task.report_name,
            "predictions": task.predictions(model_outputs["logits"][0], names),
            "slice_weights": None if weights is None else weights[0].float().tolist(),
            "slice_axis": getattr(config, "slice_axis", None),
        }


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of `tile` pixels covering `length` (>= tile) with at least `overlap` (a fraction
    of the tile) shared between neighbours; the first tile starts at 0, the last ends at `length`, and the
    starts in between are spread evenly."""
    if length <= tile:
        return [0]
    stride = max(1, int(tile * (1.0 - overlap)))
    count = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def blend_window(height: int, width: int, blend: str = "gaussian") -> torch.Tensor:
    """(height, width) weights of one tile's logits in the blend: `constant` (a plain mean of the tiles) or
    `gaussian` (sigma = 1/8 of the side, as nnU-Net: a pixel trusts the tile it is central in, whose view
    around it is complete)."""
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {list(BLENDS)}, got {blend!r}")
    if blend == "constant":
        return torch.ones(height, width)

    def axis(n):
        positions = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        return torch.exp(-(positions**2) / (2 * (n / 8) ** 2))

    window = axis(height)[:, None] * axis(width)[None, :]
    return (window / window.max()).clamp_min(1e-4).float()  # never 0: every pixel keeps a defined mean


def sliding_window_logits(forward, pixel_values: torch.Tensor, tile: tuple[int, int], overlap: float = 0.25,
                          blend: str = "gaussian", batch_size: int = 8) -> torch.Tensor:
    """Logits of an image of any size from a model that takes `tile`-sized inputs: overlapping tiles (sides
    shorter than the tile are padded with 0, the normalised mean, and the padding cropped away), each tile's
    logits weighted by `blend_window` and averaged where tiles overlap.

    Args:
        forward: `(B, C, tile_h, tile_w) -> (B, num_labels, tile_h, tile_w)` logits.
        pixel_values: (1, C, H, W) normalised image at its own resolution.
        tile: (tile_h, tile_w), the model's input size.
        overlap: fraction of a tile shared with its neighbour, in [0, 1).

    Returns:
        (1, num_labels, H, W) float32 logits. An image of exactly the tile size is one tile: the model's own
        logits.
    """
    if pixel_values.ndim != 4 or pixel_values.shape[0] != 1:
        raise ValueError(f"pixel_values must be one image (1, C, H, W), got shape {tuple(pixel_values.shape)}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap is the fraction of a tile its neighbour shares, in [0, 1); got {overlap}")
    tile_h, tile_w = tile
    _, _, height, width = pixel_values.shape
    padded = torch.nn.functional.pad(pixel_values, (0, max(0, tile_w - width), 0, max(0, tile_h - height)))
    full_h, full_w = padded.shape[-2:]
    window = blend_window(tile_h, tile_w, blend).to(pixel_values.device)
    boxes = [(y, x) for y in tile_starts(full_h, tile_h, overlap) for x in tile_starts(full_w, tile_w, overlap)]
    total = weights = None
    for first in range(0, len(boxes), batch_size):
        chunk = boxes[first : first + batch_size]
        logits = forward(torch.cat([padded[..., y : y + tile_h, x : x + tile_w] for y, x in chunk])).float()
        if total is None:
            total = logits.new_zeros((1, logits.shape[1], full_h, full_w))
            weights = logits.new_zeros((full_h, full_w))
        for (y, x), tile_logits in zip(chunk, logits, strict=True):
            total[0, :, y : y + tile_h, x : x + tile_w] += tile_logits * window
            weights[y : y + tile_h, x : x + tile_w] += window
    return (total / weights)[..., :height, :width]


class MedicalImageSegmentationPipeline(ImageSegmentationPipeline):
    """Semantic segmentation whose inputs go to the image processor as they are (DICOM path, bytes, array...).

    Answers one `{"score": None, "label", "mask"}` per class present (a 0/255 PIL mask at the input's size), as
    `pipeline("image-segmentation")` does. An input no larger than the model's size (`image_processor.size`) is
    resized to it and the logits resized back (the processor's `post_process_semantic_segmentation`); a larger
    one is segmented at its own resolution by `sliding_window_logits` (call arguments `overlap`, default 0.25,
    and `blend`, "gaussian" or "constant").
    """

    _load_video_processor = False  # see MedicalImageClassificationPipeline

    def check_model_type(self, supported_models):
        # hfmed's families join AutoModelForSemanticSegmentation when hfmed is imported, which the static table of
        # names transformers checks against here does not list: it would log an error for a model that works.
        registered = getattr(getattr(AutoModelForSemanticSegmentation, "_model_mapping", None), "_extra_content", {})
        if type(self.model) in registered.values():
            return
        super().check_model_type(supported_models)

    def _sanitize_parameters(self, overlap=None, blend=None, **kwargs):
        unknown = sorted(set(kwargs) - {"timeout"})
        if unknown:
            raise ValueError(f"{SEGMENTATION_TASK} takes overlap, blend and timeout, got {unknown}")
        preprocess = {"overlap": 0.25 if overlap is None else float(overlap), "blend": blend or "gaussian"}
        blend_window(1, 1, preprocess["blend"])  # a bad name fails before any work
        if not 0.0 <= preprocess["overlap"] < 1.0:
            raise ValueError(f"overlap is the fraction of a tile its neighbour shares, in [0, 1); got {overlap}")
        return preprocess, {}, {}

    def _tile(self) -> tuple[int, int]:
        size = self.image_processor.size
        return int(size["height"]), int(size["width"])

    def preprocess(self, image, overlap=0.25, blend="gaussian", timeout=None):
        # The image at its own size, normalised, decoded by the family's processor (DICOM, 16-bit...); the size
        # check of an unresized input is the model's (tiles have the model's size), so it is switched off here.
        extra = {"size_divisor": 1} if hasattr(self.image_processor, "size_divisor") else {}
        native = self.image_processor(images=image, do_resize=False, return_tensors="pt", **extra)["pixel_values"]
        height, width = native.shape[-2:]
        tile_h, tile_w = self._tile()
        if height <= tile_h and width <= tile_w:
            inputs = self.image_processor(images=image, return_tensors="pt").to(self.dtype)
            return {"pixel_values": inputs["pixel_values"], "target_size": [(height, width)], "window": None}
        return {"pixel_values": native.to(self.dtype), "target_size": [(height, width)],
                "window": {"overlap": overlap, "blend": blend}}

    def _forward(self, model_inputs):
        window = model_inputs["window"]
        pixel_values = model_inputs["pixel_values"]
        if window is None:
            logits = self.model(pixel_values=pixel_values).logits
        else:
            logits = sliding_window_logits(
                lambda tiles: self.model(pixel_values=tiles).logits, pixel_values, self._tile(), **window
            )
        return {"logits": logits, "target_size": model_inputs["target_size"]}

    def postprocess(self, model_outputs, **kwargs):
        return super().postprocess(model_outputs, subtask="semantic")


def register_pipelines() -> None:
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=MedicalImageClassificationPipeline, pt_model=AutoModelForImageClassification
    )
    PIPELINE_REGISTRY.register_pipeline(
        VOLUME_TASK, pipeline_class=MedicalVolumePipeline, pt_model=AutoModelForImageClassification
    )
    PIPELINE_REGISTRY.register_pipeline(
        SEGMENTATION_TASK, pipeline_class=MedicalImageSegmentationPipeline, pt_model=AutoModelForSemanticSegmentation
    )


def _check_model_source(model) -> None:
    """A one-line error for a local path that is not a model folder: transformers would call it a malformed
    Hub repo id, or ask for a `model_type` key in a config.json that does not exist."""
    if not isinstance(model, (str, os.PathLike)):
        return
    path = Path(model)
    if path.is_dir():
        if (path / "config.json").is_file():
            return
        if (path / "model" / "config.json").is_file():
            raise ValueError(f"{model} is a training run folder, not a model folder: pass {path / 'model'}")
        raise ValueError(
            f"{model} has no config.json, so it is not a model folder: pass a folder written by save_pretrained "
            "or `hfmed train` (a run's model/ subfolder), or a Hub repo id 'org/name'"
        )
    text = os.fspath(model)
    # A Hub id is "name" or "org/name"; anything else that does not exist is a mistyped local path.
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or os.sep in text.replace("/", ""):
        raise FileNotFoundError(f"No model folder {text!r}: check the path (a run's model folder is <run>/model)")


def _pipeline(task, model, kwargs):
    _check_model_source(model)
    hub_kwargs = {key: kwargs[key] for key in ("revision", "token") if key in kwargs}
    kwargs["trust_remote_code"] = trust_remote_code_for(model, kwargs.get("trust_remote_code"), **hub_kwargs)
    pipe = pipeline(task, model=model, **kwargs)
    _check_input_kind(task, pipe.model.config, model)
    return pipe


def _check_input_kind(task, config, model) -> None:
    from .cards import FAMILY_CARDS

    card = FAMILY_CARDS.get(getattr(config, "model_type", None))
    if card is None:
        return
    if task == VOLUME_TASK and card.input_kind != "volume":
        raise ValueError(
            f"{model} is a {config.model_type} model for 2-D images, not 3-D volumes: use "
            "hfmed.pipelines.classify, not predict_volume"
        )
    if task == TASK and card.input_kind == "volume":
        raise ValueError(
            f"{model} is a {config.model_type} model for 3-D volumes: use hfmed.pipelines.predict_volume, "
            "not classify"
        )


def classify(inputs, model, **kwargs):
    """Classify a DICOM/PNG path, bytes, Dataset or array with a model folder, Hub id or model instance.

    Returns a list of `{"label", "score"}` for every label, highest first (a list of lists for a batch).
    An hfmed family loads with the installed classes; a folder with other custom code needs
    `trust_remote_code=True` (`hfmed.hub.trust_remote_code_for`).
    """
    return _pipeline(TASK, model, kwargs)(inputs)


def segment(inputs, model, **kwargs):
    """Segment a PNG / JPEG / DICOM path, bytes, Dataset or array with a model folder, Hub id or model instance.

    Returns the `MedicalImageSegmentationPipeline` rows (one 0/255 mask per class present, at the input's size);
    a list of them for a list. Images larger than the model's input are segmented by a sliding window
    (`overlap=`, `blend=`). Loads like `classify`.
    """
    return _pipeline(SEGMENTATION_TASK, model, kwargs)(inputs)


def predict_volume(inputs, model, **kwargs):
    """Predict on a NIfTI path, bytes, nibabel image or array with a model folder, Hub id or instance.

    Returns the `MedicalVolumePipeline` dict (prediction and slice weights); a list of them for a list.
    Loads like `classify`.
    """
    return _pipeline(VOLUME_TASK, model, kwargs)(inputs)


__all__ = [
    "MedicalImageClassificationPipeline",
    "MedicalImageSegmentationPipeline",
    "MedicalVolumePipeline",
    "SEGMENTATION_TASK",
    "TASK",
    "VOLUME_TASK",
    "blend_window",
    "classify",
    "predict_volume",
    "register_pipelines",
    "segment",
    "sliding_window_logits",
    "tile_starts",
]
