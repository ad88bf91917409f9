"""Checkpoint / resume of a training run, and run-folder writes that a kill cannot tear: checkpoints, the
exported model, and single files.

    <output_dir>/checkpoints/step_000050/   `Accelerator.save_state` (model, optimizer, scheduler, RNG) plus
                                             `trainer_state.json` (the loop's `TrainState`), for --resume
    <output_dir>/model/                      the best epoch's weights and image processor, a self-contained
                                             Hub folder (safetensors, the family's source files, auto_map)

The training loop calls `save_checkpoint`, `load_checkpoint` and `save_model`; they are built on the
primitives below.

A checkpoint is written under a temporary name and renamed into place once every file is in it, so a
process killed while writing (SIGKILL, OOM killer, preemption) leaves a folder that is never mistaken for a
checkpoint:

    checkpoints/step_000004/           complete: renamed into place after trainer_state.json was written
    checkpoints/step_000006.partial/   being written, or torn by a kill: never resumed from, removed later
    checkpoints/step_000002.deleting/  an old checkpoint being deleted (renamed first for the same reason)

`--resume latest` takes the newest complete checkpoint and, when a newer one was torn, says so in one
line. The exported model folder is swapped in the same way (`replace_folder` / `recover_folder`), and
single files (metrics.json, recipe.yaml, plots) go through `atomic_path`: written next to the target, then
`os.replace`d over it. Renames within one folder are atomic on POSIX file systems; nothing here calls
fsync, because a killed process loses nothing the kernel already holds (a power cut is another matter).

The writability and free-space checks (`check_output_dir`, `check_free_space`) run before training, so a
read-only or full disk stops the run with one line instead of a traceback after an epoch.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .hub import add_remote_code
from .recipe import RecipeError

STATE_FILE = "trainer_state.json"
PARTIAL_SUFFIX = ".partial"
OLD_SUFFIX = ".old"
DELETING_SUFFIX = ".deleting"
_CHECKPOINT = re.compile(r"^step_(\d+)$")
_CHECKPOINT_ANY = re.compile(r"^step_(\d+)(\..*)?$")


class CheckpointError(RecipeError):
    """A resume or output folder that cannot work; the message names the folder and the fix."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def _step_of(folder: Path) -> int:
    return int(_CHECKPOINT_ANY.match(folder.name).group(1))


def _candidates(output_dir: Path) -> list[Path]:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if _CHECKPOINT_ANY.match(p.name)), key=_step_of)


def is_complete(folder: Path) -> bool:
    """A checkpoint folder renamed into place with its trainer state (older hfmed wrote in place, so a
    `step_N` folder without trainer_state.json is one a kill tore)."""
    return bool(_CHECKPOINT.match(folder.name)) and (folder / STATE_FILE).is_file()


def list_checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints under `output_dir/checkpoints`, oldest first."""
    return [p for p in _candidates(output_dir) if is_complete(p)]


def torn_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoint folders a kill left behind (temporary names, or no trainer state), oldest first."""
    return [p for p in _candidates(output_dir) if not is_complete(p)]


def resolve_resume(resume, output_dir: Path, log: Callable[[str], None] = print) -> Path | None:
    """The checkpoint folder `--resume` names: None, "latest" (newest complete one) or a folder path.

    A torn checkpoint newer than the one chosen is skipped with one line through `log`.
    """
    if resume in (None, False, ""):
        return None
    output_dir = Path(output_dir)
    if resume == "latest":
        found, torn = list_checkpoints(output_dir), torn_checkpoints(output_dir)
        if not found:
            detail = f" ({torn[-1].name} was torn by an interrupted write)" if torn else ""
            raise CheckpointError(
                f"--resume latest: no complete checkpoint under {output_dir / 'checkpoints'}{detail}; "
                "start again without --resume"
            )
        newer = [p for p in torn if _step_of(p) >= _step_of(found[-1])]
        if newer:
            log(
                f"checkpoint {newer[-1].name} is incomplete (the run stopped while writing it): resuming from "
                f"{found[-1].name} instead"
            )
        return found[-1]
    path = Path(resume)
    if path.name.endswith(PARTIAL_SUFFIX) or not (path / STATE_FILE).is_file():
        raise CheckpointError(
            f"--resume {resume}: not a complete checkpoint folder (no {STATE_FILE}, or a temporary "
            "name left by an interrupted write): pass --resume latest or a complete step_* folder"
        )
    return path


def write_checkpoint(
    output_dir: Path,
    step: int,
    save_state: Callable[[str], None],
    write_state: Callable[[Path], None],
    *,
    is_main_process: bool = True,
    wait_for_everyone: Callable[[], None] = lambda: None,
    keep: int | None = None,
) -> Path:
    """Writes checkpoint `step` under a temporary name, renames it into place, then drops old ones.

    `save_state(folder)` runs on every process (e.g. `Accelerator.save_state`); `write_state(folder)` on
    the main process writes the trainer state, the file that marks a checkpoint complete. `keep` complete
    checkpoints are kept (None: all). Old and torn folders are first renamed to a temporary name and then
    deleted, so a kill during the deletion cannot leave a half-deleted folder under a checkpoint name.
    """
    root = Path(output_dir) / "checkpoints"
    final = root / checkpoint_name(step)
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    if is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for torn in torn_checkpoints(output_dir):
            _remove_folder(torn)
    wait_for_everyone()
    save_state(str(partial))
    wait_for_everyone()
    if is_main_process:
        write_state(partial)
        if final.exists():  # resumed from an older checkpoint: this step is written again
            _remove_folder(final)
        os.replace(partial, final)
        if keep:
            for old in list_checkpoints(output_dir)[:-keep]:
                _remove_folder(old)
    wait_for_everyone()
    return final


def save_checkpoint(accelerator, output_dir: Path, state: dict, total_limit: int | None) -> Path:
    """Save the accelerator state and the loop state as checkpoint `state["step"]` (renamed into place when
    complete), keeping the newest `total_limit` checkpoints (all when None). Every process calls it."""
    return write_checkpoint(
        output_dir,
        state["step"],
        accelerator.save_state,
        lambda folder: (Path(folder) / STATE_FILE).write_text(json.dumps(state)),
        is_main_process=accelerator.is_main_process,
        wait_for_everyone=accelerator.wait_for_everyone,
        keep=total_limit,
    )


def load_checkpoint(accelerator, folder: Path) -> dict:
    """Restore the accelerator state from `folder`; returns the loop state saved with it."""
    accelerator.load_state(str(folder))
    return json.loads((Path(folder) / STATE_FILE).read_text())


def save_model(accelerator, model, processor, folder: Path) -> None:
    """Export the (prepared) model and its processor as a Hub folder that loads with or without hfmed,
    written beside the old best model and swapped in whole: a kill mid-write never tears `folder`."""
    # get_state_dict gathers full weights under FSDP / DeepSpeed, so the export is a plain HF checkpoint.
    state_dict = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    staged = staging_folder(folder, clear=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    unwrapped.save_pretrained(
        staged, state_dict=state_dict, is_main_process=accelerator.is_main_process, save_function=accelerator.save
    )
    if accelerator.is_main_process:
        processor.save_pretrained(staged)
        # The exported folder loads anywhere, hfmed installed or not (trust_remote_code).
        add_remote_code(staged, unwrapped.config, processor)
        replace_folder(staged, folder)
    accelerator.wait_for_everyone()


def _remove_folder(folder: Path) -> None:
    # Renamed first, so that what a kill leaves of the deletion never carries a checkpoint's name.
    doomed = folder if folder.name.endswith(DELETING_SUFFIX) else folder.with_name(folder.name + DELETING_SUFFIX)
    if doomed != folder:
        if doomed.exists():
            shutil.rmtree(doomed, ignore_errors=True)
        os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path next to `path`; when the block ends without error it replaces `path`.

    Readers (and a run resumed after a kill) see the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def staging_folder(final: Path, clear: bool = True) -> Path:
    """Where a new version of folder `final` is written before `replace_folder` swaps it in; `clear`
    deletes what an earlier, interrupted write left there (main process only)."""
    staged = Path(final).with_name(Path(final).name + PARTIAL_SUFFIX)
    if clear and staged.exists():
        shutil.rmtree(staged)
    return staged


def replace_folder(staged: Path, final: Path) -> None:
    """Swaps a completely written `staged` folder in as `final`.

    Two renames (final -> final.old, staged -> final) and a delete; a kill between them leaves
    `final.old`, which `recover_folder` restores.
    """
    final, staged = Path(final), Path(staged)
    old = final.with_name(final.name + OLD_SUFFIX)
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(staged, final)
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(final: Path) -> None:
    """Undoes what a kill left of a `replace_folder`: restores `final` from `final.old` when the swap was
    cut between its renames, and deletes a half-written staging folder."""
    final = Path(final)
    old = final.with_name(final.name + OLD_SUFFIX)
    if old.exists():
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, final)
    staged = final.with_name(final.name + PARTIAL_SUFFIX)
    if staged.exists():
        shutil.rmtree(staged, ignore_errors=True)


def check_output_dir(output_dir: Path) -> None:
    """Creates `output_dir` and proves it writable with a probe file, or raises one clear line.

    `os.access(W_OK)` alone is not enough: for root it ignores the permission bits, and it cannot see a
    quota; it does report a read-only mount (EROFS), which we name. The probe write is the real test.
    """
    output_dir = Path(output_dir)
    fix = "choose a writable folder with training.output_dir=..."
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CheckpointError(
            f"training.output_dir {output_dir} exists and is not a folder: {fix}"
        ) from None
    except NotADirectoryError:
        raise CheckpointError(
            f"training.output_dir {output_dir} cannot be created: a part of its path is a file, not a folder: {fix}"
        ) from None
    except OSError as err:
        raise CheckpointError(
            f"training.output_dir {output_dir} cannot be created ({_reason(err)}): {fix}"
        ) from None
    if not output_dir.is_dir():
        raise CheckpointError(f"training.output_dir {output_dir} is not a folder: {fix}")
    if not os.access(output_dir, os.W_OK):
        raise CheckpointError(f"training.output_dir {output_dir} is not writable (read-only or no permission): {fix}")
    try:
        handle, probe = tempfile.mkstemp(prefix=".hfmed-write-probe-", dir=output_dir)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise CheckpointError(f"training.output_dir {output_dir} is not writable ({_reason(err)}): {fix}") from None


def checkpoint_bytes(model, optimizer_states_per_parameter: int = 2) -> int:
    """Bytes one checkpoint takes, estimated from the model: all weights and buffers, plus
    `optimizer_states_per_parameter` tensors (Adam's two moments) per trainable parameter."""
    total = trainable = 0
    for param in model.parameters():
        total += param.numel() * param.element_size()
        if param.requires_grad:
            trainable += param.numel() * param.element_size()
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return total + buffers + optimizer_states_per_parameter * trainable


def check_free_space(output_dir: Path, model, checkpoints_kept: int | None) -> int:
    """Raises one clear line when `output_dir` lacks room for the run's checkpoints and model export.

    The estimate (returned, in bytes): `checkpoints_kept` complete checkpoints plus the one being written
    (2 when there is no limit: the minimum for a resumable run), plus the exported model twice (the old and
    new copies coexist while `replace_folder` swaps them).
    """
    per_checkpoint = checkpoint_bytes(model)
    weights = checkpoint_bytes(model, optimizer_states_per_parameter=0)
    needed = per_checkpoint * ((checkpoints_kept or 1) + 1) + 2 * weights
    try:
        free = shutil.disk_usage(output_dir).free
    except OSError:  # some network file systems cannot say; the writes themselves will
        return needed
    if free < needed:
        raise CheckpointError(
            f"training.output_dir {output_dir} has {_size(free)} free but this run needs about {_size(needed)} "
            f"(checkpoints of {_size(per_checkpoint)} each, and the exported model): free some space, lower "
            "training.checkpoints_total_limit, or choose another training.output_dir"
        )
    return needed


def _reason(err: OSError) -> str:
    if err.errno == errno.EROFS:
        return "read-only file system"
    if err.errno == errno.ENOSPC:
        return "no space left on device"
    return err.strerror or type(err).__name__


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


__all__ = [
    "CheckpointError",
    "atomic_path",
    "check_free_space",
    "check_output_dir",
    "checkpoint_bytes",
    "checkpoint_name",
    "is_complete",
    "list_checkpoints",
    "load_checkpoint",
    "recover_folder",
    "replace_folder",
    "resolve_resume",
    "save_checkpoint",
    "save_model",
    "staging_folder",
    "torn_checkpoints",
    "write_checkpoint",
    "write_text_atomic",
]
