"""The DIAMANT Space (spaces/diamant): `predict`, the HTTP API (gradio_client), the page."""

import re
import shutil
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pydicom.data import get_testdata_file

from hfmed.hub import save_for_hub
from hfmed.models.diamant import DIAMANTForSemanticSegmentation, DIAMANTImageProcessor, diamant_config
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

SPACE = REPO / "spaces" / "diamant"
EXAMPLES = SPACE / "examples"
EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.iterdir())
PNG_EXAMPLE = next(EXAMPLES / name for name in EXAMPLE_NAMES if name.endswith(".png"))
JPEG_EXAMPLE = next(EXAMPLES / name for name in EXAMPLE_NAMES if name.endswith(".jpg"))
DICOM_EXAMPLE = next(EXAMPLES / name for name in EXAMPLE_NAMES if name.endswith(".dcm"))
VIRIDIS_ENDS = ((68, 1, 84), (253, 231, 37))


def _save_tiny_model(folder, seed=0, **overrides):
    """A random-init diamant-tiny model whose foreground bias is shifted so that, at 0.5, about half of the
    PNG example's pixels are foreground (a random model segments nothing or everything: a weak test)."""
    torch.manual_seed(seed)
    model = DIAMANTForSemanticSegmentation(diamant_config("diamant-tiny", **overrides)).eval()
    config = model.config
    processor = DIAMANTImageProcessor(
        size={"height": config.image_size, "width": config.image_size}, size_divisor=config.size_multiple
    )
    with torch.no_grad():
        logits = model(**processor(str(PNG_EXAMPLE), return_tensors="pt")).logits[0]
        model.classifier.bias[1] += (logits[0] - logits[1]).median()
    save_for_hub(model, processor, folder)
    return folder


def _reference(folder, path):
    """Logits, DINO maps and the decoded image, computed with hfmed's own classes, independently of the app."""
    model = DIAMANTForSemanticSegmentation.from_pretrained(folder).eval()
    processor = DIAMANTImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        outputs = model(**processor(str(path), return_tensors="pt"), output_attention_maps=True)
    image = processor.decode(str(path))[0]
    return model, processor, outputs, image


def _not_background(outputs, size):
    """P(not background) per pixel at `size`: the logits resized bilinearly, then softmaxed."""
    resized = F.interpolate(outputs.logits.float(), size=size, mode="bilinear", align_corners=False)[0]
    return 1.0 - torch.softmax(resized, dim=0)[0].numpy()


def _nearest_indices(source: int, target: int) -> np.ndarray:
    """PIL's NEAREST source index of each target pixel: floor((i + 0.5) * source / target)."""
    return np.minimum(((np.arange(target) + 0.5) * source / target).astype(np.int64), source - 1)


def _head_shape(height, width, side=256):
    """Each head is drawn 256 px on the image's longest side, in its aspect ratio."""
    scale = side / max(height, width)
    return round(height * scale), round(width * scale)


def _edges(mask):
    padded = np.pad(mask, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    return ((centre != padded[:-2, 1:-1]) | (centre != padded[2:, 1:-1]) | (centre != padded[1:-1, :-2])
            | (centre != padded[1:-1, 2:]))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _save_tiny_model(tmp_path_factory.mktemp("space") / "model")


@pytest.fixture(scope="module")
def app(model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HFMED_MODEL", str(model_dir))
        yield import_app("diamant_space_app", SPACE / "app.py")


def _call_error(app, path, threshold=0.5):
    with pytest.raises(gr.Error) as info:
        app.predict(str(path), threshold)
    return info.value.message


# --- predict, in process -----------------------------------------------------------------------------------


@pytest.mark.parametrize("example", [JPEG_EXAMPLE, DICOM_EXAMPLE, "no-extension"], ids=["jpeg", "dicom", "bare"])
def test_mask_overlay_and_heads_are_the_models(app, model_dir, example, tmp_path):
    if example == "no-extension":  # a DICOM named by its UID, without extension
        example = tmp_path / "1.2.826.0.1.3680043.8.498.7"
        shutil.copy(DICOM_EXAMPLE, example)
    model, _, outputs, image = _reference(model_dir, example)
    height, width = image.shape[-2:]
    foreground = _not_background(outputs, (height, width))
    threshold = float(np.median(foreground))  # about half the pixels on each side
    overlay, heads, mask, text = app.predict(str(example), threshold)

    # the mask: at the image's own size, class 1 exactly where P(not background) >= threshold
    labels = np.asarray(mask)
    assert mask.mode == "L" and mask.size == (width, height)
    assert np.array_equal(labels, (foreground >= threshold).astype(np.uint8))
    assert 0.3 < labels.mean() < 0.7

    # the overlay: the image untouched outside the mask, 40 % green inside, an opaque green outline
    rgb = np.rint(np.moveaxis(image, 0, -1) * 255).astype(np.uint8)
    shown = np.asarray(overlay)
    assert overlay.mode == "RGB" and overlay.size == (width, height)
    inside, edge = labels == 1, _edges(labels)
    assert np.array_equal(shown[~inside], rgb[~inside])
    fill = np.rint(0.6 * rgb.astype(np.float32) + 0.4 * np.array(app.CLASS_COLOURS[0], np.float32))
    assert np.abs(shown[inside & ~edge].astype(np.float32) - fill[inside & ~edge]).max() <= 1
    assert (shown[inside & edge] == app.CLASS_COLOURS[0]).all()

    # the heads: one per DINO head (the tiny model has 2), each the model's map on its patch grid, in viridis
    maps = outputs.attention_maps[0].numpy()
    assert [caption for _, caption in heads] == [f"head {i}" for i in range(1, model.config.num_attention_heads + 1)]
    shown = _head_shape(height, width)
    rows, cols = _nearest_indices(maps.shape[1], shown[0]), _nearest_indices(maps.shape[2], shown[1])
    for (picture, caption), head in zip(heads, maps, strict=True):
        assert picture.size == shown[::-1], caption
        pixels = np.asarray(picture)
        sampled = head[rows][:, cols]
        for value, colour in zip((0.0, 1.0), VIRIDIS_ENDS, strict=True):  # min-max per head: both ends occur
            assert (sampled == value).any() and (pixels[sampled == value] == colour).all(), caption
        # brighter attention, brighter (yellower) colour: viridis' green channel rises monotonically
        order = np.argsort(sampled.ravel(), kind="stable")
        assert (np.diff(pixels[..., 1].ravel()[order].astype(int)) >= 0).all(), caption
    assert len({np.asarray(p).tobytes() for p, _ in heads}) == len(heads)  # the heads look at different things

    share = labels.mean() * 100
    assert re.search(rf"foreground: {share:.1f} % of the image \({labels.sum()} pixels\)", text), text
    assert "not for diagnosis" in text
    assert example.exists()  # files outside gradio's upload folder are never deleted


def test_at_one_half_the_mask_is_the_processors_post_processing(app, model_dir):
    _, processor, outputs, image = _reference(model_dir, PNG_EXAMPLE)
    size = tuple(image.shape[-2:])
    expected = processor.post_process_semantic_segmentation(outputs, target_sizes=[size])[0].numpy()
    assert 0.2 < expected.mean() < 0.8  # the fixture's model segments about half of this image at 0.5
    for threshold in (0.5, None, ""):  # None / empty: the default, 0.5
        assert np.array_equal(np.asarray(app.predict(str(PNG_EXAMPLE), threshold)[2]), expected)
    assert (np.asarray(app.predict(str(PNG_EXAMPLE), 0.0)[2]) == 1).all()  # 0: every pixel
    nothing = app.predict(str(PNG_EXAMPLE), 1.0)  # 1: only pixels with P(background) == 0, none here
    assert not np.asarray(nothing[2]).any()
    assert nothing[3].startswith("**Nothing segmented** (no pixels whose probability of not being background")


def test_large_images_are_segmented_in_row_blocks_equal_to_one_resize(app):
    torch.manual_seed(3)
    logits = torch.randn(3, 32, 32) * 4
    height, width = 3 * app.ROWS_PER_BLOCK + 17, 301
    resized = F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    probabilities = torch.softmax(resized, dim=0)
    not_background = 1.0 - probabilities[0]
    expected = torch.where(not_background >= 0.5, probabilities[1:].argmax(dim=0) + 1, 0).numpy()
    mask = app.segment(logits, (height, width), 0.5)
    assert mask.shape == (height, width) and mask.dtype == np.uint8
    # Equal up to float rounding: only pixels within 1e-5 of the threshold or of a tie may differ.
    second, first = probabilities[1:].topk(2, dim=0).values
    unsure = ((not_background - 0.5).abs() < 1e-5) | ((second - first).abs() < 1e-5)
    assert np.array_equal(mask[~unsure.numpy()], expected[~unsure.numpy()])
    assert set(np.unique(mask)) == {0, 1, 2}


def test_a_tiny_image_keeps_its_size_and_its_heads_are_drawn_full_size(app, tmp_path):
    path = tmp_path / "tiny.png"
    Image.open(PNG_EXAMPLE).resize((20, 12)).save(path)
    overlay, heads, mask, _ = app.predict(str(path), 0.5)
    assert mask.size == overlay.size == (20, 12)
    assert [picture.size for picture, _ in heads] == [(256, 154)] * 2  # 12 * 256 / 20 = 153.6


def test_a_model_without_attention_encoder_shows_no_heads(app, monkeypatch, tmp_path):
    folder = _save_tiny_model(tmp_path / "unet", use_attention_encoder=False, skip_connections="image")
    monkeypatch.setenv("HFMED_MODEL", str(folder))
    overlay, heads, mask, text = app.predict(str(PNG_EXAMPLE), 0.5)
    assert heads == [] and "no attention encoder" in text
    assert mask.size == overlay.size
    demo = app.build_demo()
    markdown = " ".join(str(b.value) for b in demo.blocks.values() if isinstance(b, gr.Markdown))
    assert "Frozen ViT" not in markdown


def test_the_page_describes_the_model_and_its_heads(app):
    demo = app.build_demo()
    markdown = " ".join(str(b.value) for b in demo.blocks.values() if isinstance(b, gr.Markdown))
    assert "classes: background, foreground" in markdown and "resized to 32x32" in markdown
    assert "Frozen ViT: 2 heads, patch 8, not initialised from DINO weights" in markdown
    gallery = next(b for b in demo.blocks.values() if isinstance(b, gr.Gallery))
    assert "2 heads" in gallery.label and gallery.columns == 6


def _write_bad_inputs(folder):
    (folder / "notes.dcm").write_text("patient notes, not a DICOM file\n")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    no_pixels = pydicom.dcmread(DICOM_EXAMPLE)
    del no_pixels.PixelData
    no_pixels.save_as(folder / "header_only.dcm")
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA").save(folder / "tiny.png")
    return {
        "notes.dcm": "'notes.dcm' is not a DICOM file",
        "empty.png": "'empty.png' is empty (0 bytes)",
        "notes.txt": "'notes.txt' is not a DICOM file",
        "header_only.dcm": "no PixelData",
    }


def test_bad_inputs_give_one_line_errors_without_server_paths(app, tmp_path):
    for name, reason in _write_bad_inputs(tmp_path).items():
        message = _call_error(app, tmp_path / name)
        assert reason in message, message
        assert "\n" not in message and str(tmp_path) not in message, message
    assert "No file" in _call_error(app, "")
    for threshold in (1.5, -0.1, float("nan"), "half"):
        assert "threshold must be a number in [0, 1]" in _call_error(app, PNG_EXAMPLE, threshold=threshold)


def test_any_dicom_modality_is_read(app):
    # DIAMANT's processor accepts every Modality (endoscopy, dermoscopy, ultrasound, ... and CT): no refusal.
    overlay, heads, mask, _ = app.predict(get_testdata_file("CT_small.dcm"), 0.5)
    assert mask.size == overlay.size == (128, 128) and len(heads) == 2


def test_files_over_the_cap_are_refused_before_decoding(app, tmp_path):
    big = tmp_path / "big.png"
    with open(big, "wb") as handle:  # sparse: no 21 MB written
        handle.truncate((app.MAX_UPLOAD_MB + 1) * 1024 * 1024)
    assert f"over the {app.MAX_UPLOAD_MB} MB limit" in _call_error(app, big)


def test_uploads_are_deleted_after_the_answer_but_examples_are_kept(app, tmp_path, monkeypatch):
    uploads = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    (uploads / "a1").mkdir(parents=True)
    fresh = uploads / "a1" / "frame.png"
    Image.open(PNG_EXAMPLE).convert("L").save(fresh)
    app.predict(str(fresh), 0.5)
    assert not fresh.exists() and not fresh.parent.exists()
    bad = uploads / "b2" / "notes.png"
    bad.parent.mkdir()
    bad.write_text("not an image")
    _call_error(app, bad)
    assert not bad.exists()  # deleted on errors too
    example_copy = uploads / "c3" / JPEG_EXAMPLE.name  # gradio serves a clicked example from such a copy
    example_copy.parent.mkdir()
    shutil.copy(JPEG_EXAMPLE, example_copy)
    app.predict(str(example_copy), 0.5)
    assert example_copy.exists()


def test_answers_publish_their_pictures_in_a_folder_of_their_own(app, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    (tmp_path / "gradio").mkdir()  # gradio makes it when the server starts
    first, second = (app.serve_predict(str(PNG_EXAMPLE), 0.5) for _ in range(2))
    for overlay, heads, mask, _ in (first, second):
        folder = Path(overlay).parent
        assert folder.parent == (tmp_path / "gradio").resolve()
        assert [Path(p).parent for p in (mask, *(h for h, _ in heads))] == [folder] * (1 + len(heads))
        with Image.open(mask) as picture:
            assert picture.mode == "L"
    assert Path(first[0]).parent != Path(second[0]).parent  # equal answers never share a file


def test_model_source_order_and_the_missing_model_message(app, monkeypatch, tmp_path):
    check_model_source_order(app, monkeypatch, tmp_path, "diamant-demo")


def test_the_app_imports_nothing_from_hfmed():
    check_imports_nothing_from_hfmed(SPACE)


# --- the running app: HTTP API and page ---------------------------------------------------------------------


_server_process, server, client = space_server_fixtures(SPACE / "app.py")


def test_client_predict_on_a_png_and_a_dicom(client, model_dir):
    from gradio_client import handle_file

    for example in (PNG_EXAMPLE, DICOM_EXAMPLE):
        _, processor, outputs, image = _reference(model_dir, example)
        size = tuple(image.shape[-2:])
        overlay, heads, mask, text = client.predict(handle_file(str(example)), 0.5, api_name="/predict")
        expected = processor.post_process_semantic_segmentation(outputs, target_sizes=[size])[0].numpy()
        with Image.open(mask) as picture:
            assert np.array_equal(np.asarray(picture), expected)
        with Image.open(overlay) as picture:
            assert picture.size == size[::-1] and picture.mode == "RGB"
        assert [h["caption"] for h in heads] == ["head 1", "head 2"]
        assert all(Image.open(h["image"]).size == _head_shape(*size)[::-1] for h in heads)
        assert "not for diagnosis" in text


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
    fresh = tmp_path / "fresh_upload.png"
    Image.open(PNG_EXAMPLE).rotate(90).save(fresh)
    client.predict(handle_file(str(fresh)), 0.5, api_name="/predict")
    leftovers = [p for p in server["uploads"].rglob("*") if p.name in {"notes.txt", "header_only.dcm", fresh.name}]
    assert leftovers == []


def test_the_server_refuses_uploads_over_the_cap(app, server):
    too_big = b"\0" * ((app.MAX_UPLOAD_MB * 1024 + 1) * 1024)
    with httpx.Client(trust_env=False) as http:
        response = http.post(server["url"] + "gradio_api/upload", files={"files": ("big.png", too_big)})
    assert response.status_code == 413, response.text


def test_the_page_renders_in_headless_chromium(server, tmp_path):
    html, text, shot = render_page(server["url"], tmp_path, window=(1280, 1100))
    for visible in ("Research use only", "Image: PNG, JPEG, TIFF, BMP or DICOM", "Threshold", "Mask over the image",
                    "Attention maps of the frozen ViT, one per head (2 heads", "synthetic JPG: polyp", "synthetic DICOM"):
        assert visible in text, visible
    assert re.search(r'<input[^>]+type="file"', html) and re.search(r'<input[^>]+type="range"', html)
    with Image.open(shot) as image:
        assert image.size == (1280, 1100)
    assert distinct_colours(shot) > 16  # text, the orange button, borders: not a blank page


def test_clicking_an_example_in_chromium_shows_the_overlay_the_heads_and_the_mask(server, tmp_path):
    answered = ("document.querySelectorAll('img[src*=\"head-\"]').length === 2"
                " && !!document.querySelector('img[src*=\"mask-overlay\"]')")
    text, shot = click_example(server["url"], tmp_path, "synthetic PNG: small polyp", answered)
    assert "head 1" in text and "head 2" in text and "head 3" not in text
    assert re.search(r"Segmented \(pixels whose probability .* at or above 0\.50\): foreground: [\d.]+ % of the image",
                     text), text
    assert re.search(r"1-mask ?\.png", text) and "Research use only, not for diagnosis." in text
    with Image.open(shot) as image:
        assert image.size == (1280, 1300)
        colours = {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert len(colours) > 256  # the pictures are painted, not empty boxes
    # the heads' lowest and highest attention, in viridis (the browser's downscaling blends patch edges a little)
    palette = np.array(sorted(colours), dtype=np.int64)
    for end in VIRIDIS_ENDS:
        assert (np.abs(palette - np.array(end)).max(axis=1) <= 8).any(), end


# --- Space metadata and bundled examples -------------------------------------------------------------------


def test_front_matter_matches_requirements():
    meta, pins, text = front_matter(SPACE)
    assert meta["sdk"] == "gradio" and str(meta["sdk_version"]) == pins["gradio"] == gr.__version__
    assert (SPACE / meta["app_file"]).is_file()
    assert meta["license"] == "apache-2.0" and meta["pinned"] is False
    assert meta["models"] == ["hfmed/diamant-demo"]
    assert {"medical", "segmentation", "image-segmentation", "hfmed"} <= set(meta["tags"])
    assert meta["title"] and meta["emoji"] and meta["colorFrom"] and meta["colorTo"]
    assert "not for diagnosis" in text and "2304.14571" in text
    requirements = [line for line in (SPACE / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert not [line for line in requirements if line.startswith("hfmed")]  # not on PyPI, so not on the Hub
    for needed in ("torch", "torchvision", "transformers>=5,<6", "pydicom>=3", "numpy", "pillow", "safetensors"):
        assert needed in requirements, needed


def test_bundled_examples_match_the_generator(tmp_path):
    # Pixels are not compared: the synthetic drawing may evolve; the committed files were drawn once.
    make_examples = import_app("diamant_make_examples", SPACE / "make_examples.py")
    written = make_examples.write_examples(tmp_path)
    assert sorted(p.name for p in written) == EXAMPLE_NAMES and len(EXAMPLE_NAMES) == 4
    assert sum(p.stat().st_size for p in EXAMPLES.iterdir()) < 200_000
    for name in EXAMPLE_NAMES:
        path = EXAMPLES / name
        if path.suffix == ".dcm":
            dataset = pydicom.dcmread(path)
            assert (dataset.Modality, dataset.PhotometricInterpretation) == ("ES", "RGB")
            assert dataset.PatientID and dataset.pixel_array.dtype == np.uint8
            assert dataset.pixel_array.shape == (128, 128, 3)
        else:
            with Image.open(path) as image:
                assert image.mode == "RGB" and min(image.size) >= 64
