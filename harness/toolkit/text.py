"""Wording for messages: counted nouns, and the closest name to a misspelt one."""

from __future__ import annotations

from harness.errors import did_you_mean

__all__ = ["did_you_mean", "plural"]


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """'1 image', '2 images', '0 classes'; ``nouns`` for plurals other than -s or -es."""
    if count == 1:
        return f"1 {noun}"
    return f"{count} {nouns or noun + ('es' if noun.endswith(('s', 'sh', 'ch', 'x')) else 's')}"
