"""`harness predict MODEL_DIR IMAGE_OR_FOLDER…`: the top classes of each image, as tables or JSON lines."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from harness.core.files import atomic_write
from harness.data.images import is_ignored, read_bytes
from harness.errors import HarnessError
from harness.serving.model_folder import ExportedModel

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


def explain_folder(folder: Path | None) -> Path | None:
    """The ``--explain`` folder, made if missing and checked writable before any prediction."""
    if folder is None:
        return None
    if folder.exists() and not folder.is_dir():
        raise HarnessError(f"--explain {folder}: a file, not a folder; give a folder for the heat maps.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise HarnessError(f"--explain {folder}: cannot write heat maps there ({exc.strerror or exc}); "
                           "give a folder you can write to.") from None
    return folder


def predict_command(args, out: Console, err: Console) -> int:
    model = ExportedModel(args.model_dir, getattr(args, "runtime", None))
    extra = extra_values(args)
    unknown = sorted(set(extra) - set(model.extra_inputs))
    if unknown:
        takes = ", ".join(model.extra_inputs) or "the image alone"
        raise HarnessError(f"this model takes no input {', '.join(unknown)}; it takes {takes}.")
    model.encode_extra(extra, 1)  # a missing or unknown location stops here, before any decoding
    files = image_files(args.images)
    folder = explain_folder(getattr(args, "explain", None))
    explainer = explaining = None
    if folder is not None:
        from harness.serving.explain import Explainer, overlay_names

        explainer = Explainer(model)  # a model Grad-CAM cannot explain stops here, before predicting
        explaining = (explainer, folder, overlay_names(files))
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
                answer(model, batch, np.stack(pixels), extra, args, out, explaining)
            progress.advance(task, len(files[start:start + BATCH]))
    for line in unreadable:
        err.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)
    if explainer is not None:
        err.print(f"heat maps: {escape(explainer.method)}; in {escape(str(folder))}", soft_wrap=True, highlight=False)
    if unreadable:
        err.print(f"{len(unreadable)} of {len(files)} file(s) could not be read; the others are above.")
        return 2
    return 0


def answer(model: ExportedModel, batch: list[Path], pixels: np.ndarray, extra: dict, args, out: Console,
           explaining: tuple | None) -> None:
    """Show the predictions of one batch; with ``explaining`` (explainer, folder, file names), write
    each image's heat map overlay of its top-1 class too."""
    predictions = model.top(model.probabilities(pixels, extra), args.top_k)
    written: list[Path | None] = [None] * len(batch)
    if explaining is not None:
        from harness.serving.explain import png

        explainer, folder, names = explaining
        images = explainer.overlays(pixels, extra, [p.label_ids[0] for p in predictions])
        for i, (path, image) in enumerate(zip(batch, images)):
            written[i] = atomic_write(folder / names[path], png(image), fsync=False)
    for path, prediction, explanation in zip(batch, predictions, written):
        show(path, prediction, args.json, out, explanation)


def show(path: Path, prediction, as_json: bool, out: Console, explanation: Path | None = None) -> None:
    if as_json:
        line = {"image": str(path), "top": prediction.as_json()}
        if explanation is not None:
            line["explanation"] = str(explanation)
        print(json.dumps(line), flush=True)
        return
    out.print(f"[bold]{escape(str(path))}[/]", soft_wrap=True, highlight=False)
    table = Table()
    for column, justify in (("#", "right"), ("label", "left"), ("id", "right"), ("probability", "right")):
        table.add_column(column, justify=justify)
    for rank, (label, label_id, p) in enumerate(zip(prediction.labels, prediction.label_ids, prediction.probabilities), 1):
        table.add_row(str(rank), escape(label), str(label_id), f"{p:.3f}")
    out.print(table)
    if explanation is not None:
        out.print(f"heat map of {escape(prediction.labels[0])}: {escape(str(explanation))}", soft_wrap=True,
                  highlight=False)
