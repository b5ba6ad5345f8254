"""The files of detection data: a directory, a .zip or a .tar/.tar.gz archive, by path relative to its root.

Only regular files are read, an image of at most ``MAX_IMAGE_BYTES`` (the classification readers' limit) and an
annotation file of at most ``MAX_LABEL_BYTES``, so a mislabelled huge member is refused rather than read whole
into memory, and a FIFO never blocks the run.
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from ..data.folder import check_tar_end, unreadable_reason
from ..errors import LightnetsError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_LABEL_BYTES = 2 << 30  # an annotation file is read whole; COCO's largest (train2017) is under 0.5 GB
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError)  # damaged archive or disk


class FileSource:
    """The files of a directory, a .zip or a .tar/.tar.gz/.tgz archive, by path relative to its root."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise LightnetsError(f"{self.path} does not exist")
        if not (self.path.is_dir() or self.path.is_file()):  # a FIFO or a device would block
            raise LightnetsError(f"{self.path} is not a regular file or a directory")
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        try:
            if self.path.is_dir():
                names = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
            elif zipfile.is_zipfile(self.path):
                self._zip = zipfile.ZipFile(self.path)
                names = [n for n in self._zip.namelist() if not n.endswith("/")]
            elif tarfile.is_tarfile(self.path):
                self._tar = tarfile.open(self.path, "r:*")
                names = [m.name for m in self._tar.getmembers() if m.isfile()]
                check_tar_end(self._tar)
            else:
                raise LightnetsError(f"{self.path} is neither a directory nor a .zip, .tar or .tar.gz archive")
        except READ_ERRORS as err:
            raise LightnetsError(f"cannot read {self.path}: {err}") from None
        # Archive members may be spelled './dir/file'; they are looked up by their plain relative path.
        self._member = {PurePosixPath(n).as_posix(): n for n in names}
        self.names = sorted(self._member)
        self._by_basename: dict[str, list[str]] = {}
        for name in self.names:
            self._by_basename.setdefault(PurePosixPath(name).name, []).append(name)

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r})"

    def read(self, name: str) -> bytes:
        """The bytes of file ``name``; a clear error for a file that is not regular, too big to read whole or
        damaged."""
        if self._tar is not None:
            return self._read_member(name, self._tar.getmember(self._member[name]))
        try:
            if self._zip is not None:
                self._check(name, stat.S_IFREG, self._zip.getinfo(self._member[name]).file_size)
                return self._zip.read(self._member[name])
            st = (self.path / name).stat()
            self._check(name, st.st_mode, st.st_size)
            return (self.path / name).read_bytes()
        except READ_ERRORS as err:
            raise LightnetsError(f"cannot read {name} in {self.path}: {err}") from None

    def read_many(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """Yield ``(name, bytes)`` for ``names``; a tar is read once front to back (gzip cannot seek cheaply)."""
        if self._tar is None:
            for name in names:
                yield name, self.read(name)
            return
        wanted = {self._member[n]: n for n in names}
        for member in self._tar:
            if member.name in wanted:
                yield wanted[member.name], self._read_member(wanted[member.name], member)

    def _read_member(self, name: str, member: tarfile.TarInfo) -> bytes:
        assert self._tar is not None
        self._check(name, stat.S_IFREG, member.size)  # names holds regular members only
        try:
            file = self._tar.extractfile(member)
            assert file is not None
            return file.read()
        except READ_ERRORS as err:
            raise LightnetsError(f"cannot read {name} in {self.path}: {err}") from None

    def _check(self, name: str, mode: int, size: int) -> None:
        """Refuse to read a non-regular file, an image over ``MAX_IMAGE_BYTES`` or a label file over
        ``MAX_LABEL_BYTES`` (a mislabelled huge member would otherwise be read whole into memory)."""
        if name.lower().endswith(IMAGE_SUFFIXES):
            reason = unreadable_reason(mode, size)
        else:
            reason = None if size <= MAX_LABEL_BYTES else (f"{size / 2**30:.1f} GB, over the "
                                                           f"{MAX_LABEL_BYTES >> 30} GB limit for an annotation file")
        if reason:
            raise LightnetsError(f"cannot read {name} in {self.path}: {reason}")

    def find(self, file_name: str, relative_to: str = "") -> str | None:
        """The member for ``file_name``: as a path relative to ``relative_to`` or the root, else by unique basename."""
        for candidate in (PurePosixPath(relative_to, file_name).as_posix(), PurePosixPath(file_name).as_posix()):
            if candidate in self._by_basename.get(PurePosixPath(candidate).name, []):
                return candidate
        matches = self._by_basename.get(PurePosixPath(file_name).name, [])
        return matches[0] if len(matches) == 1 else None

    def with_suffix(self, suffix: str) -> list[str]:
        return [n for n in self.names if n.lower().endswith(suffix)]

    def only(self, candidates: list[str], what: str, choose_with: str) -> str:
        """The one member among ``candidates`` (found by name or suffix); none, or several, is one clear error
        saying what was looked for and which option picks one."""
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise LightnetsError(f"{self.path} holds no {what}")
        raise LightnetsError(f"{self.path} holds several candidates for the {what} ({', '.join(candidates[:5])}); "
                             f"name one with {choose_with}")
