"""Where imported data comes from: a file, a folder, or a zip archive, read as streams.

A :class:`Source` names its parts (``members``), opens any of them as a UTF-8 text stream, and
hashes its content (the import's identity). Zip archives are checked before anything is read:
a member name that is absolute or climbs out with ``..`` refuses the whole archive. A member is
checked again when it is opened (declared size and compression ratio against the
:class:`~minetune.io.importers.base.ImportLimits`) and while it is extracted (the bytes actually
coming out, against the same bounds), so a zip bomb is refused before it fills memory.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, TextIO

from minetune.io.importers.base import DEFAULT_LIMITS, ImportFormatError, ImportLimits, size_text

SNIFF_BYTES = 64 * 1024


class Source:
    """A file, a folder or a zip archive."""

    def __init__(self, path: Path, limits: ImportLimits = DEFAULT_LIMITS) -> None:
        self.path = path
        self.limits = limits
        self.kind = "folder" if path.is_dir() else "zip" if zipfile.is_zipfile(path) else "file"
        self._zip: zipfile.ZipFile | None = None
        if self.kind == "zip":
            self._zip = zipfile.ZipFile(path)
            check_zip_names(path, self._zip.namelist())

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def members(self) -> list[str]:
        """Names of the files inside (posix paths); a plain file has the single member ''."""
        if self._zip is not None:
            return [i.filename for i in self._zip.infolist() if not i.is_dir()]
        if self.kind == "folder":
            return sorted(
                p.relative_to(self.path).as_posix()
                for p in self.path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(self.path).parts)
            )
        return [""]

    def check(self, members: list[str]) -> None:
        """Refuse now (before anything is read) if a zip member to be read is over the limits."""
        if self._zip is not None:
            for member in members:
                check_zip_member(self.path, self._zip.getinfo(member), self.limits)

    def label(self, member: str) -> str:
        return f"{self.path.name}/{member}" if member else self.path.name

    def open_binary(self, member: str = "") -> io.BufferedIOBase:
        if self._zip is not None:
            info = self._zip.getinfo(member)
            check_zip_member(self.path, info, self.limits)
            return _Bounded(self._zip.open(info), self.path, info, self.limits)
        target = self.path / member if member else self.path
        return target.open("rb")

    @contextmanager
    def open_text(self, member: str = "") -> Iterator[TextIO]:
        """A UTF-8 text stream (a leading BOM is dropped; '\\r\\n' is kept as written)."""
        raw = self.open_binary(member)
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")  # type: ignore[type-var]
        try:
            yield text
        finally:
            text.close()

    def head(self, member: str = "", size: int = SNIFF_BYTES) -> bytes:
        with self.open_binary(member) as fh:
            return fh.read(size)

    def size(self, member: str = "") -> int:
        if self._zip is not None:
            return self._zip.getinfo(member).file_size
        return (self.path / member if member else self.path).stat().st_size

    def sha256(self, members: list[str] | None = None) -> str:
        """The hash of the whole file/archive, or (for a folder) of the given members' names and bytes."""
        digest = hashlib.sha256()
        if self.kind in ("file", "zip"):
            _hash_into(digest, self.path.open("rb"))
            return digest.hexdigest()
        for member in sorted(members if members is not None else self.members):
            digest.update(member.encode("utf-8") + b"\0")
            _hash_into(digest, self.open_binary(member))
            digest.update(b"\0")
        return digest.hexdigest()


def _hash_into(digest: hashlib._Hash, stream: io.BufferedIOBase) -> None:
    with stream:
        while block := stream.read(1 << 20):
            digest.update(block)


def check_zip_member(path: Path, info: zipfile.ZipInfo, limits: ImportLimits) -> None:
    """Refuse a member whose declared size or compression ratio is beyond ``limits``."""
    _check_amount(path, info, info.file_size, limits, "declares")


def _check_amount(path: Path, info: zipfile.ZipInfo, size: int, limits: ImportLimits, verb: str) -> None:
    if size > limits.member_bytes:
        raise ImportFormatError(
            f"{path.name}: member {info.filename!r} {verb} {size_text(size)} uncompressed, over the "
            f"{size_text(limits.member_bytes)} limit; refusing the archive."
        )
    if size > limits.ratio_floor and size > limits.zip_ratio * max(info.compress_size, 1):
        ratio = size / max(info.compress_size, 1)
        raise ImportFormatError(
            f"{path.name}: member {info.filename!r} {verb} {size_text(size)} from "
            f"{size_text(info.compress_size)} compressed, a {ratio:,.0f}× expansion over the "
            f"{limits.zip_ratio}× limit; refusing a likely zip bomb."
        )


class _Bounded(io.BufferedIOBase):
    """A zip member's stream that counts the bytes it yields and stops past the declared size or
    the limits, whatever the archive's headers claimed."""

    def __init__(self, raw: IO[bytes], path: Path, info: zipfile.ZipInfo, limits: ImportLimits) -> None:
        super().__init__()
        self._raw, self._path, self._info, self._limits = raw, path, info, limits
        self._count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._counted(self._raw.read(-1 if size is None else size))

    def read1(self, size: int = -1) -> bytes:
        return self._counted(self._raw.read1(size))  # type: ignore[attr-defined]

    def _counted(self, data: bytes) -> bytes:
        self._count += len(data)
        if self._count > self._info.file_size:
            raise ImportFormatError(
                f"{self._path.name}: member {self._info.filename!r} holds more than the "
                f"{size_text(self._info.file_size)} it declares; refusing the archive."
            )
        _check_amount(self._path, self._info, self._count, self._limits, "expands to")
        return data

    def close(self) -> None:
        self._raw.close()
        super().close()


def check_zip_names(path: Path, names: list[str]) -> None:
    """Refuse an archive with a member that is absolute or escapes it (``..``)."""
    for name in names:
        normalized = name.replace("\\", "/")
        parts = PurePosixPath(normalized).parts
        if normalized.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
            raise ImportFormatError(
                f"{path.name}: refusing the whole archive because member {name!r} points outside it."
            )


def looks_binary(head: bytes) -> bool:
    """NUL bytes, or bytes that are not UTF-8 (ignoring a character cut at the end of the sample)."""
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(head) - 4
    return False
