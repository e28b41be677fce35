"""`harness predict MODEL_DIR IMAGE_OR_FOLDER…`: the top classes of each image, as tables or JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from harness.errors import HarnessError
from harness.serving.model_folder import ExportedModel
from harness.data.images import is_ignored, read_bytes

BATCH = 64


def image_files(paths: list[Path]) -> list[Path]:
    """The files given, and every file under the folders given (sorted, hidden and system files left out)."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and not is_ignored(p.name))
        elif path.is_file():
            found.append(path)
        else:
            raise HarnessError(f"{path}: no such file or folder.")
    if not found:
        raise HarnessError(f"no files under {', '.join(map(str, paths))}.")
    return found


def extra_values(args) -> dict[str, str]:
    values = {}
    for item in args.input:
        name, sep, value = item.partition("=")
        if not sep:
            raise HarnessError(f"--input {item}: write NAME=VALUE, e.g. --input location=EASTERN_PACIFIC.")
        values[name] = value
    if args.location is not None:
        values["location"] = args.location
    return values


def predict_command(args, out: Console, err: Console) -> int:
    model = ExportedModel(args.model_dir)
    extra = extra_values(args)
    unknown = sorted(set(extra) - set(model.extra_inputs))
    if unknown:
        takes = ", ".join(model.extra_inputs) or "the image alone"
        raise HarnessError(f"this model takes no input {', '.join(unknown)}; it takes {takes}.")
    model.encode_extra(extra, 1)  # a missing or unknown location stops here, before any decoding
    files = image_files(args.images)
    unreadable: list[str] = []
    with Progress(console=err, transient=True, disable=len(files) < 2) as progress:
        task = progress.add_task("predicting", total=len(files))
        for start in range(0, len(files), BATCH):
            batch, pixels = [], []
            for path in files[start:start + BATCH]:
                try:
                    pixels.append(model.decode(read_bytes(path), str(path)))
                    batch.append(path)
                except (HarnessError, OSError) as exc:
                    unreadable.append(str(exc))
            if batch:
                probabilities = model.probabilities(np.stack(pixels), extra)
                for path, prediction in zip(batch, model.top(probabilities, args.top_k)):
                    show(path, prediction, args.json, out)
            progress.advance(task, len(files[start:start + BATCH]))
    for line in unreadable:
        err.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)
    if unreadable:
        err.print(f"{len(unreadable)} of {len(files)} file(s) could not be read; the others are above.")
        return 2
    return 0


def show(path: Path, prediction, as_json: bool, out: Console) -> None:
    if as_json:
        print(json.dumps({"image": str(path), "top": prediction.as_json()}), flush=True)
        return
    out.print(f"[bold]{escape(str(path))}[/]", soft_wrap=True, highlight=False)
    table = Table()
    for column, justify in (("#", "right"), ("label", "left"), ("id", "right"), ("probability", "right")):
        table.add_column(column, justify=justify)
    for rank, (label, label_id, p) in enumerate(zip(prediction.labels, prediction.label_ids, prediction.probabilities), 1):
        table.add_row(str(rank), escape(label), str(label_id), f"{p:.3f}")
    out.print(table)
