"""The MoVL Space (spaces/movl): `predict`, the HTTP API (gradio_client), the page."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import gradio as gr
import httpx
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from hfmed.data.synthetic_shift import TARGET_CLASSES
from hfmed.hub import save_for_hub
from hfmed.models.movl import MoVLForImageClassification, MoVLImageProcessor, movl_config
from tests.space_harness import (
    REPO,
    check_imports_nothing_from_hfmed,
    check_model_source_order,
    click_example,
    distinct_colours,
    front_matter,
    import_app,
    render_page,
    space_server_fixtures,
)

SPACE = REPO / "spaces" / "movl"
EXAMPLES = SPACE / "examples"
ROUND = EXAMPLES / "in_distribution_round_nucleus.png"
LOBED = EXAMPLES / "in_distribution_lobed_nucleus.png"
DICOM_EXAMPLE = EXAMPLES / "ood_granular.dcm"
SCREENSHOT = REPO / "docs" / "space-movl.png"  # README; rewritten with HFMED_UPDATE_SCREENSHOTS=1
CLASSES = dict(enumerate(TARGET_CLASSES))
SIZE = 32  # movl-tiny's input
FACTOR = 7  # the app enlarges 32 px pictures by 7 (ceil(224 / 32)) for display
VIEWS = ("plain", "prompted", "prompt", "stretched")


def _save_tiny_model(folder, seed=0, preset="movl-tiny", **overrides):
    """A random-init tiny MoVL with a random (normal) prompt, so the prompt shows; saved as a Hub folder."""
    torch.manual_seed(seed)
    config = movl_config(preset, id2label=CLASSES, prompt_init="normal", **overrides)
    model = MoVLForImageClassification(config).eval()
    processor = MoVLImageProcessor(size={"height": config.image_size, "width": config.image_size},
                                   image_mean=config.image_mean, image_std=config.image_std)
    save_for_hub(model, processor, folder)
    return folder


def _reference(folder, path):
    """Probabilities and the three pictures computed with hfmed's own classes, independently of the app."""
    model = MoVLForImageClassification.from_pretrained(folder).eval()
    processor = MoVLImageProcessor.from_pretrained(folder)
    pixel_values = processor(str(path), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits[0]
    config = model.config
    scores = torch.sigmoid(logits) if config.problem_type == "multi_label_classification" else logits.softmax(-1)
    names = [config.id2label[i] for i in range(config.num_labels)]
    mean = np.asarray(config.image_mean).reshape(-1, 1, 1)
    std = np.asarray(config.image_std).reshape(-1, 1, 1)
    plain = np.rint(np.clip(pixel_values[0].numpy() * std + mean, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    change = model.prompt_pixels().numpy() * std  # the prompt's change to the [0, 1] pixel values
    stretched = 0.5 + change * (0.5 / np.abs(change).max()) if np.abs(change).max() > 0 else None
    pictures = {"plain": plain, "prompted": model.prompted_images(pixel_values)[0], "prompt": model.prompt_image(),
                "stretched": None if stretched is None else np.rint(stretched * 255).astype(np.uint8).transpose(1, 2, 0)}
    return dict(zip(names, scores.tolist(), strict=True)), pictures, config


def _prompt_parameters(folder):
    """The saved prompt as one (C, S, S) array (normalised units), read from the weights file directly."""
    from safetensors.numpy import load_file

    weights = load_file(folder / "model.safetensors")
    up, down = weights["movl.prompter.pad_up"][0], weights["movl.prompter.pad_down"][0]
    left, right = weights["movl.prompter.pad_left"][0], weights["movl.prompter.pad_right"][0]
    middle = np.concatenate([left, np.zeros((3, left.shape[1], SIZE - 2 * left.shape[2])), right], axis=2)
    return np.concatenate([up, middle, down], axis=1)


def _shrunk(image, factor=FACTOR):
    """The app's enlarged picture back at the backbone's size (every `factor`-th pixel)."""
    pixels = np.asarray(image)
    assert pixels.shape[0] % factor == 0 and pixels.shape[1] % factor == 0
    blocks = pixels.reshape(pixels.shape[0] // factor, factor, pixels.shape[1] // factor, factor, -1)
    assert (blocks == blocks[:, :1, :, :1]).all()  # nearest neighbour: each pixel a flat square
    return pixels[::factor, ::factor]


def _fresh_dicom(path, patient_id="FRESH-UPLOAD"):
    """A colour DICOM whose bytes differ from every bundled example."""
    dataset = pydicom.dcmread(DICOM_EXAMPLE)
    dataset.PatientID = patient_id
    dataset.save_as(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _save_tiny_model(tmp_path_factory.mktemp("space") / "model")


@pytest.fixture(scope="module")
def app(model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HFMED_MODEL", str(model_dir))
        yield import_app("movl_space_app", SPACE / "app.py")


def _call_error(app, path, threshold=0.5):
    with pytest.raises(gr.Error) as info:
        app.predict(str(path), threshold)
    return info.value.message


# --- predict, in process -----------------------------------------------------------------------------------


@pytest.mark.parametrize("example", [ROUND, DICOM_EXAMPLE, "no-extension"], ids=["png", "dicom", "bare"])
def test_predict_returns_the_softmax_and_what_the_backbone_sees(app, model_dir, example, tmp_path):
    if example == "no-extension":  # a DICOM named by its UID, without extension
        example = tmp_path / "1.2.826.0.1.3680043.8.498.7"
        shutil.copy(DICOM_EXAMPLE, example)
    probabilities, pictures, text = app.predict(str(example), 0.5)
    expected, reference, config = _reference(model_dir, example)
    assert list(probabilities) == TARGET_CLASSES  # every class, in the config's order
    for name, p in expected.items():
        assert probabilities[name] == pytest.approx(p, abs=1e-5), name
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)  # one softmax over the classes

    std = np.asarray(config.image_std).reshape(-1, 1, 1)
    factor = 0.5 / np.abs(_prompt_parameters(model_dir) * std).max()
    assert [caption for _, caption in pictures] == [
        "input, resized to 32x32", "what the backbone sees: input + prompt (a 4 px border)",
        "learned prompt on the mean image (a 4 px border)", f"learned prompt, contrast x{factor:.3g} around mid-grey"]
    shown = {}
    for (image, _), key in zip(pictures, VIEWS, strict=True):
        assert image.mode == "RGB" and image.size == (SIZE * FACTOR, SIZE * FACTOR)
        shown[key] = _shrunk(image)
        assert np.array_equal(shown[key], reference[key]), key
    # the padding prompt (4 px at 32 px) changes the border only: the backbone sees the input's own centre
    pad = config.prompt_size
    centre = (slice(pad, SIZE - pad), slice(pad, SIZE - pad))
    assert np.array_equal(shown["prompted"][centre], shown["plain"][centre])
    assert np.abs(shown["prompted"][:pad].astype(int) - shown["plain"][:pad]).mean() > 10
    mean_colour = np.rint(np.asarray(config.image_mean) * 255)
    assert (shown["prompt"][centre] == mean_colour).all()  # the prompt alone: the mean image inside the border
    assert (shown["stretched"][centre] == 128).all()  # stretched: mid-grey where the prompt is zero ...
    assert np.abs(shown["stretched"].astype(int) - 127.5).max() == 127.5  # ... its largest change at an edge
    assert "not for diagnosis" in text
    assert example.exists()  # files outside gradio's upload folder are never deleted


def test_the_top_class_is_named_at_or_above_the_threshold(app, model_dir):
    expected = _reference(model_dir, LOBED)[0]
    top = max(expected, key=expected.get)
    p = expected[top]
    for threshold, named in ((p - 1e-4, True), (p, True), (p + 1e-4, False)):
        text = app.predict(str(LOBED), threshold)[2]
        if named:
            shown_p, shown_t = re.search(rf"\*\*Top class: {top}\*\* \(p = ([\d.]+) >= ([\d.]+)\)", text).groups()
            assert float(shown_p) >= float(shown_t)
        else:
            shown_p, shown_t = re.search(
                rf"\*\*No class at or above the threshold\*\* \(the most probable, {top}: p = ([\d.]+) < ([\d.]+)\)",
                text).groups()
            assert float(shown_p) < float(shown_t)  # enough decimals that the printed numbers agree with the call
        assert float(shown_p) == pytest.approx(p, abs=10 ** -len(shown_p.split(".")[1]))
    default = app.predict(str(LOBED), None)[2]  # no threshold given: 0.5
    assert ("Top class" in default) is (p >= 0.5)


def test_a_model_without_prompt_shows_the_input_unchanged(app, monkeypatch, tmp_path):
    folder = _save_tiny_model(tmp_path / "lp", strategy="lp")
    monkeypatch.setenv("HFMED_MODEL", str(folder))
    probabilities, pictures, _ = app.predict(str(ROUND), 0.5)
    expected = _reference(folder, ROUND)[0]
    assert probabilities == pytest.approx(expected, abs=1e-5)
    assert len(pictures) == 2  # no prompt to show
    plain, seen = (_shrunk(image) for image, _ in pictures)
    assert np.array_equal(plain, seen)
    assert pictures[1][1] == "what the backbone sees: the input alone (strategy lp has no prompt)"
    assert "prompt: none" in " ".join(str(b.value) for b in app.build_demo().blocks.values()
                                      if isinstance(b, gr.Markdown))


def test_a_clip_backbone_serves_too(app, monkeypatch, tmp_path):
    folder = _save_tiny_model(tmp_path / "clip", preset="movl-clip-tiny")
    monkeypatch.setenv("HFMED_MODEL", str(folder))
    probabilities, pictures, _ = app.predict(str(DICOM_EXAMPLE), 0.5)
    expected, reference, _ = _reference(folder, DICOM_EXAMPLE)
    assert probabilities == pytest.approx(expected, abs=1e-5)
    assert np.array_equal(_shrunk(pictures[1][0]), reference["prompted"])  # CLIP's own mean / std


def test_a_multi_label_model_lists_labels_against_their_thresholds(app, monkeypatch, tmp_path):
    folder = _save_tiny_model(tmp_path / "multi", seed=1, problem_type="multi_label_classification")
    monkeypatch.setenv("HFMED_MODEL", str(folder))
    expected = _reference(folder, ROUND)[0]
    probabilities, _, text = app.predict(str(ROUND), 0.0)
    assert probabilities == pytest.approx(expected, abs=1e-5)  # independent sigmoids
    assert sum(probabilities.values()) != pytest.approx(1.0, abs=1e-3)
    assert re.findall(r"^- (\w+) \(", text, flags=re.M) == sorted(expected, key=lambda n: -expected[n])
    assert "No label at or above the threshold (1.00)." in app.predict(str(ROUND), 1.0)[2]

    names = list(expected)
    config = json.loads((folder / "config.json").read_text())
    thresholds = [0.999] * len(names)
    thresholds[2] = expected[names[2]] - 0.01  # only this one is at or above its validation threshold
    config["label_thresholds"] = thresholds
    (folder / "config.json").write_text(json.dumps(config))
    app._load_config.cache_clear()
    app._load.cache_clear()
    text = app.predict(str(ROUND), None)[2]
    assert "their validation thresholds" in text and re.findall(r"^- (\w+) \(", text, flags=re.M) == [names[2]]
    demo = app.build_demo()
    # A text box: Gradio's number box would show and send 0 for the empty value (tests/spaces/test_space_lt_vit.py
    # checks the same box in Chromium).
    boxes = [block for block in demo.blocks.values() if isinstance(block, (gr.Slider, gr.Number, gr.Textbox))]
    assert len(boxes) == 1 and isinstance(boxes[0], gr.Textbox) and boxes[0].value == ""
    assert re.findall(r"^- (\w+) \(", app.predict(str(ROUND), "0")[2], flags=re.M) == sorted(
        expected, key=lambda n: -expected[n])  # a number typed in the box overrides them all


def _write_bad_inputs(folder):
    (folder / "notes.dcm").write_text("patient notes, not a DICOM file\n")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "volume.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG signature, no image
    no_pixels = pydicom.dcmread(DICOM_EXAMPLE)
    del no_pixels.PixelData
    no_pixels.save_as(folder / "header_only.dcm")
    return {
        "notes.dcm": "'notes.dcm' is not a DICOM file",
        "empty.png": "'empty.png' is empty (0 bytes)",
        "notes.txt": "'notes.txt' is not a DICOM file",
        "volume.png": "nor an image PIL can read",
        "header_only.dcm": "no PixelData",
    }


def test_bad_inputs_give_one_line_errors_without_server_paths(app, tmp_path):
    for name, reason in _write_bad_inputs(tmp_path).items():
        message = _call_error(app, tmp_path / name)
        assert reason in message, message
        assert "\n" not in message and str(tmp_path) not in message, message
    assert "No file" in _call_error(app, "")
    assert "threshold must be a number in [0, 1]" in _call_error(app, ROUND, threshold=1.5)
    assert "threshold must be a number in [0, 1]" in _call_error(app, ROUND, threshold="nan")


def test_any_modality_is_served(app, model_dir):
    # MoVL's processor reads any modality (a grey CT slice is windowed and replicated to three channels).
    ct = get_testdata_file("CT_small.dcm")
    probabilities = app.predict(ct, 0.5)[0]
    assert probabilities == pytest.approx(_reference(model_dir, ct)[0], abs=1e-5)


def test_files_over_the_cap_are_refused_before_decoding(app, tmp_path):
    big = tmp_path / "big.png"
    with open(big, "wb") as handle:  # sparse: no 21 MB written
        handle.truncate((app.MAX_UPLOAD_MB + 1) * 1024 * 1024)
    assert f"over the {app.MAX_UPLOAD_MB} MB limit" in _call_error(app, big)


def test_uploads_are_deleted_after_the_answer_but_examples_are_kept(app, tmp_path, monkeypatch):
    uploads = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    (uploads / "a1").mkdir(parents=True)
    fresh = _fresh_dicom(uploads / "a1" / "cell.dcm")
    app.predict(str(fresh), 0.5)
    assert not fresh.exists() and not fresh.parent.exists()
    bad = uploads / "b2" / "notes.png"
    bad.parent.mkdir()
    bad.write_text("not an image")
    _call_error(app, bad)
    assert not bad.exists()  # deleted on errors too
    # gradio serves a clicked example from a copy in the same folder: that copy must survive
    example_copy = uploads / "c3" / ROUND.name
    example_copy.parent.mkdir()
    shutil.copy(ROUND, example_copy)
    app.predict(str(example_copy), 0.5)
    assert example_copy.exists()
    outside = _fresh_dicom(tmp_path / "outside.dcm")
    app.predict(str(outside), 0.5)
    assert outside.exists()


def test_model_source_order_and_the_missing_model_message(app, monkeypatch, tmp_path):
    check_model_source_order(app, monkeypatch, tmp_path, "movl-demo")


def test_the_app_imports_nothing_from_hfmed():
    check_imports_nothing_from_hfmed(SPACE)


def test_the_staged_space_serves_the_staged_model_without_hfmed(model_dir, tmp_path):
    """upload.py stages a MoVL run and the Space unchanged; the staged Space, with hfmed unimportable, loads the
    staged model through its own code (trust_remote_code) and answers as hfmed's classes do."""
    import upload

    run = tmp_path / "run"
    shutil.copytree(model_dir, run / "model")
    out = tmp_path / "staged"
    assert upload.main([str(run), "--repo-id", "org/movl", "--dry-run", "--out", str(out),
                        "--space", str(SPACE), "--space-id", "org/movl-space"]) == 0
    space = out / "space"
    assert (space / "model_id.txt").read_text().strip() == "org/movl"
    assert not (space / "make_examples.py").exists()  # it imports hfmed; the Space never runs it
    assert sorted(p.name for p in (space / "examples").iterdir()) == sorted(p.name for p in EXAMPLES.iterdir())
    script = textwrap.dedent(
        """
        import importlib.util, json, sys
        sys.modules["hfmed"] = None
        import numpy as np
        spec = importlib.util.spec_from_file_location("app", "app.py")
        app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(app)
        probabilities, pictures, text = app.predict(sys.argv[1], 0.5)
        np.save(sys.argv[2], np.stack([np.asarray(image) for image, _ in pictures]))
        print(json.dumps(probabilities))
        """
    )
    example = space / "examples" / DICOM_EXAMPLE.name
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_MODULES_CACHE": str(tmp_path / "modules"), "HFMED_MODEL": str(out / "model"),
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    done = subprocess.run([sys.executable, "-c", script, str(example), str(tmp_path / "pictures.npy")], env=env,
                          cwd=space, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected, reference, _ = _reference(model_dir, example)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == pytest.approx(expected, abs=1e-5)
    pictures = np.load(tmp_path / "pictures.npy")
    for picture, key in zip(pictures, VIEWS, strict=True):
        assert np.array_equal(_shrunk(picture), reference[key]), key


# --- the running app: HTTP API and page ---------------------------------------------------------------------


_server_process, server, client = space_server_fixtures(SPACE / "app.py")


def test_client_predict_on_a_png_and_a_dicom(client, model_dir):
    from gradio_client import handle_file

    for example in (ROUND, DICOM_EXAMPLE):
        label, pictures, text = client.predict(handle_file(str(example)), 0.5, api_name="/predict")
        expected, reference, _ = _reference(model_dir, example)
        confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
        assert set(confidences) == set(expected)  # four classes: all within the top five
        for name, p in expected.items():
            assert confidences[name] == pytest.approx(p, abs=1e-5), name
        assert label["label"] == max(expected, key=expected.get)
        assert len(pictures) == 4
        for picture, key in zip(pictures, VIEWS, strict=True):
            with Image.open(picture["image"]) as image:
                assert np.array_equal(_shrunk(image.convert("RGB")), reference[key]), key
        assert "Top class" in text or "No class at or above" in text


def test_predict_is_the_public_api_endpoint(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(endpoints) == ["/predict"]  # the example loader and the clear-on-upload events stay hidden
    assert [p["parameter_name"] for p in endpoints["/predict"]["parameters"]] == ["file_path", "threshold"]


def test_client_bad_files_raise_the_one_line_reason_and_uploads_are_gone(app, client, server, tmp_path):
    from gradio_client import handle_file

    _write_bad_inputs(tmp_path)
    for name in ("notes.txt", "header_only.dcm"):
        with pytest.raises(Exception) as info:
            client.predict(handle_file(str(tmp_path / name)), 0.5, api_name="/predict")
        assert _call_error(app, tmp_path / name) in str(info.value)
    fresh = _fresh_dicom(tmp_path / "fresh_upload.dcm")
    client.predict(handle_file(str(fresh)), 0.5, api_name="/predict")
    leftovers = [p for p in server["uploads"].rglob("*") if p.name in {"notes.txt", "header_only.dcm", fresh.name}]
    assert leftovers == []


def test_the_server_refuses_uploads_over_the_cap(app, server):
    too_big = b"\0" * ((app.MAX_UPLOAD_MB * 1024 + 1) * 1024)
    with httpx.Client(trust_env=False) as http:
        response = http.post(server["url"] + "gradio_api/upload", files={"files": ("big.png", too_big)})
    assert response.status_code == 413, response.text


def test_the_page_renders_in_headless_chromium(server, tmp_path):
    html, text, shot = render_page(server["url"], tmp_path, window=(1280, 1000))
    for visible in ("Research use only", "Image: PNG, JPEG or DICOM", "Threshold", "Top classes",
                    "What the frozen backbone sees", "synthetic PNG, in distribution: round nucleus",
                    "synthetic DICOM, shifted (OOD): granular", "strategy"):
        assert visible in text, visible
    assert re.search(r'<input[^>]+type="file"', html) and re.search(r'<input[^>]+type="range"', html)

    with Image.open(shot) as image:
        assert image.size == (1280, 1000)
    assert distinct_colours(shot) > 16  # text, the orange button, borders: not a blank page
    if os.environ.get("HFMED_UPDATE_SCREENSHOTS"):
        shutil.copy(shot, SCREENSHOT)


def test_clicking_an_example_in_chromium_shows_the_classes_and_what_the_backbone_sees(server, model_dir, tmp_path):
    answered = ("['input-resized', 'what-the-backbone-sees', 'learned-prompt-on', 'learned-prompt-contrast'].every("
                "name => !!document.querySelector(`img[src*=\"${name}\"]`))")
    text, shot = click_example(server["url"], tmp_path, "synthetic PNG, in distribution: round nucleus", answered)
    expected = _reference(model_dir, ROUND)[0]
    top = max(expected, key=expected.get)
    assert re.search(rf"(\*\*)?(Top class: {top}|No class at or above the threshold)", text), text
    assert f"{round(100 * expected[top])}%" in text  # gr.Label shows the top classes in percent
    assert "input, resized to 32x32" in text and "Research use only, not for diagnosis." in text
    with Image.open(shot) as image:
        assert image.size == (1280, 1300)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 256  # the pictures are painted (the random prompt alone has hundreds of colours)


# --- Space metadata and bundled examples -------------------------------------------------------------------


def test_front_matter_matches_requirements():
    meta, pins, text = front_matter(SPACE)
    assert meta["sdk"] == "gradio" and str(meta["sdk_version"]) == pins["gradio"] == gr.__version__
    assert (SPACE / meta["app_file"]).is_file()
    assert meta["license"] == "apache-2.0" and meta["pinned"] is False
    assert meta["models"] == ["hfmed/movl-demo"]
    assert {"medical", "visual-prompting", "hfmed"} <= set(meta["tags"])
    assert meta["title"] and meta["emoji"] and meta["colorFrom"] and meta["colorTo"]
    assert len(meta["short_description"]) <= 60  # the Hub's limit
    assert "not for diagnosis" in text
    requirements = [line for line in (SPACE / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert not [line for line in requirements if line.startswith("hfmed")]  # not on PyPI, so not on the Hub
    for needed in ("torch", "timm>=1.0", "transformers>=5,<6", "pydicom>=3", "numpy", "pillow", "safetensors"):
        assert needed in requirements, needed


def test_bundled_examples_match_the_generator_and_their_names(tmp_path):
    make_examples = import_app("movl_make_examples", SPACE / "make_examples.py")
    written = make_examples.write_examples(tmp_path)
    bundled = sorted(p.name for p in EXAMPLES.iterdir())
    assert sorted(p.name for p in written) == bundled and len(bundled) == 4
    for path in written:  # deterministic: the committed files are what the generator writes
        assert path.read_bytes() == (EXAMPLES / path.name).read_bytes(), path.name
    assert sum(p.stat().st_size for p in EXAMPLES.iterdir()) < 50_000
    assert {make_examples.parse_name(name)[1] for name in bundled} == {"in_distribution", "ood"}
    assert make_examples.parse_name("ood_lobed_nucleus.png") == ("lobed_nucleus", "ood")
    with pytest.raises(ValueError, match="not an example name"):
        make_examples.parse_name("ood_lobed.png")
    for name in bundled:
        path = EXAMPLES / name
        if path.suffix == ".dcm":
            dataset = pydicom.dcmread(path)
            assert (dataset.Modality, dataset.PhotometricInterpretation) == ("SM", "RGB")
            assert dataset.pixel_array.shape == (32, 32, 3) and dataset.pixel_array.dtype == np.uint8
        else:
            with Image.open(path) as image:
                assert image.mode == "RGB" and image.size == (32, 32)
