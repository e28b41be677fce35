"""The multi-index near-duplicate search finds exactly the pairs (distance, orientation) that
comparing every pair finds: on the shared photo collections' real hashes and on random sets with
planted near copies up to 20,000 images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from harness.core.choices import NEAR_DUPLICATES
from harness.data import near_pairs as module
from harness.data.hashing import HASH_BITS, inverse_orientation
from harness.data.image_store import ImageStore

DATA = Path(os.environ.get("HARNESS_TEST_DATA") or "/nonexistent")
COLLECTIONS = ("minerals", "sports15", "seashells8")
RADIUS = round(NEAR_DUPLICATES * HASH_BITS)  # as harness.data.leakage uses it
WIDTH = -(-HASH_BITS // 8)


def as_dict(pairs: module.NearPairs) -> dict[tuple[int, int], tuple[int, int]]:
    return {(int(a), int(b)): (int(bits), int(turn)) for a, b, bits, turn in zip(*pairs)}


def reference(oriented, max_bits: int) -> module.NearPairs:
    """Every pair compared (the search near_pairs used before issue 30)."""
    turns = min(len(row) for row in oriented)
    every = module._hash_words([h for row in oriented for h in row[:turns]])
    return module._least_per_pair(*module._compare_every_pair(every, turns, max_bits))


def searched(oriented, max_bits: int, blocks) -> module.NearPairs:
    """The multi-index search with the given blocks, whatever near_pairs would choose."""
    turns = min(len(row) for row in oriented)
    every = module._hash_words([h for row in oriented for h in row[:turns]])
    return module._least_per_pair(*module._multi_index_search(every, turns, max_bits, blocks))


def assert_same(found: module.NearPairs, expected: module.NearPairs) -> None:
    for name, a, b in zip(module.NearPairs._fields, found, expected):
        assert np.array_equal(a, b), name  # the same pairs, in the same order


def plans(max_bits: int, n: int) -> list[list]:
    """Blocks near_pairs would choose for n images, for 16,000 and for a million (where it uses them)."""
    found = [module._plan(WIDTH, max_bits, size, 8 * size) for size in (n, 16_000, 10**6)]
    assert found[-1] is not None
    return [blocks for blocks in found if blocks is not None]


@pytest.mark.parametrize("width", [8, 24, 48, 64])
@pytest.mark.parametrize("max_bits", [0, 1, 5, 30, 47, 80])
def test_every_plan_covers_the_threshold_by_the_pigeonhole_principle(width, max_bits):
    for n in (100, 2000, 16_000, 10**6):
        blocks = module._plan(width, max_bits, n, 8 * n)
        if blocks is None:
            continue
        assert sum(radius + 1 for _, _, radius in blocks) > max_bits  # every block further off: too far
        assert all(0 <= start and start + size <= width for start, size, _ in blocks)
        assert len({start for start, _, _ in blocks}) == len(blocks)  # disjoint bytes
    assert module._plan(48, 30, 10**6, 8 * 10**6) is not None  # the scale that matters
    assert module._plan(48, 30, 30, 240) is None  # a handful of images: comparing every pair is cheaper


# -- real hashes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_hashes(tmp_path_factory):
    if not DATA.is_dir():
        pytest.skip("set HARNESS_TEST_DATA to the shared datasets folder (../shared/datasets; .ci/run sets it): the "
                    "search is checked against the brute force on real photos' hashes")
    store = ImageStore(tmp_path_factory.mktemp("cache"), workers=2, progress=False)
    found = {}
    for name in COLLECTIONS:
        paths = sorted(str(p) for p in (DATA / name).rglob("*") if p.is_file() and not p.name.startswith("."))
        found[name] = [p.oriented_phashes for p in store.probe(paths) if p.ok]
    store.close()
    return found


@pytest.mark.parametrize("max_bits", [RADIUS, 45])
def test_real_collections_give_the_pairs_of_comparing_every_pair(real_hashes, max_bits):
    everything = [row for name in COLLECTIONS for row in real_hashes[name]]
    for name, oriented in [*real_hashes.items(), ("all three", everything)]:
        assert len(oriented) > 100 and all(len(row) == 8 for row in oriented), name
        expected = reference(oriented, max_bits)
        assert_same(module.near_pairs(oriented, max_bits), expected)
        for blocks in plans(max_bits, len(oriented)):
            assert_same(searched(oriented, max_bits, blocks), expected)
    if max_bits == RADIUS:  # what the collections are known to hold (datasets/README.md)
        assert len(reference(real_hashes["sports15"], max_bits).first) >= 11


# -- random hashes with planted near copies ------------------------------------------------------


def random_oriented(n: int, rng: np.random.Generator) -> np.ndarray:
    raw = rng.integers(0, 256, (n, 8, WIDTH), dtype=np.uint8)
    raw[..., -1] &= np.uint8((0xFF << (8 * WIDTH - HASH_BITS)) & 0xFF)  # padding bits zero, as real hashes
    return raw


def flipped(hash_bytes: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    flat = np.unpackbits(hash_bytes)
    flat[rng.choice(HASH_BITS, bits, replace=False)] ^= 1
    return np.packbits(flat)


def plant(raw: np.ndarray, rng: np.random.Generator, max_bits: int, copies: int) -> dict:
    """Copies whose upright hash is another image turned, 0 .. max_bits + 1 bits off: the pairs
    (first, second) → (bits, how the second is the first turned) near_pairs must report."""
    chosen = rng.choice(len(raw), 2 * copies, replace=False)
    expected = {}
    for k, (source, copy) in enumerate(zip(chosen[:copies], chosen[copies:])):
        bits, turn = k % (max_bits + 2), k % 8  # every distance, every turn (0: as is)
        raw[copy, 0] = flipped(raw[source, turn], bits, rng)
        if bits <= max_bits:  # the copy is the source turned; the source the copy turned back
            pair = (int(min(source, copy)), int(max(source, copy)))
            expected[pair] = (bits, turn if source < copy else int(inverse_orientation(np.array(turn))))
    return expected


def as_hex(raw: np.ndarray) -> list[tuple[str, ...]]:
    return [tuple(row.tobytes().hex() for row in image) for image in raw]


def test_twenty_thousand_random_images_give_exactly_the_planted_pairs(monkeypatch):
    rng = np.random.default_rng(30)
    raw = random_oriented(20_000, rng)
    expected = plant(raw, rng, RADIUS, 4 * (RADIUS + 2))
    oriented = as_hex(raw)

    def quadratic(*args):
        raise AssertionError("20,000 images should not compare every pair")

    monkeypatch.setattr(module, "_compare_every_pair", quadratic)
    pairs = module.near_pairs(oriented, RADIUS)
    assert as_dict(pairs) == expected  # random pairs are ~190 bits apart; the copies at RADIUS + 1 are not found
    assert list(zip(pairs.first, pairs.second)) == sorted(expected)
    assert {turn for _, turn in expected.values()} == set(range(8)) and max(b for b, _ in expected.values()) == RADIUS
    upright = [row[:1] for row in oriented]  # compared as is only: the turned copies are not found
    assert as_dict(module.near_pairs(upright, RADIUS)) == {p: v for p, v in expected.items() if v[1] == 0}


def clustered(n: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """Random images, planted copies, groups of alike hashes (many pairs near the threshold) and
    exact ties between orientations and directions (which one is reported is the brute force's)."""
    raw = random_oriented(n, rng)
    plant(raw, rng, RADIUS, 200)
    for start in range(n - 300, n, 30):  # ten groups of 30 images, all 8 hashes ~0.05 of the bits off one
        base = raw[start, 0]
        raw[start:start + 30] = [[flipped(base, int(rng.integers(8, 30)), rng) for _ in range(8)] for _ in range(30)]
    for a, b in ((0, 1), (2, 3), (4, 5)):
        raw[b, 0] = raw[a, 3]  # b is a turned 3 ...
        raw[b, 5] = raw[a, 0]  # ... and a is b turned 5: both 0 bits
    raw[6] = raw[7, 0]  # an image alike in every orientation, twice
    raw[8, 4] = raw[8, 0]
    return as_hex(raw)


@pytest.mark.parametrize("max_bits", [0, 3, RADIUS - 1, RADIUS, 45])
def test_random_sets_with_ties_give_the_pairs_of_comparing_every_pair(max_bits):
    rng = np.random.default_rng(max_bits)
    oriented = clustered(3000, rng)
    expected = reference(oriented, max_bits)
    assert len(expected.first) >= (100 if max_bits >= RADIUS else 5)
    assert_same(module.near_pairs(oriented, max_bits), expected)
    for blocks in plans(max_bits, len(oriented)):
        assert_same(searched(oriented, max_bits, blocks), expected)


def test_table_and_binary_search_lookups_agree(monkeypatch):
    rng = np.random.default_rng(7)
    oriented = clustered(1500, rng)
    expected = reference(oriented, RADIUS)
    blocks = module._plan(WIDTH, RADIUS, 10**6, 8 * 10**6)
    for table_ns in (0.0, 1e9):  # a table of 2**24 run starts per block / binary search among values
        monkeypatch.setattr(module, "_TABLE_NS", table_ns)
        assert_same(searched(oriented, RADIUS, blocks), expected)
    monkeypatch.setattr(module, "_CANDIDATES", 7)  # candidates checked a few at a time
    monkeypatch.setattr(module, "_LOOKUPS", 100)
    assert_same(searched(oriented, RADIUS, blocks), expected)
