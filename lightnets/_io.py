"""The ground floor of file writing: every file lightnets writes for keeps goes through a temporary file and a
rename, so a crash (or a full disk) never leaves a half-written checkpoint, cache entry or record behind; and the
JSONL logs runs append to, one record per line (``JsonLog``)."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_serial = itertools.count()  # tells apart the temporary files of one process


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block succeeds and removed when
    it raises, so a failed write never leaves a file a user could mistake for a good one. Makes the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{next(_serial)}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path`` (see ``atomic_output``)."""
    with atomic_output(path) as tmp:
        write(tmp)


def write_text_atomically(path: Path, text: str) -> None:
    """``path.write_text(text)``, atomically (see ``atomic_output``)."""
    replace_atomically(path, lambda tmp: tmp.write_text(text))


class JsonLog:
    """A JSONL log: one record per line, appended as each result comes, so a crash loses at most the line being
    written; ``keep`` rewrites it (atomically) with the records a resumed run still stands by."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def keep(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = list(records)
        write_text_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        return kept
