"""One handler per ``harness`` command: ``handler(args, invocation) -> exit code``.

Each handler imports what its command needs when it runs, so that a command imports only its own
part of harness: ``predict`` and ``serve`` load no search, training or tuning code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from harness.core.stop import StopToken
from harness.errors import EXIT_OK, HarnessError


@dataclass(frozen=True)
class Invocation:
    """What every handler gets besides its arguments."""

    #: Where messages go (stderr).
    err: Console
    #: Set by the signal handlers: the search stops at the end of its epoch.
    stop: StopToken
    #: Whether this process may replace itself with a fresh run of its command (see harness.core.memory).
    restartable: bool = False


Handler = Callable[[argparse.Namespace, Invocation], int]


def leaderboard(args: argparse.Namespace, call: Invocation) -> int:
    from harness.reports.leaderboard import build_leaderboard, print_leaderboard

    _refresh_from_storage([args.results_dir], call.err)
    print_leaderboard(build_leaderboard(args.results_dir), Console(), title=f"{args.results_dir.name} leaderboard")
    return EXIT_OK


def compare(args: argparse.Namespace, call: Invocation) -> int:
    from harness.reports.compare import compare as compare_folders, print_comparison

    _refresh_from_storage([args.first, args.second], call.err)
    table, notes = compare_folders(args.first, args.second)
    print_comparison(table, notes, Console())
    return EXIT_OK


def predict(args: argparse.Namespace, call: Invocation) -> int:
    from harness.serving.predict import predict_command

    return predict_command(args, Console(), call.err)


def serve(args: argparse.Namespace, call: Invocation) -> int:
    from harness.serving.http import serve_command

    return serve_command(args, call.err)


def export(args: argparse.Namespace, call: Invocation) -> int:
    from harness.plugins import get_plugins
    from harness.workflows.export import export_model

    _refresh_from_storage([args.results_dir], call.err)
    formats = [name for group in (args.formats or [["keras"]]) for name in group]  # --format a,b or repeated
    folder = export_model(args.results_dir, get_plugins(), call.err, args.candidate, args.out, args.data_root,
                          args.ensemble, args.include_test, formats)
    Console().print(f"model folder: {folder} (model card: {folder / 'MODEL_CARD.md'})")
    return EXIT_OK


def report(args: argparse.Namespace, call: Invocation) -> int:
    """Rebuild report.html; the images of the strip come from the study's data when it is still there."""
    from harness.reports.html import write_html_report
    from harness.results.layout import RUN_FILE

    _refresh_from_storage([args.results_dir], call.err)
    results_dir = args.results_dir
    run_file = results_dir / RUN_FILE
    if not run_file.is_file():
        raise HarnessError(f"{results_dir}: not a results folder of harness (no {RUN_FILE}); run a study first.")
    info = json.loads(run_file.read_text())
    data_root = args.data_root or (Path(info["data_root"]) if info.get("data_root") else None)
    path = write_html_report(results_dir, thumbnails=_study_thumbnails(results_dir, data_root, call.err))
    Console().print(f"wrote {path}")
    return EXIT_OK


def _study_thumbnails(results_dir: Path, data_root: Path | None, err: Console):
    """The dataset's ``thumbnails`` when its images are still those of the run, else None (with a note)."""
    import pandas as pd

    from harness.config.study import load_study
    from harness.plugins import get_plugins
    from harness.workflows.run import prepare

    plugins = get_plugins()
    try:
        study = load_study(results_dir / "study.toml", plugins)
        dataset, _ = prepare(study, plugins, data_root or Path("."), Console(stderr=True, quiet=True))
        ids = pd.read_csv(results_dir / "folds.csv", dtype={"id": str}, keep_default_na=False)["id"].tolist()
    except (HarnessError, OSError) as exc:
        err.print(f"note: the study's images are not available ({exc}); the report shows no images of them. "
                  "Give --data-root to where they are now.", soft_wrap=True, highlight=False)
        return None
    if dataset.table["id"].tolist() == ids:
        return dataset.thumbnails
    err.print("note: the study's images changed since the run: the report shows no images of them")
    return None


def plugins(args: argparse.Namespace, call: Invocation) -> int:
    """The plugins table, and the pretrained weights that install with pip."""
    from rich.table import Table

    from harness.plugins import get_plugins

    found = get_plugins()
    table = Table(title="harness plugins")
    for column in ("plugin", "source", "registers"):
        table.add_column(column)
    for name, _ in sorted(found.manager.list_name_plugin(), key=lambda item: item[0]):
        table.add_row(name, found.source(name), _registers(found, name) or "—")
    console = Console()
    console.print(table)
    pretrained = [(n, found.models.get(n)) for n in found.models.names()]
    pretrained = [(n, spec) for n, spec in pretrained if spec.weights_status is not None]
    if pretrained:
        weights = Table(title="pretrained weights that install with pip")
        for column in ("model", "ImageNet weights"):
            weights.add_column(column)
        for name, spec in pretrained:
            try:
                status = spec.weights_status()
            except Exception as exc:  # a plugin's status check must not hide the table
                status = f"unknown ({type(exc).__name__}: {exc})"
            weights.add_row(name, status)
        console.print(weights)
    return EXIT_OK


def _registers(found, name: str) -> str:
    """What plugin ``name`` registers, and the other hooks it implements."""
    registered = found.registrations(name)
    hooks = sorted(
        h.name for h in found.manager.get_hookcallers(found.manager.get_plugin(name)) or []
        if not h.name.startswith("register_")
    )
    what = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in registered.items())
    if hooks:
        what = "; ".join(filter(None, [what, "hooks: " + ", ".join(hooks)]))
    return what


def audit(args: argparse.Namespace, call: Invocation) -> int:
    from harness.data.audit import audit_target
    from harness.plugins import get_plugins
    from harness.workflows.run import default_data_root

    audit_target(args.target, get_plugins(), args.data_root or default_data_root(), args.results, Console(),
                 args.folds, args.near)
    return EXIT_OK


def validate(args: argparse.Namespace, call: Invocation) -> int:
    """Everything ``run`` would reject before or while building its models, without training."""
    from harness.data.folds import make_folds
    from harness.workflows.run import build_problems, describe, prepare

    study, plugins_found, data_root, _ = _study(args)
    dataset, notes = prepare(study, plugins_found, data_root, call.err)
    folds = make_folds(dataset, study.cv)
    problems = build_problems(study, plugins_found, dataset)
    if problems:
        raise HarnessError(
            f"{study.path}: {len(problems)} of {len(study.candidates)} candidate(s) cannot be built: "
            + "; ".join(f"{name}: {why}" for name, why in problems.items())
        )
    call.err.print(f"[green]ok[/] {study.path}: {describe(dataset)}")
    for note in notes:
        call.err.print(f"[yellow]warning:[/] {note}")
    for line in _protocol_lines(study, folds):
        call.err.print(escape(line), soft_wrap=True, highlight=False)
    for cand in study.candidates:
        space = ", ".join(f"{k} {d.describe()}" for k, d in cand.space.items()) or "nothing tuned"
        call.err.print(f"  {cand.name} ({cand.model}, {cand.image_size[0]}×{cand.image_size[1]}): {space}")
    return EXIT_OK


def _protocol_lines(study, folds) -> list[str]:
    """What the protocol does with the images: how many cross-validation uses, the test set, the unused."""
    from harness.toolkit.text import plural
    from harness.workflows.export import protocol_of, protocol_words

    protocol = protocol_of(study, folds)
    images, test = protocol["images"], protocol["test"]
    lines = [f"  protocol: {protocol_words(protocol)}", f"    cross-validation: {plural(images['cv'], 'image')}"]
    if test:
        how = "a refit of" if test["model"] == "refit" else "the fold models of"
        lines.append(f"    test set: {plural(images['test'], 'image')} ({test['source']}), scored once after "
                     f"selection by {how} the selected configuration")
    else:
        lines.append("    test set: none (the estimate is cross-validation's alone)")
    if images["unused"]:
        lines.append(f"    unused: {plural(images['unused'], 'image')}")
    return lines + [f"    note: {note}" for note in folds.attrs.get("notes", [])]


def worker(args: argparse.Namespace, call: Invocation) -> int:
    """Join a study whose storage other machines share (or, with --prepare-only, create it there)."""
    from harness.workflows.run import join_study, prepare_study

    study, plugins_found, data_root, _ = _study(args)
    if args.storage:  # where, not what: kept out of the overrides saved in study.toml (it may hold a password)
        study.search.storage = args.storage
    if args.prepare_only:
        prepare_study(study, plugins_found, args.results, data_root, call.err)
        return EXIT_OK
    join_study(study, plugins_found, args.results, data_root, call.err, call.restartable, stop=call.stop)
    return EXIT_OK


def run(args: argparse.Namespace, call: Invocation) -> int:
    """Run or resume a study: with its training in a worker process (or ``--workers`` of them), as
    one of those workers, or all in this process (``$HARNESS_WORKER_GROWTH_MB`` = 0)."""
    from harness.core.memory import RestartForMemory
    from harness.errors import EXIT_RECYCLE
    from harness.workflows.run import run_study, run_worker

    study, plugins_found, data_root, overrides = _study(args)
    digest = hashlib.sha256(study.effective_toml().encode()).hexdigest()[:16]
    if args.worker_index is not None:
        if args.study_digest not in (None, digest):  # a worker started after the file was edited
            raise HarnessError(f"{args.study}: the study file changed while its `harness run` went on; that run "
                               "stops here. Run the command again for the study as it is now (finished folds are kept).")
        try:
            run_worker(study, plugins_found, args.results, data_root, args.worker_index, solo=args.solo_worker,
                       stop=call.stop)
        except RestartForMemory as exc:  # its parent starts a fresh one in its place
            call.err.print(f"[dim]{escape(str(exc))}; a fresh worker continues[/]")
            return EXIT_RECYCLE
        return EXIT_OK
    worker_command = [sys.executable, "-m", "harness", "run", str(args.study), "--results", str(args.results)]
    worker_command += ["--data-root", str(data_root), "--study-digest", digest]
    worker_command += [a for k, v in overrides.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    run_study(study, plugins_found, args.results, data_root, call.err, args.workers, worker_command,
              call.restartable, stop=call.stop)
    return EXIT_OK


def _study(args: argparse.Namespace):
    """The study file with the command line's overrides, the plugins, the data root, and the overrides."""
    from harness.config.study import load_study
    from harness.plugins import get_plugins
    from harness.workflows.run import default_data_root

    found = get_plugins()
    overrides = {
        k: getattr(args, k)
        for k in ("trials", "folds", "epochs", "weights", "image_size")
        if getattr(args, k, None) is not None
    }
    study = load_study(args.study, found, overrides)
    return study, found, args.data_root or default_data_root(), overrides


def _refresh_from_storage(folders: list[Path], err: Console) -> None:
    """Reports read the results folder: bring it up to date with the study's storage first."""
    from harness.results.folder import refresh_results_folder

    for folder in folders:
        warning = refresh_results_folder(folder)
        if warning:
            err.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)


#: The handler of each command.
HANDLERS: dict[str, Handler] = {
    "run": run, "worker": worker, "validate": validate, "audit": audit, "leaderboard": leaderboard,
    "compare": compare, "report": report, "export": export, "predict": predict, "serve": serve, "plugins": plugins,
}
