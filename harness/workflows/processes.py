"""The worker processes of `harness run --workers N`: their GPUs, their environment, their end."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time

from rich.console import Console

from harness.core.stop import StopToken
from harness.errors import HarnessError

#: prctl's option that sends a signal to this process when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


def end_with_parent(stop: StopToken) -> None:
    """A worker stops (as on SIGTERM: at the end of its epoch, finished folds kept) when its parent
    dies, even by kill -9: Linux's parent-death signal, and a watchdog where that is missing."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the watchdog alone
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        if not stop.requested:  # the parent-death signal may have come first: one is enough
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def gpu_ids() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def worker_env(index: int, gpus: list[str]) -> dict[str, str]:
    """One GPU per worker when there are several; otherwise the workers share what there is."""
    env = dict(os.environ)
    # Workers sharing one GPU must not each grab all of its memory up front.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    return env


def _signal_workers(procs: list[subprocess.Popen], signum: int) -> int:
    """Send ``signum`` to each worker still running; returns the signal."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)
    return signum


def run_workers(workers: int, command: list[str], console: Console, stop: StopToken) -> None:
    """Start ``command + [index]`` for each worker and wait for them; a stop request is passed on
    once (a second Ctrl-C stops them at once). Fails when every worker failed."""
    gpus = gpu_ids()
    where = f"{len(gpus)} GPU(s)" if gpus else "the CPU"
    console.print(f"starting {workers} workers on {where}")
    # Each worker in a session of its own: a terminal's Ctrl-C reaches the parent alone, which passes
    # it on once (twice would stop the workers at once instead of at the epoch end).
    procs = [
        subprocess.Popen([*command, str(i)], env=worker_env(i, gpus), start_new_session=True)
        for i in range(workers)
    ]
    _wait_for_workers(procs, stop)
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if failed and len(failed) == len(procs):
        raise HarnessError(
            "every worker stopped with an error (exit codes "
            + ", ".join(str(c) for _, c in failed)
            + "; see above). Finished folds are kept: fix the cause and run again to resume."
        )
    for i, code in failed:
        console.print(f"[yellow]warning:[/] worker {i} stopped with exit code {code}; the others finished its work.")


def _wait_for_workers(procs: list[subprocess.Popen], stop: StopToken) -> None:
    """Wait until every worker ended; KeyboardInterrupt when the run was asked to stop."""
    forwarded = 0
    try:
        while any(p.poll() is None for p in procs):
            if stop.requested and not forwarded:
                forwarded = _signal_workers(procs, stop.signum)
            time.sleep(0.2)
    except KeyboardInterrupt:  # a second Ctrl-C: the workers stop at once too
        _signal_workers(procs, stop.signum)
        for p in procs:
            p.wait()
        raise
    if stop.requested:
        raise KeyboardInterrupt
