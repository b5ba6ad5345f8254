"""The ground floor of file writing: every file lightnets writes for keeps goes through a temporary file and a
rename, so a crash (or a full disk) never leaves a half-written checkpoint, cache entry or record behind; the
JSONL logs runs append to, one record per line (``JsonLog``); and reading a safetensors file back, with one error
naming a damaged one."""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import LightnetsError, os_error_text

_serial = itertools.count()  # tells apart the temporary files of one process
# The name of ``atomic_output``'s temporary file for ``NAME``: ``.NAME.tmp<pid>.<serial>``.
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.tmp(?P<pid>\d+)\.\d+")


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block succeeds and removed when
    it raises, so a failed write never leaves a file a user could mistake for a good one. Makes the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{next(_serial)}")  # TEMP_NAME
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path`` (see ``atomic_output``). A failed write
    (a full disk, a read-only folder) is one error naming ``path``: Python's ``OSError`` names only the temporary
    file, and safetensors reports such failures as its own error."""
    from safetensors import SafetensorError

    try:
        with atomic_output(path) as tmp:
            write(tmp)
    except (OSError, SafetensorError) as err:
        raise write_failure(path, err) from None


def write_failure(path: Path, err: Exception) -> LightnetsError:
    """The one-line error for a failed write of ``path``: the file meant, not the temporary one, and the cause."""
    cause = (err.strerror or str(err)) if isinstance(err, OSError) else err
    return LightnetsError(f"cannot write {path}: {cause}")


def write_text_atomically(path: Path, text: str) -> None:
    """``path.write_text(text)``, atomically (see ``atomic_output``)."""
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (outside POSIX there is no safe way to ask: taken to)."""
    if os.name == "posix":
        try:
            os.kill(pid, 0)  # signal 0: nothing is sent
        except ProcessLookupError:
            return False
        except PermissionError:  # it exists, under another user
            return True
    return True


def is_temp_file(path: Path) -> bool:
    """Whether ``path`` is named like a temporary file of ``atomic_output``."""
    return TEMP_NAME.fullmatch(path.name) is not None


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove the temporary files ``atomic_output`` left in ``folder`` (not below it) when a process was killed
    mid-write: only names matching ``TEMP_NAME`` exactly whose process is gone. Returns what was removed."""
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        found = TEMP_NAME.fullmatch(path.name)
        if found and path.is_file() and not path.is_symlink() and not _process_alive(int(found["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class JsonLog:
    """A JSONL log: one record per line, appended as each result comes, so a crash loses at most the line being
    written; ``keep`` rewrites it (atomically) with the records a resumed run still stands by."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        """The records. A last line without its newline is torn (a kill or a full disk mid-append: the state it
        would describe was never committed) and is cut off the file, so the next append starts a line of its own;
        any other unreadable line is one clear error."""
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        whole = data[:data.rfind(b"\n") + 1]
        if len(whole) < len(data):
            replace_atomically(self.path, lambda tmp: tmp.write_bytes(whole))
        records = []
        for number, line in enumerate(whole.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise LightnetsError(f"{self.path} line {number} is not valid JSON ({err}); "
                                         "delete that line or the file") from None
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Append one line in one write call, so a failure can tear only the end of the file, never a line within."""
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            if os.write(fd, line) != len(line):
                raise OSError(errno.ENOSPC, f"only part of a line was written to {self.path}", str(self.path))
        finally:
            os.close(fd)

    def keep(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = list(records)
        write_text_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        return kept


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; a truncated or foreign file is one error naming it."""
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise LightnetsError(f"{path} is not a readable safetensors file (truncated or damaged?): {err}") from None
    except OSError as err:
        raise LightnetsError(f"cannot read {path}: {os_error_text(err)}") from None


def drawing_paths(files: Sequence[Path], out_dir: str | Path) -> list[Path]:
    """Where each input's drawing goes: ``out_dir/<name>.png``, with ``-2``, ``-3``, ... added to a name already
    taken (one name in two folders or two formats), so no drawing replaces another; refused, before anything is
    written, when a drawing would replace an input image (``out_dir`` holding the inputs)."""
    out_dir = Path(out_dir)
    inputs = {p.resolve() for p in files}
    taken: set[str] = set()
    paths = []
    for file in files:
        path, n = out_dir / f"{file.stem}.png", 1
        while path.name.lower() in taken:  # lower case: a case-insensitive file system holds one of A.png, a.png
            n += 1
            path = out_dir / f"{file.stem}-{n}.png"
        if path.resolve() in inputs:
            raise LightnetsError(f"the drawings would overwrite the input image {path}; give an --out folder that "
                                 "holds no input images")
        taken.add(path.name.lower())
        paths.append(path)
    return paths
