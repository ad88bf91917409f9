"""Gradio Space: DIAMANT lesion / polyp segmentation on one 2-D image, with the DINO attention maps it reads.

Research use only, not for diagnosis.

    HFMED_MODEL=runs/diamant-demo/model python spaces/diamant/app.py

The model comes from, in order: the env variable `HFMED_MODEL` (a Hub id or a local folder); the file
`model_id.txt` beside this file (`upload.py --space` writes it when publishing); the local demo run
`runs/diamant-demo/model` of the hfmed repository. It loads with `trust_remote_code=True`, so this file imports
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
import torch.nn.functional as F
from PIL import Image

APP_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = APP_DIR / "examples"
MODEL_ID_FILE = APP_DIR / "model_id.txt"
_PARENTS = Path(__file__).resolve().parents
# The repository's demo run; None where app.py does not sit in <repo>/spaces/diamant (e.g. on the Hub).
DEFAULT_MODEL_DIR = _PARENTS[2] / "runs/diamant-demo/model" if len(_PARENTS) > 2 else None

MAX_UPLOAD_MB = 20
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024  # gradio's "20mb" is 20 * 1024 * 1024 bytes too
DEFAULT_THRESHOLD = 0.5
# The overlay is drawn at most this large (longest side, pixels); the mask file keeps the image's own size.
MAX_OVERLAY_SIDE = 1024
# Each attention map is shown this large (longest side), in the image's aspect ratio, whatever the image's size:
# the heads of every answer look alike. Our choice.
HEAD_SIDE = 256
# Rows of the class-probability maps are computed this many at a time, so a 4096 x 4096 image never holds
# more than one block of per-class probabilities at once. Our choice.
ROWS_PER_BLOCK = 256
# Gradio's own cache sweep (frequency, age) in seconds: uploads never sent to `predict`, example copies and
# result images are removed after 10 minutes, and everything when the server stops.
DELETE_CACHE = (600, 600)
# One prediction at a time (torch already spreads one over every core, and the memory peak stays one request's);
# up to QUEUE_MAX_SIZE more requests wait in gradio's queue, and a request beyond that is answered at once with
# gradio's "Queue is full ... try again" (HTTP 503) instead of waiting without bound. Our choice.
CONCURRENCY_LIMIT = 1
QUEUE_MAX_SIZE = 64
EXAMPLE_SUFFIXES = {".dcm", ".png", ".jpg", ".jpeg"}
# What the upload box offers; "file" lets any name through (DICOMs named by UID), predict checks the content.
UPLOAD_SUFFIXES = [*sorted(EXAMPLE_SUFFIXES), ".bmp", ".tif", ".tiff", "file"]
CLEARED_TEXT = "Upload an image and press Segment, or pick an example."
# Fill colours of the classes 1, 2, ... (background is never painted): green, blue, yellow, magenta, orange.
CLASS_COLOURS = [(0, 230, 118), (41, 121, 255), (255, 214, 0), (213, 0, 249), (255, 109, 0)]
OVERLAY_ALPHA = 0.4
# matplotlib's viridis at 9 evenly spaced points (DINO's visualize_attention.py saves its maps with
# plt.imsave, whose default colour map is viridis); in between, linear interpolation.
VIRIDIS = np.array(
    [
        (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
        (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37),
    ],
    dtype=np.float32,
)

NOTICE = """\
# DIAMANT: lesion segmentation from the image and DINO's attention maps

**Research use only — not for diagnosis.** This demo is not a medical device; its outputs must not be used
to make or support any clinical decision.

Upload one 2-D image — an endoscopy frame, a dermoscopy image, an ultrasound scan, ... — as a PNG, JPEG, TIFF or
BMP file (grey or RGB), or a DICOM file (`.dcm`, or a DICOM file without extension). The model segments it and
shows the mask over the image, and the attention map of each head of its frozen ViT (DINO's, for the published
models; the last block's CLS attention over the image patches: the maps DIAMANT's second encoder reads).
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
        "no model to serve: run `hfmed train configs/diamant-demo.yaml` in the hfmed repository (it writes "
        "runs/diamant-demo/model), or set HFMED_MODEL to a Hub id or a local model folder, "
        "e.g. `HFMED_MODEL=hfmed/diamant-demo python app.py` (or write the id into model_id.txt beside app.py)"
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


# Copied from spaces._shared.space_helpers._load with AutoModelForImageClassification->AutoModelForSemanticSegmentation
@functools.cache
def _load(source: str):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    try:
        model = AutoModelForSemanticSegmentation.from_pretrained(source, trust_remote_code=True).eval()
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


# --- files -----------------------------------------------------------------------------------------------


# Copied from spaces._shared.space_helpers.upload_dir
def upload_dir() -> Path:
    """Where gradio stores uploads (and its cache): `GRADIO_TEMP_DIR`, else `<tmp>/gradio`."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def example_files() -> list[Path]:
    """The bundled synthetic examples: PNG and JPEG first, then DICOM."""
    if not EXAMPLES_DIR.is_dir():
        return []
    files = [p for p in EXAMPLES_DIR.iterdir() if p.is_file() and p.suffix.lower() in EXAMPLE_SUFFIXES]
    return sorted(files, key=lambda p: (p.suffix.lower() == ".dcm", p.name))


def example_label(path: Path) -> str:
    """`synthetic_two_polyps.png` -> `synthetic PNG: two polyps`."""
    kind = "DICOM" if path.suffix.lower() == ".dcm" else path.suffix.lstrip(".").upper()
    if path.stem.startswith("synthetic_"):
        return f"synthetic {kind}: {path.stem[len('synthetic_'):].replace('_', ' ')}"
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


def segment(logits: torch.Tensor, size: tuple[int, int], threshold: float) -> np.ndarray:
    """The uint8 class map of one image at `size` (height, width) from the model's `(num_labels, h, w)` logits.

    The logits are resized bilinearly to `size` (as `post_process_semantic_segmentation` does) and softmaxed
    per pixel. A pixel gets a class other than background (0) when the probability that it is not background,
    `1 - P(0)`, is at or above `threshold`; it then gets the most probable of the other classes. For a
    two-class model at 0.5 this is the argmax (`post_process_semantic_segmentation`), up to exact ties.
    """
    height, width = size
    logits = logits.float()
    if logits.shape[0] > 256:
        raise ValueError(f"the model has {logits.shape[0]} classes; this Space draws masks of at most 256")
    if height <= ROWS_PER_BLOCK:
        return _classes(F.interpolate(logits[None], size=(height, width), mode="bilinear")[0], threshold)
    # Large images, a block of rows at a time. Bilinear resizing is separable and PyTorch computes it as
    # h0 * (w0 * x00 + w1 * x01) + h1 * (w0 * x10 + w1 * x11): the width first (the source rows at the
    # output width, small), then each output row from its two source rows with PyTorch's source index
    # (y + 0.5) * scale - 0.5, clamped at 0 (align_corners=False).
    source_height = logits.shape[1]
    wide = F.interpolate(logits[None], size=(source_height, width), mode="bilinear")[0]
    scale = source_height / height
    mask = np.empty((height, width), dtype=np.uint8)
    for top in range(0, height, ROWS_PER_BLOCK):
        rows = torch.arange(top, min(top + ROWS_PER_BLOCK, height), dtype=torch.float32)
        source = ((rows + 0.5) * scale - 0.5).clamp(min=0.0)
        low = source.floor().long().clamp(max=source_height - 1)
        high = (low + 1).clamp(max=source_height - 1)
        weight = (source - low.float())[None, :, None]
        block = (1.0 - weight) * wide[:, low] + weight * wide[:, high]
        mask[top : top + len(rows)] = _classes(block, threshold)
    return mask


def _classes(logits: torch.Tensor, threshold: float) -> np.ndarray:
    probabilities = torch.softmax(logits, dim=0)
    foreground = (1.0 - probabilities[0]) >= threshold
    classes = probabilities[1:].argmax(dim=0) + 1
    return torch.where(foreground, classes, 0).to(torch.uint8).numpy()


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """A decoded `(3, H, W)` float image in [0, 1] -> `(H, W, 3)` uint8. Works in place on `image` (a 12-MP
    photo is 144 MB as float32: no second and third copy)."""
    np.clip(image, 0.0, 1.0, out=image)
    image *= 255.0
    np.rint(image, out=image)
    return np.ascontiguousarray(np.moveaxis(image.astype(np.uint8), 0, -1))


def _display_shape(height: int, width: int, longest: int, grow: bool = False) -> tuple[int, int]:
    """`(height, width)` scaled so the longest side is at most `longest` (exactly `longest` with `grow`)."""
    scale = longest / max(height, width)
    scale = scale if grow else min(1.0, scale)
    return max(1, round(height * scale)), max(1, round(width * scale))


def class_colour(index: int) -> tuple[int, int, int]:
    return CLASS_COLOURS[(index - 1) % len(CLASS_COLOURS)]


def overlay_image(rgb: np.ndarray, mask: np.ndarray) -> Image.Image:
    """The mask over the image: each class filled in its colour (alpha `OVERLAY_ALPHA`) and outlined opaque.

    Drawn at most `MAX_OVERLAY_SIDE` on the longest side (image shrunk with LANCZOS, mask with nearest).
    """
    height, width = mask.shape
    shown = _display_shape(height, width, MAX_OVERLAY_SIDE)
    if shown != (height, width):
        rgb = np.asarray(Image.fromarray(rgb).resize(shown[::-1], Image.Resampling.LANCZOS))
        mask = np.asarray(Image.fromarray(mask).resize(shown[::-1], Image.Resampling.NEAREST))
    canvas = rgb.astype(np.float32)
    padded = np.pad(mask, 1, mode="edge")
    edge = (
        (padded[1:-1, 1:-1] != padded[:-2, 1:-1])
        | (padded[1:-1, 1:-1] != padded[2:, 1:-1])
        | (padded[1:-1, 1:-1] != padded[1:-1, :-2])
        | (padded[1:-1, 1:-1] != padded[1:-1, 2:])
    )
    for index in np.unique(mask):
        if index == 0:
            continue
        colour = np.array(class_colour(int(index)), dtype=np.float32)
        inside = mask == index
        canvas[inside] = (1.0 - OVERLAY_ALPHA) * canvas[inside] + OVERLAY_ALPHA * colour
        canvas[inside & edge] = colour
    return Image.fromarray(np.rint(canvas).astype(np.uint8))


def viridis(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB through `VIRIDIS` (linear between its points)."""
    position = np.clip(values, 0.0, 1.0) * (len(VIRIDIS) - 1)
    low = np.floor(position).astype(np.int64).clip(0, len(VIRIDIS) - 2)
    fraction = (position - low)[..., None]
    colours = (1.0 - fraction) * VIRIDIS[low] + fraction * VIRIDIS[low + 1]
    return np.rint(colours).astype(np.uint8)


def head_images(maps: torch.Tensor, height: int, width: int) -> list[tuple[Image.Image, str]]:
    """One picture per head of `(heads, h, w)` maps in [0, 1] (min-max per head, from the model), as DINO's
    figures show them: viridis, the patch grid kept (nearest), in the image's aspect ratio, `HEAD_SIDE` on the
    longest side."""
    shown = _display_shape(height, width, HEAD_SIDE, grow=True)
    pictures = []
    for index, head in enumerate(maps.float().numpy(), start=1):
        picture = Image.fromarray(viridis(head)).resize(shown[::-1], Image.Resampling.NEAREST)
        pictures.append((picture, f"head {index}"))
    return pictures


def _percent(share: float) -> str:
    """0.123 -> `12.3 %`; shares under 0.1 % keep two significant digits (`0.057 %`), never `0.0 %`."""
    value = 100.0 * share
    return f"{value:.1f} %" if value >= 0.1 or value == 0 else f"{value:.2g} %"


def summary_markdown(mask: np.ndarray, names: list[str], threshold: float) -> str:
    """The Markdown answer: the share of the image each non-background class covers."""
    total = mask.size
    counts = np.bincount(mask.ravel(), minlength=len(names))
    rows = [
        f"- {names[index]}: {_percent(counts[index] / total)} of the image ({counts[index]} pixels)"
        for index in range(1, len(names))
        if counts[index]
    ]
    rule = f"pixels whose probability of not being {names[0]} is at or above {threshold:.2f}"
    if not rows:
        return f"**Nothing segmented** (no {rule})."
    return f"**Segmented** ({rule}):\n\n" + "\n".join(rows)


def predict(file_path: str | os.PathLike | None, threshold: float | None = None):
    """Segments one 2-D image.

    Args:
        file_path: a PNG, JPEG, TIFF or BMP image (grey or RGB), or a DICOM file.
        threshold: a pixel is segmented (given a class other than background) when the probability that it is
            not background is at or above this value; None (or empty) uses 0.5, the argmax for two classes.

    Returns:
        `(overlay, heads, mask, summary)`: the mask drawn over the image; the attention map of each DINO head as
        `(image, "head 1")` pairs (empty for a model without an attention encoder); the mask at the image's own
        size as a grey image of class indices (0 background, 1, 2, ...); the segmented share of the image per
        class as Markdown.
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
def serve_predict(file_path: str | os.PathLike | None, threshold: float | None = None):
    overlay, heads, mask, summary = predict(file_path, threshold)
    # One folder for the answer's pictures: the overlay, the mask file, then the heads.
    published = publish_images([(overlay, "mask overlay"), (mask, "mask"), *heads])
    return published[0][0], published[2:], published[1][0], summary


def _predict(path: Path, threshold: float | None):
    if not path.is_file():
        raise _error(
            f"{path.name} is no longer on the server (uploads are deleted after each answer): upload it again",
            path,
        )
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise _error(
            f"{path.name} is {size / 2**20:.1f} MB, over the {MAX_UPLOAD_MB} MB limit: upload one 2-D image "
            "(a PNG or JPEG frame is usually well under 5 MB)",
            path,
        )
    if threshold is None or (isinstance(threshold, str) and not threshold.strip()):
        threshold = DEFAULT_THRESHOLD
    threshold = _check_threshold(threshold, path)
    try:
        model, processor = load_model()
    except ModelNotFoundError as err:
        raise gr.Error(html.escape(_one_line(err), quote=False)) from err
    names = label_names(model.config)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image = processor.decode([str(path)])[0]
            height, width = image.shape[-2:]
            rgb = _as_rgb(image)  # what the overlay is drawn on
            del image
            inputs = processor(str(path), return_tensors="pt")
        except Exception as err:  # not an image, not DICOM, no pixels, NaN, too large, ...
            raise _error(str(err), path) from err
    notes = list(dict.fromkeys(_one_line(w.message) for w in caught if issubclass(w.category, UserWarning)))

    wants_maps = bool(getattr(model.config, "use_attention_encoder", True))
    try:
        with torch.inference_mode():
            outputs = model(pixel_values=inputs["pixel_values"].to(model.dtype), output_attention_maps=wants_maps)
    except Exception as err:
        raise _error(f"the model failed on {path.name}: {err}", path) from err
    mask = segment(outputs.logits[0], (height, width), threshold)
    overlay = overlay_image(rgb, mask)
    maps = getattr(outputs, "attention_maps", None)
    heads = head_images(maps[0], height, width) if maps is not None else []

    text = summary_markdown(mask, names, threshold)
    if maps is None:
        text += "\n\nThis model has no attention encoder (use_attention_encoder=False): no DINO maps to show."
    for note in notes:
        text += f"\n\nNote: {html.escape(note.replace(str(path), path.name), quote=False)}"
    text += "\n\n_Research use only, not for diagnosis._"
    return overlay, heads, Image.fromarray(mask), text


# --- UI --------------------------------------------------------------------------------------------------


def _model_markdown(source: str, config) -> str:
    shown = Path(source).name if Path(source).exists() else source  # never show server paths
    side = getattr(config, "image_size", None)
    lines = [f"Model: `{shown}` (classes: {', '.join(label_names(config))}; the image is resized to {side}x{side})."]
    if getattr(config, "use_attention_encoder", True):
        dino = getattr(config, "pretrained_dino", None)
        origin = f"initialised from `{dino}`" if dino else "not initialised from DINO weights (see the model card)"
        lines.append(
            f"Frozen ViT: {config.num_attention_heads} heads, patch {config.patch_size}, {origin}. Attention maps "
            "show where the ViT looked, not a localisation of disease."
        )
    return "\n\n".join(lines)


def _cleared():
    return None, [], None, CLEARED_TEXT


def build_demo() -> gr.Blocks:
    source = resolve_model_source()
    config = _load_config(source)
    heads = int(getattr(config, "num_attention_heads", 0) or 0) if getattr(config, "use_attention_encoder", True) else 0
    examples = example_files()

    with gr.Blocks(
        title="DIAMANT: lesion segmentation (research use only)",
        analytics_enabled=False,
        delete_cache=DELETE_CACHE,
    ) as demo:
        gr.Markdown(NOTICE)
        with gr.Row():
            with gr.Column(scale=1):
                file_input = gr.File(
                    label="Image: PNG, JPEG, TIFF, BMP or DICOM (.dcm or no extension)",
                    file_count="single",
                    file_types=UPLOAD_SUFFIXES,
                    type="filepath",
                )
                threshold = gr.Slider(
                    minimum=0.0,
                    maximum=1.0,
                    value=DEFAULT_THRESHOLD,
                    step=0.01,
                    label="Threshold (probability a pixel is not background)",
                    info="A pixel is segmented when that probability is at or above this value",
                )
                run = gr.Button("Segment", variant="primary")
                gr.Markdown(_model_markdown(source, config))
            with gr.Column(scale=2):
                overlay = gr.Image(
                    label="Mask over the image", type="filepath", format="png", interactive=False, height=320
                )
                summary = gr.Markdown(label="Segmentation", value=CLEARED_TEXT)
                attention = gr.Gallery(
                    label=(
                        f"Attention maps of the frozen ViT, one per head ({heads} heads; last block, CLS over the "
                        "patches)"
                    ),
                    columns=6,  # the paper's figure: a ViT-S's six heads side by side (12 heads: two rows)
                    height=200 if heads <= 6 else 400,
                    object_fit="contain",
                    format="png",
                    interactive=False,
                )
                mask = gr.File(label="Mask (PNG, class index per pixel: 0 background)", interactive=False, height=80)
        # Registered before gr.Examples: its run-on-click event would otherwise take the name "predict".
        outputs = [overlay, attention, mask, summary]
        run.click(serve_predict, inputs=[file_input, threshold], outputs=outputs, api_name="predict")
        # A new or removed upload clears the previous answer, so it is never read as the new file's.
        for event in (file_input.upload, file_input.clear):
            event(_cleared, outputs=outputs, queue=False, api_visibility="private")
        gr.Examples(
            examples=[[str(path)] for path in examples],
            inputs=[file_input, threshold],
            outputs=outputs,
            fn=serve_predict,  # the same function object: one concurrency group with the button
            run_on_click=True,
            cache_examples=False,
            example_labels=[example_label(path) for path in examples],
            label="Examples (synthetic colonoscopy frames, drawn like the demo model's training data)",
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
