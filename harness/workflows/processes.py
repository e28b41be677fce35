"""The worker processes of `harness run`: their GPUs, their environment, their end, their replacement.

`harness run --workers N` starts N of them; a plain `harness run` trains in one (``solo``), so that
the memory a backend never returns (see harness.core.memory) is returned when a worker that grew
ends and a fresh one takes its place.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

from rich.console import Console

from harness.core.stop import StopToken
from harness.errors import EXIT_INTERNAL, EXIT_RECYCLE, EXIT_USER, HarnessError, WorkerFailed

#: prctl's option that sends a signal to this process when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


def end_with_parent() -> None:
    """A worker ends at once when its parent dies, even by kill -9 (Linux's parent-death signal, and
    a watchdog where that is missing): nothing is lost that a stop at the epoch's end would keep
    (only finished folds count), and the run lock it inherited must go with it, so that the same
    command run again can start at once and finish what was cut off."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):  # elsewhere the watchdog alone
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError, TypeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(128 + 9)  # as the parent-death signal would: no cleanup that could block

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


#: The signal that asks a worker to stop at its epoch's end (a worker's default for it, before its
#: handlers are installed, ends it quietly: SIGINT would print a KeyboardInterrupt traceback).
STOP_SIGNAL = signal.CTRL_BREAK_EVENT if sys.platform == "win32" else signal.SIGTERM


def _signal_workers(procs: list[subprocess.Popen]) -> int:
    """Ask each worker still running to stop; returns 1 (one request passed on)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(STOP_SIGNAL)
    return 1


def _popen_options(keep_open: tuple[int, ...]) -> dict:
    """Each worker in a process group of its own, so that a terminal's Ctrl-C reaches the parent
    alone, which passes it on once (twice would stop the workers at once, not at the epoch end);
    on POSIX it also keeps ``keep_open`` (the run lock's descriptor: the lock lasts while a worker
    does, also when the parent is killed with kill -9)."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True, "pass_fds": keep_open}


def worker_command(command: list[str], index: int, solo: bool = False) -> list[str]:
    """The command line of worker ``index``: ``command`` (a `harness run` without workers) and its role."""
    return [*command, "--worker-index", str(index), *(["--solo-worker"] if solo else [])]


def run_workers(workers: int, command: list[str], console: Console, stop: StopToken, solo: bool = False,
                keep_open: tuple[int, ...] = ()) -> None:
    """Start ``workers`` worker processes of ``command`` (see ``worker_command``) and wait for them;
    a worker that ends with EXIT_RECYCLE is replaced by a fresh one. A stop request is passed on once
    (a second Ctrl-C stops them at once). Fails when every worker failed; with ``solo`` (the one
    worker that runs all of a plain `harness run`'s training), when it failed."""
    gpus = gpu_ids()
    if not solo:
        console.print(f"starting {workers} workers on {gpus and f'{len(gpus)} GPU(s)' or 'the CPU'}")

    def start(i: int) -> subprocess.Popen:
        return subprocess.Popen(worker_command(command, i, solo), env=worker_env(i, gpus), **_popen_options(keep_open))

    stop.raise_if_requested()  # asked while the data loaded: no worker to start
    procs = [start(i) for i in range(workers)]
    _wait_for_workers(procs, stop, start)
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if solo and failed:
        raise _solo_failure(failed[0][1])
    if failed and len(failed) == len(procs):
        raise HarnessError(
            "every worker stopped with an error (exit codes "
            + ", ".join(str(c) for _, c in failed)
            + "; see above). Finished folds are kept: fix the cause and run again to resume."
        )
    for i, code in failed:
        console.print(f"[yellow]warning:[/] worker {i} stopped with exit code {code}; the others finished its work.")


def _solo_failure(code: int) -> WorkerFailed:
    if code in (EXIT_USER, EXIT_INTERNAL):  # it printed its one line, or its traceback
        return WorkerFailed("the training process stopped with an error (see above)", code, told=True)
    how = f"was killed by signal {-code}" if code < 0 else f"stopped with exit code {code}"
    hint = " (a kill by the system often means it ran out of memory)" if code < 0 else ""
    return WorkerFailed(
        f"the training process {how}{hint}. Finished folds are kept: run the same command again to resume.",
        EXIT_USER, told=False,
    )


def _wait_for_workers(procs: list[subprocess.Popen], stop: StopToken, start) -> None:
    """Wait until every worker ended, replacing (``start(index)``) each that ended with EXIT_RECYCLE
    while no stop is requested; KeyboardInterrupt when the run was asked to stop."""
    forwarded = 0
    try:
        while True:
            codes = [p.poll() for p in procs]  # one reading: a worker ending meanwhile waits for the next
            recycled = [i for i, code in enumerate(codes) if code == EXIT_RECYCLE and not stop.requested]
            for i in recycled:
                procs[i] = start(i)
            if not recycled and all(code is not None for code in codes):
                break
            if stop.requested and not forwarded:
                forwarded = _signal_workers(procs)
            time.sleep(0.2)
    except KeyboardInterrupt:  # a second Ctrl-C: the workers stop at once too
        for _ in range(2 - forwarded):  # the first request too, if it had not been passed on yet
            _signal_workers(procs)
        for p in procs:
            p.wait()
        raise
    if stop.requested:
        raise KeyboardInterrupt
