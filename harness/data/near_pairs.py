"""Near duplicates by perceptual hash: pairs of images whose hashes are within a number of bits in
some orientation, found in blocks so memory stays small for tens of thousands of images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from harness.data.hashing import inverse_orientation

#: Words (of 64 bits) of two hashes compared for every pair, at least: only the pairs still within
#: the threshold are compared further (random pairs differ by ~64 of the first 128 bits) ...
_PREFILTER_WORDS = 2
#: ... one by one (the next word for every pair) while more than 1 pair in this many is left.
_SPARSE = 16
#: Pairs compared per block (bounds the scratch arrays to a few megabytes, which stay in cache).
_BLOCK = 1 << 18


def _hash_words(hashes: Sequence[str]) -> np.ndarray:
    """Perceptual hashes as rows of uint64 words (zero-padded), for fast XOR and bit counts."""
    raw = [bytes.fromhex(h) for h in hashes]
    width = -(-max((len(r) for r in raw), default=8) // 8) * 8
    return np.frombuffer(b"".join(r.ljust(width, b"\0") for r in raw), dtype=np.uint64).reshape(len(raw), -1)


def hash_distances(hashes: Sequence[str]) -> np.ndarray:
    """Hamming distances (in bits) between every two perceptual hashes: a small (n, n) matrix."""
    words = _hash_words(hashes)
    return np.bitwise_count(words[:, None, :] ^ words[None, :, :]).sum(-1, dtype=np.int32)


class NearPairs(NamedTuple):
    """Pairs of images (first < second, by position), their distance in bits, and how the second
    is the first turned (an index into ORIENTATIONS)."""

    first: np.ndarray
    second: np.ndarray
    bits: np.ndarray
    orientation: np.ndarray


def near_pairs(oriented: Sequence[Sequence[str]], max_bits: int) -> NearPairs:
    """Pairs of images whose perceptual hashes are at most ``max_bits`` apart in some orientation.

    ``oriented[i]`` lists image i's hashes in the ORIENTATIONS order (``oriented_perceptual_hashes``;
    only the first, upright, compares as is). The distance of two images is the least Hamming
    distance between the upright hash of either and any hash of the other. Computed in blocks of
    rows, the leading words first, so memory stays small for tens of thousands of images.
    """
    n = len(oriented)
    turns = min((len(row) for row in oriented), default=1)
    if n < 2:
        return NearPairs(*(np.empty(0, int),) * 3, np.empty(0, int))
    every = _hash_words([h for row in oriented for h in row[:turns]])  # image i turned k: row i * turns + k
    upright, words = every[::turns], every.shape[1]
    columns = [np.ascontiguousarray(every[:, w]) for w in range(words)]
    step = max(1, _BLOCK // len(every))
    scratch = np.empty((step, len(every)), np.uint64)
    counts, totals = np.empty((step, len(every)), np.uint8), np.empty((step, len(every)), np.uint16)
    found = []
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        size = rows.stop - start
        total = totals[:size]
        total.fill(0)
        for w in range(words):
            np.bitwise_xor(upright[rows, w, None], columns[w][None, :], out=scratch[:size])
            np.bitwise_count(scratch[:size], out=counts[:size])
            total += counts[:size]
            close = total <= max_bits
            if w + 1 >= _PREFILTER_WORDS and np.count_nonzero(close) * _SPARSE < close.size:
                break
        i, turned = np.nonzero(close)
        bits = total[i, turned].astype(np.int32)
        i += start
        other = turned // turns
        keep = other != i
        i, turned, other, bits = i[keep], turned[keep], other[keep], bits[keep]
        if w + 1 < words:  # the words left, for the pairs left
            bits += np.bitwise_count(upright[i, w + 1:] ^ every[turned, w + 1:]).sum(-1, dtype=np.int32)
            keep = bits <= max_bits
            i, turned, other, bits = i[keep], turned[keep], other[keep], bits[keep]
        found.append((i, other, bits, turned % turns))
    i, other, bits, turn = (np.concatenate(column) for column in zip(*found))
    # i upright matched ``other`` turned: ``other`` is i turned back, i is ``other`` turned
    turn = np.where(i < other, inverse_orientation(turn), turn)
    first, second = np.minimum(i, other), np.maximum(i, other)
    order = np.lexsort((turn, bits, second, first))  # per pair, the least distance (then "as is") first
    first, second, bits, turn = first[order], second[order], bits[order], turn[order]
    new = np.ones(len(first), bool)
    new[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    return NearPairs(first[new], second[new], bits[new], turn[new])
