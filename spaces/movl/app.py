"""Gradio Space: MoVL image classification (a visual prompt and a linear probe on a frozen pretrained backbone),
showing the prompted image the backbone sees and the learned prompt.

Research use only, not for diagnosis.

    HFMED_MODEL=runs/movl-demo/model python spaces/movl/app.py

The model comes from, in order: the env variable `HFMED_MODEL` (a Hub id or a local folder); the file
`model_id.txt` beside this file (`upload.py --space` writes it when publishing); the local demo run
`runs/movl-demo/model` of the hfmed repository. It loads with `trust_remote_code=True`, so this file imports
nothing from hfmed (the Space runs without it): only the standard library, numpy, PIL, torch, transformers,
gradio (with its dependency anyio) and (through the model's image processor) pydicom.
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
import torch
from PIL import Image

APP_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = APP_DIR / "examples"
MODEL_ID_FILE = APP_DIR / "model_id.txt"
_PARENTS = Path(__file__).resolve().parents
# The repository's demo run; None where app.py does not sit in <repo>/spaces/movl (e.g. on the Hub).
DEFAULT_MODEL_DIR = _PARENTS[2] / "runs/movl-demo/model" if len(_PARENTS) > 2 else None

MAX_UPLOAD_MB = 20
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024  # gradio's "20mb" is 20 * 1024 * 1024 bytes too
# Single-label models: the top class is named when its probability is at or above this (below it the answer
# says no class is confident enough); multi-label models: a label is listed at or above it. Our choice.
DEFAULT_THRESHOLD = 0.5
# How many classes the probability panel lists (single-label models; a multi-label model lists every label).
TOP_CLASSES = 5
# The backbone's input is small (32 to 224 px): the pictures of it are enlarged by a whole factor (nearest
# neighbour, so every input pixel stays one visible square) to at least this side for display.
DISPLAY_SIDE = 224
# Gradio's own cache sweep (frequency, age) in seconds: uploads never sent to `predict`, example copies and
# result images are removed after 10 minutes, and everything when the server stops.
DELETE_CACHE = (600, 600)
# One prediction at a time (torch already spreads one over every core, and the memory peak stays one request's);
# up to QUEUE_MAX_SIZE more requests wait in gradio's queue, and a request beyond that is answered at once with
# gradio's "Queue is full ... try again" (HTTP 503) instead of waiting without bound. Our choice.
CONCURRENCY_LIMIT = 1
QUEUE_MAX_SIZE = 64
EXAMPLE_SUFFIXES = {".dcm", ".png", ".jpg", ".jpeg"}
CLEARED_TEXT = "Upload an image and press Classify, or pick an example."
MULTI_LABEL = "multi_label_classification"

NOTICE = """\
# MoVL: a visual prompt and a linear probe on a frozen pretrained backbone

**Research use only — not for diagnosis.** This demo is not a medical device; its outputs must not be used
to make or support any clinical decision.

Upload one 2-D medical image: a PNG or JPEG (8- or 16-bit grey, or RGB), or a DICOM file (`.dcm`, or a DICOM
file without extension). The backbone stays frozen as it was pretrained; MoVL learned only a visual prompt
added to the image before the backbone (a learned border, with the default padding prompt) and a linear probe on
the backbone's features. The Space shows the most probable classes, the image as the backbone sees it (resized,
with the prompt added) and the learned prompt on its own. Uploaded files are deleted from the server once the
answer is sent.
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
        "no model to serve: run `hfmed train configs/movl-demo.yaml` in the hfmed repository (it writes "
        "runs/movl-demo/model), or set HFMED_MODEL to a Hub id or a local model folder, "
        "e.g. `HFMED_MODEL=org/movl-demo python app.py` (or write the id into model_id.txt beside app.py)"
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


# Copied from spaces._shared.space_helpers.label_names
def label_names(config) -> list[str]:
    return [config.id2label[i] for i in range(config.num_labels)]


# Copied from spaces._shared.space_helpers.label_thresholds
def label_thresholds(config) -> dict[str, float] | None:
    """Per-label thresholds chosen on validation (`config.label_thresholds`), or None."""
    thresholds = getattr(config, "label_thresholds", None)
    if not thresholds or len(thresholds) != config.num_labels:
        return None
    return {name: float(t) for name, t in zip(label_names(config), thresholds, strict=True)}


# --- files -----------------------------------------------------------------------------------------------


# Copied from spaces._shared.space_helpers.upload_dir
def upload_dir() -> Path:
    """Where gradio stores uploads (and its cache): `GRADIO_TEMP_DIR`, else `<tmp>/gradio`."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def example_files() -> list[Path]:
    """The bundled synthetic examples: in-distribution first, then shifted (OOD); PNG before DICOM."""
    if not EXAMPLES_DIR.is_dir():
        return []
    files = [p for p in EXAMPLES_DIR.iterdir() if p.is_file() and p.suffix.lower() in EXAMPLE_SUFFIXES]
    return sorted(files, key=lambda p: (p.stem.startswith("ood_"), p.suffix.lower() == ".dcm", p.name))


def example_label(path: Path) -> str:
    """`in_distribution_<class>.png` -> `synthetic PNG, in distribution: <class>`; `ood_<class>.dcm` ->
    `synthetic DICOM, shifted (OOD): <class>`."""
    stem, kind = path.stem, "DICOM" if path.suffix.lower() == ".dcm" else path.suffix.lstrip(".").upper()
    for prefix, domain in (("in_distribution_", "in distribution"), ("ood_", "shifted (OOD)")):
        if stem.startswith(prefix):
            return f"synthetic {kind}, {domain}: {stem[len(prefix):].replace('_', ' ')}"
    return path.name


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


# --- prediction ------------------------------------------------------------------------------------------


# Copied from spaces._shared.space_helpers._format_pair
def _format_pair(value: float, threshold: float) -> tuple[str, str]:
    """Formats both with the fewest decimals (>= 2) that keep them apart, so the shown sign agrees."""
    for digits in range(2, 10):
        a, b = f"{value:.{digits}f}", f"{threshold:.{digits}f}"
        if a != b:
            return a, b
    return repr(value), repr(threshold)


def is_multi_label(config) -> bool:
    return getattr(config, "problem_type", None) == MULTI_LABEL


def top_class_markdown(probabilities: dict[str, float], threshold: float) -> str:
    """Single-label answer: the most probable class, named when its probability is at or above `threshold`."""
    top = max(probabilities, key=probabilities.get)
    shown_p, shown_t = _format_pair(probabilities[top], threshold)
    if probabilities[top] >= threshold:
        return f"**Top class: {top}** (p = {shown_p} >= {shown_t})"
    return f"**No class at or above the threshold** (the most probable, {top}: p = {shown_p} < {shown_t})"


def labels_markdown(probabilities: dict[str, float], thresholds: dict[str, float], per_label: bool) -> str:
    """Multi-label answer: every label at or above its threshold, most probable first, with the numbers."""
    listed = sorted((n for n, p in probabilities.items() if p >= thresholds[n]), key=lambda n: -probabilities[n])
    against = "their validation thresholds" if per_label else "the threshold"
    if not listed:
        if per_label:
            return f"**No label at or above {against}.**"
        value = next(iter(thresholds.values()))
        shown = f"{value:.2f}" if round(value, 2) == value else f"{value:.6g}"  # never rounded across a probability
        return f"**No label at or above {against} ({shown}).**"
    rows = ["- {} ({} >= {})".format(n, *_format_pair(probabilities[n], thresholds[n])) for n in listed]
    return f"**Labels at or above {against}:**\n\n" + "\n".join(rows)


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


def _thresholds(config, threshold, path: Path) -> tuple[dict[str, float], bool]:
    """`({label: threshold}, per_label)`: the number given, else the validation thresholds of a multi-label
    model (`config.label_thresholds`), else `DEFAULT_THRESHOLD`."""
    names = label_names(config)
    if threshold is None or (isinstance(threshold, str) and not threshold.strip()):
        validation = label_thresholds(config) if is_multi_label(config) else None
        if validation:
            return validation, True
        return dict.fromkeys(names, DEFAULT_THRESHOLD), False
    return dict.fromkeys(names, _check_threshold(threshold, path)), False


def enlarge(pixels: np.ndarray) -> Image.Image:
    """An (S, S, C) uint8 picture of the backbone's input, enlarged by the whole factor that brings its side to
    at least `DISPLAY_SIDE` (nearest neighbour: each input pixel becomes a square)."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    image = Image.fromarray(np.ascontiguousarray(pixels))
    factor = max(1, math.ceil(DISPLAY_SIDE / max(image.size)))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def _unnormalised(pixel_values: torch.Tensor, config) -> np.ndarray:
    """The processor's normalised `(1, C, S, S)` input back to uint8 `(S, S, C)`, with the backbone's mean / std."""
    mean = torch.tensor(config.image_mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(config.image_std, dtype=torch.float32).view(-1, 1, 1)
    unit = (pixel_values[0].detach().float().cpu() * std + mean).clamp(0.0, 1.0)
    return (unit * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _prompt_description(config) -> str:
    kind = getattr(config, "prompt_type", "padding")
    if kind == "padding":
        return f"a {config.prompt_size} px border"
    if kind == "fixed_patch":
        return f"a {config.prompt_size} px square, top left"
    return "the whole image"


def stretched_prompt(model) -> tuple[np.ndarray, float]:
    """The learned prompt as the change it makes to the pixel values in [0, 1] (the normalised prompt times the
    backbone's std), around mid-grey and stretched by the factor that takes its largest change to the edge of the
    range; `(uint8 (S, S, C), factor)`. A trained prompt often moves pixels by a few grey levels only: invisible
    on the mean image, its pattern shows here."""
    std = torch.tensor(model.config.image_std, dtype=torch.float32).view(-1, 1, 1)
    change = model.prompt_pixels().float() * std
    peak = float(change.abs().max())
    factor = 0.5 / peak if peak > 0 else 1.0
    unit = (0.5 + change * factor).clamp(0.0, 1.0)
    return (unit * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy(), factor


def backbone_views(model, pixel_values: torch.Tensor) -> list[tuple[Image.Image, str]]:
    """What the frozen backbone sees, de-normalised and enlarged for display (`enlarge`), with captions: the input
    resized to the backbone's size, the input + the learned prompt, and (with a prompt) the learned prompt on the
    mean image and contrast-stretched (`stretched_prompt`)."""
    config = model.config
    size = config.image_size
    plain = (enlarge(_unnormalised(pixel_values, config)), f"input, resized to {size}x{size}")
    prompted = enlarge(model.prompted_images(pixel_values.float())[0])
    if not getattr(config, "uses_prompt", True):
        return [plain, (prompted, f"what the backbone sees: the input alone (strategy {config.strategy} has no prompt)")]
    where = _prompt_description(config)
    stretched, factor = stretched_prompt(model)
    return [
        plain,
        (prompted, f"what the backbone sees: input + prompt ({where})"),
        (enlarge(model.prompt_image()), f"learned prompt on the mean image ({where})"),
        (enlarge(stretched), f"learned prompt, contrast x{factor:.3g} around mid-grey"),
    ]


def predict(file_path: str | os.PathLike | None, threshold: float | str | None = None):
    """Classifies one image and shows what the frozen backbone sees.

    Args:
        file_path: a PNG or JPEG (8/16-bit grey or RGB), or a DICOM file.
        threshold: single-label models: the top class is named when its probability is at or above it;
            multi-label models: a label is listed at or above it. A number, or its text ("0.3"). None or empty
            text: the multi-label model's per-label validation thresholds (`config.label_thresholds`) when it
            has them, else 0.5.

    Returns:
        `(probabilities, pictures, answer)`: the probability of every class (softmax; sigmoid per label for a
        multi-label model), `(image, caption)` pictures (`backbone_views`: the input resized to the backbone's
        size, the prompted image the backbone sees, the learned prompt on the mean image and contrast-stretched;
        the first two only for a model without prompt), and the answer as Markdown.
    """
    if file_path is None or not str(file_path).strip():
        raise gr.Error("No file: upload one image (PNG, JPEG or DICOM) or pick an example", print_exception=False)
    path = Path(os.fspath(file_path))
    UPLOADS.acquire(path)
    try:
        return _predict(path, threshold)
    finally:
        _on_event_loop(UPLOADS.release, path)


@functools.wraps(predict)
def serve_predict(file_path: str | os.PathLike | None, threshold: float | str | None = None):
    probabilities, pictures, text = predict(file_path, threshold)
    return probabilities, publish_images(pictures), text


def _predict(path: Path, threshold: float | str | None):
    if not path.is_file():
        raise _error(
            f"{path.name} is no longer on the server (uploads are deleted after each answer): "
            "upload it again",
            path,
        )
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise _error(
            f"{path.name} is {size / 2**20:.1f} MB, over the {MAX_UPLOAD_MB} MB limit: upload one 2-D image "
            "(a PNG or a single-frame DICOM is usually a few MB)",
            path,
        )
    try:
        model, processor = load_model()
    except ModelNotFoundError as err:
        raise gr.Error(html.escape(_one_line(err), quote=False)) from err
    config = model.config
    thresholds, per_label = _thresholds(config, threshold, path)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            inputs = processor(str(path), return_tensors="pt")
        except Exception as err:  # not an image, not DICOM, no pixels, NaN, too large, ...
            raise _error(str(err), path) from err
    notes = list(dict.fromkeys(_one_line(w.message) for w in caught if issubclass(w.category, UserWarning)))

    pixel_values = inputs["pixel_values"].to(model.dtype)
    try:
        with torch.inference_mode():
            logits = model(pixel_values=pixel_values).logits[0].float()
    except Exception as err:
        raise _error(f"the model failed on {path.name}: {err}", path) from err
    multi = is_multi_label(config)
    probabilities = (torch.sigmoid(logits) if multi else torch.softmax(logits, dim=-1)).tolist()
    classes = {name: float(p) for name, p in zip(label_names(config), probabilities, strict=True)}
    try:
        pictures = backbone_views(model, pixel_values)
    except Exception as err:
        raise _error(f"could not draw what the backbone sees for {path.name}: {err}", path) from err

    if multi:
        text = labels_markdown(classes, thresholds, per_label)
    else:
        text = top_class_markdown(classes, next(iter(thresholds.values())))
    for note in notes:
        text += f"\n\nNote: {html.escape(note.replace(str(path), path.name), quote=False)}"
    text += "\n\n_Research use only, not for diagnosis._"
    return classes, pictures, text


# --- UI --------------------------------------------------------------------------------------------------


def _model_markdown(source: str, config) -> str:
    shown = Path(source).name if Path(source).exists() else source  # never show server paths
    kind = "labels (multi-label)" if is_multi_label(config) else "classes"
    lines = [f"Model: `{shown}` ({config.num_labels} {kind}: {', '.join(label_names(config))})."]
    frozen = "frozen" if getattr(config, "freeze_backbone", True) else "fine-tuned (full fine-tuning)"
    backbone = f"`{config.backbone}` ({getattr(config, 'backbone_type', 'timm')})"
    lines.append(
        f"Backbone {backbone}, {frozen}, input {config.image_size}x{config.image_size}; strategy "
        f"`{config.strategy}`; prompt: "
        + (f"{config.prompt_type}, {_prompt_description(config)}." if getattr(config, "uses_prompt", True)
           else "none.")
    )
    thresholds = label_thresholds(config) if is_multi_label(config) else None
    if thresholds:
        rows = " | ".join(f"{name} {t:.2f}" for name, t in thresholds.items())
        lines.append(
            f"Validation thresholds (per label, chosen on the validation split): {rows}. They are used while "
            "the threshold box is empty."
        )
    return "\n\n".join(lines)


def _blank_answer():
    return {}, [], CLEARED_TEXT


def _threshold_input(config):
    if not is_multi_label(config):
        return gr.Slider(
            minimum=0.0,
            maximum=1.0,
            value=DEFAULT_THRESHOLD,
            step=0.01,
            label="Threshold (probability of the top class)",
            info="The top class is named when its probability is at or above this value",
        )
    if label_thresholds(config):
        # Empty means: each label against its own validation threshold; a number overrides them all. A text box,
        # not gr.Number: Gradio's number box shows and sends 0 for an empty (None) value.
        return gr.Textbox(
            value="",
            placeholder="empty: each label's validation threshold; or a number in [0, 1]",
            max_lines=1,
            label="Threshold for every label (empty: the per-label validation thresholds)",
            info="A label is listed when its probability is at or above its threshold",
        )
    return gr.Slider(
        minimum=0.0,
        maximum=1.0,
        value=DEFAULT_THRESHOLD,
        step=0.01,
        label="Threshold (probability, every label)",
        info="A label is listed when its probability is at or above this value",
    )


def build_demo() -> gr.Blocks:
    source = resolve_model_source()
    config = _load_config(source)
    labels = label_names(config)
    multi = is_multi_label(config)
    examples = example_files()

    with gr.Blocks(
        title="MoVL: visual prompt + linear probe on a frozen backbone (research use only)",
        analytics_enabled=False,
        delete_cache=DELETE_CACHE,
    ) as demo:
        gr.Markdown(NOTICE)
        with gr.Row():
            with gr.Column(scale=1):
                file_input = gr.File(
                    label="Image: PNG, JPEG or DICOM (.dcm or no extension)",
                    file_count="single",
                    # "file" lets DICOM files without an extension (or named by UID, "1.2.840...23") through;
                    # predict checks the content, whatever the name.
                    file_types=[*sorted(EXAMPLE_SUFFIXES), "file"],
                    type="filepath",
                )
                threshold = _threshold_input(config)
                run = gr.Button("Classify", variant="primary")
                gr.Markdown(_model_markdown(source, config))
            with gr.Column(scale=2):
                answer = gr.Markdown(label="Answer", value=CLEARED_TEXT)
                # Multi-label: independent labels, no single "top class" heading.
                probabilities = gr.Label(
                    label="Per-label probabilities" if multi else "Top classes",
                    num_top_classes=len(labels) if multi else min(TOP_CLASSES, len(labels)),
                    show_heading=not multi,
                )
                pictures = gr.Gallery(
                    label="What the frozen backbone sees: the input, input + prompt, the learned prompt",
                    columns=4,
                    rows=1,
                    height=240,
                    object_fit="contain",
                    format="png",
                    interactive=False,
                )
        # Registered before gr.Examples: its run-on-click event would otherwise take the name "predict".
        outputs = [probabilities, pictures, answer]
        run.click(serve_predict, inputs=[file_input, threshold], outputs=outputs, api_name="predict")
        # A new or removed upload clears the previous answer, so it is never read as the new file's.
        for event in (file_input.upload, file_input.clear):
            event(_blank_answer, outputs=outputs, queue=False, api_visibility="private")
        gr.Examples(
            examples=[[str(path)] for path in examples],
            inputs=[file_input, threshold],
            outputs=outputs,
            fn=serve_predict,  # the same function object: one concurrency group with the button
            run_on_click=True,
            cache_examples=False,
            example_labels=[example_label(path) for path in examples],
            label="Examples (synthetic images with known classes, in distribution and shifted)",
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
