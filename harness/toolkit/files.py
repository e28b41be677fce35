"""Which file and folder names a dataset never reads: the litter of operating systems and sync tools."""

from __future__ import annotations

#: Files that operating systems and sync tools leave behind; never images, never reported.
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "icon\r", "ehthumbs.db"})
SYSTEM_FOLDERS = frozenset({"__macosx", "@eadir", ".trashes"})


def is_ignored(name: str) -> bool:
    """Hidden and system files or folders (.DS_Store, ._x, Thumbs.db, __MACOSX) that are never images."""
    lower = name.lower()
    return name.startswith(".") or lower in SYSTEM_FILES or lower in SYSTEM_FOLDERS
