"""What a killed writer left half-written beside a cache file is removed by the next writer of it,
never what a live writer (this machine's) or a recent one (another machine's) is still writing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

from harness.core.files import FOREIGN_ORPHAN_SECONDS, atomic_writer, sweep_orphans
from harness.data.stacked import StackWriter

#: Starts a stack of ``target`` and is killed (as by kill -9) before it can commit or clean up.
KILLED_WRITER = """
import os, signal, sys
from harness.data.stacked import StackWriter
writer = StackWriter(sys.argv[1], (4, 8, 8, 3))
writer.write(0, __import__("numpy").zeros((8, 8, 3), "uint8"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def _temporaries(target):
    return sorted(p.name for p in target.parent.glob(f".{target.name}.*.tmp"))


def test_a_killed_writers_half_written_stack_goes_when_the_next_writer_starts(tmp_path):
    target = tmp_path / "pixels-96.npy"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], check=False)
    assert proc.returncode == -signal.SIGKILL
    [orphan] = _temporaries(target)
    with StackWriter(target, (4, 8, 8, 3)) as live:
        for row in range(4):
            live.write(row, np.full((8, 8, 3), row, "uint8"))
        assert _temporaries(target) == [live.temporary.name]  # the orphan went, this writer's stays
        assert orphan != live.temporary.name
        assert sweep_orphans(target) == 0  # a live writer's file is never taken
        live.commit()
    assert _temporaries(target) == [] and np.load(target)[3, 0, 0, 0] == 3


def test_another_machines_temporary_file_goes_only_after_a_day(tmp_path):
    target = tmp_path / "features.npy"
    recent = tmp_path / f".{target.name}.other-host-123.abcd1234.tmp"
    old = tmp_path / f".{target.name}.other-host-456.efgh5678.tmp"
    unrelated = tmp_path / ".other.npy.other-host-1.x.tmp"
    for path in (recent, old, unrelated):
        path.write_bytes(b"partial")
    day_ago = time.time() - FOREIGN_ORPHAN_SECONDS - 60
    os.utime(old, (day_ago, day_ago))
    os.utime(unrelated, (day_ago, day_ago))
    with atomic_writer(target, fsync=False, sweep=True) as fh:
        fh.write(b"whole")
    assert target.read_bytes() == b"whole"
    assert recent.exists() and not old.exists() and unrelated.exists()
