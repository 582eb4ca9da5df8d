"""The training datasets' cache of decoded, normalized radiographs (memory LRU or disk)."""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._atomic import atomic_write, atomic_write_text
from .._types import StrPath
from ..defaults import DEFAULT_CACHE_BYTES

__all__ = ["DEFAULT_CACHE_BYTES", "CacheMode", "Cached", "ImageCache", "dequantize", "quantize"]

CacheMode = Literal["none", "memory", "disk"]
#: ``(pixels, original (H, W), file pixel spacing)``: a cache entry (pixels as uint16).
Cached = tuple[np.ndarray, tuple[int, int], tuple[float, float] | None]


def quantize(px: np.ndarray) -> np.ndarray:
    """Intensities in ``[0, 1]`` as uint16 (``round(x * 65535)``: within ``0.5 / 65535``)."""
    return np.clip(np.rint(px * np.float32(65535.0)), 0, 65535).astype(np.uint16)


def dequantize(px: np.ndarray) -> np.ndarray:
    """uint16 from :func:`quantize` back to float32 in ``[0, 1]``."""
    return np.asarray(px, dtype=np.float32) * np.float32(1.0 / 65535.0)


class ImageCache:
    """Cache of decoded, normalized (and possibly resized) images, stored as uint16.

    The datasets always quantize their normalized images to uint16 (:func:`quantize`), with
    or without a cache, so a cached sample equals an uncached one exactly.

    Parameters
    ----------
    mode : {"none", "memory", "disk"}
        ``"memory"``: an LRU of at most ``max_bytes`` of pixels (and ``max_items`` images)
        *per process*: every DataLoader worker has its own. ``"disk"``: one ``.npy`` file
        per image in ``cache_dir``, read memory-mapped (a crop reads only the pages it
        covers; the operating system's page cache is shared by the workers), keyed by the
        absolute path, size and mtime of the source file and by the variant (e.g. the
        resized size), so a changed file is re-read.
    cache_dir : str or PathLike, optional
        Default ``$SPINELANDMARKS_CACHE`` or ``~/.cache/spinelandmarks``; ``spinelandmarks
        train`` uses ``RUN/cache``.
    max_items : int, optional
        Most images in the memory LRU (None: no limit but the bytes).
    max_bytes : int
        Most bytes of pixels in the memory LRU (default :data:`DEFAULT_CACHE_BYTES`); an
        image larger than that is not kept.

    Attributes
    ----------
    hits, misses : int
        Look-ups served from the cache / computed, in this process.
    """

    def __init__(self, mode: CacheMode = "none", cache_dir: StrPath | None = None,
                 max_items: int | None = None, max_bytes: int | None = None) -> None:
        if mode not in ("none", "memory", "disk"):
            raise ValueError(f"cache must be 'none', 'memory' or 'disk', got {mode!r}")
        self.mode: CacheMode = mode
        default = os.environ.get("SPINELANDMARKS_CACHE",
                                 str(Path.home() / ".cache" / "spinelandmarks"))
        self.cache_dir = Path(cache_dir if cache_dir is not None else default)
        self.max_items = None if max_items is None else int(max_items)
        self.max_bytes = DEFAULT_CACHE_BYTES if max_bytes is None else int(max_bytes)
        self._mem: OrderedDict[str, Cached] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_mem"] = OrderedDict()  # workers start empty
        state["nbytes"] = 0
        return state

    def get(self, path: Path, variant: str, compute: Callable[[], Cached]) -> Cached:
        """``(pixels, original (H, W), file pixel spacing)``, computed by ``compute()`` on a miss.

        ``compute`` returns the same triple; ``pixels`` is a uint16 array (:func:`quantize`),
        read-only when it comes from the disk cache.
        """
        if self.mode == "none":
            return compute()
        key = f"{path.resolve()}|{variant}"
        if self.mode == "memory":
            return self._get_memory(key, compute)
        return self._get_disk(path, key, compute)

    def _get_memory(self, key: str, compute: Callable[[], Cached]) -> Cached:
        hit = self._mem.get(key)
        if hit is not None:
            self._mem.move_to_end(key)
            self.hits += 1
            return hit
        self.misses += 1
        val = compute()
        size = int(val[0].nbytes)
        if size > self.max_bytes:
            return val
        self._mem[key] = val
        self.nbytes += size
        while self.nbytes > self.max_bytes or (
                self.max_items is not None and len(self._mem) > self.max_items):
            _, old = self._mem.popitem(last=False)
            self.nbytes -= int(old[0].nbytes)
        return val

    def _get_disk(self, path: Path, key: str, compute: Callable[[], Cached]) -> Cached:
        st = path.stat()
        digest = hashlib.sha1(f"{key}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        file = self.cache_dir / f"{digest}.npy"
        meta = file.with_suffix(".json")
        if file.is_file() and meta.is_file():
            try:
                info = json.loads(meta.read_text())
                px = np.load(file, mmap_mode="r")
                sp = info["spacing"]
                self.hits += 1
                return (px, (int(info["orig"][0]), int(info["orig"][1])),
                        None if sp is None else (float(sp[0]), float(sp[1])))
            except (OSError, ValueError, KeyError):
                pass  # corrupt or concurrent write: recompute
        self.misses += 1
        px, orig, spacing = compute()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # metadata first, pixels last: a complete .npy means a complete entry
        atomic_write_text(meta, json.dumps({"orig": list(orig), "spacing": spacing,
                                            "source": str(path)}))
        atomic_write(file, lambda tmp: _save_npy(tmp, px))
        return px, orig, spacing


def _save_npy(path: str, px: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a name
        np.save(f, np.asarray(px, np.uint16))
