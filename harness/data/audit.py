"""Leakage audit: duplicates, near duplicates and copies, joined into groups and reported.

``find_leakage`` runs on every load (``harness.data.dataset.load_dataset``): exact duplicates (the same
pixels, in any rotation or mirror image), near duplicates (perceptual hashes within a share of their
bits, in any orientation) and the plugin's own groups (augmented copies, views of one specimen)
become one group each, so folds keep them together. ``audit`` adds counts, formats, misnamed and
skipped files, the folder layout and fold balance; ``write_report`` and ``print_report`` show it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.errors import HarnessError
from harness.data.hashing import HASH_BITS
from harness.data.leakage import Leakage, find_leakage, plural

if TYPE_CHECKING:
    from harness.config.study import CVConfig
    from harness.data.dataset import Dataset

#: Formats whose files carry another format's extensions: an MPO is a JPEG with extra pictures.
_FORMAT_ALIASES = {"MPO": "JPEG"}


def audit(dataset: Dataset, cv: CVConfig, source: str, name: str | None = None) -> dict[str, Any]:
    """Everything worth knowing before training on a dataset, as a JSON-ready dict.

    Files are named by sample id: for datasets of folders, the path relative to the dataset's root.
    """
    leakage: Leakage = dataset.leakage or find_leakage(dataset.table, 0)
    report = _counts(dataset, leakage, source, name) | _files(dataset) | _duplicates(dataset.table, leakage)
    problems = [f"skipped {s['path']}: {s['reason']}" for s in report["skipped"]]
    problems += [f"{m['file']}: {_misnamed_text(m)}" for m in report["misnamed"]]
    problems += [f"{item['path']}: {item['note']}" for item in report["layout"]]
    problems += _duplicate_problems(report, leakage)
    report["folds"] = _fold_balance(dataset, cv, problems)
    report["problems"] = problems
    return report


def _counts(dataset: Dataset, leakage: Leakage, source: str, name: str | None) -> dict[str, Any]:
    """The dataset's size: images, classes, groups, and images per class and split."""
    table = dataset.table
    splits = sorted(table["split"].unique()) if "split" in table.columns else []
    counts = pd.crosstab(table["label"], table["split"]) if splits else table.groupby("label").size().to_frame("n")
    return {
        "dataset": name or dataset.name,
        "source": source,
        "images": len(table),
        "classes": len(dataset.classes),
        "groups": int(table["group"].nunique()),
        "near_duplicate_bits": leakage.threshold_bits,
        "hash_bits": HASH_BITS,
        "splits": splits,
        "counts": {
            c: {s: int(counts.at[c, s]) for s in splits} | {"total": int(counts.loc[c].sum())}
            for c in dataset.classes
        },
    }


def _files(dataset: Dataset) -> dict[str, Any]:
    """Formats, files named with another format's extension, skipped files and layout notes."""
    table = dataset.table
    found: dict[str, Any] = {}
    if dataset.store is not None and "hash" in table.columns:
        probes = dataset.store.cached(table["hash"].unique().tolist())
        formats = table["hash"].map(lambda h: probes[h].format)
        kinds = table["hash"].map(lambda h: f"{probes[h].format} {probes[h].mode}")
        found["formats"] = {k: int(v) for k, v in kinds.value_counts().items()}  # images, not unique files
        found["misnamed"] = _misnamed(table["id"], table["path"], formats)
    else:
        found["misnamed"] = []
    shown = _shown_paths(dataset)
    found["skipped"] = [{"path": shown.get(str(p), str(p)), "reason": r} for p, r in dataset.skipped]
    found["layout"] = [{"path": p, "note": note} for p, note in getattr(dataset.samples, "layout_notes", [])]
    return found


def _duplicates(table: pd.DataFrame, leakage: Leakage) -> dict[str, Any]:
    """Exact-duplicate sets, near-duplicate pairs and copy groups, with their classes and splits."""
    labels = dict(zip(table["id"], table["label"]))
    splits = dict(zip(table["id"], table["split"])) if "split" in table.columns else {}

    def entry(members: list[str]) -> dict[str, Any]:
        classes = sorted({labels[i] for i in members})
        item = {"files": members, "labels": classes, "cross_class": len(classes) > 1}
        if splits:
            item["splits"] = sorted({splits[i] for i in members})
        return item | {"rotated_or_mirrored": leakage.turned(members)}

    return {
        "exact_duplicates": [
            entry(m) | {"matches": {i: match.describe() for i, match in leakage.matches_of(m).items()}}
            for m in leakage.exact
        ],
        "near_duplicates": [
            entry([a, b]) | {"bits": bits, "orientation": leakage.matches_of([a, b])[b].describe()}
            for a, b, bits in leakage.near
        ],
        "copy_groups": [entry(m) for m in leakage.copies],
    }


def _duplicate_problems(report: dict[str, Any], leakage: Leakage) -> list[str]:
    """Duplicates across classes, or across the layout's splits: each one problem."""

    def joined(members: list[str]) -> str:
        matches = leakage.matches_of(members)
        return " = ".join(f"{i} ({matches[i].describe()})" if i in matches and matches[i].turned else i for i in members)

    problems = []
    sets = [("exact duplicate", m, item) for m, item in zip(leakage.exact, report["exact_duplicates"])]
    sets += [("near duplicate", [a, b], item) for (a, b, _), item in zip(leakage.near, report["near_duplicates"])]
    for what, members, item in sets:
        if item["cross_class"]:
            problems.append(f"{what} across classes {item['labels']}: {joined(members)}")
        elif len(item.get("splits", [])) > 1:
            problems.append(
                f"{what} across the layout's splits {item['splits']} (harness's folds keep them together; "
                f"a model trained on the given split would see it twice): {joined(members)}"
            )
    return problems


def _fold_balance(dataset: Dataset, cv: CVConfig, problems: list[str]) -> dict[str, Any]:
    """The folds' images per class and groups split across folds; their notes and errors go to ``problems``."""
    from harness.data.dataset import apply_small_class_policy
    from harness.data.folds import make_folds, part_counts

    report: dict[str, Any] = {"scheme": cv.scheme, "folds": cv.folds, "seed": cv.seed}
    try:
        fold_data, notes = apply_small_class_policy(dataset, cv)
        problems += notes[len(dataset.notes):]  # the leakage notes are the sections above
        folds = make_folds(fold_data, cv)
        problems += folds.attrs.get("notes", [])  # copies of test images left out, splits not used
        column = folds["repeat_0"].astype(str)
        if "part" in folds.columns:  # the test set and unused images get columns of their own
            column = column.where(folds["part"] == "cv", folds["part"])
            report["parts"] = {part: n for part, n in part_counts(folds).items() if n}
        balance = folds.assign(where=column).groupby(["label", "where"]).size().unstack(fill_value=0)
        names = {"0": "validation", "1": "train only"} if cv.scheme in ("holdout", "given") else {}
        order = sorted(balance.columns, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))
        balance = balance[order]
        report["columns"] = [names.get(f, f"fold {f}" if f.isdigit() else f) for f in balance.columns]
        report["per_class"] = {c: [int(v) for v in row] for c, row in balance.iterrows()}
        inside = folds[column.str.isdigit()]
        straddling = inside.groupby("group")["repeat_0"].nunique()
        report["groups_split_across_folds"] = int((straddling > 1).sum())
    except HarnessError as exc:
        report["error"] = str(exc)
        problems.append(str(exc))
    return report


def _shown_paths(dataset: Dataset) -> dict[str, str]:
    """Each file path of the plugin's table, as the report shows it: its sample id when it has one."""
    source = dataset.samples.table
    if "path" not in source.columns or "id" not in source.columns:
        return {}
    return dict(zip(source["path"].astype(str), source["id"].astype(str)))


def _misnamed(ids: pd.Series, paths: pd.Series, formats: pd.Series) -> list[dict[str, str]]:
    """Files named with another format's extension ('extension'), or with no image extension ('')."""
    extensions = Image.registered_extensions()  # ".jpg" -> "JPEG", ...
    found = []
    for sample_id, path, content in zip(ids, paths, formats):
        extension = Path(path).suffix.lower()
        named = extensions.get(extension)
        if _FORMAT_ALIASES.get(content, content) != _FORMAT_ALIASES.get(named, named):
            found.append({"file": sample_id, "extension": extension if named else "", "content": content})
    return found


def _misnamed_text(item: dict[str, str]) -> str:
    if not item["extension"]:
        return f"a {item['content']} image without an image extension"
    return f"a {item['content']} image named {item['extension']}"


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
    exact, near = r["exact_duplicates"], r["near_duplicates"]
    turned = [sum(item["rotated_or_mirrored"] for item in found) for found in (exact, near)]
    out = [
        f"# Audit of `{r['dataset']}`", "",
        f"Source: `{r['source']}`. {plural(r['images'], 'image')} in {plural(r['classes'], 'class')}, "
        f"{plural(r['groups'], 'group')}; {plural(len(r['skipped']), 'file')} skipped.", "",
        "Duplicates are matched in any orientation (rotated by 90°, 180° or 270°, or mirrored): exact ones have "
        f"the same pixels, near ones {_near_rule(r)}. "
        f"Found {plural(len(exact), 'exact-duplicate set')} ({turned[0]} rotated or mirrored) and "
        f"{plural(len(near), 'near-duplicate pair')} ({turned[1]} rotated or mirrored).", "",
        "## Problems", "",
    ]
    out += [f"- {p}" for p in r["problems"]] or ["None found."]
    out += ["", "## Images per class and split", ""]
    splits = r["splits"]
    out += _md_table(["class", *splits, "total"], [[c, *[v[s] for s in splits], v["total"]] for c, v in r["counts"].items()])
    if r.get("formats"):
        out += ["## Images per format", ""] + _md_table(["format and mode", "images"], list(r["formats"].items()))
    misnamed = [[m["file"], m["extension"] or "(no image extension)", m["content"]] for m in r["misnamed"]]
    out += ["## Files whose extension is not their format", ""]
    out += _md_table(["file", "extension", "content"], misnamed) if misnamed else ["None.", ""]
    layout = [[item["path"], item["note"]] for item in r["layout"]]
    out += ["## Folder layout", ""]
    out += _md_table(["path", "note"], layout) if layout else ["Nothing odd.", ""]
    out += ["## Skipped files", ""]
    out += _md_table(["file", "reason"], [[s["path"], s["reason"]] for s in r["skipped"]]) if r["skipped"] else ["None.", ""]
    for title, key in (("Exact duplicates", "exact_duplicates"), ("Near duplicates", "near_duplicates"),
                       ("Copy groups (from the dataset's layout)", "copy_groups")):
        items = r[key]
        out += [f"## {title}", ""]
        if not items:
            out += ["None.", ""]
            continue
        how = {"exact_duplicates": ["how"], "near_duplicates": ["orientation", "bits"]}.get(key, [])
        header = ["files", *how, "classes", "across classes", *(["splits"] if splits else [])]
        rows = [[" = ".join(i["files"]), *([_how(i)] if "matches" in i else [i[h] for h in how]),
                 ", ".join(i["labels"]), "yes" if i["cross_class"] else "", *([", ".join(i["splits"])] if "splits" in i else [])]
                for i in items]
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


def _near_rule(report: dict[str, Any]) -> str:
    if report["near_duplicate_bits"] < 0:
        return "were not looked for (near-duplicate threshold 0)"
    return f"perceptual hashes within {report['near_duplicate_bits']} of {report['hash_bits']} bits"


def _how(item: dict[str, Any]) -> str:
    """How an exact set's files are its first: 'identical bytes', or per file when they differ."""
    kinds = set(item["matches"].values())
    if len(kinds) == 1:
        return kinds.pop()
    return "; ".join(f"{file}: {how}" for file, how in item["matches"].items())


def print_report(report: dict[str, Any], console: Console, limit: int = 10) -> None:
    """A short rich rendering: counts, problems and the first few of each finding."""
    r = report
    console.print(
        f"[bold]{escape(r['dataset'])}[/]: {plural(r['images'], 'image')}, {plural(r['classes'], 'class')}, "
        f"{plural(r['groups'], 'group')}"
    )
    table = Table()
    table.add_column("class")
    for s in r["splits"]:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    for c, v in r["counts"].items():
        table.add_row(escape(c), *[str(v[s]) for s in r["splits"]], str(v["total"]))
    console.print(table)
    summary = (
        f"skipped {len(r['skipped'])} · misnamed {len(r['misnamed'])} · exact duplicate sets {len(r['exact_duplicates'])} · "
        f"near-duplicate pairs {len(r['near_duplicates'])} (≤ {r['near_duplicate_bits']}/{r['hash_bits']} bits) · "
        f"copy groups {len(r['copy_groups'])}"
    )
    console.print(summary)
    if "per_class" in r["folds"]:
        sizes = np.array(list(r["folds"]["per_class"].values()))
        console.print(
            f"{', '.join(r['folds']['columns'])}: {sizes.sum(axis=0).tolist()} images; per class these differ by "
            f"at most {plural(int((sizes.max(axis=1) - sizes.min(axis=1)).max()), 'image')}; "
            f"groups split across folds: {r['folds']['groups_split_across_folds']}"
        )
    for item in r["near_duplicates"][:limit]:
        flag = " [red](across classes)[/]" if item["cross_class"] else ""
        console.print(f"  near duplicate ({item['bits']} bits, {item['orientation']}): {escape(' = '.join(item['files']))}{flag}")
    if len(r["near_duplicates"]) > limit:
        console.print(f"  … {len(r['near_duplicates']) - limit} more near-duplicate pairs in audit.md")
    for item in r["exact_duplicates"][:limit]:
        flag = " [red](across classes)[/]" if item["cross_class"] else ""
        console.print(f"  exact duplicate ({escape(_how(item))}): {escape(' = '.join(item['files']))}{flag}")
    if len(r["exact_duplicates"]) > limit:
        console.print(f"  … {len(r['exact_duplicates']) - limit} more exact-duplicate sets in audit.md")
    if r["problems"]:
        console.print(f"[yellow]{plural(len(r['problems']), 'problem')}:[/]")
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

    from harness.config.study import CVConfig, DatasetConfig, load_study
    from harness.data.dataset import load_dataset
    from harness.core.paths import default_cache_dir
    from harness.specs import DatasetContext

    if near is not None and not 0 <= near < 0.5:
        raise HarnessError(f"--near must be a share of hash bits in [0, 0.5), got {near}.")
    if not target.exists() and target.suffix.lower() != ".toml":
        raise HarnessError(f"no such folder or study file: {target}")
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
