"""The one source of the helpers the Gradio Spaces share (model loading, upload leases and deletion, answer
images, formatting).

A Space is uploaded alone and must run without hfmed and without this file, so each `spaces/<family>/app.py`
carries a checked copy of every helper it uses, marked `# Copied from spaces._shared.space_helpers.<name>`.
`tests/test_copies.py` (through `tests/check_copies.py`) fails when a copy differs from its source here; after
changing a helper here, `python -m tests.check_copies --fix` rewrites the copies in every Space.
`resolve_model_source` and `example_files` differ per Space: each app.py defines its own.
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
from pathlib import Path

import anyio
import gradio as gr
from PIL import Image


def resolve_model_source() -> str:
    """The served model's folder or Hub id: each Space's app.py defines it."""
    raise NotImplementedError("each Space's app.py defines resolve_model_source()")


def example_files() -> list[Path]:
    """The Space's bundled example inputs: each Space's app.py defines it."""
    raise NotImplementedError("each Space's app.py defines example_files()")


class ModelNotFoundError(RuntimeError):
    """No model to serve; the message says how to point the app at one."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


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


def load_config():
    """The served model's config (cheap: no weights), cached per source."""
    return _load_config(resolve_model_source())


def load_model():
    """`(model, processor)` of the served model, loaded on first use and cached per source."""
    return _load(resolve_model_source())


def label_names(config) -> list[str]:
    return [config.id2label[i] for i in range(config.num_labels)]


def label_thresholds(config) -> dict[str, float] | None:
    """Per-label thresholds chosen on validation (`config.label_thresholds`), or None."""
    thresholds = getattr(config, "label_thresholds", None)
    if not thresholds or len(thresholds) != config.num_labels:
        return None
    return {name: float(t) for name, t in zip(label_names(config), thresholds, strict=True)}


def upload_dir() -> Path:
    """Where gradio stores uploads (and its cache): `GRADIO_TEMP_DIR`, else `<tmp>/gradio`."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def _example_fingerprints() -> frozenset[tuple[int, str]]:
    return frozenset((p.stat().st_size, _sha256(p)) for p in example_files())


def _is_example_copy(path: Path) -> bool:
    # Gradio serves a clicked example from a copy in its cache (the upload dir); deleting that copy would
    # break the next click on the same example, so copies of bundled examples are kept.
    try:
        size = path.stat().st_size
        fingerprints = _example_fingerprints()
        return any(size == known for known, _ in fingerprints) and (size, _sha256(path)) in fingerprints
    except OSError:
        return False


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


UPLOADS = UploadLeases()


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


def _format_pair(value: float, threshold: float) -> tuple[str, str]:
    """Formats both with the fewest decimals (>= 2) that keep them apart, so the shown sign agrees."""
    for digits in range(2, 10):
        a, b = f"{value:.{digits}f}", f"{threshold:.{digits}f}"
        if a != b:
            return a, b
    return repr(value), repr(threshold)


def _error(message: str, path: Path) -> gr.Error:
    # One line, the server path replaced by the file name, and no HTML (gr.Error renders HTML).
    text = _one_line(message).replace(str(path), path.name)
    return gr.Error(html.escape(text, quote=False), print_exception=False)


def _check_threshold(threshold, path: Path) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError) as err:
        raise _error(f"threshold must be a number in [0, 1], got {threshold!r}", path) from err
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise _error(f"threshold must be a number in [0, 1], got {threshold!r}", path)
    return value
