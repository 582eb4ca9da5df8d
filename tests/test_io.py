"""Image readers and writers: one float32 [0, 1] bone-bright convention for every format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from spinelandmarks.data.io import (
    ImageReadError,
    Radiograph,
    read_dicom,
    read_image,
    read_image_size,
    write_dicom,
    write_png16,
)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def make_dicom(path: Path | None, stored: np.ndarray, *, bits_stored: int = 12,
               signed: bool = False, photometric: str = "MONOCHROME2",
               **attrs: Any) -> FileDataset:
    """A single-frame greyscale DICOM dataset (written to ``path`` when given)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.UID("1.2.840.10008.5.1.4.1.1.1.1")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path or "mem.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientID = "P0"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape[-2], stored.shape[-1]
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = stored.astype("<i2" if signed else "<u2").tobytes()
    ds["PixelData"].VR = "OW"
    for k, v in attrs.items():
        setattr(ds, k, v)
    if path is not None:
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return ds


STORED = np.array([[0, 1023], [2047, 4095]], dtype=np.uint16)


# ---------------------------------------------------------------------------------------------
# raster formats
# ---------------------------------------------------------------------------------------------
def test_png_8bit(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    Image.fromarray(np.array([[0, 51], [204, 255]], np.uint8)).save(p)
    r = read_image(p)
    assert isinstance(r, Radiograph)
    assert r.pixels.dtype == np.float32 and r.pixels.shape == (2, 2)
    np.testing.assert_allclose(r.pixels, [[0.0, 0.2], [0.8, 1.0]], atol=1e-7)
    assert r.pixel_spacing is None and r.source == str(p)
    assert r.meta["bit_depth"] == 8


def test_png_16bit_normalized_by_dtype_max_not_image_max(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    Image.fromarray(np.array([[0, 1000], [500, 250]], np.uint16)).save(p)
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, np.array([[0, 1000], [500, 250]]) / 65535.0, rtol=1e-6)
    assert r.pixels.max() < 0.02  # not stretched to the image's own max
    assert r.meta["bit_depth"] == 16


def test_32bit_mode_I_within_16_bits_is_read_as_16bit(tmp_path: Path) -> None:
    # older Pillow versions open 16-bit PNGs in mode "I"; a 32-bit TIFF gives the same mode
    p = tmp_path / "a.tif"
    Image.fromarray(np.array([[0, 65535], [32768, 1]], np.int32)).save(p)
    with Image.open(p) as img:
        assert img.mode == "I"
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, np.array([[0, 65535], [32768, 1]]) / 65535.0, rtol=1e-6)


def test_rgb_png_to_luminance(tmp_path: Path) -> None:
    p = tmp_path / "c.png"
    rgb = np.array([[[255, 0, 0], [10, 20, 30]], [[255, 255, 255], [0, 0, 0]]], np.uint8)
    Image.fromarray(rgb, "RGB").save(p)
    r = read_image(p)
    expected = [[0.299, (0.299 * 10 + 0.587 * 20 + 0.114 * 30) / 255], [1.0, 0.0]]
    np.testing.assert_allclose(r.pixels, expected, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff(tmp_path: Path, dtype: type) -> None:
    p = tmp_path / "a.tif"
    arr: np.ndarray = np.array([[0, 7], [100, 255]], dtype)
    Image.fromarray(arr).save(p)
    r = read_image(p)
    scale = 255.0 if dtype is np.uint8 else 65535.0
    np.testing.assert_allclose(r.pixels, arr / scale, rtol=1e-6)


def test_jpeg(tmp_path: Path) -> None:
    p = tmp_path / "a.jpg"
    arr = np.full((16, 16), 128, np.uint8)
    arr[8:, :] = 32
    Image.fromarray(arr).save(p, quality=100)
    r = read_image(p)
    assert r.pixels.shape == (16, 16)
    np.testing.assert_allclose(r.pixels[:4], 128 / 255, atol=2 / 255)
    np.testing.assert_allclose(r.pixels[12:], 32 / 255, atol=2 / 255)


def test_corrupt_and_truncated_raster(tmp_path: Path) -> None:
    p = tmp_path / "big.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 65535, (64, 64), dtype=np.uint16)).save(p)
    data = p.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png") as info:
        read_image(cut)
    assert info.value.__cause__ is not None
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not an image at all" * 10)
    with pytest.raises(ImageReadError, match=r"junk\.tif"):
        read_image(junk)
    with pytest.raises(FileNotFoundError, match=r"absent\.png"):
        read_image(tmp_path / "absent.png")


def test_write_png16_roundtrip_and_atomic(tmp_path: Path) -> None:
    x = np.linspace(0.0, 1.0, 60).reshape(6, 10)
    p = tmp_path / "sub" / "out.png"
    write_png16(p, x)
    assert sorted(f.name for f in p.parent.iterdir()) == ["out.png"]  # no temp file left
    with Image.open(p) as img:
        assert img.mode in ("I;16", "I") and img.size == (10, 6)
    r = read_image(p)
    assert np.abs(r.pixels - x).max() <= 0.5 / 65535 + 1e-7
    assert read_image_size(p) == (6, 10)  # (H, W)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_png16(p, x * 255)
    with pytest.raises(ValueError, match="2-D"):
        write_png16(p, np.zeros((2, 2, 3)))


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------
def test_write_dicom_roundtrip(tmp_path: Path) -> None:
    x = np.linspace(0.0, 1.0, 12).reshape(3, 4)
    p = tmp_path / "a.dcm"
    write_dicom(p, x, pixel_spacing=(0.15, 0.2), patient_id="PAT-7")
    ds = pydicom.dcmread(p)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 16
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, np.rint(x * 65535) / 65535, atol=1e-7)
    assert r.pixel_spacing == (0.15, 0.2)
    assert r.meta["patient_id"] == "PAT-7"
    assert read_image_size(p) == (3, 4)  # (H, W)


def test_dicom_without_suffix_detected_by_magic(tmp_path: Path) -> None:
    p = tmp_path / "IM0001"
    write_dicom(p, np.full((2, 3), 0.5))
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, 32768 / 65535, atol=1e-7)
    assert r.meta["format"] == "DICOM"


def test_monochrome2_range_from_bits_stored(tmp_path: Path) -> None:
    p = tmp_path / "m2.dcm"
    make_dicom(p, STORED)
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, STORED / 4095.0, rtol=1e-6)
    assert r.meta["range"] == (0.0, 4095.0) and r.meta["voi"] is None


def test_monochrome1_inverted(tmp_path: Path) -> None:
    p = tmp_path / "m1.dcm"
    make_dicom(p, STORED, photometric="MONOCHROME1")
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, [[1.0, 1 - 1023 / 4095], [1 - 2047 / 4095, 0.0]],
                               atol=1e-6)


def test_rescale_slope_intercept(tmp_path: Path) -> None:
    p = tmp_path / "rs.dcm"
    stored = np.array([[500, 0], [4095, 1000]], np.uint16)
    make_dicom(p, stored, RescaleSlope=2, RescaleIntercept=-1000)
    r = read_image(p)
    # range: [0 * 2 - 1000, 4095 * 2 - 1000] = [-1000, 7190]; 500 -> 0 -> 1000 / 8190
    np.testing.assert_allclose(r.pixels, [[1000 / 8190, 0.0], [1.0, 2000 / 8190]], atol=1e-6)
    assert r.meta["range"] == (-1000.0, 7190.0)


def test_negative_slope_range(tmp_path: Path) -> None:
    p = tmp_path / "neg.dcm"
    make_dicom(p, np.array([[0, 4095]], np.uint16), RescaleSlope=-1, RescaleIntercept=0)
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, [[1.0, 0.0]], atol=1e-7)


def test_window_center_width_and_apply_voi_false(tmp_path: Path) -> None:
    p = tmp_path / "win.dcm"
    stored = np.array([[0, 1064], [1163, 4000]], np.uint16)  # HU -1024, 40, 139, 2976
    make_dicom(p, stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40,
               WindowWidth=400)
    r = read_image(p)
    # DICOM LINEAR window: ((x - (c - 0.5)) / (w - 1) + 0.5), clipped to [0, 1]
    expected = [[0.0, 0.5 / 399 + 0.5], [(139 - 39.5) / 399 + 0.5, 1.0]]
    np.testing.assert_allclose(r.pixels, expected, atol=1e-6)
    assert r.meta["voi"] == "window" and r.meta["window"] == (40.0, 400.0)

    raw = read_image(p, apply_voi=False)
    np.testing.assert_allclose(raw.pixels, stored / 4095.0, atol=1e-6)  # range [-1024, 3071]
    assert raw.meta["voi"] is None


def test_window_then_monochrome1(tmp_path: Path) -> None:
    p = tmp_path / "w1.dcm"
    make_dicom(p, np.array([[1000, 3000]], np.uint16), photometric="MONOCHROME1",
               WindowCenter=2000.5, WindowWidth=1001)
    r = read_image(p)
    # below / above the window -> 0 / 1, then inverted
    np.testing.assert_allclose(r.pixels, [[1.0, 0.0]], atol=1e-7)


def test_voi_lut_sequence(tmp_path: Path) -> None:
    p = tmp_path / "lut.dcm"
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]
    item.LUTData = [0, 51, 204, 255]
    item["LUTData"].VR = "US"
    make_dicom(p, np.array([[0, 1], [2, 3]], np.uint16), bits_stored=2, VOILUTSequence=[item])
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, [[0.0, 0.2], [0.8, 1.0]], atol=1e-6)
    assert r.meta["voi"] == "lut"


def test_read_dicom_accepts_dataset() -> None:
    ds = make_dicom(None, STORED)
    r = read_dicom(ds)
    np.testing.assert_allclose(r.pixels, STORED / 4095.0, rtol=1e-6)


def test_signed_pixels(tmp_path: Path) -> None:
    p = tmp_path / "s.dcm"
    make_dicom(p, np.array([[-2048, 0, 2047]], np.int16), signed=True)
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, [[0.0, 2048 / 4095, 1.0]], atol=1e-6)


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"PixelSpacing": [0.1, 0.12], "ImagerPixelSpacing": [0.15, 0.15]}, (0.1, 0.12)),
        ({"ImagerPixelSpacing": [0.15, 0.18], "EstimatedRadiographicMagnificationFactor": 1.2},
         (0.125, 0.15)),
        ({"ImagerPixelSpacing": [0.15, 0.18]}, (0.15, 0.18)),
        ({}, None),
    ],
)
def test_pixel_spacing(tmp_path: Path, attrs: dict[str, Any],
                       expected: tuple[float, float] | None) -> None:
    p = tmp_path / "ps.dcm"
    make_dicom(p, STORED, **attrs)
    r = read_image(p)
    if expected is None:
        assert r.pixel_spacing is None
    else:
        assert r.pixel_spacing is not None
        np.testing.assert_allclose(r.pixel_spacing, expected, rtol=1e-12)


def test_multiframe_error(tmp_path: Path) -> None:
    p = tmp_path / "mf.dcm"
    make_dicom(p, np.stack([STORED, STORED]), NumberOfFrames=2)
    with pytest.raises(ImageReadError, match=r"mf\.dcm.*multi-frame"):
        read_image(p)


def test_colour_dicom_is_luminance_like_the_same_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    p = tmp_path / "film.dcm"
    ds = make_dicom(None, np.zeros((5, 7), np.uint16), photometric="RGB")
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = rgb.tobytes()
    ds["PixelData"].VR = "OB"
    pydicom.dcmwrite(p, ds, enforce_file_format=True)
    Image.fromarray(rgb, "RGB").save(tmp_path / "film.png")
    with pytest.warns(UserWarning, match=r"film\.dcm: colour DICOM \(RGB\) read as luminance"):
        dcm = read_image(p)
    png = read_image(tmp_path / "film.png")
    np.testing.assert_allclose(dcm.pixels, png.pixels, atol=1e-6)
    assert dcm.meta["colour"] is True


def test_missing_pixel_data(tmp_path: Path) -> None:
    p = tmp_path / "nopix.dcm"
    ds = make_dicom(None, STORED)
    del ds.PixelData
    pydicom.dcmwrite(p, ds, enforce_file_format=True)
    with pytest.raises(ImageReadError, match=r"nopix\.dcm.*PixelData"):
        read_image(p)


def test_missing_decoder_says_install_extra(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed")
    p = tmp_path / "jls.dcm"
    ds = make_dicom(None, STORED)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\0" * 20])
    ds["PixelData"].VR = "OB"
    pydicom.dcmwrite(p, ds, enforce_file_format=True)
    with pytest.raises(ImageReadError, match=r"jls\.dcm.*install spinelandmarks\[dicom\]"):
        read_image(p)


def test_truncated_and_corrupt_dicom(tmp_path: Path) -> None:
    good = tmp_path / "good.dcm"
    write_dicom(good, np.zeros((8, 8)))
    data = good.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-11])
    with pytest.raises(ImageReadError, match=r"cut\.dcm") as info:
        read_image(cut)
    assert info.value.__cause__ is not None
    head = tmp_path / "head.dcm"
    head.write_bytes(data[:300])
    with pytest.raises(ImageReadError, match=r"head\.dcm"):
        read_image(head)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00garbage" * 40)
    with pytest.raises(ImageReadError, match=r"junk\.dcm"):
        read_image(junk)
    assert issubclass(ImageReadError, ValueError)


def test_dicom_without_an_image_and_folders_named_clearly(tmp_path: Path) -> None:
    sr = tmp_path / "report.dcm"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.UID("1.2.840.10008.5.1.4.1.1.88.11")  # Basic SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(sr), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    pydicom.dcmwrite(sr, ds, enforce_file_format=True)
    for reader in (read_image_size, read_image):
        with pytest.raises(ImageReadError, match="DICOM without an image") as info:
            reader(sr)
        assert "Basic Text SR Storage" in str(info.value)
        assert str(info.value).count(str(sr)) == 1  # the path once
    fake = tmp_path / "fake.dcm"  # a PNG with a DICOM name
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(fake, format="PNG")
    for reader in (read_image_size, read_image):
        with pytest.raises(ImageReadError, match="not a valid DICOM file"):
            reader(fake)
    folder = tmp_path / "scan.dcm"
    folder.mkdir()
    for reader2 in (read_image_size, read_image, read_dicom):
        with pytest.raises(ImageReadError, match="is a folder, not an image file"):
            reader2(folder)  # type: ignore[operator]
