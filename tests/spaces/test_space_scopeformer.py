"""The Scopeformer Space (spaces/scopeformer): `predict`, the HTTP API (gradio_client), the page."""

import json
import re
import shutil
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from hfmed import ScopeformerForImageClassification, ScopeformerImageProcessor, scopeformer_config
from hfmed.hub import save_for_hub
from tests.space_harness import (
    REPO,
    check_imports_nothing_from_hfmed,
    check_model_source_order,
    distinct_colours,
    front_matter,
    import_app,
    render_page,
    space_server_fixtures,
)

SPACE = REPO / "spaces" / "scopeformer"
EXAMPLES = SPACE / "examples"
SUBDURAL = EXAMPLES / "synthetic_subdural.dcm"
PNG_EXAMPLE = EXAMPLES / "synthetic_intraventricular_subarachnoid.png"
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))


def _save_tiny_model(folder, seed=0):
    torch.manual_seed(seed)
    model = ScopeformerForImageClassification(scopeformer_config("scopeformer-tiny")).eval()
    save_for_hub(model, ScopeformerImageProcessor(size={"height": 32, "width": 32}), folder)
    return folder


def _reference(folder, path):
    """Per-label sigmoid probabilities computed with hfmed's own classes, independently of the app."""
    model = ScopeformerForImageClassification.from_pretrained(folder).eval()
    processor = ScopeformerImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**processor(str(path), return_tensors="pt")).logits[0]
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return dict(zip(labels, torch.sigmoid(logits).tolist(), strict=True))


def _fresh_dicom(path, patient_id="FRESH-UPLOAD"):
    """A real CT slice whose bytes differ from every bundled example."""
    dataset = pydicom.dcmread(CT_SMALL)
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
        yield import_app("scopeformer_space_app", SPACE / "app.py")


def _call_error(app, path, threshold=0.5):
    with pytest.raises(gr.Error) as info:
        app.predict(str(path), threshold)
    return info.value.message


# --- predict, in process -----------------------------------------------------------------------------------


@pytest.mark.parametrize("example", [SUBDURAL, PNG_EXAMPLE, CT_SMALL], ids=["dicom", "png", "ct_small"])
def test_predict_returns_the_models_probabilities_and_the_windows(app, model_dir, example):
    windows, probabilities, call = app.predict(str(example), 0.5)
    expected = _reference(model_dir, example)
    assert list(probabilities) == list(expected)  # all six labels, in the config's order
    for label, p in expected.items():
        assert probabilities[label] == pytest.approx(p, abs=1e-5), label
    # the three windows the model sees, at native size, labelled with the window names in order
    processor = ScopeformerImageProcessor()
    native = processor.window(str(example))[0]
    assert [caption.split(" ")[0] for _, caption in windows] == processor.window_names
    for (image, _), channel in zip(windows, native, strict=True):
        assert np.array_equal(np.asarray(image), np.rint(channel * 255).astype(np.uint8))
    assert "any = " in call and "not for diagnosis" in call
    assert example.exists()  # files outside gradio's upload folder are never deleted


def test_call_text_follows_the_threshold(app, model_dir):
    p = _reference(model_dir, SUBDURAL)["any"]
    for threshold, suspected in ((p - 1e-4, True), (p, True), (p + 1e-4, False)):
        call = app.predict(str(SUBDURAL), threshold)[2]
        assert ("Hemorrhage suspected" in call) is suspected
        assert ("No hemorrhage call" in call) is not suspected
        shown_p, sign, shown_t = re.search(r"any = ([\d.]+) (>=|<) ([\d.]+)", call).groups()
        # enough decimals that the printed numbers agree with the call
        assert sign == (">=" if suspected else "<")
        assert (float(shown_p) >= float(shown_t)) is suspected
        assert float(shown_p) == pytest.approx(p, abs=10 ** -(len(shown_p.split(".")[1])))


def _write_bad_inputs(folder):
    notes = folder / "notes.dcm"
    notes.write_text("patient notes, not a DICOM file\n")
    empty = folder / "empty.dcm"
    empty.write_bytes(b"")
    mr = folder / "mr.dcm"
    shutil.copy(get_testdata_file("MR_small.dcm"), mr)
    no_pixels = pydicom.dcmread(CT_SMALL)
    del no_pixels.PixelData
    no_pixels.save_as(folder / "header_only.dcm")
    Image.new("RGBA", (8, 8)).save(folder / "rgba.png")
    return {
        "notes.dcm": "'notes.dcm' is not a DICOM file",
        "empty.dcm": "is empty (0 bytes)",
        "mr.dcm": "Modality 'MR' is not in allowed_modalities",
        "header_only.dcm": "no PixelData",
        "rgba.png": "mode 'RGBA'",
    }


def test_bad_inputs_give_one_line_errors_without_server_paths(app, tmp_path):
    for name, reason in _write_bad_inputs(tmp_path).items():
        message = _call_error(app, tmp_path / name)
        assert reason in message, message
        assert "\n" not in message and str(tmp_path) not in message, message
    assert "No file" in _call_error(app, "")
    assert "threshold must be a number in [0, 1]" in _call_error(app, SUBDURAL, threshold=1.5)


def test_files_over_the_cap_are_refused_before_decoding(app, tmp_path):
    big = tmp_path / "big.dcm"
    with open(big, "wb") as handle:  # sparse: no 21 MB written
        handle.truncate((app.MAX_UPLOAD_MB + 1) * 1024 * 1024)
    assert f"over the {app.MAX_UPLOAD_MB} MB limit" in _call_error(app, big)


def test_uploads_are_deleted_after_the_answer_but_examples_are_kept(app, tmp_path, monkeypatch):
    uploads = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    (uploads / "a1").mkdir(parents=True)
    fresh = _fresh_dicom(uploads / "a1" / "scan.dcm")
    app.predict(str(fresh), 0.5)
    assert not fresh.exists() and not fresh.parent.exists()
    bad = uploads / "b2" / "notes.dcm"
    bad.parent.mkdir()
    bad.write_text("not a slice")
    _call_error(app, bad)
    assert not bad.exists()  # deleted on errors too
    # gradio serves a clicked example from a copy in the same folder: that copy must survive
    example_copy = uploads / "c3" / SUBDURAL.name
    example_copy.parent.mkdir()
    shutil.copy(SUBDURAL, example_copy)
    app.predict(str(example_copy), 0.5)
    assert example_copy.exists()
    outside = _fresh_dicom(tmp_path / "outside.dcm")
    app.predict(str(outside), 0.5)
    assert outside.exists()


def test_model_source_order_and_the_missing_model_message(app, monkeypatch, tmp_path):
    check_model_source_order(app, monkeypatch, tmp_path, "make demo")


def test_the_app_imports_nothing_from_hfmed():
    check_imports_nothing_from_hfmed(SPACE)


def test_validation_thresholds_set_the_slider_and_are_shown(app, monkeypatch, tmp_path):
    folder = _save_tiny_model(tmp_path / "tuned", seed=1)
    p = _reference(folder, SUBDURAL)
    thresholds = {name: 0.99 for name in p}
    # `any` above its probability (no call by default), epidural below its own, subdural above its own
    thresholds.update(any=round(p["any"] + 0.05, 4), epidural=p["epidural"] - 0.01)
    thresholds.update(subdural=p["subdural"] + 0.01)
    config = json.loads((folder / "config.json").read_text())
    config["label_thresholds"] = [thresholds[config["id2label"][str(i)]] for i in range(len(p))]
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("HFMED_MODEL", str(folder))

    demo = app.build_demo()
    sliders = [block for block in demo.blocks.values() if isinstance(block, gr.Slider)]
    assert [s.value for s in sliders] == [pytest.approx(thresholds["any"])]
    markdown = " ".join(str(b.value) for b in demo.blocks.values() if isinstance(b, gr.Markdown))
    assert "Validation thresholds" in markdown and f"any {thresholds['any']:.2f}" in markdown

    call = app.predict(str(SUBDURAL), None)[2]  # no threshold given: the validation one of `any`
    assert "No hemorrhage call" in call
    above = call.split("validation thresholds:")[1].split("\n")[0]
    assert "epidural (" in above and "subdural" not in above


# --- the running app: HTTP API and page ---------------------------------------------------------------------


_server_process, server, client = space_server_fixtures(SPACE / "app.py")


def test_client_predict_on_a_dicom_and_a_png(client, model_dir):
    from gradio_client import handle_file

    for example in (SUBDURAL, PNG_EXAMPLE):
        windows, label, call = client.predict(handle_file(str(example)), 0.5, api_name="/predict")
        confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
        expected = _reference(model_dir, example)
        assert set(confidences) == set(expected)
        for name, p in expected.items():
            assert confidences[name] == pytest.approx(p, abs=1e-5), name
        assert label["label"] == max(expected, key=expected.get)
        assert [w["caption"].split(" ")[0] for w in windows] == ["brain", "subdural", "bone"]
        assert all(Image.open(w["image"]).size == (64, 64) for w in windows)
        assert ("Hemorrhage suspected" in call) is (expected["any"] >= 0.5)


def test_predict_is_the_public_api_endpoint(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(endpoints) == ["/predict"]  # the example loader and the clear-on-upload events stay hidden
    assert [p["parameter_name"] for p in endpoints["/predict"]["parameters"]] == ["file_path", "threshold"]


def test_client_bad_files_raise_the_one_line_reason_and_uploads_are_gone(app, client, server, tmp_path):
    from gradio_client import handle_file

    _write_bad_inputs(tmp_path)
    for name in ("notes.dcm", "empty.dcm"):
        with pytest.raises(Exception) as info:
            client.predict(handle_file(str(tmp_path / name)), 0.5, api_name="/predict")
        assert _call_error(app, tmp_path / name) in str(info.value)
    fresh = _fresh_dicom(tmp_path / "fresh_upload.dcm")
    client.predict(handle_file(str(fresh)), 0.5, api_name="/predict")
    leftovers = [p for p in server["uploads"].rglob("*") if p.name in {"notes.dcm", "empty.dcm", fresh.name}]
    assert leftovers == []
    # the clicked-example copies gradio made at start are still there
    assert any(p.name == SUBDURAL.name for p in server["uploads"].rglob("*.dcm"))


def test_the_server_refuses_uploads_over_the_cap(app, server):
    too_big = b"\0" * ((app.MAX_UPLOAD_MB * 1024 + 1) * 1024)
    with httpx.Client(trust_env=False) as http:
        response = http.post(server["url"] + "gradio_api/upload", files={"files": ("big.dcm", too_big)})
    assert response.status_code == 413, response.text


def test_the_page_renders_in_headless_chromium(server, tmp_path):
    html, text, shot = render_page(server["url"], tmp_path, window=(1280, 1600))
    for visible in ("Research use only", "CT slice: DICOM", "Hemorrhage threshold", "Per-label probabilities",
                    "Hounsfield windows", "synthetic DICOM: subdural"):
        assert visible in text, visible
    assert re.search(r'<input[^>]+type="file"', html) and re.search(r'<input[^>]+type="range"', html)

    with Image.open(shot) as image:
        assert image.size == (1280, 1600)
    assert distinct_colours(shot) > 16  # text, the orange button, borders: not a blank page


# --- Space metadata and bundled examples -------------------------------------------------------------------


def test_front_matter_matches_requirements():
    meta, pins, text = front_matter(SPACE)
    assert meta["sdk"] == "gradio" and str(meta["sdk_version"]) == pins["gradio"]
    assert (SPACE / meta["app_file"]).is_file()
    assert meta["models"] == ["hfmed/scopeformer-efficient-demo"]
    assert {"medical", "ct", "hemorrhage", "hfmed"} <= set(meta["tags"])
    assert "not for diagnosis" in text
    requirements = [line for line in (SPACE / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert not [line for line in requirements if line.startswith("hfmed")]  # not on PyPI, so not on the Hub


def test_bundled_examples_match_the_generator_and_their_names(tmp_path):
    # Pixels are not compared: the synthetic drawing may evolve; the committed files were drawn once, with the
    # labels their names spell.
    make_examples = import_app("scopeformer_make_examples", SPACE / "make_examples.py")
    written = make_examples.write_examples(tmp_path)
    bundled = sorted(p.name for p in EXAMPLES.iterdir())
    assert sorted(p.name for p in written) == bundled and len(bundled) == 4
    assert sum(p.stat().st_size for p in EXAMPLES.iterdir()) < 200_000
    names = {make_examples.example_name(subtypes, fmt) for subtypes, fmt in make_examples.EXAMPLES}
    assert names == set(bundled)
    for subtypes, fmt in make_examples.EXAMPLES:
        labels = make_examples.labels_from_name(make_examples.example_name(subtypes, fmt))
        assert {k for k, v in labels.items() if v and k != "any"} == set(subtypes)
        assert labels["any"] == int(bool(subtypes))
    for name in bundled:
        path = EXAMPLES / name
        if path.suffix == ".dcm":
            dataset = pydicom.dcmread(path)
            assert dataset.Modality == "CT" and dataset.PatientID and dataset.pixel_array.dtype == np.int16
            tags = (dataset.RescaleSlope, dataset.RescaleIntercept, dataset.pixel_array.shape)
            assert tags == (1, -1024, (64, 64))
            hu = dataset.pixel_array.astype(np.float32) - 1024
            assert hu.min() < -900 and hu.max() > 700  # air around a skull: a head slice, not noise
        else:
            with Image.open(path) as image:
                assert image.mode == "RGB" and image.size == (64, 64)
