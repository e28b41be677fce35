"""A throwaway PostgreSQL server for tests and benchmarks: Debian's `postgresql` binaries, a data
folder in a temporary directory, a loopback port; no system service, nothing left behind."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

USER, PASSWORD = "harness", "harness-test-password"
#: Why PostgreSQL tests cannot run, or None when they can.
INSTALL_HINT = "apt-get install postgresql (Debian's package; .ci/run installs it) and pip install '.[postgres]'"


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL programs (initdb, pg_ctl), newest version first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None."""
    if postgres_bin() is None:
        return f"PostgreSQL is not installed: {INSTALL_HINT}"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return f"the psycopg driver is not installed: {INSTALL_HINT}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run the server as (Debian's package creates it)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def postgres_server():
    """Start a server; yields a function that creates a fresh database and returns its URL."""
    bin_dir = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    data, socket_dir = folder / "data", folder / "socket"
    socket_dir.mkdir()
    (folder / "pw").write_text(PASSWORD)
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        account = pwd.getpwnam("postgres")
        for path in (folder, socket_dir, folder / "pw"):
            os.chown(path, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, text=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={folder / 'pw'}",
        "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start")
    import psycopg

    def new_database() -> str:
        name = f"study_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{name}"

    def stop_server() -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")

    new_database.port = port  # type: ignore[attr-defined]
    new_database.stop = stop_server  # type: ignore[attr-defined]
    try:
        yield new_database
    finally:
        stop_server()
        shutil.rmtree(folder, ignore_errors=True)


def stop(new_database) -> None:
    """Stop the server of a ``postgres_server()`` at once, as a crash would."""
    new_database.stop()
