"""Tests of the Slice-CNN image processor (3-D MRI -> RAS, 2 mm, 91x109x91, per-volume z-score).

Expected values come from nibabel (`as_closest_canonical`, `apply_orientation`), torch's own
`F.interpolate(mode="trilinear")`, and arithmetic written out here, never from the code under test. The module
is loaded from its file path (hfmed/models/slice_cnn/image_processing_slice_cnn.py) on purpose: it is copied
flat to the Hub, so it must import without the rest of `hfmed` (and without the model files of its folder).
"""

import ast
import gzip
import importlib.util
import io
import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform  # noqa: E402
from PIL import Image  # noqa: E402

MODULE_PATH = (
    Path(__file__).resolve().parents[3] / "hfmed" / "models" / "slice_cnn" / "image_processing_slice_cnn.py"
)
ANATOMICAL = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "anatomical.nii")
EXAMPLE_4D = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "example4d.nii.gz")


def _load_module(name):
    spec = importlib.util.spec_from_file_location(name, MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ips = _load_module("slice_cnn_image_processing_under_test")
SliceCNNImageProcessor = ips.SliceCNNImageProcessor

# Geometry only: no resampling blur, no crop / pad, raw intensities out.
RAW = {"do_resample": False, "do_crop_pad": False, "do_zscore": False}


def one_line_error(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def hand_zscore(volume):
    volume = np.asarray(volume, dtype=np.float64)
    return (volume - volume.mean()) / volume.std()


def hand_center(volume, shape, fill=0.0):
    """Central crop / pad written out per axis: start (n - T) // 2 when cropping, (T - n) // 2 when padding."""
    out = np.full(shape, fill, dtype=np.float64)
    src, dst = [], []
    for n, t in zip(volume.shape, shape, strict=True):
        if n >= t:
            src.append(slice((n - t) // 2, (n - t) // 2 + t))
            dst.append(slice(0, t))
        else:
            src.append(slice(0, n))
            dst.append(slice((t - n) // 2, (t - n) // 2 + n))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def stored_as(content, ras_affine, code):
    """The same physical content stored with voxel axes `code` (nibabel's own orientation tools)."""
    transform = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(code))
    stored = apply_orientation(content, transform)
    affine = ras_affine @ inv_ornt_aff(transform, content.shape)
    assert nib.aff2axcodes(affine) == tuple(code)
    return np.ascontiguousarray(stored), affine


def asymmetric_volume(shape=(6, 7, 8), seed=0):
    return np.random.default_rng(seed).normal(100.0, 30.0, size=shape).astype(np.float32)


# --- nibabel's real anatomical.nii --------------------------------------------------------------------


def test_anatomical_geometry_of_the_test_file():
    image = nib.load(ANATOMICAL)
    assert image.shape == (33, 41, 25)
    assert nib.aff2axcodes(image.affine) == ("L", "A", "S")
    np.testing.assert_allclose(image.header.get_zooms(), (2.0, 2.0, 2.0))


def test_anatomical_default_pipeline_matches_hand_computation():
    processor = SliceCNNImageProcessor()
    pixel_values = processor(ANATOMICAL, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 91, 109, 91) and pixel_values.dtype == torch.float32

    # Already 2 mm: no resampling; RAS flips x; pad centrally with 0; z-score over every voxel (official).
    canonical = nib.as_closest_canonical(nib.load(ANATOMICAL)).get_fdata()
    expected = hand_zscore(hand_center(canonical, (91, 109, 91)))
    np.testing.assert_allclose(pixel_values[0].numpy(), expected, rtol=0, atol=1e-5)

    values = pixel_values[0].double()
    assert abs(values.mean().item()) < 1e-6
    assert abs(values.std(correction=0).item() - 1.0) < 1e-6


def test_anatomical_output_affine_is_ras_2mm_and_centred():
    volume, affine = SliceCNNImageProcessor().preprocess_volume(ANATOMICAL)
    assert volume.shape == (91, 109, 91)
    canonical = nib.as_closest_canonical(nib.load(ANATOMICAL)).affine
    expected = canonical.copy()
    # The first output voxel is (91 - 33) // 2, (109 - 41) // 2, (91 - 25) // 2 voxels before the input's.
    expected[:3, 3] -= 2.0 * np.array([29, 34, 33])
    np.testing.assert_allclose(affine, expected)
    assert nib.aff2axcodes(affine) == ("R", "A", "S")


def test_anatomical_resampled_to_3mm_keeps_the_physical_extent():
    processor = SliceCNNImageProcessor(target_spacing=[3, 3, 3], do_crop_pad=False, do_zscore=False)
    volume, affine = processor.preprocess_volume(ANATOMICAL)
    shape_in, spacing_in = np.array([33, 41, 25]), 2.0
    assert volume.shape == (22, 27, 16)  # floor(n * 2 / 3)
    extent_in = shape_in * spacing_in
    extent_out = np.array(volume.shape) * 3.0
    assert np.all(extent_out <= extent_in) and np.all(extent_in - extent_out < 3.0)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [3.0, 3.0, 3.0])
    # Edge-aligned grids: the field of view starts at the same world point.
    canonical = nib.as_closest_canonical(nib.load(ANATOMICAL)).affine
    np.testing.assert_allclose(affine[:3, 3] - 1.5, canonical[:3, 3] - 1.0)

    # Same numbers as torch's trilinear interpolation with the exact scale factor.
    data = torch.from_numpy(nib.as_closest_canonical(nib.load(ANATOMICAL)).get_fdata().astype(np.float32))
    reference = F.interpolate(
        data[None, None],
        scale_factor=2.0 / 3.0,
        mode="trilinear",
        align_corners=False,
        recompute_scale_factor=False,
    )[0, 0]
    assert reference.shape == volume.shape
    torch.testing.assert_close(volume, reference, rtol=1e-5, atol=1e-3)


def test_anatomical_las_orientation_keeps_the_stored_order():
    # FSL's MNI template stores LAS, which is what the official models saw.
    processor = SliceCNNImageProcessor(orientation="LAS", **RAW)
    volume = processor(ANATOMICAL, return_tensors="pt")["pixel_values"][0]
    np.testing.assert_array_equal(volume.numpy(), nib.load(ANATOMICAL).get_fdata().astype(np.float32))


# --- orientation, voxel by voxel ----------------------------------------------------------------------


@pytest.mark.parametrize("code", ["RAS", "LPS", "LAS", "RPI", "ASR", "SLP", "PIR"])
def test_orientation_flips_and_permutations_voxel_by_voxel(code, tmp_path):
    content = asymmetric_volume()
    ras_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    ras_affine[:3, 3] = [-5.0, 7.0, 3.0]
    stored, affine = stored_as(content, ras_affine, code)
    processor = SliceCNNImageProcessor(target_shape=list(content.shape), do_zscore=False)

    from_array = processor(stored, affine=affine, return_tensors="pt")["pixel_values"][0]
    np.testing.assert_array_equal(from_array.numpy(), content)

    path = tmp_path / f"volume_{code}.nii.gz"
    nib.save(nib.Nifti1Image(stored, affine), path)
    from_file = processor(path, return_tensors="pt")["pixel_values"][0]
    np.testing.assert_array_equal(from_file.numpy(), content)

    _, out_affine = processor.preprocess_volume(path)
    np.testing.assert_allclose(out_affine, ras_affine, atol=1e-5)


def test_single_bright_voxel_lands_at_the_same_world_point():
    content = np.zeros((9, 10, 11), dtype=np.float32)
    content[1, 7, 2] = 1000.0  # right-ish, anterior, inferior
    ras_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    stored, affine = stored_as(content, ras_affine, "LPS")
    # nibabel's construction moves the voxel but keeps its world position.
    stored_index = np.unravel_index(np.argmax(stored), stored.shape)
    assert stored_index == (9 - 1 - 1, 10 - 1 - 7, 2)
    np.testing.assert_allclose(affine @ [*stored_index, 1], ras_affine @ [1, 7, 2, 1])
    processor = SliceCNNImageProcessor(target_shape=[9, 10, 11], do_zscore=False)
    out = processor(stored, affine=affine, return_tensors="pt")["pixel_values"][0]
    assert np.unravel_index(int(out.argmax()), out.shape) == (1, 7, 2)


def test_oblique_affine_matches_nibabel_as_closest_canonical():
    content = asymmetric_volume((5, 6, 7), seed=3)
    angle = np.deg2rad(20.0)
    rotation = np.array(
        [[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0], [-np.sin(angle), 0.0, np.cos(angle)]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-2.0, 2.0, 2.0]) @ np.eye(3)[[1, 0, 2]]
    affine[:3, 3] = [10.0, -4.0, 2.0]
    image = nib.Nifti1Image(content, affine)
    canonical = nib.as_closest_canonical(image)

    volume, out_affine = ips.reorient(content, affine, "RAS")
    np.testing.assert_array_equal(volume, canonical.get_fdata().astype(np.float32))
    np.testing.assert_allclose(out_affine, canonical.affine, atol=1e-6)

    processor = SliceCNNImageProcessor(**RAW)
    out = processor(image, return_tensors="pt")["pixel_values"][0]
    np.testing.assert_array_equal(out.numpy(), canonical.get_fdata().astype(np.float32))


def test_do_reorient_false_keeps_the_stored_axes():
    content = asymmetric_volume()
    stored, affine = stored_as(content, np.diag([2.0, 2.0, 2.0, 1.0]), "PSL")
    processor = SliceCNNImageProcessor(do_reorient=False, **RAW)
    out = processor(stored, affine=affine, return_tensors="pt")["pixel_values"][0]
    np.testing.assert_array_equal(out.numpy(), stored)


# --- resampling ---------------------------------------------------------------------------------------


def ramp(shape, coefficients=(1.0, 10.0, 100.0)):
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    a, b, c = coefficients
    return (a * i + b * j + c * k).astype(np.float32)


def test_linear_ramp_1mm_to_2mm_gives_the_expected_values():
    volume = ramp((8, 10, 6))
    processor = SliceCNNImageProcessor(do_crop_pad=False, do_zscore=False)
    out, affine = processor.preprocess_volume(volume, affine=np.eye(4))
    assert out.shape == (4, 5, 3)
    # Output voxel j covers input voxels 2j and 2j + 1: its centre is input coordinate 2j + 0.5.
    i, j, k = np.meshgrid(*(2.0 * np.arange(n) + 0.5 for n in (4, 5, 3)), indexing="ij")
    np.testing.assert_allclose(out.numpy(), i + 10.0 * j + 100.0 * k, rtol=0, atol=1e-4)
    expected_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    expected_affine[:3, 3] = 0.5
    np.testing.assert_allclose(affine, expected_affine)


def test_anisotropic_resampling_and_upsampling():
    volume = ramp((8, 6, 4), (1.0, 0.0, 0.0))
    affine = np.diag([1.0, 3.0, 4.0, 1.0])
    processor = SliceCNNImageProcessor(target_spacing=[2.0, 2.0, 2.0], do_crop_pad=False, do_zscore=False)
    out, out_affine = processor.preprocess_volume(volume, affine=affine)
    assert out.shape == (4, 9, 8)  # 8 * 1 / 2, 6 * 3 / 2, 4 * 4 / 2
    np.testing.assert_allclose(np.diag(out_affine)[:3], [2.0, 2.0, 2.0])
    # x is the only varying axis: 2i + 0.5 everywhere (upsampling a constant along y and z keeps it).
    np.testing.assert_allclose(
        out.numpy(), np.broadcast_to((2.0 * np.arange(4) + 0.5)[:, None, None], out.shape)
    )
    # Upsampling a ramp along z: input coordinate (k + 0.5) / 2 - 0.5, clamped to the volume.
    upsampled, _ = processor.preprocess_volume(ramp((2, 2, 4), (0.0, 0.0, 1.0)), affine=affine)
    expected_z = np.clip((np.arange(8) + 0.5) / 2.0 - 0.5, 0.0, 3.0)
    np.testing.assert_allclose(upsampled[0, 0].numpy(), expected_z, atol=1e-6)


def test_float32_pixdim_does_not_lose_a_voxel():
    # 260 voxels of 0.7 mm (HCP) are 182 mm = 91 voxels of 2 mm, although float32(0.7) < 0.7.
    affine = np.diag([np.float32(0.7), 2.0, 2.0, 1.0]).astype(np.float64)
    processor = SliceCNNImageProcessor(do_crop_pad=False, do_zscore=False)
    out, _ = processor.preprocess_volume(np.ones((260, 3, 3), dtype=np.float32), affine=affine)
    assert out.shape == (91, 3, 3)


def test_matching_spacing_is_left_untouched():
    volume = asymmetric_volume()
    out, _ = SliceCNNImageProcessor(do_crop_pad=False, do_zscore=False).preprocess_volume(
        volume, affine=np.diag([2.0, 2.0, 2.0, 1.0])
    )
    np.testing.assert_array_equal(out.numpy(), volume)


# --- crop / pad ---------------------------------------------------------------------------------------


def test_crop_and_pad_are_central_by_index():
    volume = np.arange(6 * 12 * 9, dtype=np.float32).reshape(6, 12, 9)
    processor = SliceCNNImageProcessor(
        target_shape=[9, 7, 9], pad_value=-1.0, do_resample=False, do_zscore=False
    )
    out, affine = processor.preprocess_volume(volume, affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    out = out.numpy()
    assert out.shape == (9, 7, 9)
    # x: 6 -> 9 pads 1 voxel before and 2 after; y: 12 -> 7 keeps voxels 2..8; z unchanged.
    np.testing.assert_array_equal(out[1:7], volume[:, 2:9])
    assert (out[0] == -1).all() and (out[7:] == -1).all()
    np.testing.assert_array_equal(out, hand_center(volume, (9, 7, 9), fill=-1.0))
    np.testing.assert_allclose(affine[:3, 3], [-2.0, 4.0, 0.0])

    back = SliceCNNImageProcessor(target_shape=[6, 12, 9], **{**RAW, "do_crop_pad": True})
    padded = SliceCNNImageProcessor(target_shape=[9, 15, 12], pad_value=5.0, **{**RAW, "do_crop_pad": True})
    identity = np.diag([2.0, 2.0, 2.0, 1.0])
    round_trip = back.preprocess_volume(
        padded.preprocess_volume(volume, affine=identity)[0], affine=identity
    )[0]
    np.testing.assert_array_equal(round_trip.numpy(), volume)


# --- z-score ------------------------------------------------------------------------------------------


def test_nonzero_mask_zscores_the_foreground_only():
    volume = np.zeros((8, 8, 8), dtype=np.float32)
    volume[2:6, 2:6, 2:6] = np.random.default_rng(1).uniform(10.0, 50.0, size=(4, 4, 4))
    processor = SliceCNNImageProcessor(target_shape=[8, 8, 8], zscore_mask="nonzero")
    out = processor(volume, affine=np.diag([2.0, 2.0, 2.0, 1.0]), return_tensors="pt")["pixel_values"][
        0
    ].numpy()
    foreground = volume != 0
    np.testing.assert_allclose(out[foreground], hand_zscore(volume[foreground]), atol=1e-5)
    assert (out[~foreground] == 0).all()

    whole = SliceCNNImageProcessor(target_shape=[8, 8, 8])(
        volume, affine=np.diag([2.0, 2.0, 2.0, 1.0]), return_tensors="pt"
    )["pixel_values"][0]
    np.testing.assert_allclose(whole.numpy(), hand_zscore(volume), atol=1e-5)


def test_constant_volume_raises():
    with pytest.raises(ValueError, match="constant") as excinfo:
        SliceCNNImageProcessor(target_shape=[4, 4, 4])(np.full((4, 4, 4), 7.0), affine=np.diag([2, 2, 2, 1]))
    one_line_error(excinfo)


# --- input kinds --------------------------------------------------------------------------------------


def test_all_input_kinds_agree(tmp_path):
    processor = SliceCNNImageProcessor(target_shape=[40, 48, 32])
    expected = processor(ANATOMICAL, return_tensors="pt")["pixel_values"]
    image = nib.load(ANATOMICAL)
    raw = Path(ANATOMICAL).read_bytes()
    gz_path = tmp_path / "anatomical.nii.gz"
    nib.save(image, gz_path)
    nifti2 = nib.Nifti2Image(image.get_fdata(), image.affine)
    inputs = [
        Path(ANATOMICAL),
        raw,
        gzip.compress(raw),
        str(gz_path),
        image,
        nifti2.to_bytes(),
        {"path": None, "bytes": gz_path.read_bytes()},
        {"path": ANATOMICAL, "bytes": None},
    ]
    out = processor(inputs, return_tensors="pt")["pixel_values"]
    assert out.shape == (len(inputs), 40, 48, 32)
    for row in out:
        torch.testing.assert_close(row, expected[0], rtol=0, atol=1e-6)
    listed = processor(inputs[:2])["pixel_values"]
    assert isinstance(listed, list) and listed[0].shape == (40, 48, 32)
    as_numpy = processor(inputs[:2], return_tensors="np")["pixel_values"]
    assert isinstance(as_numpy, np.ndarray) and as_numpy.shape == (2, 40, 48, 32)


def test_mixed_batch_with_per_item_affines():
    content = asymmetric_volume()
    stored, affine = stored_as(content, np.diag([2.0, 2.0, 2.0, 1.0]), "LPS")
    processor = SliceCNNImageProcessor(target_shape=list(content.shape), do_zscore=False)
    out = processor(
        [stored, torch.from_numpy(content), stored],
        affine=[affine, np.diag([2.0, 2.0, 2.0, 1.0]), affine],
        return_tensors="pt",
    )["pixel_values"]
    for row in out:
        np.testing.assert_array_equal(row.numpy(), content)
    one = processor([stored, stored], affine=affine, return_tensors="pt")["pixel_values"]
    np.testing.assert_array_equal(one[1].numpy(), content)


def test_array_without_affine_is_taken_as_already_in_place():
    content = asymmetric_volume()
    processor = SliceCNNImageProcessor(target_shape=list(content.shape), do_zscore=False)
    with pytest.warns(UserWarning, match="without an affine"):
        out = processor(content, return_tensors="pt")["pixel_values"][0]
    np.testing.assert_array_equal(out.numpy(), content)


def test_trailing_singleton_axis_is_squeezed(tmp_path):
    content = asymmetric_volume()
    path = tmp_path / "with_time_axis.nii"
    nib.save(nib.Nifti1Image(content[..., None], np.diag([2.0, 2.0, 2.0, 1.0])), path)
    assert nib.load(path).shape == (6, 7, 8, 1)
    out = SliceCNNImageProcessor(**RAW)(path, return_tensors="pt")["pixel_values"][0]
    np.testing.assert_array_equal(out.numpy(), content)


def test_nifti_round_trip_through_tmp_path(tmp_path):
    processor = SliceCNNImageProcessor(target_shape=[48, 56, 40])
    volume, affine = processor.preprocess_volume(ANATOMICAL)
    path = tmp_path / "processed.nii.gz"
    nib.save(nib.Nifti1Image(volume.numpy(), affine), path)
    reloaded = nib.load(path)
    assert nib.aff2axcodes(reloaded.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(reloaded.get_fdata().astype(np.float32), volume.numpy())
    # Processing the processed file again changes nothing but float rounding of the z-score.
    again = processor(path, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(again, volume, rtol=0, atol=1e-5)


# --- bad input: one clear one-line error each ---------------------------------------------------------


def test_4d_nifti_with_several_volumes_raises():
    with pytest.raises(ValueError, match=r"4-D with shape \(128, 96, 24, 2\) \(2 volumes") as excinfo:
        SliceCNNImageProcessor()(EXAMPLE_4D)
    assert "slicer[..., 0]" in one_line_error(excinfo)
    with pytest.raises(ValueError, match="4-D with shape") as excinfo:
        SliceCNNImageProcessor()(nib.load(EXAMPLE_4D))
    one_line_error(excinfo)


def test_4d_array_raises():
    with pytest.raises(ValueError, match=r"shape \(2, 6, 7, 8\) but one 3-D") as excinfo:
        SliceCNNImageProcessor()(np.zeros((2, 6, 7, 8)), affine=np.eye(4))
    one_line_error(excinfo)
    with pytest.raises(ValueError, match="2-D") as excinfo:
        SliceCNNImageProcessor()(np.zeros((6, 7)), affine=np.eye(4))
    one_line_error(excinfo)


def test_non_nifti_files_raise(tmp_path):
    png = tmp_path / "picture.nii.gz"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(png, format="PNG")
    text = tmp_path / "notes.nii.gz"
    text.write_text("subject,age\n1,63\n" * 40)
    gzipped_text = tmp_path / "notes_gz.nii.gz"
    gzipped_text.write_bytes(gzip.compress(b"hello " * 200))
    cases = [(png, "PNG image"), (text, "not a NIfTI file"), (gzipped_text, "after gunzip")]
    for path, fragment in cases:
        with pytest.raises(ValueError, match="is not a NIfTI file") as excinfo:
            SliceCNNImageProcessor()(path)
        message = one_line_error(excinfo)
        assert fragment in message and ".nii.gz" in message
    with pytest.raises(ValueError, match="is not a NIfTI file"):
        SliceCNNImageProcessor()(b"\x89PNG\r\n\x1a\n" + bytes(600))
    with pytest.raises(FileNotFoundError, match="No such file"):
        SliceCNNImageProcessor()(tmp_path / "missing.nii")


def test_truncated_nifti_raises(tmp_path):
    raw = Path(ANATOMICAL).read_bytes()
    path = tmp_path / "cut.nii"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated") as excinfo:
        SliceCNNImageProcessor()(path)
    one_line_error(excinfo)
    cut_gz = tmp_path / "cut.nii.gz"
    cut_gz.write_bytes(gzip.compress(raw)[:-200])
    with pytest.raises(ValueError, match="decompressed|truncated") as excinfo:
        SliceCNNImageProcessor()(cut_gz)
    one_line_error(excinfo)


def test_nan_voxels_raise(tmp_path):
    volume = asymmetric_volume()
    volume[1, 2, 3] = np.nan
    volume[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="2 NaN/inf voxel") as excinfo:
        SliceCNNImageProcessor()(volume, affine=np.eye(4))
    assert "nan_to_num" in one_line_error(excinfo)
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    with pytest.raises(ValueError, match="NaN/inf voxel") as excinfo:
        SliceCNNImageProcessor()(path)
    one_line_error(excinfo)


def test_singular_affine_raises(tmp_path):
    singular = np.diag([2.0, 2.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="singular") as excinfo:
        SliceCNNImageProcessor()(asymmetric_volume(), affine=singular)
    one_line_error(excinfo)
    collinear = np.eye(4)
    collinear[:3, 1] = collinear[:3, 0]
    with pytest.raises(ValueError, match="singular"):
        SliceCNNImageProcessor()(asymmetric_volume(), affine=collinear)
    # A NIfTI whose sform is singular (patched in the header: nibabel refuses to write one).
    raw = nib.Nifti1Image(asymmetric_volume(), np.eye(4)).to_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    header.set_sform(singular, code=2)
    header["qform_code"] = 0
    path = tmp_path / "singular.nii"
    path.write_bytes(header.binaryblock + raw[348:])
    with pytest.raises(ValueError, match="singular") as excinfo:
        SliceCNNImageProcessor()(path)
    assert "sform/qform" in one_line_error(excinfo)


def test_too_many_voxels_raise(tmp_path):
    with pytest.raises(ValueError, match="max_voxels=100") as excinfo:
        SliceCNNImageProcessor(max_voxels=100)(asymmetric_volume(), affine=np.eye(4))
    one_line_error(excinfo)
    with pytest.raises(ValueError, match=r"\(33, 41, 25\) = 33,825 voxels, more than max_voxels"):
        SliceCNNImageProcessor(max_voxels=10_000)(ANATOMICAL)
    # The resampled grid counts too: 0.1 mm target spacing would blow a small volume up 8000-fold.
    with pytest.raises(ValueError, match="resampled to target_spacing"):
        SliceCNNImageProcessor(target_spacing=[0.1, 0.1, 0.1], max_voxels=10**6)(ANATOMICAL)


def test_affine_for_a_nifti_input_raises():
    with pytest.raises(ValueError, match="carries its own") as excinfo:
        SliceCNNImageProcessor()(ANATOMICAL, affine=np.eye(4))
    one_line_error(excinfo)
    with pytest.raises(ValueError, match="2 entries but 3 volume"):
        SliceCNNImageProcessor()([asymmetric_volume()] * 3, affine=[np.eye(4), np.eye(4)])


def test_bad_fields_raise():
    bad = [
        ({"target_shape": [91, 0, 91]}, "target_shape"),
        ({"target_spacing": [2, -1, 2]}, "target_spacing"),
        ({"orientation": "RRS"}, "orientation"),
        ({"zscore_mask": "brain"}, "zscore_mask"),
        ({"max_voxels": 0}, "max_voxels"),
        ({"do_resize": True}, "do_resize"),
    ]
    for kwargs, field in bad:
        with pytest.raises(ValueError, match=field) as excinfo:
            SliceCNNImageProcessor(**kwargs)
        one_line_error(excinfo)
    with pytest.raises(ValueError, match="orientation"):
        SliceCNNImageProcessor()(asymmetric_volume(), affine=np.eye(4), orientation="XYZ")
    with pytest.raises(TypeError, match="Unsupported input type"):
        SliceCNNImageProcessor()(12345)


# --- orthogonal slices --------------------------------------------------------------------------------


def test_orthogonal_slices_display_orientation():
    volume = asymmetric_volume((5, 7, 9))
    processor = SliceCNNImageProcessor()
    sagittal, coronal, axial = processor.orthogonal_slices(torch.from_numpy(volume)[None])
    assert sagittal.shape == (9, 7) and coronal.shape == (9, 5) and axial.shape == (7, 5)
    x, y, z = 2, 3, 4
    # Sagittal: top row superior (z = 8), right column anterior (y = 6).
    assert sagittal[0, -1] == volume[x, 6, 8] and sagittal[-1, 0] == volume[x, 0, 0]
    # Coronal: top row superior, left column the subject's left (x = 0, neurological).
    assert coronal[0, 0] == volume[0, y, 8] and coronal[-1, -1] == volume[4, y, 0]
    # Axial: top row anterior (y = 6), left column the subject's left.
    assert axial[0, 0] == volume[0, 6, z] and axial[-1, -1] == volume[4, 0, z]
    radiological = processor.orthogonal_slices(volume, radiological=True)
    np.testing.assert_array_equal(radiological.coronal, coronal[:, ::-1])
    np.testing.assert_array_equal(radiological.axial, axial[:, ::-1])
    np.testing.assert_array_equal(radiological.sagittal, sagittal)
    with pytest.raises(ValueError, match=r"pixel_values\[i\]"):
        processor.orthogonal_slices(np.zeros((2, 5, 7, 9)))


def test_orthogonal_slices_of_a_path_show_the_processed_volume():
    processor = SliceCNNImageProcessor()
    slices = processor.orthogonal_slices(ANATOMICAL)
    pixel_values = processor(ANATOMICAL, return_tensors="pt")["pixel_values"][0].numpy()
    np.testing.assert_array_equal(slices.axial, pixel_values[:, :, 45].T[::-1])
    assert [view.dtype for view in slices] == [np.float32] * 3


# --- contract and serialisation -----------------------------------------------------------------------


def test_input_contract():
    contract = SliceCNNImageProcessor().input_contract()
    assert contract["modality"] == "MR" and contract["orientation"] == "RAS"
    assert contract["spacing"] == [2.0, 2.0, 2.0] and contract["spatial_shape"] == [91, 109, 91]
    assert contract["value_range"] == "z-score per volume"
    assert contract["intended_use"] == "research only, not for diagnostic use"
    assert contract["axes"]["x"] == "left -> right"
    json.dumps(contract)


def test_save_and_load_round_trip(tmp_path):
    settings = {
        "orientation": "LAS",
        "target_spacing": [1.5, 2.0, 2.5],
        "target_shape": [40, 48, 32],
        "pad_value": -3.0,
        "zscore_mask": "nonzero",
        "max_voxels": 1234567,
        "do_resample": True,
    }
    processor = SliceCNNImageProcessor(**settings)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    for key, value in settings.items():
        assert saved[key] == value, key
    for key in ("do_reorient", "do_crop_pad", "do_zscore"):
        assert saved[key] is True
    assert saved["image_processor_type"] == "SliceCNNImageProcessor"
    loaded = SliceCNNImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    torch.testing.assert_close(
        loaded(ANATOMICAL, return_tensors="pt")["pixel_values"],
        processor(ANATOMICAL, return_tensors="pt")["pixel_values"],
    )


def test_auto_image_processor_loads_it_for_a_slice_cnn_folder(tmp_path):
    from transformers import AutoImageProcessor

    from hfmed import SliceCNNImageProcessor as Registered  # the class `import hfmed` registers
    from hfmed import slice_cnn_config

    slice_cnn_config("slice-cnn-tiny").save_pretrained(tmp_path)
    Registered(target_shape=[40, 48, 32]).save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is Registered and list(loaded.target_shape) == [40, 48, 32]


def test_module_imports_without_nibabel(monkeypatch):
    monkeypatch.setitem(sys.modules, "nibabel", None)
    module = _load_module("slice_cnn_image_processing_without_nibabel")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = module.SliceCNNImageProcessor(target_shape=[6, 7, 8])(asymmetric_volume(), return_tensors="pt")
    assert out["pixel_values"].shape == (1, 6, 7, 8)
    with pytest.raises(ImportError):
        module.SliceCNNImageProcessor()(ANATOMICAL)
    imports = [
        node
        for node in ast.walk(ast.parse(MODULE_PATH.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    names = [alias.name for node in imports if isinstance(node, ast.Import) for alias in node.names]
    names += [node.module or "" for node in imports if isinstance(node, ast.ImportFrom)]
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in imports)
    top_level = {name.split(".")[0] for name in names}
    assert "hfmed" not in top_level and "scipy" not in top_level
    assert top_level <= set(sys.stdlib_module_names) | {"numpy", "torch", "transformers", "nibabel", "isal"}


def test_nifti_without_sform_or_qform_warns_at_the_callers_line():
    raw = nib.Nifti1Image(asymmetric_volume(), None).to_bytes()
    assert nib.Nifti1Image.from_bytes(raw).header["sform_code"] == 0
    with pytest.warns(UserWarning, match="sform_code = qform_code = 0") as record:
        SliceCNNImageProcessor()(raw)
    assert record[0].filename == __file__


def test_datasets_nifti_feature_values_are_accepted():
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Nifti()})
    table = datasets.Dataset.from_dict({"image": [ANATOMICAL, ANATOMICAL]}, features=features)
    processor = SliceCNNImageProcessor(target_shape=[40, 48, 32])
    expected = processor([ANATOMICAL, ANATOMICAL], return_tensors="pt")["pixel_values"]
    decoded = processor(table[:2]["image"], return_tensors="pt")["pixel_values"]
    undecoded = table.cast_column("image", datasets.Nifti(decode=False))[:2]["image"]
    torch.testing.assert_close(decoded, expected, rtol=0, atol=0)
    torch.testing.assert_close(
        processor(undecoded, return_tensors="pt")["pixel_values"], expected, rtol=0, atol=0
    )


# --- fast paths: the inflater, one inflate call, threads ----------------------------------------------


def noisy_nifti_gz(tmp_path, name="noisy.nii.gz", shape=(24, 28, 20), seed=0):
    """A gzipped float32 NIfTI whose voxels need many deflate blocks (noise), at 1 mm with a LPS affine."""
    path = tmp_path / name
    nib.save(nib.Nifti1Image(asymmetric_volume(shape, seed), np.diag([-1.0, -1.0, 1.0, 1.0])), path)
    return path


def test_isal_is_the_inflater_and_zlib_gives_the_same_arrays(tmp_path, monkeypatch):
    # isal comes with the dev extra (hfmed[fast]); without it the standard library's zlib is used.
    from isal import isal_zlib

    assert ips._inflate_module() is isal_zlib
    path = noisy_nifti_gz(tmp_path)
    inputs = [path, path.read_bytes()]
    processor = SliceCNNImageProcessor(target_shape=[12, 14, 10])
    fast = processor(inputs, return_tensors="pt")["pixel_values"]
    monkeypatch.setattr(ips, "_inflate_module", lambda: ips.zlib)
    plain = processor(inputs, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(fast, plain, rtol=0, atol=0)
    raw = processor(path, return_tensors="pt", **RAW)["pixel_values"][0]
    expected = np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj, dtype=np.float32)
    np.testing.assert_array_equal(raw.numpy(), expected)


def test_without_isal_zlib_inflates(tmp_path, monkeypatch):
    expected = SliceCNNImageProcessor(**RAW)(noisy_nifti_gz(tmp_path), return_tensors="pt")["pixel_values"]
    monkeypatch.setitem(sys.modules, "isal", None)
    monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)
    assert ips._inflate_module() is ips.zlib
    out = SliceCNNImageProcessor(**RAW)(noisy_nifti_gz(tmp_path), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("inflater", ["isal", "zlib"])
def test_gunzip_matches_gzip_module(inflater, monkeypatch):
    if inflater == "zlib":
        monkeypatch.setattr(ips, "_inflate_module", lambda: ips.zlib)
    data = np.random.default_rng(1).integers(0, 255, 300_000, dtype=np.uint8).tobytes()
    packed = gzip.compress(data)
    assert ips._gunzip(packed, len(data)) == data
    assert ips._gunzip(packed, 1000) == data[:1000]
    assert ips._gunzip(packed, 10**7) == data  # asks for more than there is: what there is
    # Several members, zero padding between them (gzip allows both), read across the boundary.
    members = gzip.compress(data[:1000]) + bytes(7) + gzip.compress(data[1000:])
    assert ips._gunzip(members, len(data)) == gzip.decompress(members) == data
    with pytest.raises(EOFError, match="ended before"):
        ips._gunzip(packed[:-5000], len(data))
    with pytest.raises(gzip.BadGzipFile, match="Not a gzipped file"):
        ips._gunzip(gzip.compress(data[:1000]) + b"junk", len(data))
    corrupt = bytearray(packed)
    corrupt[-8] ^= 1  # the CRC-32, checked when the bytes asked end the member
    with pytest.raises(ips.zlib.error):
        ips._gunzip(bytes(corrupt), len(data))
    assert ips._gunzip(bytes(corrupt), 1000) == data[:1000]
    corrupt[:4] = b"\x1f\x8b\x08\xff"  # reserved flag bits set
    with pytest.raises(ips.zlib.error):
        ips._gunzip(bytes(corrupt), len(data))


def test_multi_member_and_corrupt_nifti_gz(tmp_path):
    path = noisy_nifti_gz(tmp_path)
    raw = gzip.decompress(path.read_bytes())
    expected = SliceCNNImageProcessor(**RAW)(path, return_tensors="pt")["pixel_values"]
    two_members = tmp_path / "two_members.nii.gz"
    two_members.write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]))
    out = SliceCNNImageProcessor(**RAW)(two_members, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    corrupt = bytearray(path.read_bytes())
    corrupt[-8] ^= 1  # the CRC-32 of the member, which the voxels end
    with pytest.raises(ValueError, match="could not be decompressed as gzip") as excinfo:
        SliceCNNImageProcessor()(bytes(corrupt))
    one_line_error(excinfo)
    junk_after = tmp_path / "junk_after.nii.gz"
    junk_after.write_bytes(gzip.compress(raw[:5000]) + b"junk")
    with pytest.raises(ValueError, match="Not a gzipped file") as excinfo:
        SliceCNNImageProcessor()(junk_after)
    one_line_error(excinfo)


def test_gzip_bomb_inflates_no_more_than_the_header_promises(tmp_path):
    # A valid small NIfTI followed by 200 MB of zeros in the same gzip member: only the voxels are inflated.
    path = noisy_nifti_gz(tmp_path, shape=(6, 7, 8))
    raw = gzip.decompress(path.read_bytes())
    compressor = ips.zlib.compressobj(9, ips.zlib.DEFLATED, 31)
    bomb = compressor.compress(raw)
    for _ in range(200):
        bomb += compressor.compress(bytes(1 << 20))
    bomb += compressor.flush()
    assert len(bomb) < 1 << 20
    assert len(ips._nifti_bytes(bomb, "bomb", 10**6)) == len(raw)
    out = SliceCNNImageProcessor(**RAW)(bomb, return_tensors="pt")["pixel_values"]
    expected = SliceCNNImageProcessor(**RAW)(path, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_threads_give_the_one_by_one_results_in_order(tmp_path):
    paths = [noisy_nifti_gz(tmp_path, f"v{i}.nii.gz", seed=i) for i in range(3)]
    content = asymmetric_volume((24, 28, 20), seed=7)
    inputs = [paths[0], content, paths[1].read_bytes(), str(paths[2]), nib.load(paths[0])]
    affine = [None, np.eye(4), None, None, None]
    processor = SliceCNNImageProcessor(target_shape=[12, 14, 10])
    one_by_one = processor(inputs, affine=affine, return_tensors="pt", num_threads=1)["pixel_values"]
    for threads in (2, 5, None):
        out = processor(inputs, affine=affine, return_tensors="pt", num_threads=threads)["pixel_values"]
        torch.testing.assert_close(out, one_by_one, rtol=0, atol=0)
    singles = torch.cat(
        [
            processor(item, affine=a, return_tensors="pt")["pixel_values"]
            for item, a in zip(inputs, affine, strict=True)
        ]
    )
    torch.testing.assert_close(one_by_one, singles, rtol=0, atol=0)
    assert SliceCNNImageProcessor(num_threads=3).num_threads == 3


def test_threads_keep_warnings_and_the_first_error_in_input_order():
    raw = nib.Nifti1Image(asymmetric_volume(), None).to_bytes()  # warns: no sform / qform
    processor = SliceCNNImageProcessor(target_shape=[6, 7, 8], num_threads=4)
    with pytest.warns(UserWarning) as record:
        processor([raw, asymmetric_volume(), raw], return_tensors="pt")
    messages = [str(item.message) for item in record]
    assert ["sform_code" in m for m in messages] == [True, False, True]
    assert "without an affine" in messages[1]
    assert all(item.filename == __file__ for item in record)
    with_nan = asymmetric_volume()
    with_nan[1, 2, 3] = np.nan
    with (
        pytest.warns(UserWarning, match="sform_code"),
        pytest.raises(ValueError, match=r"\(input 1\) contains 1"),
    ):
        processor([raw, with_nan, b"not a nifti" * 100], affine=[None, np.eye(4), None])
    with pytest.raises(ValueError, match="is not a NIfTI file"):
        processor([b"not a nifti" * 100, with_nan], affine=[None, np.eye(4)])
    # an error of the torch steps (caller's thread) before a decoding error (worker thread) of a later input
    constant = np.ones((6, 7, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\(input 0\) is constant"):
        processor([constant, b"not a nifti" * 100], affine=[np.diag([2.0, 2.0, 2.0, 1.0]), None])


def test_bad_num_threads_raise():
    for value in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="num_threads") as excinfo:
            SliceCNNImageProcessor(num_threads=value)
        one_line_error(excinfo)
    with pytest.raises(ValueError, match="num_threads"):
        SliceCNNImageProcessor()(asymmetric_volume(), affine=np.eye(4), num_threads=0)


@pytest.mark.parametrize(
    "dtype", ["uint8", "int8", "int16", "uint16", "int32", "int64", "float32", "float64"]
)
@pytest.mark.parametrize("scaling", [None, (2.5, -7.0), (1.0, 3.0), (0.1, 0.0)])
def test_voxels_read_in_place_equal_nibabel_get_fdata(dtype, scaling):
    rng = np.random.default_rng(3)
    values = (
        rng.integers(-100, 100, (5, 6, 7)) if np.dtype(dtype).kind in "iu" else rng.normal(0, 50, (5, 6, 7))
    )
    if np.dtype(dtype).kind == "u":
        values = np.abs(values)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.dtype(dtype))
    image = nib.Nifti1Image(values.astype(dtype), np.diag([-2.0, 2.0, 2.0, 1.0]), header=header)
    if scaling is not None:
        image.header.set_slope_inter(*scaling)
    raw = image.to_bytes()
    loaded = nib.Nifti1Image.from_bytes(raw)
    expected = loaded.get_fdata(dtype=np.float32)
    got, _ = ips._volume_from_image(loaded, "image", 10**6, raw)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    if dtype == "float32" and scaling is None:
        assert not got.flags.writeable  # read in place from `raw`, not through nibabel's copy
    # the processor's own output through this path equals the output from the nibabel image (get_fdata)
    processor = SliceCNNImageProcessor(target_shape=[4, 5, 6])
    from_bytes = processor(raw, return_tensors="pt")["pixel_values"]
    from_image = processor(nib.Nifti1Image.from_bytes(raw), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(from_bytes, from_image, rtol=0, atol=0)


def test_big_endian_nifti_read_in_place_equals_get_fdata():
    volume = asymmetric_volume()
    image = nib.Nifti1Image(volume, np.eye(4))
    raw = image.to_bytes()
    swapped = nib.Nifti1Image.from_bytes(raw)
    big = nib.Nifti1Image(
        swapped.get_fdata().astype(">f4"), np.eye(4), header=swapped.header.as_byteswapped(">")
    )
    big_raw = big.to_bytes()
    loaded = nib.Nifti1Image.from_bytes(big_raw)
    assert loaded.header.endianness == ">"
    got, _ = ips._volume_from_image(loaded, "image", 10**6, big_raw)
    np.testing.assert_array_equal(got, loaded.get_fdata(dtype=np.float32))
    np.testing.assert_array_equal(got, volume)
