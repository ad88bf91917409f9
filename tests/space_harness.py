"""What every Space test needs: import an app by path, run it as a server, and look at it in Chromium."""

import contextlib
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_MISSING = "chromium is not installed: apt-get install -y chromium"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def import_app(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def space_process(app_path: Path, model_dir: Path, root: Path):
    """Starts `app_path` on a free loopback port with `HFMED_MODEL=model_dir`; stops it on exit."""
    port = free_port()
    env = {
        **os.environ,
        "HFMED_MODEL": str(model_dir),
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(root / "gradio"),
        "HF_MODULES_CACHE": str(root / "modules"),
        "PYTHONUNBUFFERED": "1",
    }
    log = open(root / "server.log", "w+")
    process = subprocess.Popen([sys.executable, str(app_path)], cwd=REPO, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "uploads": root / "gradio", "root": root,
               "process": process, "log": log, "started": time.monotonic()}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_until_up(info: dict, timeout: float = 90) -> dict:
    """The running Space once it answers; fails the test with its log if it exits or stays silent."""
    process, log, url = info["process"], info["log"], info["url"]
    while True:
        if process.poll() is not None:
            log.seek(0)
            pytest.fail(f"the Space exited with code {process.returncode}:\n{log.read()[-3000:]}")
        with contextlib.suppress(OSError):
            if NO_PROXY.open(url, timeout=2).status == 200:
                return info
        if time.monotonic() > info["started"] + timeout:
            log.seek(0)
            pytest.fail(f"the Space did not answer on {url} within {timeout} s:\n{log.read()[-3000:]}")
        time.sleep(0.25)


def space_server_fixtures(app_path: Path):
    """The module fixtures `_server_process` (autouse: the Space boots while in-process tests run), `server`
    (once it answers) and `client` (gradio_client) for the Space `app_path`; the module defines `model_dir`.

        _server_process, server, client = space_server_fixtures(SPACE / "app.py")
    """

    @pytest.fixture(scope="module", autouse=True)
    def _server_process(model_dir, tmp_path_factory):
        with space_process(app_path, model_dir, tmp_path_factory.mktemp("server")) as info:
            yield info

    @pytest.fixture(scope="module")
    def server(_server_process):
        return wait_until_up(_server_process)

    @pytest.fixture(scope="module")
    def client(server):
        from gradio_client import Client

        downloads = str(server["root"] / "downloads")
        return Client(server["url"], verbose=False, analytics_enabled=False, download_files=downloads)

    return _server_process, server, client


def check_model_source_order(app, monkeypatch, tmp_path, missing_hint: str) -> None:
    """HFMED_MODEL beats model_id.txt beats the local demo run; with none, an error naming `missing_hint`."""
    monkeypatch.delenv("HFMED_MODEL", raising=False)
    monkeypatch.setattr(app, "MODEL_ID_FILE", tmp_path / "model_id.txt")
    monkeypatch.setattr(app, "DEFAULT_MODEL_DIR", tmp_path / "runs" / "model")
    with pytest.raises(app.ModelNotFoundError, match=rf"{missing_hint}.*HFMED_MODEL"):
        app.resolve_model_source()
    (tmp_path / "runs" / "model").mkdir(parents=True)
    (tmp_path / "runs" / "model" / "config.json").write_text("{}")
    assert app.resolve_model_source() == str(tmp_path / "runs" / "model")
    (tmp_path / "model_id.txt").write_text("org/published-model\n")
    assert app.resolve_model_source() == "org/published-model"
    monkeypatch.setenv("HFMED_MODEL", "org/from-env")
    assert app.resolve_model_source() == "org/from-env"


def check_imports_nothing_from_hfmed(space: Path) -> None:
    """The Space runs where hfmed is not installed: app.py never imports it."""
    source = (space / "app.py").read_text()
    assert not re.search(r"^\s*(from|import)\s+hfmed\b", source, flags=re.M)


def chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(CHROMIUM_MISSING)


def render_page(url: str, work: Path, window=(1280, 1600)) -> tuple[str, str, Path]:
    """Headless Chromium's DOM dump of `url` (raw HTML, visible text) and a screenshot of `window` size."""
    shot = work / "space.png"
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        f"--user-data-dir={work / 'profile'}", "--virtual-time-budget=8000", f"--window-size={window[0]},{window[1]}",
        "--dump-dom", f"--screenshot={shot}", url,
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert shot.is_file(), dom.stderr[-2000:]
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", dom.stdout, flags=re.S | re.I)
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    return html, text, shot


class DevToolsPipe:
    """Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: commands on the
    browser's fd 3, answers on its fd 4, JSON messages ended by NUL), so a test can click in the page without a
    websocket client. Use as a context manager; `evaluate(js)` returns the expression's value in the page."""

    def __init__(self, work: Path, window=(1280, 1300)) -> None:
        binary = chromium()
        real = Path("/usr/lib/chromium/chromium")  # Debian's /usr/bin/chromium is a shell script around it
        binary = str(real) if real.is_file() and os.access(real, os.X_OK) else binary
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()

        def remap():  # in the child: the pipe ends to fds 3 and 4, through high numbers (no clobbering)
            os.dup2(os.dup2(to_browser, 200), 3)
            os.dup2(os.dup2(from_browser, 201), 4)

        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                f"--user-data-dir={work / 'profile'}", f"--window-size={window[0]},{window[1]}",
                "--remote-debugging-pipe", "about:blank"]
        self._log = open(work / "chromium.log", "w")
        self.process = subprocess.Popen([binary, *args], close_fds=False, preexec_fn=remap,
                                        stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(to_browser)
        os.close(from_browser)
        self.window, self._buffer, self._id, self.session = window, b"", 0, None

    def send(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        import json

        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                if time.monotonic() > deadline:
                    pytest.fail(f"chromium did not answer {method} within {timeout} s")
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    pytest.fail(f"chromium closed the DevTools pipe ({method}); see {self._log.name}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    pytest.fail(f"chromium: {method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> None:
        self.session = None
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        width, height = self.window
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"]
        return result.get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                pytest.fail(f"the page never showed {what} within {timeout} s")
            time.sleep(0.25)

    def screenshot(self, path: Path) -> Path:
        import base64

        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"]))
        return path

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._log.close()


def click_example(url: str, work: Path, label: str, answered: str, window=(1280, 1300)) -> tuple[str, Path]:
    """Opens the Space at `url` in headless Chromium, clicks the example button whose text holds `label`, waits
    until the JavaScript expression `answered` is true (the answer is on the page), then returns the page's
    visible text and a screenshot."""
    import json

    work.mkdir(parents=True, exist_ok=True)
    button = f"[...document.querySelectorAll('button')].find(b => b.textContent.includes({json.dumps(label)}))"
    with DevToolsPipe(work, window) as browser:
        browser.open(url)
        browser.wait_for(f"!!{button}", f"the example button {label!r}")
        browser.evaluate(f"{button}.click()")
        browser.wait_for(answered, "the answer")
        time.sleep(1.0)  # let the images finish painting
        text = " ".join(str(browser.evaluate("document.body.innerText")).split())
        return text, browser.screenshot(work / "answer.png")


def distinct_colours(png: Path) -> int:
    with Image.open(png) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 20))


def front_matter(space: Path) -> tuple[dict, dict, str]:
    """(README front matter, `name==version` pins of requirements.txt, README text)."""
    text = (space / "README.md").read_text()
    assert text.startswith("---\n")
    pins = dict(
        line.split("==", 1) for line in (space / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    return yaml.safe_load(text.split("---\n")[1]), pins, text


# --- every Space, derived from the registry ----------------------------------------------------------------

SPACES_DIR = REPO / "spaces"
# Processor arguments of the tiny served models that differ from `Family.processor_kwargs_for`: the tiny
# Slice-CNN grid (16x20x16) holds the bundled examples' 192x224x192 mm field of view at 12 mm.
TINY_PROCESSOR_OVERRIDES = {"slice_cnn": {"target_spacing": [12.0, 12.0, 12.0]}}
# Config fields of the tiny served models that differ from the tiny preset: LT-ViT serves the five findings of
# its demo recipe and bundled examples (configs/lt-vit-demo.yaml), not NIH's fourteen; MoVL the four classes of
# its examples (the shifted twin's target task), with a random prompt (a zero prompt would not show).
TINY_CONFIG_OVERRIDES = {
    "lt_vit": {"id2label": {0: "Atelectasis", 1: "Cardiomegaly", 2: "Effusion", 3: "Consolidation",
                            4: "Pneumothorax"}},
    "movl": {"id2label": {0: "round_nucleus", 1: "lobed_nucleus", 2: "spindle_nucleus", 3: "granular"},
             "prompt_init": "normal"},
}


def space_families() -> list[str]:
    """Every registered family (hfmed.registry.FAMILIES) with a Space, `spaces/<family>/app.py`."""
    from hfmed.registry import FAMILIES

    return [name for name in FAMILIES if (SPACES_DIR / name / "app.py").is_file()]


def tiny_preset(family_name: str) -> str:
    """The family's one '-tiny' preset, or, where it has several (MoVL: a ResNet and a CLIP one), the one named
    after the family ('movl-tiny')."""
    from hfmed.registry import FAMILIES

    presets = [name for name in FAMILIES[family_name].presets if name.endswith("-tiny")]
    named = f"{family_name.replace('_', '-')}-tiny"
    if len(presets) > 1 and named in presets:
        return named
    assert len(presets) == 1, f"family {family_name!r} needs one '-tiny' preset (or '{named}'), has {presets}"
    return presets[0]


def save_tiny_space_model(family_name: str, folder: Path, seed: int = 0) -> Path:
    """A random-init model of the family's tiny preset with its processor, as a Hub folder (save_for_hub)."""
    import torch

    from hfmed.hub import save_for_hub
    from hfmed.registry import FAMILIES

    family = FAMILIES[family_name]
    torch.manual_seed(seed)
    config = family.make_config(tiny_preset(family_name), **TINY_CONFIG_OVERRIDES.get(family_name, {}))
    model = family.head_class(config).eval()
    kwargs = {**family.processor_kwargs_for(config), **TINY_PROCESSOR_OVERRIDES.get(family_name, {})}
    save_for_hub(model, family.image_processor_class(**kwargs), folder)
    return Path(folder)


def space_examples(family_name: str) -> list[Path]:
    """The Space's bundled example files (its valid inputs), by name."""
    folder = SPACES_DIR / family_name / "examples"
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def unique_copy(source: Path, folder: Path, tag: str) -> Path:
    """A valid copy of `source` whose bytes differ from every other tag's (so gradio stores it apart).

    DICOM: another PatientID; PNG: a text chunk; JPEG: a comment segment; gzip (.nii.gz): another gzip header
    time; NIfTI: another `descrip`. The pixels are the same.
    """
    import gzip
    import zlib

    folder.mkdir(parents=True, exist_ok=True)
    name = source.name
    target = folder / f"{tag}-{name}"
    if name.endswith(".gz"):
        raw = gzip.decompress(source.read_bytes())
        target.write_bytes(gzip.compress(raw, mtime=zlib.crc32(tag.encode())))
    elif source.suffix == ".dcm":
        import pydicom

        dataset = pydicom.dcmread(source)
        dataset.PatientID = f"LOAD-{tag}"
        dataset.save_as(target)
    elif source.suffix == ".png":
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("hfmed-tag", tag)
        with Image.open(source) as image:
            image.save(target, pnginfo=info)
    elif source.suffix.lower() in (".jpg", ".jpeg"):
        import struct

        data, comment = source.read_bytes(), tag.encode()
        if data[:2] != b"\xff\xd8":
            raise ValueError(f"unique_copy: {name} does not start with a JPEG SOI marker")
        # a COM segment right after SOI: other bytes, the same decoded pixels
        target.write_bytes(data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:])
    elif source.suffix == ".nii":
        import nibabel as nib

        image = nib.load(source)
        image.header["descrip"] = tag.encode()[:79]
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine, image.header), target)
    else:
        raise ValueError(f"unique_copy: no way to vary {name}; add one for this file type")
    return target


def answer_digest(answer, downloads: Path) -> str:
    """`answer` as JSON, each downloaded file (a path under `downloads`) replaced by a hash of its decoded
    pixels and floats rounded to 6 decimals: equal for equal answers; decoding raises on a torn file."""
    import hashlib
    import json

    def walk(value):
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(item) for item in value]
        if isinstance(value, float):
            return round(value, 6)
        if isinstance(value, str) and value.startswith(str(downloads)):
            with Image.open(value) as image:
                image.load()
                return f"{image.mode}{image.size}:{hashlib.sha256(image.tobytes()).hexdigest()[:16]}"
        return value

    return json.dumps(walk(answer), sort_keys=True)


def run_load(url: str, files: list[Path], clients: int, work: Path, threshold: float = 0.5) -> dict:
    """Sends one `/predict` request per entry of `files` from `clients` concurrent gradio_client Clients (each
    its own thread and download folder, downloading every output file as a browser does).

    Returns `{"failed", "errors" (distinct messages), "latencies" (s, successes), "digests" (request index ->
    `answer_digest`), "wall_s"}`. A request fails when it raises or an output file does not decode.
    """
    import threading

    from gradio_client import Client, handle_file

    pending = iter(range(len(files)))
    lock = threading.Lock()
    latencies, errors, digests = [], [], {}

    def worker(number: int) -> None:
        downloads = work / f"downloads-{number}"
        client = Client(url, verbose=False, analytics_enabled=False, download_files=str(downloads))
        while True:
            with lock:
                index = next(pending, None)
            if index is None:
                return
            start = time.perf_counter()
            try:
                answer = client.predict(handle_file(str(files[index])), threshold, api_name="/predict")
                digest = answer_digest(answer, downloads)
                with lock:
                    latencies.append(time.perf_counter() - start)
                    digests[index] = digest
            except Exception as err:  # every failure counts, whatever it is
                with lock:
                    errors.append(f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"failed": len(errors), "errors": sorted(set(errors)), "latencies": latencies, "digests": digests,
            "wall_s": time.perf_counter() - started}


def process_memory(pid: int) -> dict[str, int]:
    """`VmRSS` and `VmHWM` (peak) of process `pid`, in bytes, from /proc/<pid>/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def reset_peak_memory(pid: int) -> int:
    """Resets `VmHWM` of process `pid` to its current RSS (Linux >= 4.0: /proc/<pid>/clear_refs, '5') and
    returns the baseline to measure growth from: the RSS, or the old peak where the reset is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return process_memory(pid)["VmHWM"]
    return process_memory(pid)["VmRSS"]
