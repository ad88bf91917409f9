"""Fault suite for the Spaces (issue 10): concurrent load, hostile files and overload, on every Space served.

Every registered family with a Space (`hfmed.registry.FAMILIES` and `spaces/<family>/app.py`) runs as a real
server (`python spaces/<family>/app.py`) on a tiny random-init model of the family. A new family joins by its
Space folder; its hostile files follow from the file types of its bundled examples (hostile_space_inputs.py).
The full-size load measurement (256 requests at 4 / 16 / 32 clients) is `benchmarks/space_load.py`.
"""

import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from hfmed.registry import FAMILIES
from tests.reliability.hostile_space_inputs import hostile_inputs
from tests.space_harness import (
    SPACES_DIR,
    free_port,
    import_app,
    process_memory,
    reset_peak_memory,
    run_load,
    save_tiny_space_model,
    space_examples,
    space_families,
    space_process,
    unique_copy,
    wait_until_up,
)

SPACES = space_families()
REQUESTS, CLIENTS = 24, 8
# Generous bounds, far above a healthy answer (a few seconds at most, on 2 busy cores) and below what a missing
# guard costs (decoding a 400-megapixel PNG, allocating 2000^3 voxels): they catch hangs and blow-ups, they
# are not speed targets.
HOSTILE_SECONDS = 60.0
HOSTILE_RSS_GROWTH = 512 * 2**20


@pytest.fixture(scope="module", params=SPACES)
def space(request, tmp_path_factory):
    """The family's Space as a running server, with its pid, upload folder and a gradio_client Client."""
    from gradio_client import Client

    family = request.param
    root = tmp_path_factory.mktemp(f"space-{family}")
    model = save_tiny_space_model(family, root / "model")
    with space_process(SPACES_DIR / family / "app.py", model, root) as info:
        wait_until_up(info, timeout=180)
        info["family"] = family
        info["client"] = Client(info["url"], verbose=False, analytics_enabled=False,
                                download_files=str(root / "downloads"))
        yield info


def _leftovers(space, files) -> list[str]:
    names = {f.name for f in files}
    return sorted(str(p.relative_to(space["uploads"])) for p in space["uploads"].rglob("*") if p.name in names)


def _still_serving(space, tmp_path) -> None:
    from gradio_client import handle_file

    with httpx.Client(trust_env=False) as http:
        assert http.get(space["url"], timeout=30).status_code == 200
    fresh = unique_copy(space_examples(space["family"])[0], tmp_path / "after", "after")
    answer = space["client"].predict(handle_file(str(fresh)), 0.5, api_name="/predict")
    assert answer, "the Space gave an empty answer after the faults"
    assert _leftovers(space, [fresh]) == []


def test_every_space_serves_a_registered_family_and_is_in_this_suite():
    folders = {path.parent.name for path in SPACES_DIR.glob("*/app.py")}
    assert folders <= set(FAMILIES), f"Spaces {sorted(folders - set(FAMILIES))} serve no registered family"
    assert set(SPACES) == folders and SPACES  # a family gains its Space folder, and its place here


# --- concurrent load ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["same", "different"])
def test_concurrent_clients_all_get_their_own_answer_and_no_upload_is_left(space, mode, tmp_path):
    """24 requests from 8 concurrent clients: the same bytes (one content-addressed upload path, shared by
    every request) or different bytes over every bundled example; every request succeeds, every output file
    downloads whole, requests on the same pixels get identical answers, and no upload is left behind."""
    examples = space_examples(space["family"])
    if mode == "same":
        files = [unique_copy(examples[0], tmp_path / "inputs", "same")] * REQUESTS
        sources = [examples[0]] * REQUESTS
    else:
        sources = [examples[i % len(examples)] for i in range(REQUESTS)]
        files = [unique_copy(source, tmp_path / "inputs", f"r{i}") for i, source in enumerate(sources)]

    tally = run_load(space["url"], files, CLIENTS, tmp_path / "work")

    assert tally["failed"] == 0, tally["errors"]
    answers: dict = {}
    for index, digest in tally["digests"].items():
        answers.setdefault(sources[index].name, set()).add(digest)
    assert {name: len(digests) for name, digests in answers.items()} == dict.fromkeys(answers, 1)
    if mode == "different" and len(examples) > 1:
        assert len({next(iter(d)) for d in answers.values()}) == len(answers)  # the examples do differ
    assert _leftovers(space, files) == []
    _still_serving(space, tmp_path)


@pytest.mark.parametrize("family", SPACES)
def test_an_upload_shared_by_two_requests_outlives_the_first_answer(family, tmp_path, monkeypatch):
    """The cause of the dropped requests, in process: gradio stores equal uploads at one path. Two uploads of
    it (as gradio's upload route reports them), one answer: the file stays for the other request; the second
    answer deletes it. And two answers on the same pixels publish their pictures at different paths."""
    monkeypatch.setenv("HFMED_MODEL", str(save_tiny_space_model(family, tmp_path / "model")))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app = import_app(f"leases_{family}", SPACES_DIR / family / "app.py")
    source = space_examples(family)[0]
    shared = tmp_path / "gradio" / "a1b2" / unique_copy(source, tmp_path / "inputs", "shared").name
    shared.parent.mkdir(parents=True)
    shared.write_bytes((tmp_path / "inputs" / shared.name).read_bytes())

    app.demo.upload_file_set.update([str(shared)])  # what gradio's /upload route does, once per upload
    app.demo.upload_file_set.update([str(shared)])
    app.predict(str(shared), 0.5)
    assert shared.is_file()  # the second upload's request has not been answered yet
    app.predict(str(shared), 0.5)
    assert not shared.exists() and not shared.parent.exists()

    first, second = (app.serve_predict(str(source), 0.5) for _ in range(2))  # what the server's event runs
    galleries = [item for answer in (first, second) for item in answer if _is_gallery(item)]
    paths = [path for gallery in galleries for path, _ in gallery]
    assert len(galleries) == 2 and len(set(paths)) == len(paths)  # never one file for two answers
    assert all(Path(path).is_file() and Path(path).is_relative_to(tmp_path / "gradio") for path in paths)

    # an upload that gradio's sweep deletes is forgotten: a new upload of the path is deleted after its answer
    shared.parent.mkdir()
    shared.write_bytes((tmp_path / "inputs" / shared.name).read_bytes())
    app.demo.upload_file_set.update([str(shared)])
    app.demo.upload_file_set -= {str(shared)}  # what the sweep does to the sets it cleans
    app.demo.upload_file_set.update([str(shared)])
    app.predict(str(shared), 0.5)
    assert not shared.exists()


def _is_gallery(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) for item in value
    )


# --- hostile files -----------------------------------------------------------------------------------------


def test_hostile_files_get_a_one_line_error_in_bounded_time_and_memory(space, tmp_path):
    from gradio_client import handle_file

    hostiles = hostile_inputs(space["family"], tmp_path / "hostile", _allowed_modalities(space))
    assert len(hostiles) >= 8
    pid, problems = space["process"].pid, []
    for hostile in hostiles:
        before = reset_peak_memory(pid)
        start = time.monotonic()
        try:
            space["client"].predict(handle_file(str(hostile.path)), 0.5, api_name="/predict")
            message = None
        except Exception as err:
            message = str(err)
        elapsed = time.monotonic() - start
        growth = process_memory(pid)["VmHWM"] - before
        if message is None:
            problems.append(f"{hostile.name}: answered as if valid")
            continue
        if not re.search(hostile.expect, message, flags=re.I):
            problems.append(f"{hostile.name}: {message!r} does not match {hostile.expect!r}")
        if "\n" in message or "Traceback" in message or str(tmp_path) in message:
            problems.append(f"{hostile.name}: not a one-line message without server paths: {message!r}")
        if elapsed > HOSTILE_SECONDS:
            problems.append(f"{hostile.name}: answered after {elapsed:.0f} s")
        if growth > HOSTILE_RSS_GROWTH:
            problems.append(f"{hostile.name}: server peak RSS grew by {growth / 2**20:.0f} MiB")
        if space["process"].poll() is not None:
            pytest.fail(f"the server died on {hostile.name}; problems so far: {problems}")
    assert problems == []
    assert _leftovers(space, [h.path for h in hostiles]) == []  # hostile uploads are deleted too
    _still_serving(space, tmp_path)


def _allowed_modalities(space) -> tuple | None:
    """The allowed DICOM modalities of the served model's processor (what 'wrong modality' must avoid); None
    where the processor declares `allowed_modalities = None` (DIAMANT) or has no such setting (MoVL), reading
    every Modality, so that no DICOM has a wrong one."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(space["root"] / "model", trust_remote_code=True)
    modalities = getattr(processor, "allowed_modalities", None)
    return None if modalities is None else tuple(modalities)


# --- overload --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", SPACES)
def test_overload_answers_queue_full_at_once_and_runs_one_prediction_at_a_time(family, tmp_path, monkeypatch):
    """With one prediction held running and the queue full, a further request is answered "Queue is full ...
    try again" at once (not failed, not left waiting); the held and the queued requests then succeed."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from gradio_client.utils import Status

    monkeypatch.setenv("HFMED_MODEL", str(save_tiny_space_model(family, tmp_path / "model")))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app = import_app(f"overload_{family}", SPACES_DIR / family / "app.py")
    assert app.CONCURRENCY_LIMIT == 1 and app.QUEUE_MAX_SIZE >= 32  # 32 concurrent clients all wait their turn

    held, running, peak = threading.Event(), threading.Semaphore(0), [0, 0]  # peak: [now, max]
    lock, real = threading.Lock(), app._predict

    def slow_predict(path, threshold):
        with lock:
            peak[0] += 1
            peak[1] = max(peak)
        running.release()
        held.wait(timeout=60)
        try:
            return real(path, threshold)
        finally:
            with lock:
                peak[0] -= 1

    monkeypatch.setattr(app, "_predict", slow_predict)
    app.demo.queue(default_concurrency_limit=app.CONCURRENCY_LIMIT, max_size=1)
    port = free_port()
    app.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        clients = [Client(url, verbose=False, analytics_enabled=False, download_files=str(tmp_path / f"d{n}"))
                   for n in range(4)]
        source = space_examples(family)[0]
        files = [unique_copy(source, tmp_path / "inputs", f"o{n}") for n in range(4)]
        jobs = [clients[0].submit(handle_file(str(files[0])), 0.5, api_name="/predict")]
        assert running.acquire(timeout=60), "the first request never started"
        jobs.append(clients[1].submit(handle_file(str(files[1])), 0.5, api_name="/predict"))
        _wait_for(lambda: jobs[1].status().code == Status.IN_QUEUE, "the second request never joined the queue")
        refused = []
        for client, path in zip(clients[2:], files[2:], strict=True):
            start = time.monotonic()
            with pytest.raises(Exception) as info:
                client.predict(handle_file(str(path)), 0.5, api_name="/predict")
            refused.append((time.monotonic() - start, info.value))
        held.set()
        answers = [job.result(timeout=120) for job in jobs]
    finally:
        held.set()
        app.demo.close()
    assert all(answers)
    for elapsed, error in refused:
        assert not isinstance(error, AppError) and re.search(r"queue is full.*try again", str(error), re.I), error
        assert elapsed < HOSTILE_SECONDS
    assert peak[1] == 1  # never two predictions at once


def _wait_for(condition, message, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(message)
        time.sleep(0.05)
