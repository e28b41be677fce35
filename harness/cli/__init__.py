"""The command line: the argument parser and one handler per command."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """The ``harness`` command (also ``python -m harness``)."""
    from harness.cli.app import main as run

    return run(argv)
