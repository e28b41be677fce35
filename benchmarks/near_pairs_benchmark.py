"""Near-duplicate search at scale (issue 30): the multi-index search of ``near_pairs`` against
comparing every pair (the blocked search it replaced, kept as ``_compare_every_pair``).

Random 381-bit perceptual hashes, eight orientations each (independent, as distinct photos'
would be), with planted near copies at every distance up to the threshold (30 bits, the study
default of 8 %) and one bit more, some of another image turned. Prints, per size: the seconds to
parse the hex hashes, the new search, the old one (up to 16,000 images: it is quadratic), and
whether the planted pairs came out as expected. Not a test: run it by hand, e.g.

    python benchmarks/near_pairs_benchmark.py --sizes 2000 8000 16000 100000 1000000
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np

from harness.core.choices import NEAR_DUPLICATES
from harness.data import near_pairs as module
from harness.data.hashing import HASH_BITS

HASH_BYTES = -(-HASH_BITS // 8)
TURNS = 8


def random_hashes(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, TURNS, bytes) random hashes, the padding bits after HASH_BITS zero as real hashes have them."""
    raw = rng.integers(0, 256, (n, TURNS, HASH_BYTES), dtype=np.uint8)
    raw[..., -1] &= np.uint8((0xFF << (8 * HASH_BYTES - HASH_BITS)) & 0xFF)
    return raw


def plant(raw: np.ndarray, max_bits: int, rng: np.random.Generator) -> dict[tuple[int, int], int]:
    """Copies of random images at 0 .. max_bits + 1 bits from one of their orientations:
    {(source, copy): bits}. The copy's upright hash is the source turned, a few bits flipped."""
    n = len(raw)
    pairs = min(n // 4, 4 * (max_bits + 2))
    chosen = rng.choice(n, 2 * pairs, replace=False)
    planted = {}
    for k, (source, copy) in enumerate(zip(chosen[:pairs], chosen[pairs:])):
        bits, turn = k % (max_bits + 2), int(rng.integers(0, TURNS))
        flat = np.unpackbits(raw[source, turn])
        flat[rng.choice(HASH_BITS, bits, replace=False)] ^= 1
        raw[copy, 0] = np.packbits(flat)
        planted[(int(min(source, copy)), int(max(source, copy)))] = bits
    return planted


def as_hex(raw: np.ndarray) -> list[tuple[str, ...]]:
    flat = raw.reshape(-1, HASH_BYTES)
    text = [row.tobytes().hex() for row in flat]
    return [tuple(text[i:i + TURNS]) for i in range(0, len(text), TURNS)]


def check(pairs: module.NearPairs, planted: dict[tuple[int, int], int], max_bits: int) -> str:
    found = dict(zip(zip(pairs.first.tolist(), pairs.second.tolist()), pairs.bits.tolist()))
    missed = [p for p, bits in planted.items() if bits <= max_bits and found.get(p) != bits]
    wrong = [p for p, bits in planted.items() if bits > max_bits and p in found]
    return "ok" if not missed and not wrong else f"WRONG: {len(missed)} missed, {len(wrong)} beyond the threshold found"


def run(n: int, max_bits: int, old_up_to: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    raw = random_hashes(n, rng)
    planted = plant(raw, max_bits, rng)
    oriented = as_hex(raw)
    del raw
    start = time.perf_counter()
    every = module._hash_words([h for row in oriented for h in row])
    parse = time.perf_counter() - start
    blocks = module._plan(every.shape[1] * 8, max_bits, n, len(every))
    start = time.perf_counter()
    pairs = module.near_pairs(oriented, max_bits)
    new = time.perf_counter() - start
    line = (f"n={n:>9,}  pairs={len(pairs.first):>5}  parse={parse:7.2f} s  new={new:7.2f} s "
            f"({'every pair' if blocks is None else f'{len(blocks)} blocks'})")
    if n <= old_up_to:
        start = time.perf_counter()
        old = module._least_per_pair(*module._compare_every_pair(every, TURNS, max_bits))
        seconds = time.perf_counter() - start
        same = all(np.array_equal(a, b) for a, b in zip(old, pairs))
        line += f"  old={seconds:7.2f} s  same={same}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{line}  planted {check(pairs, planted, max_bits)}  peak RSS {peak:,.0f} MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 16000, 100_000, 1_000_000])
    parser.add_argument("--old-up-to", type=int, default=16_000, help="largest size to time the old search at")
    parser.add_argument("--share", type=float, default=NEAR_DUPLICATES, help="threshold as a share of the hash bits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    max_bits = round(args.share * HASH_BITS)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}; "
          f"{HASH_BITS}-bit hashes x {TURNS} orientations, threshold {max_bits} bits")
    for n in args.sizes:
        run(n, max_bits, args.old_up_to, args.seed)


if __name__ == "__main__":
    main()
