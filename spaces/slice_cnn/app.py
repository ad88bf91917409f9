"""Gradio Space: Slice-CNN on one 3-D brain MRI (NIfTI): brain age, or Alzheimer's disease vs control.

Research use only, not for diagnosis.

    HFMED_MODEL=runs/slice-cnn-demo/model python spaces/slice_cnn/app.py

The model comes from, in order: the env variable `HFMED_MODEL` (a Hub id or a local folder); the file
`model_id.txt` beside this file (`upload.py --space` writes it when publishing); the local demo run
`runs/slice-cnn-demo/model` of the hfmed repository. It loads with `trust_remote_code=True`, so this file
imports nothing from hfmed (the Space runs without it): only the standard library, numpy, pandas, PIL, torch,
transformers, gradio (with its dependency anyio) and (through the model's image processor) nibabel.

What the page shows for one volume: the middle sagittal, coronal and axial slices of the volume the model sees
(after the processor's reorientation, resampling, crop / pad and z-score), the prediction (brain age in years
for a regression model; the probability of the disease label and the call at a threshold for a classifier),
and, for a model that pools its slices with attention, the weight of every slice along the slice axis.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import html
import math
import os
import re
import tempfile
import threading
import warnings
from pathlib import Path

import anyio
import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image

APP_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = APP_DIR / "examples"
MODEL_ID_FILE = APP_DIR / "model_id.txt"
_PARENTS = Path(__file__).resolve().parents
# The repository's demo run; None where app.py does not sit in <repo>/spaces/slice_cnn (e.g. on the Hub).
DEFAULT_MODEL_DIR = _PARENTS[2] / "runs/slice-cnn-demo/model" if len(_PARENTS) > 2 else None

# A 1 mm T1 volume is usually 5-20 MB as .nii.gz and up to ~32 MB as .nii (256x256x256 int16).
MAX_UPLOAD_MB = 40
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024  # gradio's "40mb" is 40 * 1024 * 1024 bytes too
DEFAULT_THRESHOLD = 0.5
# Slices are shown with this longest side (pixels), voxels as blocks (nearest neighbour): what the model sees.
DISPLAY_SIDE = 256
# Grey window of the slice pictures: these percentiles of the processed (z-scored) volume are black / white.
DISPLAY_PERCENTILES = (0.5, 99.5)
# Gradio's own cache sweep (frequency, age) in seconds: uploads never sent to `predict`, example copies and
# result images are removed after 10 minutes, and everything when the server stops.
DELETE_CACHE = (600, 600)
# One prediction at a time (torch already spreads one over every core, and the memory peak stays one request's);
# up to QUEUE_MAX_SIZE more requests wait in gradio's queue, and a request beyond that is answered at once with
# gradio's "Queue is full ... try again" (HTTP 503) instead of waiting without bound. Our choice.
CONCURRENCY_LIMIT = 1
QUEUE_MAX_SIZE = 64
NIFTI_SUFFIXES = (".nii", ".nii.gz")
CLEARED_TEXT = "Upload a brain MRI volume (.nii or .nii.gz) and press the button, or pick an example."
AXIS_NAMES = {1: "sagittal", 2: "coronal", 3: "axial"}
_EXAMPLE_NAME = re.compile(r"^synthetic_(cn|ad)_age(\d{1,3})(?:_([a-z]{3}))?\.nii\.gz$")

NOTICE = """\
# Slice-CNN: brain age (or Alzheimer's disease) from a 3-D brain MRI

**Research use only — not for diagnosis.** This demo is not a medical device; its outputs must not be used
to make or support any clinical decision.

Upload one 3-D structural brain MRI (T1-weighted) as NIfTI (`.nii` or `.nii.gz`). The model's image processor
reorients it to RAS, resamples it, crops or pads it to the model's grid and z-scores it; a 2-D CNN then reads
every slice along one axis, and the slice embeddings are pooled into one prediction. The page shows three
orthogonal slices of that processed volume, the prediction and, for a model that pools with attention, the
weight of each slice. Registration to MNI space, skull stripping and bias correction are not done here.
Uploaded files are deleted from the server once the answer is sent.
"""


# Copied from spaces._shared.space_helpers.ModelNotFoundError
class ModelNotFoundError(RuntimeError):
    """No model to serve; the message says how to point the app at one."""


# --- model -----------------------------------------------------------------------------------------------


def resolve_model_source() -> str:
    """The Hub id or local folder to serve: `HFMED_MODEL`, else `model_id.txt`, else the repo's demo run."""
    source = os.environ.get("HFMED_MODEL", "").strip()
    if source:
        local = Path(source).expanduser()
        return str(local) if local.exists() else source
    if MODEL_ID_FILE.is_file():
        source = MODEL_ID_FILE.read_text().strip()
        if source:
            return source
    if DEFAULT_MODEL_DIR is not None and (DEFAULT_MODEL_DIR / "config.json").is_file():
        return str(DEFAULT_MODEL_DIR)
    raise ModelNotFoundError(
        "no model to serve: run `hfmed train configs/slice-cnn-demo.yaml` in the hfmed repository (it writes "
        "runs/slice-cnn-demo/model), or set HFMED_MODEL to a Hub id or a local model folder, "
        "e.g. `HFMED_MODEL=hfmed/slice-cnn-demo python app.py` (or write the id into model_id.txt beside "
        "app.py)"
    )


# Copied from spaces._shared.space_helpers._one_line
def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# Copied from spaces._shared.space_helpers._load_config
@functools.cache
def _load_config(source: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=True)
    except Exception as err:
        raise ModelNotFoundError(
            f"could not load the model config from {source!r}: {_one_line(err)}; set HFMED_MODEL to a Hub id "
            "or a local folder holding config.json"
        ) from err


# Copied from spaces._shared.space_helpers._load
@functools.cache
def _load(source: str):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    try:
        model = AutoModelForImageClassification.from_pretrained(source, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=True)
    except Exception as err:
        raise ModelNotFoundError(
            f"could not load the model from {source!r}: {_one_line(err)}; set HFMED_MODEL to a Hub id or a "
            "local folder written by hfmed.hub.save_for_hub"
        ) from err
    return model, processor


# Copied from spaces._shared.space_helpers.load_config
def load_config():
    """The served model's config (cheap: no weights), cached per source."""
    return _load_config(resolve_model_source())


# Copied from spaces._shared.space_helpers.load_model
def load_model():
    """`(model, processor)` of the served model, loaded on first use and cached per source."""
    return _load(resolve_model_source())


def is_classifier(config) -> bool:
    """True for a disease classifier (one logit), False for a regression model (brain age)."""
    task = getattr(config, "task", None)
    if task is not None:
        return task == "classification"
    return getattr(config, "problem_type", None) != "regression"


def target_name(config) -> str:
    """The one output's name: `age` (regression) or the disease label, e.g. `AD` (classification)."""
    return str(config.id2label[0])


def default_threshold(config) -> float:
    """The probability threshold of the call: the validation threshold in the config when there is one."""
    thresholds = getattr(config, "label_thresholds", None)
    if thresholds and len(thresholds) == 1:
        value = float(thresholds[0])
        if math.isfinite(value) and 0.0 <= value <= 1.0:
            return value
    return DEFAULT_THRESHOLD


def has_validation_threshold(config) -> bool:
    thresholds = getattr(config, "label_thresholds", None)
    return bool(thresholds) and len(thresholds) == 1


def slice_axis_name(config) -> str:
    return AXIS_NAMES.get(getattr(config, "slice_axis", 1), "sagittal")


def num_slices(config) -> int:
    """Slice inputs per volume: slices along the slice axis, less `in_channels - 1` (stacked neighbours)."""
    axis = getattr(config, "slice_axis", 1)
    return int(config.volume_shape[axis - 1]) - int(getattr(config, "in_channels", 1)) + 1


def pooling_note(config) -> str:
    """What a model without slice weights does instead (shown where the plot would be)."""
    aggregation = getattr(config, "aggregation", "mean")
    count, axis = num_slices(config), slice_axis_name(config)
    if aggregation == "attention":
        return (
            f"Slice weights: the attention pooling's weight of each of the {count} {axis} slices (orange; "
            "they sum to 1) against the uniform weight 1/N (grey). They show where the pooling looked, not "
            "why the model decided."
        )
    if aggregation == "max":
        how = "takes, for each feature, its maximum over slices"
    else:
        how = f"averages them: every slice weighs 1/{count}"
    return (
        f"**No slice weights:** this model pools its {count} {axis} slice embeddings by `{aggregation}` (it "
        f"{how}), so there are no learned per-slice weights to plot. Only a model with attention pooling "
        "(`aggregation: attention`) has them."
    )


# --- files -----------------------------------------------------------------------------------------------


# Copied from spaces._shared.space_helpers.upload_dir
def upload_dir() -> Path:
    """Where gradio stores uploads (and its cache): `GRADIO_TEMP_DIR`, else `<tmp>/gradio`."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def _is_nifti_name(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def example_files() -> list[Path]:
    """The bundled synthetic examples (NIfTI), by name."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.is_file() and _is_nifti_name(p))


def example_truth(name: str) -> dict | None:
    """`synthetic_ad_age76_lps.nii.gz` -> `{"age": 76, "diagnosis": "AD", "orientation": "LPS"}`, or None."""
    match = _EXAMPLE_NAME.match(Path(name).name)
    if match is None:
        return None
    diagnosis, age, orientation = match.groups()
    return {"age": int(age), "diagnosis": diagnosis.upper(), "orientation": (orientation or "ras").upper()}


def example_label(path: Path) -> str:
    """`synthetic_ad_age76_lps.nii.gz` -> `synthetic T1: AD, 76 y (stored LPS)`."""
    truth = example_truth(path.name)
    if truth is None:
        return path.name
    stored = "" if truth["orientation"] == "RAS" else f" (stored {truth['orientation']})"
    return f"synthetic T1: {truth['diagnosis']}, {truth['age']} y{stored}"


# Copied from spaces._shared.space_helpers._sha256
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Copied from spaces._shared.space_helpers._example_fingerprints
@functools.cache
def _example_fingerprints() -> frozenset[tuple[int, str]]:
    return frozenset((p.stat().st_size, _sha256(p)) for p in example_files())


# Copied from spaces._shared.space_helpers._is_example_copy
def _is_example_copy(path: Path) -> bool:
    # Gradio serves a clicked example from a copy in its cache (the upload dir); deleting that copy would
    # break the next click on the same example, so copies of bundled examples are kept.
    try:
        size = path.stat().st_size
        fingerprints = _example_fingerprints()
        return any(size == known for known, _ in fingerprints) and (size, _sha256(path)) in fingerprints
    except OSError:
        return False


# Copied from spaces._shared.space_helpers._delete_upload
def _delete_upload(resolved: Path, root: Path) -> bool:
    try:
        resolved.unlink()
    except OSError:
        return False
    if resolved.parent != root:
        try:  # gradio puts each upload in its own <hash>/ folder
            resolved.parent.rmdir()
        except OSError:
            pass
    return True


# Copied from spaces._shared.space_helpers.UploadLeases
class UploadLeases:
    """Who still needs each upload path, so that an answer deletes its upload only when nobody else does.

    Gradio stores an upload at `<upload dir>/<sha256 of the bytes>/<file name>`: two users (or one client
    twice) sending the same file get the same path. Deleting it after one answer broke the other request,
    still waiting in the queue with that path ("no longer on the server"). So every upload of a path counts
    (`uploaded`, called by gradio's upload route through `CountedUploadSet`), an answer takes one of them
    (`acquire`), and the answer deletes the file only when no upload of that path is still unanswered and no
    other answer reads it (`release`). A file nobody answers for (an upload never sent to `predict`, or one
    refused by a full queue) is left to gradio's cache sweep (`DELETE_CACHE`).

    `discard` deletes a released path (default `discard_upload`); an app that serves several Spaces in one
    server shares one lease table and passes a `discard` that keeps every Space's example copies.
    """

    def __init__(self, discard=None) -> None:
        self.discard = discard
        self._lock = threading.Lock()
        self._waiting: collections.Counter[str] = collections.Counter()  # uploads not yet answered
        self._reading: collections.Counter[str] = collections.Counter()  # answers running on the path

    @staticmethod
    def _key(path: str | os.PathLike) -> str:
        return os.path.realpath(os.fspath(path))  # the route's and predict's spellings of one file agree

    def uploaded(self, paths) -> None:
        with self._lock:
            for path in paths:
                self._waiting[self._key(path)] += 1

    def forget(self, paths) -> None:
        """Gradio's cache sweep deleted `paths`: nobody can read them any more."""
        with self._lock:
            for path in paths:
                self._waiting.pop(self._key(path), None)

    def acquire(self, path: str | os.PathLike) -> None:
        key = self._key(path)
        with self._lock:
            if self._waiting[key] > 0:
                self._waiting[key] -= 1
            if self._waiting[key] == 0:
                del self._waiting[key]
            self._reading[key] += 1

    def release(self, path: str | os.PathLike) -> bool:
        """Ends one answer on `path`; deletes the file (see `discard_upload`) if nobody else needs it."""
        key = self._key(path)
        with self._lock:
            self._reading[key] -= 1
            if self._reading[key] > 0 or self._waiting.get(key, 0) > 0:
                return False
            del self._reading[key]
            return (self.discard or discard_upload)(key)


# Copied from spaces._shared.space_helpers.CountedUploadSet
class CountedUploadSet(set):
    """Gradio's `Blocks.upload_file_set` (every path its upload route wrote; the cache sweep reads it) that
    also counts each upload in `UPLOADS`."""

    def update(self, *others) -> None:
        for other in others:
            other = list(other)
            UPLOADS.uploaded(other)
            super().update(other)

    def add(self, item) -> None:
        UPLOADS.uploaded([item])
        super().add(item)

    def __isub__(self, other):
        other = set(other)
        UPLOADS.forget(other)
        super().__isub__(other)
        return self


# Copied from spaces._shared.space_helpers.UPLOADS
UPLOADS = UploadLeases()


# Copied from spaces._shared.space_helpers.count_uploads
def count_uploads(demo: gr.Blocks) -> None:
    """Makes gradio's upload route report every upload to `UPLOADS` (see `UploadLeases`)."""
    uploads, swept = getattr(demo, "upload_file_set", None), getattr(demo, "temp_file_sets", None)
    if not isinstance(uploads, set) or not isinstance(swept, list) or not any(s is uploads for s in swept):
        raise RuntimeError(
            f"gradio {gr.__version__} keeps uploads differently from gradio 6.31 (Blocks.upload_file_set): "
            "pin the gradio version of requirements.txt"
        )
    counted = CountedUploadSet(uploads)
    demo.upload_file_set = counted
    demo.temp_file_sets = [counted if s is uploads else s for s in swept]


# Copied from spaces._shared.space_helpers.discard_upload
def discard_upload(path: str | os.PathLike) -> bool:
    """Deletes `path` if it is a user upload in gradio's upload dir; returns whether it was deleted.

    Never touches files elsewhere (bundled examples, files given to `predict` directly) nor gradio's copies
    of the bundled examples. `predict` calls it through `UPLOADS.release`, which first checks that no other
    request still needs the path.
    """
    try:
        resolved = Path(path).resolve()
        root = upload_dir()
    except (OSError, RuntimeError):
        return False
    if resolved == root or not resolved.is_relative_to(root) or not resolved.is_file():
        return False
    if _is_example_copy(resolved):
        return False
    return _delete_upload(resolved, root)


# Copied from spaces._shared.space_helpers._on_event_loop
def _on_event_loop(function, *args):
    """Runs `function(*args)` on the server's event loop thread when called from one of gradio's worker
    threads, else here.

    Gradio's upload route renames an upload into place and counts it (`CountedUploadSet.update`) in one step
    of the event loop; releasing a lease there too means a release never deletes a file between the two.
    """
    try:
        return anyio.from_thread.run_sync(function, *args)
    except RuntimeError:  # not in an anyio worker thread (a direct call): no server step to interleave with
        return function(*args)


# Copied from spaces._shared.space_helpers.publish_images
def publish_images(gallery: list[tuple[Image.Image, str]]) -> list[tuple[str, str]]:
    """Writes a gallery's images as PNGs in a folder of this answer's own; returns `(path, caption)` pairs.

    Given PIL images, gradio names each file by the hash of its bytes: equal pictures of two requests (the
    same file sent twice, or two files that look alike) were one file, rewritten by the second request while
    the first was being downloaded (h11 "Too much / too little data for declared Content-Length"). A fresh
    folder per answer is never rewritten; gradio's cache sweep (`DELETE_CACHE`) deletes it.
    """
    folder = Path(tempfile.mkdtemp(prefix="answer-", dir=upload_dir()))
    published = []
    for index, (image, caption) in enumerate(gallery):
        slug = re.sub(r"[^a-z0-9]+", "-", caption.lower()).strip("-")[:40] or "image"
        path = folder / f"{index}-{slug}.png"
        image.save(path, format="PNG")
        published.append((str(path), caption))
    return published


# --- pictures --------------------------------------------------------------------------------------------


def display_window(volume: np.ndarray) -> tuple[float, float]:
    """The grey window (low, high) shared by the three slices: percentiles of the whole processed volume."""
    low, high = (float(v) for v in np.percentile(volume, DISPLAY_PERCENTILES))
    if not high > low:
        low, high = float(volume.min()), float(volume.max())
    if not high > low:
        high = low + 1.0
    return low, high


def slice_image(view: np.ndarray, window: tuple[float, float], pixel_mm: tuple[float, float]) -> Image.Image:
    """One 2-D slice (row 0 at the top) as an 8-bit grey picture, `DISPLAY_SIDE` pixels on its longest side.

    `pixel_mm` is the (row, column) voxel size, so anisotropic grids keep their true proportions; voxels are
    drawn as blocks (nearest neighbour), so the picture shows the grid the model sees.
    """
    low, high = window
    grey = np.rint(np.clip((np.asarray(view, dtype=np.float64) - low) / (high - low), 0.0, 1.0) * 255.0)
    image = Image.fromarray(grey.astype(np.uint8), mode="L")
    rows, cols = view.shape
    height_mm, width_mm = rows * pixel_mm[0], cols * pixel_mm[1]
    scale = DISPLAY_SIDE / max(height_mm, width_mm)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    return image.resize(size, Image.Resampling.NEAREST)


def _view_captions(processor, shape: tuple[int, int, int]) -> list[str]:
    """Captions of the sagittal / coronal / axial pictures: the slice index, and the subject's direction up
    (↑) and to the right (→) as orientation letters, e.g. `Axial z=8/16: A↑ R→`."""
    x, y, z = (n // 2 for n in shape)
    code = (
        str(getattr(processor, "orientation", "RAS")).upper()
        if getattr(processor, "do_reorient", True)
        else ""
    )
    # orthogonal_slices puts the third array axis up in sagittal / coronal views (the second in axial views)
    # and the second (sagittal) or first (coronal, axial) axis to the right.
    layout = (("Sagittal", 0, x, 2, 1), ("Coronal", 1, y, 2, 0), ("Axial", 2, z, 1, 0))
    captions = []
    for name, axis, index, up, right in layout:
        caption = f"{name} {'xyz'[axis]}={index}/{shape[axis]}"
        if len(code) == 3:
            caption += f": {code[up]}↑ {code[right]}→"
        captions.append(caption)
    return captions


def orthogonal_views(processor, pixel_values: torch.Tensor) -> list[tuple[Image.Image, str]]:
    """The processed volume's middle sagittal, coronal and axial slices as `(picture, caption)` pairs."""
    volume = pixel_values[0].detach().float().cpu().numpy()
    slices = processor.orthogonal_slices(volume)
    window = display_window(volume)
    sx, sy, sz = (
        (float(s) for s in processor.target_spacing)
        if getattr(processor, "do_resample", True)
        else (1.0, 1.0, 1.0)
    )
    pixel_mm = ((sz, sy), (sz, sx), (sy, sx))  # (row, column) voxel sizes of the three views
    captions = _view_captions(processor, volume.shape)
    return [
        (slice_image(view, window, mm), caption)
        for view, mm, caption in zip(
            (slices.sagittal, slices.coronal, slices.axial), pixel_mm, captions, strict=True
        )
    ]


def slice_limits(config) -> list[float]:
    """The plot's x range: the first and last slice-input positions (see `slice_weight_frame`)."""
    offset = (int(getattr(config, "in_channels", 1)) - 1) / 2.0
    return [offset, offset + num_slices(config) - 1]


def slice_weight_frame(weights: torch.Tensor | np.ndarray, config) -> pd.DataFrame:
    """The LinePlot data: one row per slice input (its centre index along the slice axis), and the uniform
    line.

    With `in_channels` = c > 1 slice input i stacks slices i .. i + c - 1, so its position is i + (c - 1) / 2.
    """
    values = np.asarray(weights, dtype=np.float64).reshape(-1)
    offset = (int(getattr(config, "in_channels", 1)) - 1) / 2.0
    positions = np.arange(values.size, dtype=np.float64) + offset
    uniform = np.full(values.size, 1.0 / values.size)
    return pd.DataFrame(
        {
            "slice": np.concatenate([positions, positions]),
            "weight": np.concatenate([values, uniform]),
            "series": ["attention weight"] * values.size + ["uniform (1/N)"] * values.size,
        }
    )


# --- prediction ------------------------------------------------------------------------------------------


# Copied from spaces._shared.space_helpers._format_pair
def _format_pair(value: float, threshold: float) -> tuple[str, str]:
    """Formats both with the fewest decimals (>= 2) that keep them apart, so the shown sign agrees."""
    for digits in range(2, 10):
        a, b = f"{value:.{digits}f}", f"{threshold:.{digits}f}"
        if a != b:
            return a, b
    return repr(value), repr(threshold)


def disease_call(label: str, probability: float, threshold: float) -> str:
    """The Markdown call of a classifier: suspected at or above the threshold."""
    shown_p, shown_t = _format_pair(probability, threshold)
    if probability >= threshold:
        return f"**{label} suspected** (P({label}) = {shown_p} >= {shown_t})"
    return f"**No {label} call** (P({label}) = {shown_p} < {shown_t})"


def regression_answer(name: str, value: float) -> str:
    if name.lower() == "age":
        return f"**Predicted brain age: {value:.1f} years**"
    return f"**Predicted {name}: {value:.4g}**"


# Copied from spaces._shared.space_helpers._error
def _error(message: str, path: Path) -> gr.Error:
    # One line, the server path replaced by the file name, and no HTML (gr.Error renders HTML).
    text = _one_line(message).replace(str(path), path.name)
    return gr.Error(html.escape(text, quote=False), print_exception=False)


# Copied from spaces._shared.space_helpers._check_threshold
def _check_threshold(threshold, path: Path) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError) as err:
        raise _error(f"threshold must be a number in [0, 1], got {threshold!r}", path) from err
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise _error(f"threshold must be a number in [0, 1], got {threshold!r}", path)
    return value


def predict(file_path: str | os.PathLike | None, threshold: float | None = None):
    """Predicts from one 3-D brain MRI volume.

    Args:
        file_path: a NIfTI-1 / NIfTI-2 file (`.nii` or `.nii.gz`) holding one 3-D volume.
        threshold: for a classifier, the probability at or above which the disease is called (default: the
            model's validation threshold, else 0.5); ignored by a regression (brain age) model.

    Returns:
        `(slices, prediction, slice_weights, slice_weights_note)`: the processed volume's middle sagittal,
        coronal and axial slices as `(image, caption)` pairs; the prediction as Markdown (brain age in years,
        or the disease probability and call); the attention weight of every slice as a table for a line plot
        (None for a model that pools slices by mean or max); and a note saying what the weights are, or why
        there are none.
    """
    if file_path is None or not str(file_path).strip():
        raise gr.Error(
            "No file: upload one brain MRI volume (.nii or .nii.gz) or pick an example", print_exception=False
        )
    path = Path(os.fspath(file_path))
    UPLOADS.acquire(path)
    try:
        return _predict(path, threshold)
    finally:
        _on_event_loop(UPLOADS.release, path)


@functools.wraps(predict)
def serve_predict(file_path: str | os.PathLike | None, threshold: float | None = None):
    views, answer, frame, note = predict(file_path, threshold)
    return publish_images(views), answer, frame, note


def _predict(path: Path, threshold: float | None):
    if not path.is_file():
        raise _error(
            f"{path.name} is no longer on the server (uploads are deleted after each answer): "
            "upload it again",
            path,
        )
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise _error(
            f"{path.name} is {size / 2**20:.1f} MB, over the {MAX_UPLOAD_MB} MB limit: upload one 3-D volume "
            "as .nii.gz (a 1 mm T1 volume is usually 5-20 MB compressed)",
            path,
        )
    truth = example_truth(path.name) if _is_example_copy(path) else None
    try:
        model, processor = load_model()
    except ModelNotFoundError as err:
        raise gr.Error(html.escape(_one_line(err), quote=False)) from err
    config = model.config
    classifier = is_classifier(config)
    if classifier:
        threshold = default_threshold(config) if threshold is None else _check_threshold(threshold, path)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            inputs = processor(str(path), return_tensors="pt")
        except Exception as err:  # not NIfTI, 4-D, NaN, singular affine, too many voxels, ...
            raise _error(str(err), path) from err
    notes = list(dict.fromkeys(_one_line(w.message) for w in caught if issubclass(w.category, UserWarning)))

    pixel_values = inputs["pixel_values"]
    try:
        with torch.inference_mode():
            outputs = model(pixel_values=pixel_values.to(model.dtype))
    except Exception as err:  # e.g. the processor's target_shape differs from the model's volume_shape
        raise _error(f"the model failed on {path.name}: {err}", path) from err
    value = float(outputs.logits[0, 0].float())
    name = target_name(config)
    if classifier:
        answer = disease_call(name, float(torch.sigmoid(torch.tensor(value))), threshold)
    else:
        answer = regression_answer(name, value)
    if truth is not None:
        answer += (
            f"\n\nThis is a bundled synthetic example: its known age is {truth['age']} years and its "
            f"diagnosis {truth['diagnosis']}."
        )

    try:
        views = orthogonal_views(processor, pixel_values)
    except Exception as err:
        raise _error(f"could not draw the slices of {path.name}: {err}", path) from err
    weights = getattr(outputs, "slice_weights", None)
    frame = None if weights is None else slice_weight_frame(weights[0].float().cpu().numpy(), config)
    if frame is not None:
        row = frame.iloc[int(np.argmax(frame["weight"].to_numpy()[: num_slices(config)]))]
        answer += (
            f"\n\nAttention peaks at {slice_axis_name(config)} slice {row['slice']:g} "
            f"(weight {row['weight']:.3f}, "
            f"{row['weight'] * num_slices(config):.1f}x the uniform 1/{num_slices(config)})."
        )

    for note in notes:
        answer += f"\n\nNote: {html.escape(note.replace(str(path), path.name), quote=False)}"
    answer += "\n\n_Research use only, not for diagnosis._"
    return views, answer, frame, pooling_note(config)


# --- UI --------------------------------------------------------------------------------------------------


def _model_markdown(source: str, config) -> str:
    shown = Path(source).name if Path(source).exists() else source  # never show server paths
    shape = "x".join(str(n) for n in config.volume_shape)
    aggregation = getattr(config, "aggregation", "mean")
    if is_classifier(config):
        task = f"classifier: P({target_name(config)}) from one logit"
    else:
        task = f"regression: {target_name(config)}"
    lines = [
        f"Model: `{shown}` ({task}).",
        f"Input grid {shape} (x, y, z); {num_slices(config)} {slice_axis_name(config)} slices, encoder "
        f"`{getattr(config, 'encoder', '?')}`, pooled by `{aggregation}`.",
    ]
    if is_classifier(config):
        if has_validation_threshold(config):
            lines.append(
                f"Validation threshold {default_threshold(config):.2f} (chosen on the validation split): the "
                "slider starts there."
            )
        else:
            lines.append("The model has no validation threshold: the slider starts at 0.5.")
    return "\n\n".join(lines)


def _cleared(config):
    return [], CLEARED_TEXT, None, pooling_note(config)


def build_demo() -> gr.Blocks:
    source = resolve_model_source()
    config = _load_config(source)
    classifier = is_classifier(config)
    attention = getattr(config, "aggregation", "mean") == "attention"
    axis = slice_axis_name(config)
    examples = example_files()

    with gr.Blocks(
        title="Slice-CNN: brain MRI (research use only)",
        analytics_enabled=False,
        delete_cache=DELETE_CACHE,
    ) as demo:
        gr.Markdown(NOTICE)
        with gr.Row():
            with gr.Column(scale=1):
                file_input = gr.File(
                    label="Brain MRI volume: NIfTI (.nii or .nii.gz)",
                    file_count="single",
                    # "file" lets any name through, so that a wrongly named upload reaches predict, which
                    # checks the content (NIfTI header), explains, and deletes it.
                    file_types=[*NIFTI_SUFFIXES, "file"],
                    type="filepath",
                )
                # Regression models have no threshold: the slider stays in the API (same signature for every
                # model) but is hidden.
                threshold = gr.Slider(
                    minimum=0.0,
                    maximum=1.0,
                    value=default_threshold(config),
                    step=0.01,
                    label=f"Threshold (probability of {target_name(config)})",
                    info=f"'{target_name(config)} suspected' when its probability is at or above this value",
                    visible=classifier,
                )
                run = gr.Button("Classify" if classifier else "Estimate brain age", variant="primary")
                gr.Markdown(_model_markdown(source, config))
            with gr.Column(scale=2):
                answer = gr.Markdown(label="Prediction", value=CLEARED_TEXT)
                views = gr.Gallery(
                    label="What the model sees: middle slices of the processed volume (↑ up, → right)",
                    columns=3,
                    rows=1,
                    height="auto",
                    object_fit="contain",
                    format="png",
                    interactive=False,
                )
                weights = gr.LinePlot(
                    x="slice",
                    y="weight",
                    color="series",
                    color_map={"attention weight": "#ea580c", "uniform (1/N)": "#94a3b8"},
                    colors_in_legend=[],  # no legend (gradio puts it below the plot, where it is cut off)
                    label=f"Slice weights along the {axis} axis",
                    x_title=f"{axis} slice index",
                    y_title="attention weight",
                    x_lim=slice_limits(config),
                    visible=attention,
                )
                weights_note = gr.Markdown(value=pooling_note(config))
        # Registered before gr.Examples: its run-on-click event would otherwise take the name "predict".
        outputs = [views, answer, weights, weights_note]
        run.click(serve_predict, inputs=[file_input, threshold], outputs=outputs, api_name="predict")
        # A new or removed upload clears the previous answer, so it is never read as the new file's.
        for event in (file_input.upload, file_input.clear):
            event(functools.partial(_cleared, config), outputs=outputs, queue=False, api_visibility="private")
        gr.Examples(
            examples=[[str(path)] for path in examples],
            inputs=[file_input, threshold],
            outputs=outputs,
            fn=serve_predict,  # the same function object: one concurrency group with the button
            run_on_click=True,
            cache_examples=False,
            example_labels=[example_label(path) for path in examples],
            label="Examples (synthetic brain volumes with known age and diagnosis)",
        )
    count_uploads(demo)
    return demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_MAX_SIZE)


demo = build_demo()


if __name__ == "__main__":
    load_model()  # fail at start, with the message, rather than on the first request
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=f"{MAX_UPLOAD_MB}mb",
        run_history=False,  # never keep inputs or outputs in the browser's run history
        enable_monitoring=False,
    )
