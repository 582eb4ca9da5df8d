"""Reading and writing radiographs with one intensity convention.

Every reader returns a :class:`Radiograph` whose ``pixels`` are a 2-D ``float32`` array in
``[0, 1]`` where 1 is the brightest *displayed* value (bone bright, as DICOM ``MONOCHROME2``).

Normalization is by the *nominal* range of the data, never by the image's own minimum and
maximum, so that two images of the same device keep comparable intensities:

* PNG / JPEG / TIFF: divide by the maximum of the stored type (255 for 8-bit, 65535 for
  16-bit). RGB(A) and palette images are converted to luminance (ITU-R BT.601 weights,
  computed in floating point).
* Colour DICOM (RGB, YBR, palette: secondary captures of films): luminance as for PNG, scaled
  by the stored bits, with a warning.
* DICOM: Modality LUT (or Rescale Slope / Intercept), then, when ``apply_voi`` and the file has
  one, the VOI LUT or the window (Window Center / Width, first value), then ``MONOCHROME1``
  inversion, then scaling to ``[0, 1]``. After a window the output range is known (it is the
  range pydicom maps the window to). Without a window the range is the one implied by the
  stored bits: ``[0, 2**BitsStored - 1]`` (unsigned) or ``[-2**(BitsStored-1),
  2**(BitsStored-1) - 1]`` (signed), or ``[0, 2**bits - 1]`` of a Modality LUT Sequence,
  passed through Rescale Slope / Intercept. Values outside the range are clipped.

Pixel spacing is ``(row_mm, col_mm)``: DICOM *Pixel Spacing* when present, else *Imager Pixel
Spacing* divided by *Estimated Radiographic Magnification Factor* (when present). Raster
formats report ``None`` (their DPI field rarely describes the detector); the DPI, if any, is
kept in ``meta``.

Unreadable files (corrupt, truncated, unsupported, compressed DICOM without a decoder) raise
:class:`ImageReadError`, a :class:`ValueError` whose message names the file and the reason.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, convert_color_space
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from .._atomic import atomic_write
from .._types import StrPath

try:  # pydicom >= 3
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
except ImportError:  # pragma: no cover - pydicom 2.x
    from pydicom.pixel_data_handlers.util import (  # type: ignore[no-redef]
        apply_modality_lut,
        apply_voi_lut,
    )

__all__ = [
    "DICOM_SUFFIXES",
    "RASTER_SUFFIXES",
    "ImageReadError",
    "Radiograph",
    "dicom_pixel_spacing",
    "is_dicom_file",
    "read_dicom",
    "read_image",
    "read_image_size",
    "write_dicom",
    "write_png16",
]

#: File suffixes read as DICOM without looking at the content.
DICOM_SUFFIXES: frozenset[str] = frozenset({".dcm", ".dicom"})
#: File suffixes read with Pillow.
RASTER_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})

#: SOP Class UID of Secondary Capture Image Storage, used by :func:`write_dicom`.
SECONDARY_CAPTURE_SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.7")

_PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])
_INSTALL_HINT = "install spinelandmarks[dicom] (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg)"


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and the reason."""


@dataclass
class Radiograph:
    """A radiograph in the library's intensity convention.

    Attributes
    ----------
    pixels : np.ndarray
        (H, W) float32 in ``[0, 1]``, 1 = brightest displayed value (bone bright).
    pixel_spacing : tuple of float or None
        ``(row_mm, col_mm)``: size of a pixel in mm along y and x, when known.
    source : str
        Path of the file, or a description of where the pixels came from.
    meta : dict
        Format details (format, mode / photometric interpretation, bits, window used, ...).
    """

    pixels: np.ndarray
    pixel_spacing: tuple[float, float] | None
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


# ---------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------
def is_dicom_file(path: StrPath) -> bool:
    """Whether ``path`` is DICOM by suffix (.dcm, .dicom) or by the ``DICM`` magic at byte 128."""
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_image(path: StrPath, *, apply_voi: bool = True) -> Radiograph:
    """Read a radiograph from DICOM, PNG, JPEG or TIFF.

    Parameters
    ----------
    path : str or PathLike
        Image file. DICOM is recognized by suffix (``.dcm``, ``.dicom``) or by the ``DICM``
        magic at byte 128 (any suffix); everything else is read with Pillow.
    apply_voi : bool
        DICOM only: apply the VOI LUT / window stored in the file.

    Returns
    -------
    Radiograph
        ``pixels`` (H, W) float32 in ``[0, 1]``.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ImageReadError
        The file is corrupt, truncated or of an unsupported kind.
    """
    p = _image_file(path)
    if is_dicom_file(p):
        return read_dicom(p, apply_voi=apply_voi)
    return _read_raster(p)


def _image_file(path: StrPath) -> Path:
    """``path`` as a Path, or a clear error when it is missing or a folder."""
    p = Path(path)
    if p.is_dir():
        raise ImageReadError(f"{p}: is a folder, not an image file")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such image file")
    return p


def _sop_class(ds: Dataset) -> str:
    """The DICOM object's kind, for messages ("Basic Text SR Storage", ...)."""
    uid = ds.get("SOPClassUID")
    return f"SOP class {getattr(uid, 'name', uid)}" if uid else "no SOP class"


def read_image_size(path: StrPath) -> tuple[int, int]:
    """``(height, width)`` in pixels of an image from its header only (no pixel decoding).

    Like every other size in the package, rows first (it returned ``(width, height)`` before
    0.2.0).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ImageReadError
        The header cannot be read.
    """
    p = _image_file(path)
    if is_dicom_file(p):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
        except Exception as exc:
            raise ImageReadError(f"{p}: cannot read DICOM header: {exc}") from exc
        if not ds.get("SOPClassUID") and "Rows" not in ds:  # nothing DICOM was parsed
            raise ImageReadError(f"{p}: not a valid DICOM file (no DICOM header found)")
        if "Columns" not in ds or "Rows" not in ds:
            raise ImageReadError(f"{p}: DICOM without an image (no Rows/Columns; "
                                 f"{_sop_class(ds)})")
        return int(ds.Rows), int(ds.Columns)
    try:
        with Image.open(p) as img:
            w, h = img.size
            return int(h), int(w)
    except Exception as exc:
        raise ImageReadError(f"{p}: cannot read image header: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# raster formats (Pillow)
# ---------------------------------------------------------------------------------------------
_LUMA = np.array([0.299, 0.587, 0.114])


def _read_raster(p: Path) -> Radiograph:
    try:
        with Image.open(p) as img:
            img.load()
            fmt = str(img.format)
            mode = img.mode
            info = dict(img.info)
            pixels, bit_depth = _raster_to_float(img, fmt)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(f"{p}: cannot read image: {exc}") from exc
    meta: dict[str, Any] = {"format": fmt, "mode": mode, "bit_depth": bit_depth}
    if "dpi" in info:
        meta["dpi"] = tuple(float(d) for d in info["dpi"])
    return Radiograph(pixels, None, str(p), meta)


def _raster_to_float(img: Image.Image, fmt: str) -> tuple[np.ndarray, int]:
    """(H, W) float32 in [0, 1] and the nominal bit depth of a Pillow image."""
    mode = img.mode
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        rgb = np.asarray(img.convert("RGB"), dtype=np.float64)
        return (rgb @ _LUMA / 255.0).astype(np.float32).clip(0.0, 1.0), 8
    if mode == "LA":
        img = img.convert("L")
        mode = "L"
    if mode == "1":
        return np.asarray(img, dtype=np.float32), 1
    if mode == "L":
        return np.asarray(img, dtype=np.float32) / np.float32(255.0), 8
    if mode.startswith("I;16"):
        # float32 division is exact to the last bit here (every 16-bit value checked against
        # the float64 route) and a quarter of its memory traffic on a 3000-px film
        return np.asarray(img).astype(np.float32) / np.float32(65535.0), 16
    if mode == "I":
        arr = np.asarray(img).astype(np.float64)
        if arr.size and arr.min() < 0:
            raise ImageReadError(f"{img.filename if hasattr(img, 'filename') else fmt}: "
                                 "signed 32-bit images are not supported")
        # PNG stores at most 16 bits; other 32-bit images are treated as 16-bit if they fit.
        if fmt == "PNG" or not arr.size or arr.max() <= 65535:
            return (arr / 65535.0).astype(np.float32), 16
        return (arr / 4294967295.0).astype(np.float32), 32
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
            raise ImageReadError(f"{getattr(img, 'filename', fmt)}: floating-point image "
                                 "values must lie in [0, 1]")
        return arr.copy(), 32
    raise ImageReadError(f"{getattr(img, 'filename', fmt)}: unsupported image mode {mode!r}")


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------
def read_dicom(path_or_dataset: StrPath | Dataset, *, apply_voi: bool = True) -> Radiograph:
    """Read a single-frame greyscale DICOM image.

    Parameters
    ----------
    path_or_dataset : str, PathLike or pydicom.Dataset
        A DICOM file or an already-read dataset (with pixel data).
    apply_voi : bool
        Apply the VOI LUT (preferred) or the first window (Window Center / Width) when the
        file has one. With ``False`` the output covers the full stored range.

    Returns
    -------
    Radiograph
        ``pixels`` (Rows, Columns) float32 in ``[0, 1]``, bone bright; ``pixel_spacing``
        ``(row_mm, col_mm)`` or None; ``meta`` with photometric interpretation, bits stored,
        transfer syntax, the VOI applied (``"voi"``: ``"lut"``, ``"window"`` or None) and the
        ``(lo, hi)`` ``"range"`` mapped to ``[0, 1]``.

    Raises
    ------
    ImageReadError
        Not DICOM, corrupt or truncated, no pixel data, multi-frame, or compressed with
        no decoder installed (the message then says to install ``spinelandmarks[dicom]``).
    """
    if isinstance(path_or_dataset, Dataset):
        ds = path_or_dataset
        filename = getattr(ds, "filename", None)
        source = str(filename) if isinstance(filename, str) and filename else "<pydicom Dataset>"
    else:
        p = Path(path_or_dataset)
        source = str(p)
        ds = _dcmread(_image_file(p))

    _check_single_image(ds, source)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or photometric not in (
            "MONOCHROME1", "MONOCHROME2"):
        return _colour_dicom(ds, source)
    tsyntax = _transfer_syntax(ds)
    arr, (lo, hi), voi = _dicom_values(ds, source, apply_voi)

    span = hi - lo
    if span <= 0:
        raise ImageReadError(f"{source}: empty intensity range [{lo}, {hi}]")
    out = ((arr.astype(np.float64) - lo) / span).clip(0.0, 1.0)
    if photometric == "MONOCHROME1":
        out = 1.0 - out

    meta: dict[str, Any] = {
        "format": "DICOM",
        "photometric_interpretation": photometric,
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
        "transfer_syntax": str(tsyntax) if tsyntax is not None else None,
        "voi": voi,
        "range": (lo, hi),
    }
    if voi == "window":
        meta["window"] = (_first(ds.WindowCenter), _first(ds.WindowWidth))
    for key, tag in (("patient_id", "PatientID"), ("modality", "Modality")):
        if ds.get(tag):
            meta[key] = str(ds.get(tag))
    return Radiograph(out.astype(np.float32), dicom_pixel_spacing(ds), source, meta)


def _check_single_image(ds: Dataset, source: str) -> None:
    """Refuse DICOM objects without one image frame, naming the file."""
    if "PixelData" not in ds:
        raise ImageReadError(f"{source}: DICOM without an image (no PixelData; "
                             f"{_sop_class(ds)}): not an image, or the file is truncated")
    frames = ds.get("NumberOfFrames", 1)
    try:
        n_frames = int(frames) if frames not in (None, "") else 1
    except (TypeError, ValueError):
        n_frames = 1
    if n_frames > 1:
        raise ImageReadError(f"{source}: multi-frame DICOM ({n_frames} frames) is not supported; "
                             "export a single frame")


def _dicom_values(ds: Dataset, source: str, apply_voi: bool
                  ) -> tuple[np.ndarray, tuple[float, float], str | None]:
    """Displayed values of a greyscale DICOM: decoded, Modality LUT, then VOI LUT or window
    (``apply_voi``); with the range they span and which VOI was applied."""
    tsyntax = _transfer_syntax(ds)
    try:
        stored = ds.pixel_array
    except Exception as exc:
        if tsyntax is not None and tsyntax.is_compressed and _decoder_missing(tsyntax, exc):
            raise ImageReadError(
                f"{source}: no decoder for compressed transfer syntax {tsyntax.name} "
                f"({tsyntax}); {_INSTALL_HINT}") from exc
        raise ImageReadError(f"{source}: cannot decode DICOM pixel data: {exc}") from exc
    stored = np.asarray(stored)
    if stored.ndim != 2:
        raise ImageReadError(f"{source}: expected a 2-D single-frame image, got pixel array "
                             f"of shape {stored.shape}")

    try:
        arr = np.asarray(apply_modality_lut(stored, ds))
        lo, hi = _stored_range(ds)
        voi: str | None = None
        if apply_voi:
            has_lut, has_window = _voi_kind(ds)
            if has_lut or has_window:
                if has_lut and not np.issubdtype(arr.dtype, np.integer):
                    arr = np.rint(arr).astype(np.int64)
                arr = np.asarray(apply_voi_lut(arr, ds, index=0, prefer_lut=True))
                if has_lut:
                    voi = "lut"
                    bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
                    lo, hi = 0.0, float(2**bits - 1)
                else:
                    voi = "window"
    except Exception as exc:
        raise ImageReadError(f"{source}: cannot apply DICOM LUTs: {exc}") from exc
    return arr, (lo, hi), voi


def _colour_dicom(ds: Dataset, source: str) -> Radiograph:
    """A colour DICOM (RGB, YBR or palette: a secondary capture of a film) as luminance.

    Converted like a colour PNG (ITU-R BT.601 weights over RGB), with a warning: a film
    photographed or scanned in colour is a copy, not the detector's data.
    """
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    try:
        arr = np.asarray(ds.pixel_array)
        if photometric == "PALETTE COLOR":
            arr = np.asarray(apply_color_lut(arr, ds))
        elif photometric.startswith("YBR") and arr.ndim == 3:
            arr = np.asarray(convert_color_space(arr, photometric, "RGB"))
    except Exception as exc:
        raise ImageReadError(f"{source}: cannot decode colour DICOM ({photometric}): "
                             f"{exc}") from exc
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ImageReadError(f"{source}: expected a single-frame colour image, got pixel "
                             f"array of shape {arr.shape} ({photometric})")
    bits = int(ds.get("BitsStored", 8) or 8)
    if photometric == "PALETTE COLOR":  # LUT entries are 8 or 16 bits
        bits = 16 if arr.max(initial=0) > 255 else 8
    warnings.warn(f"{source}: colour DICOM ({photometric}) read as luminance", stacklevel=3)
    lum = (arr.astype(np.float64) @ _LUMA / float(2**bits - 1)).clip(0.0, 1.0)
    meta: dict[str, Any] = {"format": "DICOM", "photometric_interpretation": photometric,
                            "bits_stored": bits, "colour": True}
    return Radiograph(lum.astype(np.float32), dicom_pixel_spacing(ds), source, meta)


def dicom_pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """``(row_mm, col_mm)`` of a DICOM dataset.

    *Pixel Spacing* when present (already calibrated to the patient plane); otherwise *Imager
    Pixel Spacing* (at the detector) divided by *Estimated Radiographic Magnification Factor*
    when that is present; otherwise None.
    """
    try:
        ps = ds.get("PixelSpacing")
        if ps is not None and len(ps) == 2:
            return float(ps[0]), float(ps[1])
        ips = ds.get("ImagerPixelSpacing")
        if ips is not None and len(ips) == 2:
            mag = ds.get("EstimatedRadiographicMagnificationFactor")
            m = float(mag) if mag not in (None, "") else 1.0
            if not m > 0:
                m = 1.0
            return float(ips[0]) / m, float(ips[1]) / m
    except (TypeError, ValueError):
        return None
    return None


def _dcmread(p: Path) -> Dataset:
    """Read a DICOM file; ``force`` only when it has a DICOM suffix but no preamble."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
        force = not (len(head) == 132 and head[128:132] == b"DICM")
        ds = pydicom.dcmread(p, force=force)
    except InvalidDicomError as exc:
        raise ImageReadError(f"{p}: not a valid DICOM file: {exc}") from exc
    except Exception as exc:
        raise ImageReadError(f"{p}: corrupt or truncated DICOM file: {exc!r}") from exc
    if force and "PixelData" not in ds:
        raise ImageReadError(f"{p}: not a valid DICOM file (no DICM preamble and no PixelData)")
    return ds


def _transfer_syntax(ds: Dataset) -> UID | None:
    fm = getattr(ds, "file_meta", None)
    ts = fm.get("TransferSyntaxUID") if fm is not None else None
    return UID(str(ts)) if ts else None


def _decoder_missing(tsyntax: UID, exc: BaseException) -> bool:
    """Whether decoding failed because no decoder plugin is installed for ``tsyntax``."""
    if isinstance(exc, ImportError):
        return True
    try:  # pydicom >= 3
        from pydicom.pixels import get_decoder

        try:
            return not get_decoder(tsyntax).is_available
        except NotImplementedError:
            return True
    except ImportError:  # pragma: no cover - pydicom 2.x
        msg = str(exc).lower()
        return any(w in msg for w in ("handler", "plugin", "dependenc", "decoder", "available"))


def _first(value: Any) -> float:
    """First value of a possibly multi-valued numeric element."""
    if isinstance(value, (list, tuple, MultiValue)):
        return float(value[0])
    return float(value)


def _voi_kind(ds: Dataset) -> tuple[bool, bool]:
    """(has usable VOI LUT Sequence, has usable window), as pydicom's apply_voi_lut decides."""
    seq = ds.get("VOILUTSequence")
    has_lut = bool(seq) and None not in (seq[0].get("LUTDescriptor"), seq[0].get("LUTData"))
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    return has_lut, has_window


def _stored_range(ds: Dataset) -> tuple[float, float]:
    """Nominal (lo, hi) after the Modality LUT, implied by BitsStored / LUT bits and rescale.

    This is also the output range pydicom's windowing maps a window to.
    """
    mlut = ds.get("ModalityLUTSequence")
    if mlut:
        lo, hi = 0.0, float(2 ** int(mlut[0].LUTDescriptor[2]) - 1)
        return lo, hi
    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 16) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, icpt = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = sorted((lo * slope + icpt, hi * slope + icpt))
    return lo, hi


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------
def _to_uint16(pixels: np.ndarray, what: str, bits: int = 16) -> np.ndarray:
    if not 1 <= bits <= 16:
        raise ValueError(f"{what}: bits must be in 1..16, got {bits}")
    arr = np.asarray(pixels, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{what}: pixels must be 2-D (H, W), got shape {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{what}: pixels contain NaN or infinite values")
    if arr.size and (arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
        raise ValueError(f"{what}: pixels must lie in [0, 1], got "
                         f"[{arr.min():.6g}, {arr.max():.6g}]")
    return np.rint(arr.clip(0.0, 1.0) * float(2**bits - 1)).astype(np.uint16)


def write_png16(path: StrPath, pixels: np.ndarray, bits: int = 16) -> None:
    """Write a ``[0, 1]`` image as a 16-bit greyscale PNG, atomically.

    Parameters
    ----------
    path : str or PathLike
        Destination; parent directories are created.
    pixels : np.ndarray
        (H, W) floats in ``[0, 1]``; stored as ``round(pixels * (2**bits - 1))``, so with the
        default 16 bits :func:`read_image` returns them within ``0.5 / 65535``.
    bits : int
        Significant bits of the stored values. ``12`` writes 12-bit data (0..4095) in the
        16-bit file unscaled, as many archives do: such a file reads as values up to
        ``4095 / 65535`` (an almost black image until windowed).

    Raises
    ------
    ValueError
        Not 2-D, non-finite, or outside ``[0, 1]``.
    """
    p = Path(path)
    data = _to_uint16(pixels, str(p), bits)
    img = Image.fromarray(data)
    if img.mode != "I;16":  # pragma: no cover - very old Pillow
        img = Image.frombytes("I;16", (data.shape[1], data.shape[0]), data.tobytes())
    atomic_write(p, lambda tmp: img.save(tmp, format="PNG"))


def write_dicom(path: StrPath, pixels: np.ndarray,
                pixel_spacing: tuple[float, float] | None = None,
                patient_id: str | None = None, *, bits_stored: int = 16,
                photometric: str = "MONOCHROME2") -> None:
    """Write a minimal uncompressed greyscale DICOM file, atomically.

    Secondary Capture Image Storage, Modality ``DX``, Conversion Type ``SYN`` (synthetic),
    Explicit VR Little Endian, BitsAllocated 16, no rescale and no window, so :func:`read_dicom`
    returns ``round(pixels * (2**bits_stored - 1)) / (2**bits_stored - 1)``.

    Parameters
    ----------
    path : str or PathLike
        Destination; parent directories are created.
    pixels : np.ndarray
        (H, W) floats in ``[0, 1]``.
    pixel_spacing : (float, float) or None
        ``(row_mm, col_mm)``, written as *Pixel Spacing*.
    patient_id : str or None
        Written as *Patient ID* (also used as *Patient's Name*).
    bits_stored : int
        *Bits Stored* (1..16); values are scaled to ``2**bits_stored - 1``.
    photometric : {"MONOCHROME2", "MONOCHROME1"}
        With ``MONOCHROME1`` the stored values are inverted (bright bone stored low), as that
        interpretation requires.
    """
    p = Path(path)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"{p}: photometric must be MONOCHROME1 or MONOCHROME2, "
                         f"got {photometric!r}")
    data = _to_uint16(pixels, str(p), bits_stored)
    if photometric == "MONOCHROME1":
        data = (2**bits_stored - 1 - data.astype(np.int32)).astype(np.uint16)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID

    ds = FileDataset(str(p), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id or ""
    ds.PatientName = patient_id or ""
    ds.Modality = "DX"
    ds.ConversionType = "SYN"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(data.shape[0]), int(data.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = int(bits_stored)
    ds.HighBit = int(bits_stored) - 1
    ds.PixelRepresentation = 0
    if pixel_spacing is not None:
        ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
    ds.PixelData = data.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"

    def _save(tmp: str) -> None:
        if _PYDICOM_MAJOR >= 3:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        else:  # pragma: no cover - pydicom 2.x
            ds.is_little_endian = True
            ds.is_implicit_VR = False
            cast(Any, ds).save_as(tmp, write_like_original=False)

    atomic_write(p, _save)
