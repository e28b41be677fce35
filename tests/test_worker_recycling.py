"""The worker processes of `harness run`: one that ends with EXIT_RECYCLE is replaced by a fresh one,
and a solo worker's failure becomes the command's (one line, its exit code)."""

from __future__ import annotations

import signal
import sys
import threading
import time

import pytest
from rich.console import Console

from harness.core.stop import StopToken
from harness.errors import EXIT_RECYCLE, EXIT_USER, WorkerFailed
from harness.workflows.processes import run_workers, worker_command

#: A stand-in worker: counts its starts in a file, and ends with the exit code given for that start.
FAKE_WORKER = """
import sys
from pathlib import Path
log, codes = Path(sys.argv[1]), [int(c) for c in sys.argv[2].split(",")]
starts = len(log.read_text().splitlines()) if log.exists() else 0
with log.open("a") as fh:
    fh.write(" ".join(sys.argv[3:]) + "\\n")
sys.exit(codes[min(starts, len(codes) - 1)])
"""


def _fake(tmp_path, codes: list[int]) -> tuple[list[str], object]:
    log = tmp_path / "starts.log"
    return [sys.executable, "-c", FAKE_WORKER, str(log), ",".join(map(str, codes))], log


def test_a_worker_that_ends_to_be_recycled_is_replaced_until_it_finishes(tmp_path):
    command, log = _fake(tmp_path, [EXIT_RECYCLE, EXIT_RECYCLE, 0])
    run_workers(1, command, Console(quiet=True), StopToken(), solo=True)
    assert log.read_text().splitlines() == ["--worker-index 0 --solo-worker"] * 3


def test_a_solo_workers_error_is_the_commands_without_a_second_line(tmp_path):
    command, _ = _fake(tmp_path, [EXIT_USER])
    with pytest.raises(WorkerFailed) as failed:
        run_workers(1, command, Console(quiet=True), StopToken(), solo=True)
    assert failed.value.exit_code == EXIT_USER and failed.value.told


def test_a_solo_worker_killed_by_a_signal_is_told_in_one_line(tmp_path):
    command = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    with pytest.raises(WorkerFailed) as failed:
        run_workers(1, command, Console(quiet=True), StopToken(), solo=True)
    assert failed.value.exit_code == EXIT_USER and not failed.value.told
    assert "killed by signal 9" in str(failed.value) and "run the same command again" in str(failed.value)


def test_a_worker_ending_to_be_recycled_is_not_replaced_once_a_stop_was_asked(tmp_path):
    log, go = tmp_path / "starts.log", tmp_path / "go"
    worker = (
        "import signal, sys, time\nfrom pathlib import Path\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"with open({str(log)!r}, 'a') as fh: fh.write('start\\n')\n"
        f"while not Path({str(go)!r}).exists(): time.sleep(0.02)\nsys.exit({EXIT_RECYCLE})\n"
    )
    stop = StopToken()

    def ask_to_stop_once_started() -> None:
        while not log.exists():
            time.sleep(0.02)
        stop.request(signal.SIGTERM)
        time.sleep(0.5)  # the request is passed on to the worker (which goes on) before it ends
        go.touch()

    threading.Thread(target=ask_to_stop_once_started, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_workers(1, [sys.executable, "-c", worker], Console(quiet=True), stop)
    assert log.read_text().splitlines() == ["start"]  # not started again


def test_the_worker_command_names_its_index_and_role():
    assert worker_command(["harness", "run", "s.toml"], 2) == ["harness", "run", "s.toml", "--worker-index", "2"]
    assert worker_command(["h"], 0, solo=True)[-1] == "--solo-worker"


#: Holds the run lock, starts a stand-in worker that inherits it (as run_workers does), prints the
#: worker's pid and dies as by kill -9.
LOCK_HOLDER = """
import os, signal, subprocess, sys
from pathlib import Path
from harness.workflows.lock import run_lock
from harness.workflows.processes import _popen_options
with run_lock(Path(sys.argv[1])) as fd:
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, **_popen_options((fd,)))
    print(worker.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="Windows: workers get no descriptors (pass_fds is POSIX-only), so the lock is not theirs to hold; CI runs Linux")
def test_the_run_lock_lasts_while_a_worker_does_after_its_parent_is_killed(tmp_path, monkeypatch):
    import os
    import subprocess

    from harness.errors import HarnessError
    from harness.workflows import lock
    from harness.workflows.lock import run_lock

    monkeypatch.setattr(lock, "HOLDER_GONE_WAIT", 1)  # its holder is dead: a short wait, then refused

    holder = subprocess.run([sys.executable, "-c", LOCK_HOLDER, str(tmp_path)], capture_output=True, text=True)
    worker = int(holder.stdout.split()[0])
    try:
        with pytest.raises(HarnessError, match="in use by another"):
            with run_lock(tmp_path):
                pass
    finally:
        os.kill(worker, signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with run_lock(tmp_path):
                return  # the worker gone, the folder is free
        except HarnessError:
            time.sleep(0.1)
    raise AssertionError("the lock outlived the worker")


def test_a_worker_started_after_the_study_file_changed_stops_in_one_line(tmp_path, capsys, tiny_study):
    from harness.cli.app import main

    code = main(["run", str(tiny_study), "--results", str(tmp_path / "r"), "--worker-index", "0", "--solo-worker",
                 "--study-digest", "0123456789abcdef"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == EXIT_USER and "the study file changed while its `harness run` went on" in err, err
    assert "Traceback" not in err
