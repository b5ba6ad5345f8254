"""The ground floor of file writing: every file lightnets writes for keeps goes through a temporary file and a
rename, so a crash (or a full disk) never leaves a half-written checkpoint, cache entry or record behind."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path``; the temporary file never outlives
    the call."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    """``path.write_text(text)``, atomically (see ``replace_atomically``); makes the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda tmp: tmp.write_text(text))
