"""Leakage audit: duplicates, near duplicates and copies, joined into groups and reported.

``find_leakage`` runs on every load (``harness.data.load_dataset``): exact duplicates (same content
hash), near duplicates (perceptual hashes within a share of their bits) and the plugin's own groups
(augmented copies, views of one specimen) become one group each, so folds keep them together.
``audit`` adds counts, skipped files and fold balance; ``write_report`` and ``print_report`` show it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from harness.errors import HarnessError
from harness.images import HASH_BITS, NEAR_DUPLICATES, near_pairs

if TYPE_CHECKING:
    from harness.config import CVConfig
    from harness.data import Dataset

@dataclass
class Leakage:
    """What ties images together, by sample id; ``groups`` is the merged group key per row."""

    groups: pd.Series
    exact: list[list[str]] = field(default_factory=list)
    near: list[tuple[str, str, int]] = field(default_factory=list)
    copies: list[list[str]] = field(default_factory=list)
    threshold_bits: int = 0

    def notes(self, labels: dict[str, str]) -> list[str]:
        """Warnings for a run: what was joined, and duplicates that span classes."""
        notes = []
        found = [f"{len(self.exact)} set(s) of exact duplicates"] if self.exact else []
        found += [f"{len(self.near)} near-duplicate pair(s)"] if self.near else []
        if found:
            notes.append(f"{' and '.join(found)} joined into groups so folds keep them together (`harness audit` lists them)")
        crossing = [ids for ids in self.exact + [[a, b] for a, b, _ in self.near] if len({labels[i] for i in ids}) > 1]
        if crossing:
            example = " = ".join(f"{i} ({labels[i]})" for i in crossing[0])
            notes.append(
                f"{len(crossing)} duplicate set(s) span classes, e.g. {example}: the same picture under two "
                "labels; remove or relabel them"
            )
        return notes


def find_leakage(table: pd.DataFrame, near_share: float = NEAR_DUPLICATES) -> Leakage:
    """Join rows that share a content hash, a near-identical perceptual hash or a plugin group."""
    index = table.index
    table = table.reset_index(drop=True)
    n = len(table)
    ids = table["id"].to_numpy()
    edges: list[tuple[np.ndarray, np.ndarray]] = []
    group_sets = _sets(table["group"])
    copies = [list(ids[rows]) for rows in group_sets if len(rows) > 1]
    edges += [(rows[:-1], rows[1:]) for rows in group_sets]
    exact = []
    if "hash" in table.columns:
        for rows in _sets(table["hash"]):
            if len(rows) > 1:
                exact.append(list(ids[rows]))
                edges.append((rows[:-1], rows[1:]))
    near: list[tuple[str, str, int]] = []
    bits = int(round(near_share * HASH_BITS)) if near_share > 0 else -1
    if bits >= 0 and "phash" in table.columns and n > 1:
        first = table.drop_duplicates("hash").index.to_numpy()  # exact copies are joined above
        a, b, distance = near_pairs(table["phash"].iloc[first].tolist(), bits)
        near = [(ids[first[i]], ids[first[j]], int(d)) for i, j, d in zip(a, b, distance)]
        edges.append((first[a], first[b]))
    groups = table["group"].astype(str)
    if edges:
        rows = np.concatenate([e[0] for e in edges]).astype(int)
        cols = np.concatenate([e[1] for e in edges]).astype(int)
        graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        groups = groups.groupby(component).transform("min")  # a joined group takes its smallest key
    return Leakage(pd.Series(groups.to_numpy(), index=index), exact, near, copies, bits)


def _sets(values: pd.Series) -> list[np.ndarray]:
    """Positions of equal values, one array per value (in first-seen order)."""
    codes, _ = pd.factorize(values)
    order = np.argsort(codes, kind="stable")
    splits = np.flatnonzero(np.diff(codes[order])) + 1
    return np.split(order, splits) if len(order) else []


# ---------------------------------------------------------------------------------------------
# The audit report


def audit(dataset: Dataset, cv: CVConfig, source: str, name: str | None = None) -> dict[str, Any]:
    """Everything worth knowing before training on a dataset, as a JSON-ready dict."""
    from harness.data import apply_small_class_policy
    from harness.folds import make_folds

    table = dataset.table
    labels = dict(zip(table["id"], table["label"]))
    splits = dict(zip(table["id"], table["split"])) if "split" in table.columns else {}
    leakage: Leakage = dataset.leakage or find_leakage(table, 0)
    report: dict[str, Any] = {
        "dataset": name or dataset.name,
        "source": source,
        "images": len(table),
        "classes": len(dataset.classes),
        "groups": int(table["group"].nunique()),
        "near_duplicate_bits": leakage.threshold_bits,
        "hash_bits": HASH_BITS,
    }
    report["splits"] = sorted(table["split"].unique()) if splits else []
    counts = pd.crosstab(table["label"], table["split"]) if splits else table.groupby("label").size().to_frame("n")
    report["counts"] = {
        c: {s: int(counts.at[c, s]) for s in report["splits"]} | {"total": int(counts.loc[c].sum())}
        for c in dataset.classes
    }
    if dataset.store is not None and "hash" in table.columns:
        probes = dataset.store.cached(table["hash"].unique().tolist())
        kinds = pd.Series([f"{p.format} {p.mode}" for p in probes.values()], dtype=str)
        report["formats"] = {k: int(v) for k, v in kinds.value_counts().items()}
    report["skipped"] = [{"path": p, "reason": r} for p, r in dataset.skipped]

    def entry(members: list[str]) -> dict[str, Any]:
        classes = sorted({labels[i] for i in members})
        item = {"files": members, "labels": classes, "cross_class": len(classes) > 1}
        if splits:
            item["splits"] = sorted({splits[i] for i in members})
        return item

    report["exact_duplicates"] = [entry(m) for m in leakage.exact]
    report["near_duplicates"] = [entry([a, b]) | {"bits": bits} for a, b, bits in leakage.near]
    report["copy_groups"] = [entry(m) for m in leakage.copies]
    problems = [f"skipped {p}: {r}" for p, r in dataset.skipped]
    for kind in ("exact_duplicates", "near_duplicates"):
        for item in report[kind]:
            what = kind.replace("_", " ")[:-1]
            if item["cross_class"]:
                problems.append(f"{what} across classes {item['labels']}: " + " = ".join(item["files"]))
            elif len(item.get("splits", [])) > 1:
                problems.append(
                    f"{what} across the layout's splits {item['splits']} (harness's folds keep them together; "
                    "a model trained on the given split would see it twice): " + " = ".join(item["files"])
                )
    report["folds"] = {"scheme": cv.scheme, "folds": cv.folds, "seed": cv.seed}
    try:
        fold_data, notes = apply_small_class_policy(dataset, cv)
        problems += notes[len(dataset.notes):]  # the leakage notes are the sections above
        folds = make_folds(fold_data, cv)
        balance = folds.groupby(["label", "repeat_0"]).size().unstack(fill_value=0)
        names = {0: "validation", 1: "train only"} if cv.scheme == "holdout" else {}
        report["folds"]["columns"] = [names.get(int(f), f"fold {f}") for f in balance.columns]
        report["folds"]["per_class"] = {c: [int(v) for v in row] for c, row in balance.iterrows()}
        straddling = folds.groupby("group")["repeat_0"].nunique()
        report["folds"]["groups_split_across_folds"] = int((straddling > 1).sum())
    except HarnessError as exc:
        report["folds"]["error"] = str(exc)
        problems.append(str(exc))
    report["problems"] = problems
    return report


def write_report(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write audit.json and audit.md into a study's results folder."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "audit.json", folder / "audit.md"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(report), encoding="utf-8")
    return json_path, md_path


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(cell, r)) + " |" for r in rows] + [""]


def to_markdown(report: dict[str, Any]) -> str:
    """The audit as a Markdown document."""
    r = report
    out = [
        f"# Audit of `{r['dataset']}`", "",
        f"Source: `{r['source']}`. {r['images']} images in {r['classes']} classes, {r['groups']} groups; "
        f"{len(r['skipped'])} file(s) skipped. Near duplicates: perceptual hashes within "
        f"{r['near_duplicate_bits']} of {r['hash_bits']} bits.", "",
        "## Problems", "",
    ]
    out += [f"- {p}" for p in r["problems"]] or ["None found."]
    out += ["", "## Images per class and split", ""]
    splits = r["splits"]
    out += _md_table(["class", *splits, "total"], [[c, *[v[s] for s in splits], v["total"]] for c, v in r["counts"].items()])
    if r.get("formats"):
        out += ["## Formats", ""] + _md_table(["format and mode", "images"], list(r["formats"].items()))
    out += ["## Skipped files", ""]
    out += _md_table(["file", "reason"], [[s["path"], s["reason"]] for s in r["skipped"]]) if r["skipped"] else ["None.", ""]
    for title, key in (("Exact duplicates", "exact_duplicates"), ("Near duplicates", "near_duplicates"),
                       ("Copy groups (from the dataset's layout)", "copy_groups")):
        items = r[key]
        out += [f"## {title}", ""]
        if not items:
            out += ["None.", ""]
            continue
        rows = [[" = ".join(i["files"]), ", ".join(i["labels"]), "yes" if i["cross_class"] else "",
                 *([", ".join(i["splits"])] if "splits" in i else []), *([i["bits"]] if "bits" in i else [])]
                for i in items]
        header = ["files", "classes", "across classes", *(["splits"] if splits else []), *(["bits"] if key == "near_duplicates" else [])]
        out += _md_table(header, rows)
    folds = r["folds"]
    scheme = "holdout" if folds["scheme"] == "holdout" else f"{folds['folds']} folds"
    out += [f"## Fold balance ({scheme}, seed {folds['seed']})", ""]
    if "error" in folds:
        out += [folds["error"], ""]
    else:
        out += _md_table(["class", *folds["columns"]], [[c, *v] for c, v in folds["per_class"].items()])
        out += [f"Groups split across folds: {folds['groups_split_across_folds']}.", ""]
    return "\n".join(out)


def print_report(report: dict[str, Any], console: Console, limit: int = 10) -> None:
    """A short rich rendering: counts, problems and the first few of each finding."""
    r = report
    console.print(f"[bold]{escape(r['dataset'])}[/]: {r['images']} images, {r['classes']} classes, {r['groups']} groups")
    table = Table()
    table.add_column("class")
    for s in r["splits"]:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    for c, v in r["counts"].items():
        table.add_row(escape(c), *[str(v[s]) for s in r["splits"]], str(v["total"]))
    console.print(table)
    summary = (
        f"skipped {len(r['skipped'])} · exact duplicate sets {len(r['exact_duplicates'])} · "
        f"near-duplicate pairs {len(r['near_duplicates'])} (≤ {r['near_duplicate_bits']}/{r['hash_bits']} bits) · "
        f"copy groups {len(r['copy_groups'])}"
    )
    console.print(summary)
    if "per_class" in r["folds"]:
        sizes = np.array(list(r["folds"]["per_class"].values()))
        console.print(
            f"{', '.join(r['folds']['columns'])}: {sizes.sum(axis=0).tolist()} images; per class these differ by "
            f"at most {int((sizes.max(axis=1) - sizes.min(axis=1)).max())} image(s); "
            f"groups split across folds: {r['folds']['groups_split_across_folds']}"
        )
    for item in r["near_duplicates"][:limit]:
        flag = " [red](across classes)[/]" if item["cross_class"] else ""
        console.print(f"  near duplicate ({item['bits']} bits): {escape(' = '.join(item['files']))}{flag}")
    if len(r["near_duplicates"]) > limit:
        console.print(f"  … {len(r['near_duplicates']) - limit} more near-duplicate pairs in audit.md")
    for item in r["exact_duplicates"][:limit]:
        flag = " [red](across classes)[/]" if item["cross_class"] else ""
        console.print(f"  exact duplicate: {escape(' = '.join(item['files']))}{flag}")
    if r["problems"]:
        console.print(f"[yellow]{len(r['problems'])} problem(s):[/]")
        for p in r["problems"][:limit * 3]:
            console.print(f"  [yellow]•[/] {escape(p)}")
        if len(r["problems"]) > limit * 3:
            console.print(f"  … {len(r['problems']) - limit * 3} more in audit.md")
    else:
        console.print("[green]no problems found[/]")


def audit_target(
    target: Path,
    plugins,
    data_root: Path,
    results_root: Path,
    console: Console,
    folds: int | None = None,
    near: float | None = None,
) -> dict[str, Any]:
    """Audit a study's dataset (a .toml file) or a bare class-per-subfolder folder; write and print it."""
    from dataclasses import replace

    from harness.config import CVConfig, DatasetConfig, load_study
    from harness.data import load_dataset
    from harness.runner import default_cache_dir
    from harness.specs import DatasetContext

    if near is not None and not 0 <= near < 0.5:
        raise HarnessError(f"--near must be a share of hash bits in [0, 0.5), got {near}.")
    if target.is_dir():
        name = target.resolve().name
        params = dict(plugins.datasets.get("folder").params) | {"root": str(target.resolve())}
        config = DatasetConfig("folder", None, params)
        cv, seed = CVConfig(folds=folds or 5), 0
    else:
        study = load_study(target, plugins, {"folds": folds} if folds else {})
        name, config, cv, seed = study.name, study.dataset, study.cv, study.seed
    if near is not None:
        config = replace(config, near_duplicates=near)
    context = DatasetContext(data_root=Path(data_root), cache_dir=default_cache_dir(), seed=seed)
    dataset = load_dataset(config, plugins, context)
    report = audit(dataset, cv, str(target), name)
    json_path, md_path = write_report(report, Path(results_root) / name)
    print_report(report, console)
    console.print(f"written: {md_path} and {json_path.name}")
    return report
