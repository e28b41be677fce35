"""TensorBoard event files of each fold's epochs (``[train] tensorboard = true``).

Each epoch's scalars, as the fold's history records them (loss, accuracy, val_loss, val_accuracy,
learning_rate), are appended as the epoch ends, the step being the epoch counted over every phase,
to ``results/<study>/tensorboard/<candidate>/trial_<n>/fold_<k>`` (``repeat_<r>/fold_<k>`` with
repeats), so ``tensorboard --logdir results/<study>/tensorboard`` follows folds as they train.

The records are written with the ``tensorboard`` package's own record framing and protobufs, from
a Keras callback: no TensorFlow import and no writer thread, so the files are the same on every
backend (TensorFlow, JAX, PyTorch) and from the TensorFlow head's own epoch loop.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from harness.config.study import TrainConfig
from harness.training.build import load_keras

#: The folder under a study's results folder that holds the event files.
TENSORBOARD_DIR = "tensorboard"
_PREFIX = "events.out.tfevents."


def fold_logdir(train: TrainConfig, results_dir: Path, candidate: str, search: str, trial: int,
                repeat: int, repeats: int, fold: int) -> Path | None:
    """Where one fold's event file goes, or None when ``train.tensorboard`` is off. An outer fold's
    search (nested cross-validation, search id ``<id>.outer<k>``) gets its own candidate folder."""
    if not train.tensorboard:
        return None
    outer = search.rpartition(".outer")[2] if ".outer" in search else ""
    folder = Path(results_dir) / TENSORBOARD_DIR / (f"{candidate}-outer{outer}" if outer else candidate)
    folder = folder / f"trial_{trial}"
    if repeats > 1:
        folder = folder / f"repeat_{repeat}"
    return folder / f"fold_{fold}"


def epoch_scalars(history: dict[str, list], logdir: Path | None) -> list:
    """A callback (in a list; empty without ``logdir``) that appends the epoch ``history`` has just
    recorded to the fold's event file. It goes after ``epoch_history``'s callback; a fold's first
    phase (``history`` still empty) replaces what an earlier try of the fold wrote."""
    if logdir is None:
        return []
    logdir = Path(logdir)
    if not history.get("phase"):
        for old in logdir.glob(f"{_PREFIX}*"):
            old.unlink()
    keras = load_keras()

    class EpochScalars(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            step = len(history.get("phase", [])) - 1
            row = {k: v[step] for k, v in history.items() if k != "phase" and isinstance(v[step], (int, float))}
            append_scalars(logdir, step, row)

    return [EpochScalars()]


def append_scalars(logdir: Path, step: int, scalars: dict[str, float]) -> Path:
    """Append one step's scalars to the folder's event file (created, headed by its version record,
    when there is none); returns the file."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    logdir.mkdir(parents=True, exist_ok=True)
    files = sorted(logdir.glob(f"{_PREFIX}*"))
    path = files[-1] if files else logdir / f"{_PREFIX}{int(time.time())}.{socket.gethostname()}.harness"
    events = [] if files else [Event(wall_time=time.time(), file_version="brain.Event:2")]
    values = [Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()]
    events.append(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))
    _write_records(path, [event.SerializeToString() for event in events])
    return path


def _write_records(path: Path, records: list[bytes]) -> None:
    """TFRecord framing (length, its masked CRC, data, its masked CRC), as TensorBoard reads it."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    with path.open("ab") as handle:
        writer = RecordWriter(handle)
        for record in records:
            writer.write(record)
