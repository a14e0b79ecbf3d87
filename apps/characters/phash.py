"""Perceptual hashes and their bands: the near-duplicate index without a table scan.

A 64-bit pHash is split into ``BAND_COUNT`` bands of 16 bits, each stored in an indexed column. Two
hashes within Hamming distance ``d`` differ, by the pigeonhole principle, in at most ``d // BAND_COUNT``
bits of at least one band. So the candidates of a hash are the rows whose band ``i`` equals band ``i``
of the hash, or one of its neighbours within that radius: a few indexed ``IN`` lookups, then an exact
distance check on the handful of rows they return. No full scan, no hashes held in memory.
"""
from __future__ import annotations

from functools import lru_cache
from itertools import combinations

import imagehash
from PIL import Image as PILImage

BAND_COUNT = 4
BAND_BITS = 16
_BAND_MASK = (1 << BAND_BITS) - 1


def compute_phash(image: PILImage.Image) -> int:
    """The 64-bit DCT perceptual hash of an RGB image, as an unsigned integer."""
    bits = imagehash.phash(image, hash_size=8).hash.flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def to_signed(value: int) -> int:
    """Unsigned 64-bit → signed 64-bit, for a BigIntegerField."""
    return value - (1 << 64) if value >= (1 << 63) else value


def to_unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def bands(value: int) -> list[int]:
    value = to_unsigned(value)
    return [(value >> (BAND_BITS * i)) & _BAND_MASK for i in range(BAND_COUNT)]


def hamming(a: int, b: int) -> int:
    return (to_unsigned(a) ^ to_unsigned(b)).bit_count()


@lru_cache(maxsize=8)
def _flip_masks(radius: int) -> tuple[int, ...]:
    masks = [0]
    for r in range(1, radius + 1):
        for positions in combinations(range(BAND_BITS), r):
            mask = 0
            for p in positions:
                mask |= 1 << p
            masks.append(mask)
    return tuple(masks)


def band_probes(value: int, max_distance: int) -> list[list[int]]:
    """For each band, the band values a hash within ``max_distance`` must match in at least one band."""
    radius = max(0, max_distance) // BAND_COUNT
    masks = _flip_masks(radius)
    return [[band ^ mask for mask in masks] for band in bands(value)]


def phash_hex(value: int) -> str:
    return f"{to_unsigned(value):016x}"


def near_pairs(hashes: list[int], max_distance: int):
    """Yield ``(i, j, distance)`` for every pair ``i < j`` of ``hashes`` within ``max_distance``.

    For a bounded set held by the caller (a dataset version): the same band probes, over dicts.
    """
    buckets: list[dict[int, list[int]]] = [{} for _ in range(BAND_COUNT)]
    for index, value in enumerate(hashes):
        for band_index, band in enumerate(bands(value)):
            buckets[band_index].setdefault(band, []).append(index)
    for i, value in enumerate(hashes):
        seen: set[int] = set()
        for band_index, probes in enumerate(band_probes(value, max_distance)):
            for probe in probes:
                for j in buckets[band_index].get(probe, ()):
                    if j > i and j not in seen:
                        seen.add(j)
                        distance = hamming(value, hashes[j])
                        if distance <= max_distance:
                            yield i, j, distance
