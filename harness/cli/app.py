"""The `harness` command.

Exit codes: 0 success; 1 an unexpected error (a bug: the traceback is shown); 2 a problem for the
user to fix (study file, data, plugin, command line, file system: one line says what and where);
130 interrupted by Ctrl-C, 143 stopped by SIGTERM (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from harness import __version__
from harness.errors import EXIT_INTERNAL, EXIT_OK, EXIT_USER, HarnessError, file_system_error
from harness.core.memory import RestartForMemory


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors are user errors too: exit 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_USER, f"harness: error: {message}\n")


def _whole_number(minimum: int, why: str = ""):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}{why}, got {value}")
        return value

    return parse


_positive = _whole_number(1)
#: k-fold cross-validation needs a part to score on and another to train on.
_folds = _whole_number(2, " (cross-validation holds out one part and trains on the others)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="harness", description="Compare image-classification models with cross-validated search.")
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run or resume a study and write its leaderboard")
    run.add_argument("study", type=Path, help="study file (TOML)")
    run.add_argument("--trials", type=_positive, help="trials per candidate (overrides search.trials)")
    run.add_argument("--folds", type=_folds, help="cross-validation folds, at least 2 (overrides cv.folds)")
    run.add_argument("--epochs", type=_positive, help="training epochs (overrides train.epochs)")
    run.add_argument("--results", type=Path, default=Path("results"), help="results root; the study writes to RESULTS/<study name> (default: results)")
    run.add_argument("--data-root", type=Path, default=None, help="folder that dataset roots are relative to (default: $HARNESS_DATA_ROOT or .)")
    run.add_argument("--weights", help='"imagenet", "none" or a weights file for every candidate (also $HARNESS_WEIGHTS)')
    run.add_argument("--image-size", type=_positive, help="square image side for every candidate, e.g. 64 for a quick check")
    run.add_argument("--workers", type=_positive, default=1, help="worker processes sharing the search (one GPU each when there are several)")
    run.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)

    worker = sub.add_parser(
        "worker", help="join a study whose storage other machines share (PostgreSQL), run trials, write the leaderboard"
    )
    worker.add_argument("study", type=Path, help="study file (TOML), the same on every machine")
    worker.add_argument("--storage", help="the shared storage: postgresql://user:password@host/db or journal:PATH "
                        "(overrides search.storage)")
    worker.add_argument("--results", type=Path, default=Path("results"), help="this machine's results root (default: results)")
    worker.add_argument("--data-root", type=Path, default=None, help="where this machine keeps the images (default: $HARNESS_DATA_ROOT or .)")
    worker.add_argument("--trials", type=_positive, help="trials per candidate (overrides search.trials)")
    worker.add_argument("--folds", type=_folds, help="cross-validation folds (overrides cv.folds)")
    worker.add_argument("--epochs", type=_positive, help="training epochs (overrides train.epochs)")
    worker.add_argument("--weights", help='"imagenet", "none" or a weights file for every candidate')
    worker.add_argument("--image-size", type=_positive, help="square image side for every candidate")

    validate = sub.add_parser("validate", help="check a study file and its data without training")
    validate.add_argument("study", type=Path)
    validate.add_argument("--data-root", type=Path, default=None)
    validate.add_argument("--folds", type=_folds)
    validate.add_argument("--weights")
    validate.add_argument("--image-size", type=_positive)

    audit = sub.add_parser("audit", help="report a dataset's duplicates, copies, unreadable files and fold balance")
    audit.add_argument("target", type=Path, help="a study file (TOML), or a folder with one subfolder per class")
    audit.add_argument("--data-root", type=Path, default=None)
    audit.add_argument("--results", type=Path, default=Path("results"), help="writes RESULTS/<study or folder name>/audit.md and audit.json")
    audit.add_argument("--folds", type=_folds, help="folds for the balance check (default: the study's, or 5)")
    audit.add_argument("--near", type=float, help="near-duplicate threshold, a share of hash bits (default: the study's, or 0.08)")

    board = sub.add_parser("leaderboard", help="print the leaderboard of a results folder")
    board.add_argument("results_dir", type=Path, help="a study's results folder, e.g. results/demo")

    compare = sub.add_parser("compare", help="two studies over the same images side by side (e.g. one split against K-fold CV)")
    compare.add_argument("first", type=Path, help="a study's results folder (A)")
    compare.add_argument("second", type=Path, help="another study's results folder (B)")

    report = sub.add_parser("report", help="rebuild report.html of a results folder from what it stores, also mid-run")
    report.add_argument("results_dir", type=Path, help="a study's results folder, e.g. results/demo")
    report.add_argument("--data-root", type=Path, default=None,
                        help="where the images are now (default: where the run found them), for the strip of wrong images")

    export = sub.add_parser("export", help="refit the leaderboard's best candidate on all images and write a model folder")
    export.add_argument("results_dir", type=Path, help="a study's results folder, e.g. results/demo")
    export.add_argument("--candidate", help="which candidate (default: the leaderboard's first)")
    export.add_argument("--out", type=Path, help="model folder to write (default: RESULTS_DIR/export/<candidate>)")
    export.add_argument("--data-root", type=Path, default=None, help="where the images are now (default: where the run found them)")
    export.add_argument("--ensemble", action="store_true", help="keep the K fold models (probabilities averaged) instead of refitting")

    predict = sub.add_parser("predict", help="classify images with an exported model folder")
    predict.add_argument("model_dir", type=Path, help="a folder written by harness export")
    predict.add_argument("images", type=Path, nargs="+", help="image files or folders of them")
    predict.add_argument("--top-k", type=_positive, default=5, help="classes to show per image (default 5)")
    predict.add_argument("--location", help="the region, for a model that takes a location input")
    predict.add_argument("--input", action="append", default=[], metavar="NAME=VALUE", help="any other extra input")
    predict.add_argument("--json", action="store_true", help="one JSON line per image instead of tables")

    serve = sub.add_parser("serve", help="an HTTP prediction service with an upload page for a model folder")
    serve.add_argument("model_dir", type=Path, help="a folder written by harness export")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=5000)
    serve.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload accepted (default 10 MB)")

    sub.add_parser("plugins", help="list plugins and what each registers")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Only a process whose own command line this is may replace itself (see harness.core.memory).
    restartable = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    err = Console(stderr=True)
    previous_handlers = _stop_gracefully_on_signals(err)
    try:
        return _dispatch(args, err, restartable)
    except RestartForMemory as exc:
        err.print(f"[yellow]{escape(str(exc))}[/]; continuing in a fresh process")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "harness", *argv])  # the same command resumes
    except HarnessError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return EXIT_USER
    except OSError as exc:  # permissions, a full or read-only disk, a folder where a file should be
        err.print(f"[bold red]error:[/] {escape(str(file_system_error(exc)))}", soft_wrap=True)
        return EXIT_USER
    except KeyboardInterrupt:
        from harness.search.engine import stop_signal

        err.print("[yellow]interrupted.[/] Finished folds are saved; run the same command again to resume.")
        return 128 + stop_signal()  # 130 for Ctrl-C, 143 for SIGTERM
    except Exception as exc:
        fault = _storage_fault(exc)
        if fault:
            err.print(f"[bold red]error:[/] {escape(fault)}", soft_wrap=True)
            return EXIT_USER
        err.print_exception()
        err.print("[bold red]internal error[/] (a bug in harness or a plugin; please report it with the traceback above)")
        return EXIT_INTERNAL
    finally:
        for signum, previous in previous_handlers.items():
            signal.signal(signum, previous)


def _storage_fault(exc: Exception) -> str | None:
    """One line for a study's database that went away mid-run, or None for any other error."""
    if "optuna" not in sys.modules:
        return None
    from harness.results.storage import is_storage_fault

    # Optuna wraps SQLAlchemy's error, or fails on its own while handling it: look down the chain.
    chain, seen = [], exc
    while seen is not None and len(chain) < 20:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    faults = [e for e in chain if is_storage_fault(e)]
    if not faults:
        return None
    with_reason = [e for e in faults if getattr(e, "orig", None) is not None]
    reason = str(with_reason[0].orig if with_reason else faults[0]).strip().splitlines()[0]
    return (f"lost the study's storage mid-run ({reason}). Finished folds are kept in it: when the database "
            "server is back, run the same command again to resume.")


def _stop_gracefully_on_signals(err: Console) -> dict:
    """First Ctrl-C or SIGTERM: finish the current epoch, keep every finished fold, exit 130 (143
    for SIGTERM). Second: stop now. Returns the handlers replaced.

    (An interrupt raised at an arbitrary point can land in a backend's own callback and be lost.)
    """
    from harness.search.engine import STOP_REQUESTED, request_stop

    STOP_REQUESTED.clear()

    def handler(signum, frame):
        if STOP_REQUESTED.is_set():
            raise KeyboardInterrupt
        request_stop(signum)
        again = "Ctrl-C" if signum == signal.SIGINT else "the signal"
        err.print(f"[yellow]stopping at the end of this epoch[/] ({again} again to stop at once)")

    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: leave signals as they are
        pass
    return previous


def _dispatch(args: argparse.Namespace, err: Console, restartable: bool = False) -> int:
    from harness.plugins import get_plugins

    if args.command in ("leaderboard", "compare", "report", "export"):
        _refresh_from_storage(args, err)
    if args.command == "leaderboard":
        from harness.reports.leaderboard import build_leaderboard, print_leaderboard

        print_leaderboard(build_leaderboard(args.results_dir), Console(), title=f"{args.results_dir.name} leaderboard")
        return EXIT_OK

    if args.command == "compare":
        from harness.reports.compare import compare, print_comparison

        table, notes = compare(args.first, args.second)
        print_comparison(table, notes, Console())
        return EXIT_OK

    if args.command == "predict":
        from harness.serving.predict import predict_command

        return predict_command(args, Console(), err)
    if args.command == "serve":
        from harness.serving.http import serve_command

        return serve_command(args, err)

    plugins = get_plugins()
    if args.command == "export":
        from harness.workflows.export import export_model

        folder = export_model(args.results_dir, plugins, err, args.candidate, args.out, args.data_root, args.ensemble)
        Console().print(f"model folder: {folder} (model card: {folder / 'MODEL_CARD.md'})")
        return EXIT_OK
    if args.command == "plugins":
        _print_plugins(plugins)
        return EXIT_OK
    if args.command == "report":
        return _report(args, plugins, err)

    from harness.config.study import load_study
    from harness.workflows.run import default_data_root

    if args.command == "audit":
        from harness.data.audit import audit_target

        audit_target(args.target, plugins, args.data_root or default_data_root(), args.results, Console(), args.folds, args.near)
        return EXIT_OK

    overrides = {
        k: getattr(args, k)
        for k in ("trials", "folds", "epochs", "weights", "image_size")
        if getattr(args, k, None) is not None
    }
    study = load_study(args.study, plugins, overrides)
    data_root = args.data_root or default_data_root()
    if args.command == "validate":
        return _validate(study, plugins, data_root, err)

    from harness.workflows.run import join_study, run_study, run_worker

    if args.command == "worker":
        if args.storage:  # where, not what: kept out of the overrides saved in study.toml (it may hold a password)
            study.search.storage = args.storage
        join_study(study, plugins, args.results, data_root, err, restartable)
        return EXIT_OK
    if args.worker_index is not None:
        run_worker(study, plugins, args.results, data_root, args.worker_index, restartable)
        return EXIT_OK
    worker_command = [sys.executable, "-m", "harness", "run", str(args.study), "--results", str(args.results)]
    worker_command += ["--data-root", str(data_root)]
    worker_command += [a for k, v in overrides.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    run_study(
        study, plugins, args.results, data_root, err, args.workers, [*worker_command, "--worker-index"], restartable
    )
    return EXIT_OK


def _refresh_from_storage(args: argparse.Namespace, err: Console) -> None:
    """Reports read the results folder: bring it up to date with the study's storage first."""
    from harness.results.storage import refresh_results_folder

    folders = [args.first, args.second] if args.command == "compare" else [args.results_dir]
    for folder in folders:
        warning = refresh_results_folder(folder)
        if warning:
            err.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)


def _validate(study, plugins, data_root: Path, err: Console) -> int:
    """Everything ``run`` would reject before or while building its models, without training."""
    from harness.data.folds import make_folds
    from harness.workflows.run import build_problems, describe, prepare

    dataset, notes = prepare(study, plugins, data_root, err)
    make_folds(dataset, study.cv)
    problems = build_problems(study, plugins, dataset)
    if problems:
        raise HarnessError(
            f"{study.path}: {len(problems)} of {len(study.candidates)} candidate(s) cannot be built: "
            + "; ".join(f"{name}: {why}" for name, why in problems.items())
        )
    err.print(f"[green]ok[/] {study.path}: {describe(dataset)}")
    for note in notes:
        err.print(f"[yellow]warning:[/] {note}")
    for cand in study.candidates:
        space = ", ".join(f"{k} {d.describe()}" for k, d in cand.space.items()) or "nothing tuned"
        err.print(f"  {cand.name} ({cand.model}, {cand.image_size[0]}×{cand.image_size[1]}): {space}")
    return EXIT_OK


def _report(args: argparse.Namespace, plugins, err: Console) -> int:
    """Rebuild report.html; the images of the strip come from the study's data when it is still there."""
    import json

    from harness.reports.html import write_html_report
    from harness.results.storage import RUN_FILE

    results_dir = args.results_dir
    run_file = results_dir / RUN_FILE
    if not run_file.is_file():
        raise HarnessError(f"{results_dir}: not a results folder of harness (no {RUN_FILE}); run a study first.")
    info = json.loads(run_file.read_text())
    thumbnails = None
    data_root = args.data_root or (Path(info["data_root"]) if info.get("data_root") else None)
    try:
        from harness.config.study import load_study
        from harness.workflows.run import prepare

        study = load_study(results_dir / "study.toml", plugins)
        dataset, _ = prepare(study, plugins, data_root or Path("."), Console(stderr=True, quiet=True))
        import pandas as pd

        ids = pd.read_csv(results_dir / "folds.csv", dtype={"id": str}, keep_default_na=False)["id"].tolist()
        if dataset.table["id"].tolist() == ids:
            thumbnails = dataset.thumbnails
        else:
            err.print("note: the study's images changed since the run: the report shows no images of them")
    except (HarnessError, OSError) as exc:
        err.print(f"note: the study's images are not available ({exc}); the report shows no images of them. "
                  "Give --data-root to where they are now.", soft_wrap=True, highlight=False)
    path = write_html_report(results_dir, thumbnails=thumbnails)
    Console().print(f"wrote {path}")
    return EXIT_OK


def _print_plugins(plugins) -> None:
    from rich.table import Table

    table = Table(title="harness plugins")
    for column in ("plugin", "source", "registers"):
        table.add_column(column)
    for name, _ in sorted(plugins.manager.list_name_plugin(), key=lambda item: item[0]):
        registered = plugins.registrations(name)
        hooks = sorted(
            h.name for h in plugins.manager.get_hookcallers(plugins.manager.get_plugin(name)) or []
            if not h.name.startswith("register_")
        )
        what = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in registered.items())
        if hooks:
            what = "; ".join(filter(None, [what, "hooks: " + ", ".join(hooks)]))
        table.add_row(name, plugins.source(name), what or "—")
    console = Console()
    console.print(table)
    pretrained = [(n, plugins.models.get(n)) for n in plugins.models.names()]
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


if __name__ == "__main__":
    sys.exit(main())
