"""The Slice-CNN Space (spaces/slice_cnn): `predict`, the HTTP API (gradio_client), the page."""

import gzip
import io
import json
import os
import re
import shutil

import gradio as gr
import httpx
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from hfmed.hub import save_for_hub
from hfmed.models.slice_cnn import SliceCNNForVolumePrediction, SliceCNNImageProcessor, slice_cnn_config
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

SPACE = REPO / "spaces" / "slice_cnn"
EXAMPLES = SPACE / "examples"
YOUNG_CN = EXAMPLES / "synthetic_cn_age52.nii.gz"
AD_LPS = EXAMPLES / "synthetic_ad_age76_lps.nii.gz"
SCREENSHOT = REPO / "docs" / "space-slice-cnn.png"
# The tiny preset's 16x20x16 grid holds the examples' 192x224x192 mm field of view at 12 mm.
VOLUME_SHAPE = [16, 20, 16]
SPACING = [12.0, 12.0, 12.0]


def _save_tiny_model(folder, seed=0, **overrides):
    torch.manual_seed(seed)
    config = slice_cnn_config("slice-cnn-tiny", volume_shape=VOLUME_SHAPE, **overrides)
    model = SliceCNNForVolumePrediction(config).eval()
    save_for_hub(model, SliceCNNImageProcessor(target_shape=VOLUME_SHAPE, target_spacing=SPACING), folder)
    return folder


def _reference(folder, path):
    """Output, slice weights and processed volume computed with hfmed's own classes, apart from the app."""
    model = SliceCNNForVolumePrediction.from_pretrained(folder).eval()
    processor = SliceCNNImageProcessor.from_pretrained(folder)
    pixel_values = processor(str(path), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values)
    weights = None if outputs.slice_weights is None else outputs.slice_weights[0].numpy()
    return float(outputs.logits[0, 0]), weights, pixel_values[0].numpy(), processor


def _expected_slices(processor, volume):
    """The three middle slices as 8-bit grey, windowed at the volume's 0.5 / 99.5 percentiles."""
    low, high = np.percentile(volume, (0.5, 99.5))
    return [
        np.rint(np.clip((view - low) / (high - low), 0.0, 1.0) * 255.0).astype(np.uint8)
        for view in processor.orthogonal_slices(volume)
    ]


def _voxels_of(picture, grid_shape):
    """Samples a nearest-neighbour enlarged picture at the centre of every voxel block."""
    pixels = np.asarray(picture)
    rows, cols = grid_shape
    r = ((np.arange(rows) + 0.5) * pixels.shape[0] / rows).astype(int)
    c = ((np.arange(cols) + 0.5) * pixels.shape[1] / cols).astype(int)
    return pixels[np.ix_(r, c)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """Brain age (regression) with attention pooling: the model the server runs."""
    return _save_tiny_model(tmp_path_factory.mktemp("space") / "model", aggregation="attention",
                            regression_target_mean=65.0)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """AD vs control with mean pooling (no slice weights)."""
    return _save_tiny_model(tmp_path_factory.mktemp("classifier") / "model", seed=1, task="classification",
                            aggregation="mean")


@pytest.fixture(scope="module")
def app(model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HFMED_MODEL", str(model_dir))
        yield import_app("slice_cnn_space_app", SPACE / "app.py")


def _call_error(app, path, threshold=None):
    with pytest.raises(gr.Error) as info:
        app.predict(str(path), threshold)
    return info.value.message


# --- predict, in process -----------------------------------------------------------------------------------


@pytest.mark.parametrize("example", [YOUNG_CN, AD_LPS], ids=["ras", "lps"])
def test_predict_brain_age_slices_and_slice_weights_match_the_model(app, model_dir, example):
    views, answer, frame, note = app.predict(str(example), None)
    age, weights, volume, processor = _reference(model_dir, example)
    assert volume.shape == tuple(VOLUME_SHAPE)
    assert f"**Predicted brain age: {age:.1f} years**" in answer
    truth = app.example_truth(example.name)
    assert f"known age is {truth['age']} years and its diagnosis {truth['diagnosis']}" in answer
    assert "not for diagnosis" in answer

    # three orthogonal slices of the processed volume, in the processor's display orientation
    captions = [caption for _, caption in views]
    assert captions == ["Sagittal x=8/16: S↑ A→", "Coronal y=10/20: S↑ R→", "Axial z=8/16: A↑ R→"]
    for (picture, _), expected in zip(views, _expected_slices(processor, volume), strict=True):
        assert picture.mode == "L" and max(picture.size) == app.DISPLAY_SIDE
        rows, cols = expected.shape  # isotropic voxels: the picture keeps the grid's proportions
        assert picture.size == pytest.approx((cols * app.DISPLAY_SIDE / max(rows, cols),
                                              rows * app.DISPLAY_SIDE / max(rows, cols)), abs=1)
        assert np.array_equal(_voxels_of(picture, expected.shape), expected)

    # the attention weight of every sagittal slice, and the uniform line
    assert weights.shape == (16,) and weights.sum() == pytest.approx(1.0, abs=1e-5)
    attention = frame[frame["series"] == "attention weight"]
    uniform = frame[frame["series"] == "uniform (1/N)"]
    assert attention["slice"].tolist() == list(range(16))
    np.testing.assert_allclose(attention["weight"].to_numpy(), weights, atol=1e-6)
    np.testing.assert_allclose(uniform["weight"].to_numpy(), 1 / 16)
    peak = int(np.argmax(weights))
    assert f"Attention peaks at sagittal slice {peak} (weight {weights[peak]:.3f}" in answer
    assert "attention pooling's weight of each of the 16 sagittal slices" in note
    assert example.exists()  # files outside gradio's upload folder are never deleted


def test_a_classifier_gives_the_probability_and_the_call_and_says_it_has_no_slice_weights(
    app, classifier_dir, monkeypatch
):
    monkeypatch.setenv("HFMED_MODEL", str(classifier_dir))
    logit, weights, _, _ = _reference(classifier_dir, AD_LPS)
    assert weights is None
    p = float(torch.sigmoid(torch.tensor(logit)))
    for threshold, called in ((p - 1e-4, True), (p, True), (p + 1e-4, False)):
        views, answer, frame, note = app.predict(str(AD_LPS), threshold)
        shown_p, shown_t = re.search(r"P\(AD\) = ([\d.]+) [<>]=? ([\d.]+)", answer).groups()
        assert answer.startswith("**AD suspected**" if called else "**No AD call**"), answer
        assert (float(shown_p) >= float(shown_t)) is called  # enough decimals that the numbers agree
        assert float(shown_p) == pytest.approx(p, abs=10 ** -len(shown_p.split(".")[1]))
        assert frame is None and len(views) == 3
        assert "No slice weights" in note and "by `mean`" in note and "1/16" in note
    assert "P(AD) = " in app.predict(str(AD_LPS), None)[1]  # None: the default threshold, 0.5
    assert ("suspected" in app.predict(str(AD_LPS), None)[1]) is (p >= 0.5)
    assert "brain age" not in app.predict(str(AD_LPS), 0.5)[1]


def test_the_page_follows_the_task_and_the_pooling(app, classifier_dir, monkeypatch, tmp_path):
    def widgets(demo):
        blocks = list(demo.blocks.values())
        sliders = [b for b in blocks if isinstance(b, gr.Slider)]
        plots = [b for b in blocks if isinstance(b, gr.LinePlot)]
        buttons = [b.value for b in blocks if isinstance(b, gr.Button)]
        markdown = " ".join(str(b.value) for b in blocks if isinstance(b, gr.Markdown))
        assert len(sliders) == 1 and len(plots) == 1
        return sliders[0], plots[0], buttons, markdown

    slider, plot, buttons, markdown = widgets(app.build_demo())  # regression + attention
    assert slider.visible is False and plot.visible is True and "Estimate brain age" in buttons
    assert "regression: age" in markdown and "pooled by `attention`" in markdown

    monkeypatch.setenv("HFMED_MODEL", str(classifier_dir))
    slider, plot, buttons, markdown = widgets(app.build_demo())  # classification + mean
    assert slider.visible is True and slider.value == 0.5 and plot.visible is False and "Classify" in buttons
    assert "No slice weights" in markdown and "no validation threshold" in markdown

    # a validation threshold in the config: the slider and the default call start there
    tuned = tmp_path / "tuned"
    shutil.copytree(classifier_dir, tuned)
    config = json.loads((tuned / "config.json").read_text())
    config["label_thresholds"] = [0.37]
    (tuned / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("HFMED_MODEL", str(tuned))
    slider, _, _, markdown = widgets(app.build_demo())
    assert slider.value == pytest.approx(0.37) and "Validation threshold 0.37" in markdown
    logit = _reference(tuned, YOUNG_CN)[0]
    p = float(torch.sigmoid(torch.tensor(logit)))
    assert re.search(r"[<>]=? 0\.37\)", app.predict(str(YOUNG_CN), None)[1])
    assert ("suspected" in app.predict(str(YOUNG_CN), None)[1]) is (p >= 0.37)


def test_pooling_notes_and_slice_positions_follow_the_config(app):
    config = slice_cnn_config("slice-cnn-tiny", aggregation="max", slice_axis=3, in_channels=3)
    note = app.pooling_note(config)  # 16 axial slices, 3 stacked per input: 14 slice inputs
    assert "No slice weights" in note and "14 axial slice embeddings by `max`" in note
    attention = slice_cnn_config("slice-cnn-tiny", aggregation="attention", slice_axis=2)
    assert "each of the 20 coronal slices" in app.pooling_note(attention)
    frame = app.slice_weight_frame(np.full(14, 1 / 14), config)  # input i: slices i .. i + 2, centre i + 1
    assert frame[frame["series"] == "attention weight"]["slice"].tolist() == [i + 1.0 for i in range(14)]


def _nifti_bytes(volume, affine=None):
    return nib.Nifti1Image(volume, np.diag([4.0, 4.0, 4.0, 1.0]) if affine is None else affine).to_bytes()


def _write_bad_inputs(folder):
    rng = np.random.default_rng(0)
    (folder / "notes.txt").write_text("patient notes, not a volume\n")
    (folder / "notes.nii.gz").write_bytes(gzip.compress(b"not a NIfTI file either\n"))
    (folder / "empty.nii").write_bytes(b"")
    (folder / "fmri.nii.gz").write_bytes(gzip.compress(_nifti_bytes(rng.random((8, 8, 8, 3), np.float32))))
    nan = rng.random((8, 8, 8), np.float32)
    nan[2, 3, 4] = np.nan
    (folder / "nan.nii").write_bytes(_nifti_bytes(nan))
    raw = _nifti_bytes(rng.random((8, 8, 8), np.float32), np.eye(4))
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))  # nibabel refuses to write a singular affine
    header.set_sform(np.diag([4.0, 4.0, 0.0, 1.0]), code=2)
    header["qform_code"] = 0
    (folder / "singular.nii").write_bytes(header.binaryblock + raw[348:])
    (folder / "slice.nii.gz").write_bytes(gzip.compress(_nifti_bytes(rng.random((8, 8), np.float32))))
    return {
        "notes.txt": "'notes.txt' is not a NIfTI file",
        "notes.nii.gz": "'notes.nii.gz' is not a NIfTI file",
        "empty.nii": "'empty.nii' is empty (0 bytes)",
        "fmri.nii.gz": "'fmri.nii.gz' is 4-D with shape (8, 8, 8, 3)",
        "nan.nii": "'nan.nii' contains 1 NaN/inf voxel(s)",
        "singular.nii": "affine of 'singular.nii' is singular",
        "slice.nii.gz": "'slice.nii.gz' has shape (8, 8), 2-D",
    }


def test_bad_inputs_give_one_line_errors_without_server_paths(app, classifier_dir, monkeypatch, tmp_path):
    for name, reason in _write_bad_inputs(tmp_path).items():
        message = _call_error(app, tmp_path / name)
        assert reason in message, message
        assert "\n" not in message and str(tmp_path) not in message, message
    assert "No file" in _call_error(app, "")
    assert "no longer on the server" in _call_error(app, tmp_path / "gone.nii.gz")
    monkeypatch.setenv("HFMED_MODEL", str(classifier_dir))
    assert "threshold must be a number in [0, 1]" in _call_error(app, YOUNG_CN, threshold=1.5)
    assert "threshold must be a number in [0, 1]" in _call_error(app, YOUNG_CN, threshold="half")


def test_a_model_that_does_not_fit_the_processor_says_so(app, tmp_path, monkeypatch):
    folder = _save_tiny_model(tmp_path / "model")
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    processor["target_shape"] = [16, 18, 16]
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    monkeypatch.setenv("HFMED_MODEL", str(folder))
    message = _call_error(app, YOUNG_CN)
    assert message.startswith("the model failed on synthetic_cn_age52.nii.gz") and "volume_shape" in message


def test_files_over_the_cap_are_refused_before_decoding(app, tmp_path):
    big = tmp_path / "big.nii"
    with open(big, "wb") as handle:  # sparse: nothing written
        handle.truncate((app.MAX_UPLOAD_MB + 1) * 1024 * 1024)
    assert f"over the {app.MAX_UPLOAD_MB} MB limit" in _call_error(app, big)


def _fresh_volume(path, seed=7):
    """A small NIfTI whose bytes differ from every bundled example."""
    volume = np.random.default_rng(seed).normal(500.0, 100.0, size=(24, 28, 24)).astype(np.float32)
    path.write_bytes(gzip.compress(_nifti_bytes(volume, np.diag([8.0, 8.0, 8.0, 1.0]))))
    return path


def test_uploads_are_deleted_after_the_answer_but_examples_are_kept(app, tmp_path, monkeypatch):
    uploads = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    (uploads / "a1").mkdir(parents=True)
    fresh = _fresh_volume(uploads / "a1" / "t1.nii.gz")
    answer = app.predict(str(fresh), None)[1]
    assert "Predicted brain age" in answer and "bundled synthetic example" not in answer
    assert not fresh.exists() and not fresh.parent.exists()
    bad = uploads / "b2" / "notes.nii"
    bad.parent.mkdir()
    bad.write_text("not a volume")
    _call_error(app, bad)
    assert not bad.exists()  # deleted on errors too
    big = uploads / "c3" / "big.nii"
    big.parent.mkdir()
    with open(big, "wb") as handle:
        handle.truncate((app.MAX_UPLOAD_MB + 1) * 1024 * 1024)
    _call_error(app, big)
    assert not big.exists()
    # gradio serves a clicked example from a copy in the same folder: that copy must survive, and is known
    example_copy = uploads / "d4" / YOUNG_CN.name
    example_copy.parent.mkdir()
    shutil.copy(YOUNG_CN, example_copy)
    assert "known age is 52 years" in app.predict(str(example_copy), None)[1]
    assert example_copy.exists()
    # a user's file that only borrows an example's name is not taken for the example
    (uploads / "e5").mkdir()
    impostor = _fresh_volume(uploads / "e5" / YOUNG_CN.name)
    assert "bundled synthetic example" not in app.predict(str(impostor), None)[1]
    outside = _fresh_volume(tmp_path / "outside.nii.gz")
    app.predict(str(outside), None)
    assert outside.exists()


def test_model_source_order_and_the_missing_model_message(app, monkeypatch, tmp_path):
    check_model_source_order(app, monkeypatch, tmp_path, "slice-cnn-demo")


def test_the_app_imports_nothing_from_hfmed():
    check_imports_nothing_from_hfmed(SPACE)


# --- the running app: HTTP API and page ---------------------------------------------------------------------


_server_process, server, client = space_server_fixtures(SPACE / "app.py")


def test_client_predict_on_the_examples(client, model_dir):
    from gradio_client import handle_file

    for example in (YOUNG_CN, AD_LPS):
        # threshold omitted: the slider's start value (a regression model ignores it)
        views, answer, plot, note = client.predict(handle_file(str(example)), api_name="/predict")
        age, weights, volume, processor = _reference(model_dir, example)
        assert f"Predicted brain age: {age:.1f} years" in answer
        assert [v["caption"].split()[0] for v in views] == ["Sagittal", "Coronal", "Axial"]
        for view, expected in zip(views, _expected_slices(processor, volume), strict=True):
            with Image.open(view["image"]) as picture:
                assert np.array_equal(_voxels_of(picture.convert("L"), expected.shape), expected)
        rows = [dict(zip(plot["columns"], row, strict=True)) for row in plot["data"]]
        shown = [row["weight"] for row in rows if row["series"] == "attention weight"]
        np.testing.assert_allclose(shown, weights, atol=1e-6)
        assert "sagittal slices" in note


def test_predict_is_the_public_api_endpoint(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(endpoints) == ["/predict"]  # the example loader and the clear-on-upload events stay hidden
    assert [p["parameter_name"] for p in endpoints["/predict"]["parameters"]] == ["file_path", "threshold"]


def test_client_bad_files_raise_the_one_line_reason_and_uploads_are_gone(app, client, server, tmp_path):
    from gradio_client import handle_file

    _write_bad_inputs(tmp_path)
    for name in ("notes.txt", "fmri.nii.gz", "nan.nii"):
        with pytest.raises(Exception) as info:
            client.predict(handle_file(str(tmp_path / name)), 0.5, api_name="/predict")
        assert _call_error(app, tmp_path / name) in str(info.value)
    fresh = _fresh_volume(tmp_path / "fresh_upload.nii.gz")
    client.predict(handle_file(str(fresh)), 0.5, api_name="/predict")
    names = {"notes.txt", "fmri.nii.gz", "nan.nii", fresh.name}
    assert [p for p in server["uploads"].rglob("*") if p.name in names] == []


def test_the_server_refuses_uploads_over_the_cap(app, server):
    too_big = b"\0" * ((app.MAX_UPLOAD_MB * 1024 + 1) * 1024)
    with httpx.Client(trust_env=False) as http:
        response = http.post(server["url"] + "gradio_api/upload", files={"files": ("big.nii", too_big)})
    assert response.status_code == 413, response.text


def test_the_page_renders_in_headless_chromium(server, tmp_path):
    html, text, shot = render_page(server["url"], tmp_path, window=(1280, 1100))
    for visible in ("Research use only", "Brain MRI volume: NIfTI", "Estimate brain age",
                    "What the model sees", "Slice weights along the sagittal axis", "synthetic T1: CN, 52 y",
                    "synthetic T1: AD, 76 y (stored LPS)"):
        assert visible in text, visible
    assert re.search(r'<input[^>]+type="file"', html)
    assert not re.search(r'<input[^>]+type="range"', html)  # a regression model has no threshold slider

    with Image.open(shot) as image:
        assert image.size == (1280, 1100)
    assert distinct_colours(shot) > 16  # text, the orange button, borders: not a blank page
    if os.environ.get("HFMED_UPDATE_SCREENSHOTS"):
        shutil.copy(shot, SCREENSHOT)


# --- Space metadata and bundled examples -------------------------------------------------------------------


def test_front_matter_matches_requirements():
    meta, pins, text = front_matter(SPACE)
    assert meta["sdk"] == "gradio" and str(meta["sdk_version"]) == pins["gradio"] == gr.__version__
    assert (SPACE / meta["app_file"]).is_file()
    assert meta["license"] == "apache-2.0" and meta["pinned"] is False
    assert meta["models"] == ["hfmed/slice-cnn-demo"]
    assert {"medical", "mri", "brain", "hfmed"} <= set(meta["tags"])
    assert meta["title"] and meta["emoji"] and meta["colorFrom"] and meta["colorTo"]
    assert "not for diagnosis" in text
    requirements = [line for line in (SPACE / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert not [line for line in requirements if line.startswith("hfmed")]  # not on PyPI, so not on the Hub
    for needed in ("torch", "transformers>=5,<6", "nibabel>=5", "numpy", "pandas", "pillow", "safetensors"):
        assert needed in requirements, needed


def test_bundled_examples_match_the_generator_and_their_names(app, tmp_path):
    # Voxels are not compared: the synthetic drawing may evolve; the committed files were drawn once, with the
    # age and diagnosis their names spell.
    make_examples = import_app("slice_cnn_make_examples", SPACE / "make_examples.py")
    bundled = sorted(p.name for p in EXAMPLES.iterdir())
    names = [make_examples.example_name(*example) for example in make_examples.EXAMPLES]
    assert sorted(names) == bundled and [p.name for p in app.example_files()] == bundled
    assert sum(p.stat().st_size for p in EXAMPLES.iterdir()) < 600_000
    written = make_examples.write_example(tmp_path, 0)  # one is enough to check the generator runs
    assert written.name == names[0]
    assert nib.load(written).header.get_data_shape() == nib.load(EXAMPLES / names[0]).header.get_data_shape()
    for (age, diagnosis, orientation), name in zip(make_examples.EXAMPLES, names, strict=True):
        truth = {"age": age, "diagnosis": diagnosis, "orientation": orientation}
        assert make_examples.truth_from_name(name) == truth == app.example_truth(name)
        image = nib.load(EXAMPLES / name)
        assert image.shape == make_examples.SHAPE and image.get_data_dtype() == np.int16
        assert "".join(nib.aff2axcodes(image.affine)) == orientation
        assert np.allclose(image.header.get_zooms(), make_examples.SPACING)
        assert int(image.header["sform_code"]) == int(image.header["qform_code"]) == 1
        assert (EXAMPLES / name).read_bytes()[:2] == b"\x1f\x8b"
    assert app.example_label(AD_LPS) == "synthetic T1: AD, 76 y (stored LPS)"
    assert app.example_truth("my_scan.nii.gz") is None
