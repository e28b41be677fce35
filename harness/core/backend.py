"""Starting the Keras backend without its start-up noise, and naming the devices it trains on."""

from __future__ import annotations

import os
import re
import sys
import tempfile

# An absl log line ("E0000 00:00:1795502246.375250   18529 cuda_platform.cc:52] …") or TensorFlow's
# older format ("2025-09-17 14:44:05.157831: I external/…/cudart_stub.cc:32] …").
_LOG_LINE = re.compile(r"^(?:([IWEF])\d{4} [\d:.]+\s+\d+ |[\d-]+ [\d:.]+: ([IWEF]) )(\S+?):\d+\]")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def start_backend() -> str:
    """Import Keras and its backend, find the devices, and return one line naming them.

    TensorFlow writes its start-up notices (oneDNN, CUDA probing, "failed call to cuInit" on a
    machine without a GPU) to the process's stderr before its own logging is set up, so
    TF_CPP_MIN_LOG_LEVEL does not hold them back. They are caught here and passed on as that
    variable asks (default 2: errors only; 0: everything); the CUDA probing, which the returned
    line sums up, only at 0. If the import fails, everything caught is passed on.
    """
    level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") or 0)
    failed = True
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)  # native libraries write to file descriptor 2, not to sys.stderr
        try:
            description = _describe_devices()
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if failed or passed_on(line, level)))
            sys.stderr.flush()
    return description


def import_keras():
    """The ``keras`` module; the first import goes through ``start_backend``, so that a process that
    never started the backend (one whose training ran in worker processes) stays as quiet."""
    if "keras" not in sys.modules:
        start_backend()
    import keras

    return keras


def passed_on(line: str, min_level: int) -> bool:
    """Whether a line the backend wrote while starting reaches the user at ``min_level``."""
    if min_level == 0:
        return True
    if line.startswith(_ABSL_PREAMBLE):
        return False
    match = _LOG_LINE.match(line)
    if match is None:
        return True  # not a log line: a Python warning, a message of the user's own code
    severity = _SEVERITY[match.group(1) or match.group(2)]
    return severity >= min_level and "cuda" not in match.group(3).lower()


def _describe_devices() -> str:
    import keras

    backend = keras.backend.backend()
    if backend == "torch":  # Keras has no device list for PyTorch
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    elif backend == "jax":
        import jax

        gpus = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    else:
        try:
            gpus = [d for d in keras.distribution.list_devices() if not d.lower().startswith("cpu")]
        except Exception:  # a backend without Keras's device list
            return f"Keras {keras.__version__} on {backend}"
    where = ", ".join(gpus) if gpus else "CPU only, no GPU found"
    return f"Keras {keras.__version__} on {backend}: {where}"
