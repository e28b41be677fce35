"""Copies across folds: files of identical bytes, of the same pixels (also turned or mirrored), or
near duplicates, found from the images' hashes and joined into groups that folds keep together.

Below the data layer (the dataset joins copies into groups with it); `harness audit` reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from harness.core.choices import NEAR_DUPLICATES
from harness.toolkit.text import plural  # noqa: F401 (public in the toolkit; audit imports it from here)
from harness.data.hashing import HASH_BITS, ORIENTATIONS, relative_orientation
from harness.data.near_pairs import near_pairs

#: Kinds of duplicate: files of identical bytes, or of the same pixels, or near duplicates.
IDENTICAL_BYTES, SAME_PIXELS, SIMILAR = "identical bytes", "same pixels", "similar"


class Match(NamedTuple):
    """How one image of a duplicate set is another: the kind of match, and the turn from one to the other."""

    kind: str  # IDENTICAL_BYTES, SAME_PIXELS or SIMILAR (near duplicates)
    orientation: int = 0  # index into harness.data.hashing.ORIENTATIONS

    @property
    def turned(self) -> bool:
        return self.orientation != 0

    def describe(self) -> str:
        """'identical bytes', 'same pixels, rotated 180°', 'mirrored left-right', 'as is'."""
        turn = ORIENTATIONS[self.orientation][0]
        if self.kind == SIMILAR:
            return turn
        return f"{self.kind}, {turn}" if self.turned else self.kind


@dataclass
class Leakage:
    """What ties images together, by sample id; ``groups`` is the merged group key per row.

    ``matches[(first, other)]`` says how ``other`` is ``first``: for each exact set its first image
    and each other one, for each near pair its two images.
    """

    groups: pd.Series
    exact: list[list[str]] = field(default_factory=list)
    near: list[tuple[str, str, int]] = field(default_factory=list)
    copies: list[list[str]] = field(default_factory=list)
    threshold_bits: int = 0
    matches: dict[tuple[str, str], Match] = field(default_factory=dict)

    def matches_of(self, members: list[str]) -> dict[str, Match]:
        """How each image of a duplicate set (or pair) after the first is the first."""
        return {m: self.matches.get((members[0], m), Match(IDENTICAL_BYTES)) for m in members[1:]}

    def turned(self, members: list[str]) -> bool:
        """Whether a duplicate set holds a rotated or mirrored copy."""
        return any(match.turned for match in self.matches_of(members).values())

    def notes(self, labels: dict[str, str]) -> list[str]:
        """Warnings for a run: what was joined, and duplicates that span classes."""
        notes = []
        pairs = [[a, b] for a, b, _ in self.near]
        found = [f"{plural(len(self.exact), 'set')} of exact duplicates{self._turned_share(self.exact)}"] if self.exact else []
        found += [f"{plural(len(pairs), 'near-duplicate pair')}{self._turned_share(pairs)}"] if pairs else []
        if found:
            notes.append(f"{' and '.join(found)} joined into groups so folds keep them together (`harness audit` lists them)")
        crossing = [ids for ids in self.exact + pairs if len({labels[i] for i in ids}) > 1]
        if crossing:
            matches = self.matches_of(crossing[0])
            example = " = ".join(
                f"{i} ({labels[i]}, {matches[i].describe()})" if i in matches and matches[i].turned else f"{i} ({labels[i]})"
                for i in crossing[0]
            )
            notes.append(
                f"{plural(len(crossing), 'duplicate set')} across classes{self._turned_share(crossing)}, e.g. "
                f"{example}: the same picture under two labels; remove or relabel them"
            )
        return notes

    def _turned_share(self, sets: list[list[str]]) -> str:
        turned = sum(self.turned(members) for members in sets)
        return f" ({turned} rotated or mirrored)" if turned else ""


def find_leakage(table: pd.DataFrame, near_share: float = NEAR_DUPLICATES) -> Leakage:
    """Join rows that share pixels (in any orientation), a near-identical perceptual hash (in any
    orientation) or a plugin group. Without ``pixel_hash`` and ``oriented_phashes`` columns, rows
    are compared by content ``hash`` and upright ``phash`` alone."""
    index = table.index
    table = table.reset_index(drop=True)
    n = len(table)
    ids = table["id"].to_numpy()
    edges: list[tuple[np.ndarray, np.ndarray]] = []
    group_sets = _sets(table["group"])
    copies = [list(ids[rows]) for rows in group_sets if len(rows) > 1]
    edges += [(rows[:-1], rows[1:]) for rows in group_sets]
    key = next((column for column in ("pixel_hash", "hash") if column in table.columns), None)
    exact: list[list[str]] = []
    matches: dict[tuple[str, str], Match] = {}
    if key is not None:
        for rows in _sets(table[key]):
            if len(rows) > 1 and table[key].iat[rows[0]]:
                exact.append(list(ids[rows]))
                edges.append((rows[:-1], rows[1:]))
                matches |= {(ids[rows[0]], ids[r]): _exact_match(table, rows[0], r) for r in rows[1:]}
    near: list[tuple[str, str, int]] = []
    bits = int(round(near_share * HASH_BITS)) if near_share > 0 else -1
    if bits >= 0 and "phash" in table.columns and n > 1:
        first = table.drop_duplicates(key).index.to_numpy() if key else np.arange(n)  # exact ones are joined above
        upright = table["phash"].iloc[first]
        turned = table["oriented_phashes"].iloc[first] if "oriented_phashes" in table.columns else [()] * len(first)
        oriented = [tuple(hashes) or (phash,) for hashes, phash in zip(turned, upright)]
        pairs = near_pairs(oriented, bits)
        for i, j, distance, turn in zip(*pairs):
            a, b = ids[first[i]], ids[first[j]]
            near.append((a, b, int(distance)))
            matches[(a, b)] = Match(SIMILAR, int(turn))
        edges.append((first[pairs.first], first[pairs.second]))
    groups = table["group"].astype(str)
    if edges:
        rows = np.concatenate([e[0] for e in edges]).astype(int)
        cols = np.concatenate([e[1] for e in edges]).astype(int)
        graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        groups = groups.groupby(component).transform("min")  # a joined group takes its smallest key
    return Leakage(pd.Series(groups.to_numpy(), index=index), exact, near, copies, bits, matches)


def _exact_match(table: pd.DataFrame, first: int, other: int) -> Match:
    """How row ``other`` is row ``first``, two rows of the same pixels: the same bytes, or which turn."""
    if "hash" in table.columns and table["hash"].iat[first] == table["hash"].iat[other]:
        return Match(IDENTICAL_BYTES)
    if "pixel_orientation" not in table.columns:
        return Match(SAME_PIXELS)
    orientation = table["pixel_orientation"]
    return Match(SAME_PIXELS, relative_orientation(int(orientation.iat[first]), int(orientation.iat[other])))


def _sets(values: pd.Series) -> list[np.ndarray]:
    """Positions of equal values, one array per value (in first-seen order)."""
    codes, _ = pd.factorize(values)
    order = np.argsort(codes, kind="stable")
    splits = np.flatnonzero(np.diff(codes[order])) + 1
    return np.split(order, splits) if len(order) else []


# ---------------------------------------------------------------------------------------------
# The audit report
