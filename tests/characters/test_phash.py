import random

import pytest

from apps.characters.phash import band_probes, bands, hamming, near_pairs, to_signed, to_unsigned

pytestmark = pytest.mark.no_scale


def test_signed_roundtrip():
    for value in (0, 1, 2**63 - 1, 2**63, 2**64 - 1):
        assert to_unsigned(to_signed(value)) == value
        assert -(2**63) <= to_signed(value) < 2**63


@pytest.mark.parametrize("distance", [0, 3, 4, 6, 7, 8, 10])
def test_band_probes_find_every_hash_within_the_distance(distance):
    """The pigeonhole guarantee: a hash within ``distance`` matches some band probe."""
    rng = random.Random(distance)
    for _ in range(300):
        a = rng.getrandbits(64)
        flips = rng.sample(range(64), distance)
        b = a
        for bit in flips:
            b ^= 1 << bit
        assert hamming(a, b) == distance
        probes = band_probes(a, distance)
        assert any(bands(b)[i] in probes[i] for i in range(4))


def test_near_pairs_matches_brute_force():
    rng = random.Random(5)
    base = [rng.getrandbits(64) for _ in range(40)]
    hashes = base + [h ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64)) for h in base[:15]]
    expected = {(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes)) if hamming(hashes[i], hashes[j]) <= 6}
    assert {(i, j) for i, j, _ in near_pairs(hashes, 6)} == expected
    assert len(expected) >= 15
