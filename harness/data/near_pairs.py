"""Near duplicates by perceptual hash: pairs of images whose hashes are within a number of bits in
some orientation.

Small sets compare every pair, in blocks so memory stays small. Large ones use multi-index
hashing: the hash bytes are cut into blocks with a radius each such that two hashes within the
threshold are within the radius on at least one block (the pigeonhole principle), so only rows
that share a block value, or one a few bits off, are compared in full. Both give the same pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from math import comb
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
#: Rough costs in nanoseconds on one core, to choose between comparing every pair and the
#: multi-index search: a pair compared by the blocked search, a row sorted by a block's value, an
#: entry of a table of run starts, a block value looked up in it or else by binary search, and a
#: candidate pair compared in full.
_PAIR_NS, _SORT_NS, _TABLE_NS, _LOOKUP_NS, _SEARCH_NS, _CANDIDATE_NS = 8.0, 100.0, 15.0, 40.0, 150.0, 80.0
#: Block values looked up at a time (bounds the multi-index search's scratch arrays).
_LOOKUPS = 1 << 20
#: Candidate pairs compared in full at a time (bounds the gathered rows to some tens of megabytes).
_CANDIDATES = 1 << 20
#: Blocks of up to this many bits may be looked up in a table of run starts (24 bits: 128 MB).
_TABLE_BITS = 24
#: The widest block radius tried (a radius s looks up every value within s bits: C(bits, s) grows fast).
_MAX_RADIUS = 3


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
    distance between the upright hash of either and any hash of the other; a pair's orientation is
    that of its least distance (the lowest index among equals). Sets too small for the multi-index
    search to pay compare every pair.
    """
    n = len(oriented)
    turns = min((len(row) for row in oriented), default=1)
    if n < 2:
        return NearPairs(*(np.empty(0, int),) * 3, np.empty(0, int))
    every = _hash_words([h for row in oriented for h in row[:turns]])  # image i turned k: row i * turns + k
    blocks = _plan(every.shape[1] * 8, max_bits, n, len(every))
    search = _compare_every_pair if blocks is None else _multi_index_search
    return _least_per_pair(*search(every, turns, max_bits, blocks))


def _least_per_pair(i: np.ndarray, other: np.ndarray, bits: np.ndarray, turned: np.ndarray) -> NearPairs:
    """Image i upright within reach of image ``other`` turned: per pair, the least distance
    (then the lowest orientation index), with the turn from the first image to the second."""
    # i upright matched ``other`` turned: ``other`` is i turned back, i is ``other`` turned
    turn = np.where(i < other, inverse_orientation(turned), turned)
    first, second = np.minimum(i, other), np.maximum(i, other)
    order = np.lexsort((turn, bits, second, first))
    first, second, bits, turn = first[order], second[order], bits[order], turn[order]
    new = np.ones(len(first), bool)
    new[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    return NearPairs(first[new], second[new], bits[new], turn[new])


def _compare_every_pair(every: np.ndarray, turns: int, max_bits: int, blocks: object = None) -> tuple[np.ndarray, ...]:
    """(i, other, bits, turn): image i upright within ``max_bits`` of image ``other`` turned, by
    comparing every pair, in blocks of rows, the leading words first (the reference search)."""
    n = len(every) // turns
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
    return tuple(np.concatenate(column) for column in zip(*found))


def _values_within(bits: int, radius: int) -> int:
    return sum(comb(bits, k) for k in range(radius + 1))


def _tabled(bits: int, lookups: int) -> bool:
    """Whether a block's values are looked up in a table of 2**bits run starts (else by binary search)."""
    return bits <= _TABLE_BITS and 2 ** bits * _TABLE_NS <= lookups * (_SEARCH_NS - _LOOKUP_NS)


def _block_cost(bits: int, radius: int, queries: int, rows: int) -> float:
    """Estimated nanoseconds for one block of uniformly random values."""
    lookups = queries * _values_within(bits, radius)
    tabled = _tabled(bits, lookups)
    build = rows * _SORT_NS + (2 ** bits * _TABLE_NS if tabled else 0.0)
    return build + lookups * (_LOOKUP_NS if tabled else _SEARCH_NS) + lookups * rows / 2 ** bits * _CANDIDATE_NS


def _plan(width: int, max_bits: int, queries: int, rows: int) -> list[tuple[int, int, int]] | None:
    """Blocks (first byte, bytes, radius) of hashes ``width`` bytes long for the cheapest
    multi-index search, or None where comparing every pair is cheaper.

    Two hashes at most ``max_bits`` apart are within the radius on at least one block when the
    radii plus one add up to more than ``max_bits``: otherwise every block would differ by more.
    """
    best, least = None, queries * rows * _PAIR_NS
    for size in range(1, 9):
        starts = range(0, width, size)
        for used in range(1, min(len(starts), max_bits + 1) + 1):
            radius, extra = divmod(max_bits + 1 - used, used)
            if radius + (extra > 0) > _MAX_RADIUS:
                continue
            radii = [radius + 1] * extra + [radius] * (used - extra)  # the last block may be narrower
            blocks = [(start, min(size, width - start), r) for start, r in zip(starts, radii)]
            cost = sum(_block_cost(8 * b, r, queries, rows) for _, b, r in blocks)
            if cost < least:
                best, least = blocks, cost
    return best



class _BlockIndex:
    """The rows of a table sorted by one block's value, and where each value's run of rows starts."""

    def __init__(self, values: np.ndarray, bits: int, lookups: int):
        self.order = np.argsort(values)
        if _tabled(bits, lookups):  # table[v]: rows of a value below v, so v's run is table[v]:table[v + 1]
            self.table = np.bincount(values.astype(np.intp) + 1, minlength=(1 << bits) + 1)
            np.cumsum(self.table, out=self.table)
        else:
            ordered = values[self.order]
            self.table = None
            self.starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
            self.values = ordered[self.starts]
            self.counts = np.diff(np.r_[self.starts, len(ordered)])

    def find(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where in ``order`` each value's rows start, and how many there are (0 for none)."""
        if self.table is not None:
            values = values.astype(np.intp)
            start = self.table[values]
            return start, self.table[values + 1] - start
        at = np.minimum(np.searchsorted(self.values, values), len(self.values) - 1)
        return self.starts[at], np.where(self.values[at] == values, self.counts[at], 0)


def _value_type(size: int) -> type:
    return np.uint32 if size <= 4 else np.uint64


def _block_values(octets: np.ndarray, start: int, size: int) -> np.ndarray:
    """Each row's bytes start .. start + size as one little-endian integer."""
    kind = _value_type(size)
    padded = np.zeros((len(octets), np.dtype(kind).itemsize), np.uint8)
    padded[:, :size] = octets[:, start:start + size]
    return padded.view(kind).ravel()


def _flips(bits: int, radius: int) -> np.ndarray:
    """Every XOR mask of at most ``radius`` set bits among ``bits``."""
    masks = [sum(1 << b for b in chosen) for k in range(radius + 1) for chosen in combinations(range(bits), k)]
    return np.array(masks, _value_type(-(-bits // 8)))


def _expand(index: _BlockIndex, query: np.ndarray, start: np.ndarray, count: np.ndarray):
    """(query, row) pairs for runs of rows, in pieces of about _CANDIDATES pairs."""
    ends = np.cumsum(count)
    cuts = np.searchsorted(ends, np.arange(_CANDIDATES, ends[-1] if len(ends) else 0, _CANDIDATES), "right")
    for piece in np.split(np.arange(len(count)), cuts):
        q, s, c = query[piece], start[piece], count[piece]
        total = int(c.sum())
        if total:
            offset = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
            yield np.repeat(q, c), index.order[np.repeat(s, c) + offset]


def _close_pairs(every: np.ndarray, turns: int, max_bits: int) -> Callable[[np.ndarray, np.ndarray], tuple]:
    """A check of candidate pairs (image i upright, row): those within ``max_bits`` as (i, other,
    bits, turn), the leading words first (gathered from contiguous columns, which is fast)."""
    lead = min(_PREFILTER_WORDS, every.shape[1])
    upright = every[::turns]
    # the leading words of a row as one item: gathered at one memory access, unlike a row of a 2-D array
    item = np.dtype((np.void, 8 * lead))
    mine, theirs = (np.ascontiguousarray(rows[:, :lead]).view(item).ravel() for rows in (upright, every))

    def check(i: np.ndarray, row: np.ndarray) -> tuple:
        leading = mine[i].view(np.uint64) ^ theirs[row].view(np.uint64)
        bits = np.bitwise_count(leading).reshape(-1, lead).sum(-1, dtype=np.int32)
        keep = bits <= max_bits
        i, row, bits = i[keep], row[keep], bits[keep]
        bits += np.bitwise_count(upright[i, lead:] ^ every[row, lead:]).sum(-1, dtype=np.int32)
        other = row // turns
        keep = (bits <= max_bits) & (other != i)
        return i[keep], other[keep], bits[keep], row[keep] % turns

    return check


def _multi_index_search(every: np.ndarray, turns: int, max_bits: int, blocks: list) -> tuple[np.ndarray, ...]:
    """(i, other, bits, turn) as ``_compare_every_pair`` finds them, comparing in full only the
    rows within each block's radius of image i's upright hash on that block."""
    octets, check = every.view(np.uint8), _close_pairs(every, turns, max_bits)
    found = [(np.empty(0, np.intp), np.empty(0, np.intp), np.empty(0, np.int32), np.empty(0, np.intp))]
    for first, size, radius in blocks:
        values, flips = _block_values(octets, first, size), _flips(8 * size, radius)
        wanted = values[::turns]
        index = _BlockIndex(values, 8 * size, len(wanted) * len(flips))
        step = max(1, _LOOKUPS // len(flips))
        for chunk in range(0, len(wanted), step):
            start, count = index.find((wanted[chunk:chunk + step, None] ^ flips[None, :]).ravel())
            hit = np.flatnonzero(count)
            found += [check(i, row) for i, row in _expand(index, chunk + hit // len(flips), start[hit], count[hit])]
    return tuple(np.concatenate(column) for column in zip(*found))
