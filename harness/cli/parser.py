"""The ``harness`` command line: one sub-command per task, each with its options."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import __version__
from harness.errors import EXIT_USER


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


def _formats(text: str) -> list[str]:
    """``--format keras,onnx``: the formats named, each known (``harness.serving.runtimes.FORMAT_FILES``)."""
    from harness.serving.runtimes import FORMAT_FILES

    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMAT_FILES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown format '{','.join(unknown) or text}': give one or more of "
                                         f"{', '.join(FORMAT_FILES)}, e.g. --format keras,onnx")
    return names


_positive = _whole_number(1)
#: k-fold cross-validation needs a part to score on and another to train on.
_folds = _whole_number(2, " (cross-validation holds out one part and trains on the others)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``harness`` command."""
    parser = _Parser(prog="harness", description="Compare image-classification models with cross-validated search.")
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_run, _add_worker, _add_validate, _add_audit, _add_reports, _add_export, _add_predict, _add_serve):
        add(sub)
    sub.add_parser("plugins", help="list plugins and what each registers")
    return parser


def _add_run(sub) -> None:
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
    run.add_argument("--solo-worker", action="store_true", help=argparse.SUPPRESS)
    run.add_argument("--study-digest", default=None, help=argparse.SUPPRESS)


def _add_worker(sub) -> None:
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
    worker.add_argument("--prepare-only", action="store_true", help="create the study in the storage (tables, folds, "
                        "each candidate's search) and check its data, then exit without training: run once before "
                        "starting many workers")


def _add_validate(sub) -> None:
    validate = sub.add_parser("validate", help="check a study file and its data without training")
    validate.add_argument("study", type=Path)
    validate.add_argument("--data-root", type=Path, default=None)
    validate.add_argument("--folds", type=_folds)
    validate.add_argument("--weights")
    validate.add_argument("--image-size", type=_positive)


def _add_audit(sub) -> None:
    audit = sub.add_parser("audit", help="report a dataset's duplicates, copies, unreadable files and fold balance")
    audit.add_argument("target", type=Path, help="a study file (TOML), or a folder with one subfolder per class")
    audit.add_argument("--data-root", type=Path, default=None)
    audit.add_argument("--results", type=Path, default=Path("results"), help="writes RESULTS/<study or folder name>/audit.md and audit.json")
    audit.add_argument("--folds", type=_folds, help="folds for the balance check (default: the study's, or 5)")
    audit.add_argument("--near", type=float, help="near-duplicate threshold, a share of hash bits (default: the study's, or 0.08)")


def _add_reports(sub) -> None:
    board = sub.add_parser("leaderboard", help="print the leaderboard of a results folder")
    board.add_argument("results_dir", type=Path, help="a study's results folder, e.g. results/demo")

    compare = sub.add_parser("compare", help="two studies over the same images side by side (e.g. one split against K-fold CV)")
    compare.add_argument("first", type=Path, help="a study's results folder (A)")
    compare.add_argument("second", type=Path, help="another study's results folder (B)")

    report = sub.add_parser("report", help="rebuild report.html of a results folder from what it stores, also mid-run")
    report.add_argument("results_dir", type=Path, help="a study's results folder, e.g. results/demo")
    report.add_argument("--data-root", type=Path, default=None,
                        help="where the images are now (default: where the run found them), for the strip of wrong images")


def _add_export(sub) -> None:
    export = sub.add_parser("export", help="refit the leaderboard's best candidate on its cross-validation images "
                            "and write a model folder")
    export.add_argument("results_dir", type=Path, help="a study's results folder, e.g. results/demo")
    export.add_argument("--candidate", help="which candidate (default: the leaderboard's first)")
    export.add_argument("--out", type=Path, help="model folder to write (default: RESULTS_DIR/export/<candidate>)")
    export.add_argument("--data-root", type=Path, default=None, help="where the images are now (default: where the run found them)")
    export.add_argument("--ensemble", action="store_true", help="keep the K fold models (probabilities averaged) instead of refitting")
    export.add_argument("--format", dest="formats", type=_formats, action="append", metavar="FORMATS",
                        help="keras, onnx, litert, or several (keras,onnx or the flag repeated); default keras. ONNX "
                             "and LiteRT hold one model, a fold ensemble averaged inside it")
    export.add_argument("--include-test", action="store_true",
                        help="refit on the locked test set's images too (the model card says so: no unseen data is "
                             "left to check the model)")


def _add_predict(sub) -> None:
    predict = sub.add_parser("predict", help="classify images with an exported model folder")
    predict.add_argument("model_dir", type=Path, help="a folder written by harness export")
    predict.add_argument("images", type=Path, nargs="+", help="image files or folders of them")
    predict.add_argument("--top-k", type=_positive, default=5, help="classes to show per image (default 5)")
    predict.add_argument("--location", help="the region, for a model that takes a location input")
    predict.add_argument("--input", action="append", default=[], metavar="NAME=VALUE", help="any other extra input")
    predict.add_argument("--json", action="store_true", help="one JSON line per image instead of tables")
    predict.add_argument("--explain", type=Path, metavar="OUT_DIR",
                         help="also write each image's Grad-CAM heat map of its top class there, as a PNG overlay")
    predict.add_argument("--runtime", choices=("keras", "onnx"), default=None,
                         help="run the Keras or the ONNX model of the folder (default: Keras when the folder holds "
                              "one and Keras is installed, else ONNX, on onnxruntime without TensorFlow)")


def _add_serve(sub) -> None:
    serve = sub.add_parser("serve", help="an HTTP prediction service with an upload page for a model folder")
    serve.add_argument("model_dir", type=Path, help="a folder written by harness export")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=5000)
    serve.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload accepted (default 10 MB)")
    serve.add_argument("--runtime", choices=("keras", "onnx"), default=None,
                        help="run the Keras or the ONNX model of the folder (default: Keras when the folder holds one "
                             "and Keras is installed, else ONNX, on onnxruntime without TensorFlow)")
