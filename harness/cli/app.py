"""The `harness` command: parse the command line, run the command's handler, turn errors into exit codes.

Exit codes: 0 success; 1 an unexpected error (a bug: the traceback is shown); 2 a problem for the
user to fix (study file, data, plugin, command line, file system: one line says what and where);
130 interrupted by Ctrl-C, 143 stopped by SIGTERM (rerun the same command to resume).
"""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.markup import escape

from harness.cli.commands import HANDLERS, Invocation
from harness.cli.parser import build_parser
from harness.cli.signals import GracefulStop
from harness.core.memory import RestartForMemory
from harness.errors import EXIT_INTERNAL, EXIT_USER, HarnessError, WorkerFailed, file_system_error

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """The ``harness`` command line; returns its exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Only a process whose own command line this is may replace itself (see harness.core.memory).
    restartable = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    err = Console(stderr=True)
    worker = getattr(args, "worker_index", None) is not None  # its parent tells the user about stops
    stop = GracefulStop(err, quiet=worker)
    stop.install()
    try:
        return HANDLERS[args.command](args, Invocation(err, stop.token, restartable))
    except RestartForMemory as exc:
        err.print(f"[yellow]{escape(str(exc))}[/]; continuing in a fresh process")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "harness", *argv])  # the same command resumes
    except WorkerFailed as exc:
        if not exc.told:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return exc.exit_code
    except HarnessError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return EXIT_USER
    except OSError as exc:  # permissions, a full or read-only disk, a folder where a file should be
        err.print(f"[bold red]error:[/] {escape(str(file_system_error(exc)))}", soft_wrap=True)
        return EXIT_USER
    except KeyboardInterrupt:
        if not worker:
            err.print("[yellow]interrupted.[/] Finished folds are saved; run the same command again to resume.")
        return stop.exit_code()
    except Exception as exc:
        fault = _storage_fault(exc)
        if fault:
            err.print(f"[bold red]error:[/] {escape(fault)}", soft_wrap=True)
            return EXIT_USER
        err.print_exception()
        err.print("[bold red]internal error[/] (a bug in harness or a plugin; please report it with the traceback above)")
        return EXIT_INTERNAL
    finally:
        stop.restore()


def _storage_fault(exc: Exception) -> str | None:
    """One line for a study's database that went away mid-run, or None for any other error."""
    if "optuna" not in sys.modules:
        return None
    from harness.results.optuna_storage import is_storage_fault

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


if __name__ == "__main__":
    sys.exit(main())
