"""The LT-ViT Space (spaces/lt_vit): `predict`, the HTTP API (gradio_client), the page."""

import json
import re
import shutil

import gradio as gr
import httpx
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from hfmed.hub import save_for_hub
from hfmed.models.lt_vit import LTViTForImageClassification, LTViTImageProcessor, lt_vit_config
from tests.space_harness import (
    REPO,
    DevToolsPipe,
    check_imports_nothing_from_hfmed,
    check_model_source_order,
    distinct_colours,
    front_matter,
    import_app,
    render_page,
    space_process,
    space_server_fixtures,
    wait_until_up,
)

SPACE = REPO / "spaces" / "lt_vit"
EXAMPLES = SPACE / "examples"
CARDIOMEGALY = EXAMPLES / "synthetic_cardiomegaly.png"
EFFUSION_CONSOLIDATION = EXAMPLES / "synthetic_effusion_consolidation.png"
DICOM_EXAMPLE = EXAMPLES / "synthetic_atelectasis_pneumothorax.dcm"
SYNTHETIC_LABELS = {0: "Atelectasis", 1: "Cardiomegaly", 2: "Effusion", 3: "Consolidation", 4: "Pneumothorax"}


def _save_tiny_model(folder, seed=0):
    torch.manual_seed(seed)
    model = LTViTForImageClassification(lt_vit_config("lt-vit-tiny", id2label=SYNTHETIC_LABELS)).eval()
    save_for_hub(model, LTViTImageProcessor(size={"height": 32, "width": 32}), folder)
    return folder


def _reference(folder, path):
    """Per-label sigmoid probabilities and overlays computed with hfmed's own classes, independently of the app."""
    model = LTViTForImageClassification.from_pretrained(folder).eval()
    processor = LTViTImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        outputs = model(**processor(str(path), return_tensors="pt"), output_label_attentions=True)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    probabilities = dict(zip(labels, torch.sigmoid(outputs.logits[0]).tolist(), strict=True))
    overlays = processor.label_attention_overlays(str(path), outputs.label_attentions)[0]
    return probabilities, dict(zip(labels, overlays, strict=True))


def _fresh_dicom(path, patient_id="FRESH-UPLOAD"):
    """A DX chest image whose bytes differ from every bundled example."""
    dataset = pydicom.dcmread(DICOM_EXAMPLE)
    dataset.PatientID = patient_id
    dataset.save_as(path)
    return path


def _image_size(path):
    if pydicom.misc.is_dicom(path):
        dataset = pydicom.dcmread(path)
        return dataset.Columns, dataset.Rows
    with Image.open(path) as image:
        return image.size


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _save_tiny_model(tmp_path_factory.mktemp("space") / "model")


@pytest.fixture(scope="module")
def app(model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HFMED_MODEL", str(model_dir))
        yield import_app("lt_vit_space_app", SPACE / "app.py")


def _call_error(app, path, threshold=0.5):
    with pytest.raises(gr.Error) as info:
        app.predict(str(path), threshold)
    return info.value.message


# --- predict, in process -----------------------------------------------------------------------------------


@pytest.mark.parametrize("example", [CARDIOMEGALY, DICOM_EXAMPLE, "no-extension"], ids=["png", "dicom", "bare"])
def test_predict_returns_the_models_probabilities_and_one_overlay_per_label(app, model_dir, example, tmp_path):
    if example == "no-extension":  # a DICOM named by its UID, without extension
        example = tmp_path / "1.2.826.0.1.3680043.8.498.1"
        shutil.copy(DICOM_EXAMPLE, example)
    probabilities, gallery, text = app.predict(str(example), 0.5)
    expected, expected_overlays = _reference(model_dir, example)
    assert list(probabilities) == list(SYNTHETIC_LABELS.values())  # all labels, in the config's order
    for label, p in expected.items():
        assert probabilities[label] == pytest.approx(p, abs=1e-5), label
    # one overlay per label, most probable first, captioned "label: p=0.83", at the image's own size
    names = [caption.split(":")[0] for _, caption in gallery]
    assert names == sorted(expected, key=lambda name: -expected[name])
    for image, caption in gallery:
        name = caption.split(":")[0]
        assert caption == f"{name}: p={expected[name]:.2f}"
        assert image.mode == "RGB" and image.size == _image_size(example)
        assert np.array_equal(np.asarray(image), np.asarray(expected_overlays[name])), name
    # different labels look at different places: the overlays are not all the same picture
    assert len({np.asarray(image).tobytes() for image, _ in gallery}) > 1
    assert "not for diagnosis" in text
    assert example.exists()  # files outside gradio's upload folder are never deleted


def _listed(text):
    return re.findall(r"^- (\w+) \(([\d.]+) >= ([\d.]+)\)$", text, flags=re.M)


def test_findings_follow_the_threshold(app, model_dir):
    expected = _reference(model_dir, EFFUSION_CONSOLIDATION)[0]
    label = sorted(expected, key=expected.get)[2]  # the median label: others fall on both sides
    p = expected[label]
    for threshold, listed in ((p - 1e-4, True), (p, True), (p + 1e-4, False)):
        text = app.predict(str(EFFUSION_CONSOLIDATION), threshold)[2]
        rows = _listed(text)
        assert {name for name, *_ in rows} == {n for n, q in expected.items() if q >= threshold}
        assert (label in {name for name, *_ in rows}) is listed
        for name, shown_p, shown_t in rows:  # enough decimals that the printed numbers agree with the call
            assert float(shown_p) >= float(shown_t)
            assert float(shown_p) == pytest.approx(expected[name], abs=10 ** -(len(shown_p.split(".")[1])))
    assert len(_listed(app.predict(str(EFFUSION_CONSOLIDATION), 0.0)[2])) == len(expected)
    assert "No finding at or above the threshold (1.00)." in app.predict(str(EFFUSION_CONSOLIDATION), 1.0)[2]
    # no threshold given and none in the config: 0.5
    default = app.predict(str(EFFUSION_CONSOLIDATION), None)[2]
    assert {name for name, *_ in _listed(default)} == {n for n, q in expected.items() if q >= 0.5}


def test_validation_thresholds_are_used_while_the_box_is_empty(app, monkeypatch, tmp_path):
    folder = _save_tiny_model(tmp_path / "tuned", seed=1)
    expected = _reference(folder, CARDIOMEGALY)[0]
    names = list(expected)
    thresholds = {name: 0.999 for name in names}
    thresholds[names[1]] = expected[names[1]] - 0.01  # only this one is at or above its threshold
    config = json.loads((folder / "config.json").read_text())
    config["label_thresholds"] = [thresholds[config["id2label"][str(i)]] for i in range(len(names))]
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("HFMED_MODEL", str(folder))

    demo = app.build_demo()
    inputs = [block for block in demo.blocks.values() if isinstance(block, (gr.Slider, gr.Number, gr.Textbox))]
    assert len(inputs) == 1 and isinstance(inputs[0], gr.Textbox) and inputs[0].value == ""
    markdown = " ".join(str(b.value) for b in demo.blocks.values() if isinstance(b, gr.Markdown))
    assert "Validation thresholds" in markdown and f"{names[0]} 1.00" in markdown

    text = app.predict(str(CARDIOMEGALY), None)[2]
    assert "their validation thresholds" in text
    assert [name for name, *_ in _listed(text)] == [names[1]]
    overridden = app.predict(str(CARDIOMEGALY), 0.0)[2]  # a number overrides them all
    assert len(_listed(overridden)) == len(names)
    assert _listed(app.predict(str(CARDIOMEGALY), " 0 ")[2]) == _listed(overridden)  # as typed in the box
    assert "threshold must be a number in [0, 1], got 'high'" in _call_error(app, CARDIOMEGALY, threshold="high")


def test_the_empty_threshold_box_stays_empty_in_chromium_and_uses_the_validation_thresholds(tmp_path):
    # Gradio's number box shows and sends 0 for an empty value: every label would be listed at 0.00.
    folder = _save_tiny_model(tmp_path / "tuned", seed=1)
    config = json.loads((folder / "config.json").read_text())
    config["label_thresholds"] = [0.999] * len(SYNTHETIC_LABELS)
    (folder / "config.json").write_text(json.dumps(config))
    box = ("[...document.querySelectorAll('label')].find(l => l.textContent.includes('Threshold for every label'))"
           "?.querySelector('input')")
    button = "[...document.querySelectorAll('button')].find(b => b.textContent.includes('synthetic PNG: cardiomegaly'))"
    (tmp_path / "server").mkdir()
    (tmp_path / "page").mkdir()
    with space_process(SPACE / "app.py", folder, tmp_path / "server") as info:
        wait_until_up(info)
        with DevToolsPipe(tmp_path / "page", (1280, 1300)) as browser:
            browser.open(info["url"])
            browser.wait_for(f"!!{button} && !!{box}", "the example button and the threshold box")
            shown = browser.evaluate(f"{box}.value")
            browser.evaluate(f"{button}.click()")
            browser.wait_for("/(No finding|Findings) at or above/.test(document.body.innerText)", "the answer")
            text = " ".join(str(browser.evaluate("document.body.innerText")).split())
    assert shown == ""
    assert "No finding at or above their validation thresholds." in text


def _write_bad_inputs(folder):
    notes = folder / "notes.dcm"
    notes.write_text("patient notes, not a DICOM file\n")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "ct.dcm")
    no_pixels = pydicom.dcmread(DICOM_EXAMPLE)
    del no_pixels.PixelData
    no_pixels.save_as(folder / "header_only.dcm")
    return {
        "notes.dcm": "'notes.dcm' is not a DICOM file",
        "empty.png": "'empty.png' is empty (0 bytes)",
        "notes.txt": "'notes.txt' is not a DICOM file",
        "ct.dcm": "Modality 'CT' is not in allowed_modalities",
        "header_only.dcm": "no PixelData",
    }


def test_bad_inputs_give_one_line_errors_without_server_paths(app, tmp_path):
    for name, reason in _write_bad_inputs(tmp_path).items():
        message = _call_error(app, tmp_path / name)
        assert reason in message, message
        assert "\n" not in message and str(tmp_path) not in message, message
    assert "No file" in _call_error(app, "")
    assert "threshold must be a number in [0, 1]" in _call_error(app, CARDIOMEGALY, threshold=1.5)


def test_files_over_the_cap_are_refused_before_decoding(app, tmp_path):
    big = tmp_path / "big.dcm"
    with open(big, "wb") as handle:  # sparse: no 21 MB written
        handle.truncate((app.MAX_UPLOAD_MB + 1) * 1024 * 1024)
    assert f"over the {app.MAX_UPLOAD_MB} MB limit" in _call_error(app, big)


def test_uploads_are_deleted_after_the_answer_but_examples_are_kept(app, tmp_path, monkeypatch):
    uploads = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    (uploads / "a1").mkdir(parents=True)
    fresh = _fresh_dicom(uploads / "a1" / "cxr.dcm")
    app.predict(str(fresh), 0.5)
    assert not fresh.exists() and not fresh.parent.exists()
    bad = uploads / "b2" / "notes.png"
    bad.parent.mkdir()
    bad.write_text("not an image")
    _call_error(app, bad)
    assert not bad.exists()  # deleted on errors too
    # gradio serves a clicked example from a copy in the same folder: that copy must survive
    example_copy = uploads / "c3" / CARDIOMEGALY.name
    example_copy.parent.mkdir()
    shutil.copy(CARDIOMEGALY, example_copy)
    app.predict(str(example_copy), 0.5)
    assert example_copy.exists()
    outside = _fresh_dicom(tmp_path / "outside.dcm")
    app.predict(str(outside), 0.5)
    assert outside.exists()


def test_model_source_order_and_the_missing_model_message(app, monkeypatch, tmp_path):
    check_model_source_order(app, monkeypatch, tmp_path, "lt-vit-demo")


def test_the_app_imports_nothing_from_hfmed():
    check_imports_nothing_from_hfmed(SPACE)


# --- the running app: HTTP API and page ---------------------------------------------------------------------


_server_process, server, client = space_server_fixtures(SPACE / "app.py")


def test_client_predict_on_a_png_and_a_dicom(client, model_dir):
    from gradio_client import handle_file

    for example in (CARDIOMEGALY, DICOM_EXAMPLE):
        label, overlays, text = client.predict(handle_file(str(example)), 0.5, api_name="/predict")
        confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
        expected = _reference(model_dir, example)[0]
        assert set(confidences) == set(expected)
        for name, p in expected.items():
            assert confidences[name] == pytest.approx(p, abs=1e-5), name
        assert label["label"] == max(expected, key=expected.get)
        assert [o["caption"] for o in overlays] == [
            f"{name}: p={expected[name]:.2f}" for name in sorted(expected, key=lambda n: -expected[n])
        ]
        assert all(Image.open(o["image"]).size == (128, 128) for o in overlays)
        assert {name for name, *_ in _listed(text)} == {n for n, p in expected.items() if p >= 0.5}


def test_predict_is_the_public_api_endpoint(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(endpoints) == ["/predict"]  # the example loader and the clear-on-upload events stay hidden
    assert [p["parameter_name"] for p in endpoints["/predict"]["parameters"]] == ["file_path", "threshold"]


def test_client_bad_files_raise_the_one_line_reason_and_uploads_are_gone(app, client, server, tmp_path):
    from gradio_client import handle_file

    _write_bad_inputs(tmp_path)
    for name in ("notes.txt", "ct.dcm"):
        with pytest.raises(Exception) as info:
            client.predict(handle_file(str(tmp_path / name)), 0.5, api_name="/predict")
        assert _call_error(app, tmp_path / name) in str(info.value)
    fresh = _fresh_dicom(tmp_path / "fresh_upload.dcm")
    client.predict(handle_file(str(fresh)), 0.5, api_name="/predict")
    leftovers = [p for p in server["uploads"].rglob("*") if p.name in {"notes.txt", "ct.dcm", fresh.name}]
    assert leftovers == []


def test_the_server_refuses_uploads_over_the_cap(app, server):
    too_big = b"\0" * ((app.MAX_UPLOAD_MB * 1024 + 1) * 1024)
    with httpx.Client(trust_env=False) as http:
        response = http.post(server["url"] + "gradio_api/upload", files={"files": ("big.dcm", too_big)})
    assert response.status_code == 413, response.text


def test_the_page_renders_in_headless_chromium(server, tmp_path):
    html, text, shot = render_page(server["url"], tmp_path, window=(1280, 1000))
    for visible in ("Research use only", "Chest X-ray: PNG, JPEG or DICOM", "Threshold", "Per-label probabilities",
                    "Label-token attention", "synthetic PNG: cardiomegaly", "synthetic DICOM: atelectasis"):
        assert visible in text, visible
    assert re.search(r'<input[^>]+type="file"', html) and re.search(r'<input[^>]+type="range"', html)

    with Image.open(shot) as image:
        assert image.size == (1280, 1000)
    assert distinct_colours(shot) > 16  # text, the orange button, borders: not a blank page


# --- Space metadata and bundled examples -------------------------------------------------------------------


def test_front_matter_matches_requirements():
    meta, pins, text = front_matter(SPACE)
    assert meta["sdk"] == "gradio" and str(meta["sdk_version"]) == pins["gradio"] == gr.__version__
    assert (SPACE / meta["app_file"]).is_file()
    assert meta["license"] == "apache-2.0" and meta["pinned"] is False
    assert meta["models"] == ["hfmed/lt-vit-demo"]
    assert {"medical", "chest-x-ray", "x-ray", "hfmed"} <= set(meta["tags"])
    assert meta["title"] and meta["emoji"] and meta["colorFrom"] and meta["colorTo"]
    assert "not for diagnosis" in text
    requirements = [line for line in (SPACE / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert not [line for line in requirements if line.startswith("hfmed")]  # not on PyPI, so not on the Hub
    for needed in ("torch", "transformers>=5,<6", "pydicom>=3", "numpy", "pillow", "safetensors"):
        assert needed in requirements, needed


def test_bundled_examples_match_the_generator_and_their_names(tmp_path):
    # Pixels are not compared: the synthetic drawing may evolve; the committed files were drawn once, with the
    # labels their names spell.
    make_examples = import_app("lt_vit_make_examples", SPACE / "make_examples.py")
    written = make_examples.write_examples(tmp_path)
    bundled = sorted(p.name for p in EXAMPLES.iterdir())
    assert sorted(p.name for p in written) == bundled and len(bundled) == 4
    assert sum(p.stat().st_size for p in EXAMPLES.iterdir()) < 200_000
    for findings, fmt in make_examples.EXAMPLES:
        labels = make_examples.labels_from_name(make_examples.example_name(findings, fmt))
        assert {k for k, v in labels.items() if v} == set(findings)
    assert make_examples.labels_from_name("synthetic_no_finding.png") == dict.fromkeys(SYNTHETIC_LABELS.values(), 0)
    for name in bundled:
        path = EXAMPLES / name
        if path.suffix == ".dcm":
            dataset = pydicom.dcmread(path)
            assert (dataset.Modality, dataset.PhotometricInterpretation) == ("DX", "MONOCHROME2")
            assert dataset.PatientID and dataset.pixel_array.dtype == np.uint16
            assert dataset.pixel_array.shape == (128, 128)
        else:
            with Image.open(path) as image:
                assert image.mode == "L" and image.size == (128, 128)
