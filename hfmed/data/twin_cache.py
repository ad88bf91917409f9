"""A synthetic twin written once per set of generation parameters, and found again by them.

Shared by the synthetic CT and CXR twins: a marker file (written last, so an interrupted write is redone)
records the parameters; a twin written with other parameters is replaced; a folder holding anything the
twin did not write is refused rather than touched; a new folder is written beside its target and renamed,
so concurrent callers (e.g. DDP ranks) never read a half-written twin.
"""

import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path


def read_marker(root: Path, marker: str) -> dict | None:
    try:
        return json.loads((root / marker).read_text())
    except (OSError, ValueError):
        return None


def _clear(root: Path, known_entries: Iterable[str]) -> None:
    for name in known_entries:
        entry = root / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def ensure_twin(
    root,
    params: dict,
    write: Callable[[Path], object],
    *,
    kind: str,
    cache_root: Path,
    marker: str,
    known_entries: Iterable[str],
) -> Path:
    """The folder holding the twin for `params`, calling `write(folder)` first when needed.

    `root=None` uses `cache_root / <hash of params>`. `kind` names the twin in messages.
    """
    known = set(known_entries) | {marker}
    if root is None:
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
        root = cache_root / digest
    root = Path(root).expanduser().absolute()
    if read_marker(root, marker) == params:
        return root
    if root.exists():
        if not root.is_dir():
            raise ValueError(f"{kind} root {str(root)!r} is a file: pass a folder (or root=None)")
        foreign = sorted(entry.name for entry in root.iterdir() if entry.name not in known)
        if foreign:
            raise ValueError(
                f"{kind} root {str(root)!r} already holds files the twin did not write "
                f"({foreign[:5]}): pass an empty or new folder (or root=None for the cache)"
            )
        if (root / marker).exists():
            warnings.warn(
                f"replacing the {kind} twin in {str(root)!r}: it was written with other parameters "
                f"({read_marker(root, marker)}) than now ({params})",
                UserWarning,
                stacklevel=4,
            )
        _clear(root, known)
        write(root)
        (root / marker).write_text(json.dumps(params, sort_keys=True))
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write(staging)
        (staging / marker).write_text(json.dumps(params, sort_keys=True))
        try:
            staging.rename(root)
        except OSError:
            if read_marker(root, marker) != params:  # not a concurrent writer of the same twin: a real error
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


__all__ = ["ensure_twin", "read_marker"]
