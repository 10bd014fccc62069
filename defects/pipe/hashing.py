"""Perceptual hash (pHash) of an image and the Hamming distance between two hashes.

A stand-in for ``imagehash.phash``, which is the reference: this follows its documented
algorithm step for step (grey "L", 32x32 Lanczos resize with PIL, 2-D DCT-II along axis 0
then axis 1, the top-left 8x8 coefficients, bit = coefficient > their median) so hashes and
thresholds carry over. ``imagehash`` is not in the lock yet; once it is, ``phash`` here should
become a thin wrapper around ``imagehash.phash`` (or be replaced by it).
"""

from __future__ import annotations

import os

import numpy as np
import scipy.fft
from PIL import Image

__all__ = ["HASH_SIZE", "hamming", "hash_hex", "phash", "phash_file"]

HASH_SIZE = 8  # 8x8 = 64 bits, imagehash's default
_HIGHFREQ_FACTOR = 4  # the image is shrunk to HASH_SIZE * 4 = 32 px square before the DCT


def phash(image: Image.Image, hash_size: int = HASH_SIZE) -> np.ndarray:
    """(hash_size, hash_size) bool array: which low DCT frequencies are above their median.

    Low frequencies describe the coarse layout of the picture, so re-encoding, a brightness
    shift (only the DC term moves, and it stays above the median) or a slight resize leave
    the hash (nearly) unchanged while a different picture flips about half the bits.
    """
    if hash_size < 2:
        raise ValueError(f"hash_size must be >= 2, got {hash_size}")
    size = hash_size * _HIGHFREQ_FACTOR
    grey = image.convert("L").resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey)
    dct = scipy.fft.dct(scipy.fft.dct(pixels, axis=0), axis=1)
    low = dct[:hash_size, :hash_size]
    return low > np.median(low)


def phash_file(path: str | os.PathLike[str], hash_size: int = HASH_SIZE) -> np.ndarray:
    """pHash of an image file; FormatError naming it when it cannot be decoded."""
    from defects.data.images import open_image  # lazy: defects.data.images imports formats

    with open_image(path) as image:
        return phash(image, hash_size)


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    """Number of differing bits between two hashes of the same size."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"hashes differ in size: {a.shape} vs {b.shape}")
    return int(np.count_nonzero(a != b))


def hash_hex(bits: np.ndarray) -> str:
    """Hex text of a hash, row-major and most significant bit first, as imagehash prints it."""
    flat = np.asarray(bits, bool).ravel()
    value = int("".join("1" if b else "0" for b in flat), 2) if flat.size else 0
    return f"{value:0{(flat.size + 3) // 4}x}"
