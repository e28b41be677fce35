"""Starting the Keras backend without its start-up noise, and naming the devices it trains on."""

from __future__ import annotations

import contextlib
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
    held = _Held()
    try:
        with _native_stderr_into(held):
            description = _describe_devices()
    except BaseException:
        held.pass_on(lambda line: True)
        raise
    held.pass_on(lambda line: passed_on(line, level))
    return description


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


class _Held:
    text = ""

    def pass_on(self, keep) -> None:
        kept = [line for line in self.text.splitlines(keepends=True) if keep(line)]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


@contextlib.contextmanager
def _native_stderr_into(held: _Held):
    """Point file descriptor 2 at a temporary file (native libraries write there, not to
    ``sys.stderr``); what was written ends in ``held.text``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as file:
        os.dup2(file.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            file.seek(0)
            held.text = file.read().decode(errors="replace")
