"""Gradio Space: LT-ViT multi-label chest X-ray classification, with per-label attention maps.

Research use only, not for diagnosis.

    HFMED_MODEL=runs/lt-vit-demo/model python spaces/lt_vit/app.py

The model comes from, in order: the env variable `HFMED_MODEL` (a Hub id or a local folder); the file
`model_id.txt` beside this file (`upload.py --space` writes it when publishing); the local demo run
`runs/lt-vit-demo/model` of the hfmed repository. It loads with `trust_remote_code=True`, so this file imports
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
import torch
from PIL import Image

APP_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = APP_DIR / "examples"
MODEL_ID_FILE = APP_DIR / "model_id.txt"
_PARENTS = Path(__file__).resolve().parents
# The repository's demo run; None where app.py does not sit in <repo>/spaces/lt_vit (e.g. on the Hub).
DEFAULT_MODEL_DIR = _PARENTS[2] / "runs/lt-vit-demo/model" if len(_PARENTS) > 2 else None

MAX_UPLOAD_MB = 20
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024  # gradio's "20mb" is 20 * 1024 * 1024 bytes too
DEFAULT_THRESHOLD = 0.5
# Overlays larger than this (longest side, pixels) are shrunk for display: a 3000 px radiograph times 14
# labels would otherwise send tens of MB of PNGs. Smaller images are shown at their own size.
MAX_OVERLAY_SIDE = 1024
# Gradio's own cache sweep (frequency, age) in seconds: uploads never sent to `predict`, example copies and
# result images are removed after 10 minutes, and everything when the server stops.
DELETE_CACHE = (600, 600)
# One prediction at a time (torch already spreads one over every core, and the memory peak stays one request's);
# up to QUEUE_MAX_SIZE more requests wait in gradio's queue, and a request beyond that is answered at once with
# gradio's "Queue is full ... try again" (HTTP 503) instead of waiting without bound. Our choice.
CONCURRENCY_LIMIT = 1
QUEUE_MAX_SIZE = 64
EXAMPLE_SUFFIXES = {".dcm", ".png", ".jpg", ".jpeg"}
CLEARED_TEXT = "Upload a chest X-ray and press Classify, or pick an example."

NOTICE = """\
# LT-ViT: multi-label chest X-ray findings, with label-token attention

**Research use only — not for diagnosis.** This demo is not a medical device; its outputs must not be used
to make or support any clinical decision.

Upload one frontal chest radiograph: a PNG or JPEG (8- or 16-bit grey, or RGB), or a DICOM file (`.dcm`, or a
DICOM file without extension; Modality CR, DX or DR). The model gives an independent probability for each
finding, and each finding's label token shows where in the image it looked (its attention over the image
patches). Uploaded files are deleted from the server once the answer is sent.
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
        "no model to serve: run `hfmed train configs/lt-vit-demo.yaml` in the hfmed repository (it writes "
        "runs/lt-vit-demo/model), or set HFMED_MODEL to a Hub id or a local model folder, "
        "e.g. `HFMED_MODEL=hfmed/lt-vit-demo python app.py` (or write the id into model_id.txt beside app.py)"
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
    """The bundled synthetic examples: PNGs first, then DICOM."""
    if not EXAMPLES_DIR.is_dir():
        return []
    files = [p for p in EXAMPLES_DIR.iterdir() if p.is_file() and p.suffix.lower() in EXAMPLE_SUFFIXES]
    return sorted(files, key=lambda p: (p.suffix.lower() == ".dcm", p.name))


def example_label(path: Path) -> str:
    """`synthetic_effusion_consolidation.png` -> `synthetic PNG: effusion + consolidation`."""
    stem, kind = path.stem, "DICOM" if path.suffix.lower() == ".dcm" else path.suffix.lstrip(".").upper()
    if stem == "synthetic_no_finding":
        return f"synthetic {kind}: no finding"
    if stem.startswith("synthetic_"):
        return f"synthetic {kind}: {stem[len('synthetic_'):].replace('_', ' + ')}"
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


def _format_threshold(value: float) -> str:
    """0.5 -> `0.50`, 0.555 -> `0.555`: two decimals unless that would round the threshold."""
    return f"{value:.2f}" if round(value, 2) == value else f"{value:.6g}"


def findings(probabilities: dict[str, float], thresholds: dict[str, float]) -> list[str]:
    """The labels whose probability is at or above their threshold, most probable first."""
    above = [name for name, p in probabilities.items() if p >= thresholds[name]]
    return sorted(above, key=lambda name: -probabilities[name])


def findings_markdown(probabilities: dict[str, float], thresholds: dict[str, float], per_label: bool) -> str:
    """The Markdown answer: the labels at or above their threshold, with the numbers compared."""
    above = findings(probabilities, thresholds)
    kind = "their validation thresholds" if per_label else "the threshold"
    if not above:
        if per_label:
            return f"**No finding at or above {kind}.**"
        return f"**No finding at or above {kind} ({_format_threshold(next(iter(thresholds.values())))}).**"
    rows = [
        "- {} ({} >= {})".format(name, *_format_pair(probabilities[name], thresholds[name])) for name in above
    ]
    return f"**Findings at or above {kind}:**\n\n" + "\n".join(rows)


# Copied from spaces._shared.space_helpers._error
def _error(message: str, path: Path) -> gr.Error:
    # One line, the server path replaced by the file name, and no HTML (gr.Error renders HTML).
    text = _one_line(message).replace(str(path), path.name)
    return gr.Error(html.escape(text, quote=False), print_exception=False)


def _display_size(image: Image.Image) -> Image.Image:
    if max(image.size) <= MAX_OVERLAY_SIDE:
        return image
    shown = image.copy()
    shown.thumbnail((MAX_OVERLAY_SIDE, MAX_OVERLAY_SIDE), Image.Resampling.LANCZOS)
    return shown


# Copied from spaces._shared.space_helpers._check_threshold
def _check_threshold(threshold, path: Path) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError) as err:
        raise _error(f"threshold must be a number in [0, 1], got {threshold!r}", path) from err
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise _error(f"threshold must be a number in [0, 1], got {threshold!r}", path)
    return value


def predict(file_path: str | os.PathLike | None, threshold: float | str | None = None):
    """Classifies one chest X-ray.

    Args:
        file_path: a PNG or JPEG (8/16-bit grey or RGB), or a DICOM file (Modality CR, DX or DR).
        threshold: one probability threshold for every label (a number, or its text: "0.3"); None or empty text
            uses the model's per-label validation thresholds (`config.label_thresholds`) when it has them, else 0.5.

    Returns:
        `(probabilities, overlays, findings)`: the probability of every label, the per-label attention overlays
        as `(image, "label: p=0.83")` pairs (most probable first), and the labels at or above their threshold as
        Markdown.
    """
    if file_path is None or not str(file_path).strip():
        raise gr.Error(
            "No file: upload one chest X-ray (PNG, JPEG or DICOM) or pick an example", print_exception=False
        )
    path = Path(os.fspath(file_path))
    UPLOADS.acquire(path)
    try:
        return _predict(path, threshold)
    finally:
        _on_event_loop(UPLOADS.release, path)


@functools.wraps(predict)
def serve_predict(file_path: str | os.PathLike | None, threshold: float | str | None = None):
    probabilities, gallery, text = predict(file_path, threshold)
    return probabilities, publish_images(gallery), text


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
            f"{path.name} is {size / 2**20:.1f} MB, over the {MAX_UPLOAD_MB} MB limit: upload one chest X-ray "
            "(a PNG or a single-frame DICOM is usually a few MB)",
            path,
        )
    try:
        model, processor = load_model()
    except ModelNotFoundError as err:
        raise gr.Error(html.escape(_one_line(err), quote=False)) from err
    config = model.config
    names = label_names(config)
    validation = label_thresholds(config)
    if threshold is None or (isinstance(threshold, str) and not threshold.strip()):
        per_label = validation is not None
        thresholds = validation or dict.fromkeys(names, DEFAULT_THRESHOLD)
    else:
        per_label = False
        thresholds = dict.fromkeys(names, _check_threshold(threshold, path))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            inputs = processor(str(path), return_tensors="pt")
        except Exception as err:  # not an image, not DICOM, no pixels, wrong modality, NaN, too large, ...
            raise _error(str(err), path) from err
    notes = list(dict.fromkeys(_one_line(w.message) for w in caught if issubclass(w.category, UserWarning)))

    try:
        with torch.inference_mode():
            outputs = model(pixel_values=inputs["pixel_values"].to(model.dtype), output_label_attentions=True)
    except Exception as err:
        raise _error(f"the model failed on {path.name}: {err}", path) from err
    probabilities = torch.sigmoid(outputs.logits[0].float()).tolist()
    labels = {name: float(p) for name, p in zip(names, probabilities, strict=True)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # already reported above, by the processor's first read
            overlays = processor.label_attention_overlays([str(path)], outputs.label_attentions.float())[0]
    except Exception as err:
        raise _error(f"could not draw the attention maps of {path.name}: {err}", path) from err
    gallery = [
        (_display_size(image), f"{name}: p={labels[name]:.2f}")
        for name, image in sorted(zip(names, overlays, strict=True), key=lambda item: -labels[item[0]])
    ]

    text = findings_markdown(labels, thresholds, per_label)
    for note in notes:
        text += f"\n\nNote: {html.escape(note.replace(str(path), path.name), quote=False)}"
    text += "\n\n_Research use only, not for diagnosis._"
    return labels, gallery, text


# --- UI --------------------------------------------------------------------------------------------------


def _model_markdown(source: str, config) -> str:
    shown = Path(source).name if Path(source).exists() else source  # never show server paths
    lines = [f"Model: `{shown}` ({config.num_labels} labels: {', '.join(label_names(config))})."]
    thresholds = label_thresholds(config)
    if thresholds:
        rows = " | ".join(f"{name} {t:.2f}" for name, t in thresholds.items())
        lines.append(
            f"Validation thresholds (per label, chosen on the validation split): {rows}. They are used while "
            "the threshold box is empty."
        )
    else:
        lines.append("The model has no validation thresholds: one threshold (the slider) serves every label.")
    return "\n\n".join(lines)


def _cleared():
    return {}, [], CLEARED_TEXT


def _threshold_input(config):
    if label_thresholds(config):
        # Empty means: each label against its own validation threshold; a number overrides them all. A text box,
        # not gr.Number: Gradio's number box shows and sends 0 for an empty (None) value.
        return gr.Textbox(
            value="",
            placeholder="empty: each label's validation threshold; or a number in [0, 1]",
            max_lines=1,
            label="Threshold for every label (empty: the per-label validation thresholds)",
            info="A finding is listed when its probability is at or above its threshold",
        )
    return gr.Slider(
        minimum=0.0,
        maximum=1.0,
        value=DEFAULT_THRESHOLD,
        step=0.01,
        label="Threshold (probability, every label)",
        info="A finding is listed when its probability is at or above this value",
    )


def build_demo() -> gr.Blocks:
    source = resolve_model_source()
    config = _load_config(source)
    labels = label_names(config)
    examples = example_files()

    with gr.Blocks(
        title="LT-ViT: chest X-ray findings (research use only)",
        analytics_enabled=False,
        delete_cache=DELETE_CACHE,
    ) as demo:
        gr.Markdown(NOTICE)
        with gr.Row():
            with gr.Column(scale=1):
                file_input = gr.File(
                    label="Chest X-ray: PNG, JPEG or DICOM (.dcm or no extension)",
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
                found = gr.Markdown(label="Findings", value=CLEARED_TEXT)
                # No heading: the labels are independent (multi-label), there is no single "top class".
                probabilities = gr.Label(
                    label="Per-label probabilities", num_top_classes=len(labels), show_heading=False
                )
                overlays = gr.Gallery(
                    label="Label-token attention (where each finding's token looked)",
                    columns=min(len(labels), 5),
                    height="auto",
                    object_fit="contain",
                    format="png",
                    interactive=False,
                )
        # Registered before gr.Examples: its run-on-click event would otherwise take the name "predict".
        outputs = [probabilities, overlays, found]
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
            label="Examples (synthetic chest X-rays with known findings)",
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
