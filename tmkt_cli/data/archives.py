"""Read files inside .zip and .tar(.gz) archives without extracting anything to disk.

The recorded datasets are published as archives, some nested (N-Caltech101's zip holds
``Caltech101.zip``; Caltech101's ``caltech-101.zip`` holds ``101_ObjectCategories.tar.gz``).
tmkt reads their members in place: :class:`FileRef` names one file, either on disk or inside
a chain of archives, and is small and picklable so ``prepare``'s worker processes can each
read their own members.

How members are reached, and what it costs:

- a zip member or an uncompressed tar member is read at its offset;
- a zip stored inside a zip without compression (or inside a plain tar) is opened in place as
  a window onto the outer file, so nesting costs nothing;
- a compressed nested archive, and any ``.tar.gz``, has to be decompressed once per process
  (gzip cannot seek): it is streamed, a chunk at a time, into an anonymous temporary file
  (``TMPDIR``), so memory stays a chunk, and refused past :data:`MAX_GUNZIP_BYTES` expanded or
  :data:`MAX_GZIP_BYTES` compressed (extract it then).

Open archives are cached per process (a file handle inherited across ``fork`` would share its
offset with the parent, so a child never reuses its parent's handles).

Member names that are absolute or climb out with ``..`` are refused: tmkt never writes
members to disk, but such a name only appears in a crafted archive, and a dataset path built
from it could point anywhere.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tmkt_cli.errors import TmktError, disk_full

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_GZIP_BYTES = 1 << 30
"""Largest compressed .tar.gz (or compressed nested archive) read into memory."""
MEMBER_SEPARATOR = "!"
"""Joins an archive path and its member names in messages and in ``FileRef`` strings."""

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature .. name length, extra length
_CACHE_SIZE = 16


def is_archive_name(name: str) -> bool:
    """Whether a file name has one of the archive suffixes tmkt reads."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(name: str) -> str:
    """The name without its archive suffix: 'airplane.zip' -> 'airplane'."""
    base = PurePosixPath(name).name
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def check_member_name(name: str, archive: str) -> str:
    """Return ``name`` with '/' separators, or refuse it when it is absolute or uses '..'."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) or ".." in posix.split("/"):
        raise TmktError(f"{archive}: refusing member {name!r}: absolute or '..' member paths "
                        f"could point outside the archive")
    return posix


@dataclass(frozen=True)
class FileRef:
    """Where one file's bytes live: a file on disk, or a member of a chain of archives."""

    path: str
    """A file on disk: the file itself, or the outermost archive."""
    members: tuple[str, ...] = ()
    """Member names, outermost first: every name but the last is a nested archive."""

    @property
    def name(self) -> str:
        """The file's own name, without folders."""
        return PurePosixPath(self.members[-1]).name if self.members else Path(self.path).name

    @property
    def in_archive(self) -> bool:
        return bool(self.members)

    def read_bytes(self) -> bytes:
        if not self.members:
            return read_file(self.path)
        return read_member(self.path, self.members[-1], self.members[:-1])

    def child(self, member: str) -> FileRef:
        """A member of this file, which must be an archive."""
        return FileRef(self.path, (*self.members, member))

    def __str__(self) -> str:
        return MEMBER_SEPARATOR.join((self.path, *self.members))


def list_members(archive: str | os.PathLike, inner: tuple[str, ...] = ()) -> list[str]:
    """Names of the regular files in ``archive`` (or in the nested archive ``inner`` names),
    in archive order. Folders and links are left out."""
    return _open_chain(str(archive), tuple(inner)).names()


def read_member(archive: str | os.PathLike, member: str, inner: tuple[str, ...] = ()) -> bytes:
    """The bytes of one member of ``archive`` (or of the nested archive ``inner`` names)."""
    opened = _open_chain(str(archive), tuple(inner))
    check_member_name(member, opened.label)
    return opened.read(member)


def clear_cache() -> None:
    """Close every archive this process keeps open."""
    for opened in _CACHE.values():
        opened.close()
    _CACHE.clear()


# --------------------------------------------------------------------------------------------
# Opening (cached per process)
# --------------------------------------------------------------------------------------------

_CACHE: OrderedDict[tuple, _Archive] = OrderedDict()
_CACHE_PID = os.getpid()


def _open_chain(path: str, inner: tuple[str, ...]) -> _Archive:
    global _CACHE_PID
    if os.getpid() != _CACHE_PID:
        # Inherited through fork: the handles share offsets with the parent. Drop without
        # closing (closing our copy is harmless, but the objects belong to the parent).
        _CACHE.clear()
        _CACHE_PID = os.getpid()
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise TmktError(f"{path}: archive not found") from None
    key = (path, stat.st_mtime_ns, stat.st_size, inner)
    opened = _CACHE.get(key)
    if opened is not None:
        _CACHE.move_to_end(key)
        return opened
    if inner:
        parent = _open_chain(path, inner[:-1])
        member = inner[-1]
        check_member_name(member, parent.label)
        opened = _open_archive(parent.open_member(member),
                               parent.label + MEMBER_SEPARATOR + member, owns=False)
    else:
        if os.path.isdir(path):
            raise TmktError(f"{path}: is a folder, expected an archive")
        opened = _open_archive(open(path, "rb"), path, owns=True)
    _CACHE[key] = opened
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)[1].close()
    return opened


def _open_archive(fileobj: BinaryIO, label: str, owns: bool) -> _Archive:
    head = fileobj.read(4)
    fileobj.seek(0)
    if head.startswith(_GZIP_MAGIC):
        fileobj = _decompress_gzip(fileobj, label, owns)
        owns = True
    elif head in _ZIP_MAGIC:
        return _ZipArchive(fileobj, label, owns)
    return _TarArchive(fileobj, label, owns)


def _decompress_gzip(fileobj: BinaryIO, label: str, owns: bool) -> BinaryIO:
    size = fileobj.seek(0, io.SEEK_END)
    fileobj.seek(0)
    if size > MAX_GZIP_BYTES:
        raise TmktError(f"{label}: a gzip-compressed archive is decompressed before it is "
                        f"read and this one holds {size / 2**30:.1f} GiB: extract it "
                        f"(tar xzf) and point tmkt at the extracted folder")
    try:
        return _spool(gzip.GzipFile(fileobj=fileobj), label,
                      f"(from {size / 2**20:.1f} MiB)")
    finally:
        if owns:
            fileobj.close()


def _spool(stream: BinaryIO, label: str, origin: str = "") -> BinaryIO:
    """``stream`` decompressed into an anonymous temporary file (removed when closed or when
    the process ends), a chunk at a time: memory stays a chunk whatever the archive expands
    to, and more than :data:`MAX_GUNZIP_BYTES` (a "gzip bomb": a few MB can expand to
    terabytes) is refused. Returns the file, seekable, at its start."""
    out = tempfile.TemporaryFile(prefix="tmkt-archive-")
    try:
        total = 0
        with stream:
            while chunk := stream.read(SPOOL_CHUNK):
                total += len(chunk)
                if total > MAX_GUNZIP_BYTES:
                    raise TmktError(f"{label}: expands past {MAX_GUNZIP_BYTES / 2**30:.1f} GiB "
                                    f"when decompressed {origin}; refused: extract it and "
                                    f"point tmkt at the extracted folder".replace("  ", " "))
                out.write(chunk)
        out.seek(0)
        return out
    except TmktError:
        out.close()
        raise
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, RuntimeError) as e:
        out.close()
        if reason := disk_full(e):
            raise TmktError(f"{label}: {reason} while decompressing it into "
                            f"{tempfile.gettempdir()} (set TMPDIR to a folder with room, or "
                            f"extract the archive)") from None
        raise TmktError(f"{label}: damaged compressed data ({e})") from None


SPOOL_CHUNK = 1 << 20
MAX_GUNZIP_BYTES = 8 << 30
"""The most a gzip-compressed archive may expand to in memory."""
MAX_MEMBER_RATIO = 200
"""A zip member expanding more than this many times (and past 1 MiB) is a zip bomb: event
recordings compress a few times, images not at all."""


def check_member_expansion(info: zipfile.ZipInfo, label: str) -> None:
    """Refuse, from the zip's own directory and before reading, a member that would expand
    past :data:`MAX_GUNZIP_BYTES` or by more than :data:`MAX_MEMBER_RATIO` times."""
    size, packed = info.file_size, max(1, info.compress_size)
    if size > MAX_GUNZIP_BYTES or (size > 1 << 20 and size / packed > MAX_MEMBER_RATIO):
        raise TmktError(f"{label}: refusing member {info.filename!r}: it expands from "
                        f"{packed:,} to {size:,} bytes (a zip bomb?)")


class _Archive:
    label: str

    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def open_member(self, name: str) -> BinaryIO:
        """A seekable file object over one member (to open a nested archive)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _ZipArchive(_Archive):
    def __init__(self, fileobj: BinaryIO, label: str, owns: bool):
        self.label, self._fileobj, self._owns = label, fileobj, owns
        try:
            self._zip = zipfile.ZipFile(fileobj)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise TmktError(f"{label}: not a readable zip archive ({e})") from None
        infos = self._zip.infolist()
        for info in infos:
            check_member_name(info.filename, label)
            check_member_expansion(info, label)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a Unix symlink entry
                raise TmktError(f"{label}: refusing member {info.filename!r}: a link, not a "
                                f"file; tmkt reads no links in archives")
        self._files = {info.filename: info for info in infos if not info.is_dir()}

    def names(self) -> list[str]:
        return list(self._files)

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = self._files.get(name)
        if info is None:
            raise TmktError(f"{self.label}: no member {name!r}")
        return info

    def read(self, name: str) -> bytes:
        info = self._info(name)
        try:
            return self._zip.read(info)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError) as e:
            raise TmktError(f"{self.label}{MEMBER_SEPARATOR}{name}: damaged member ({e})"
                            ) from None

    def open_member(self, name: str) -> BinaryIO:
        info = self._info(name)
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            label = f"{self.label}{MEMBER_SEPARATOR}{name}"
            try:
                stream = self._zip.open(info)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError) as e:
                raise TmktError(f"{label}: damaged member ({e})") from None
            return _spool(stream, label)
        # Stored: the member's bytes sit contiguously after its local header.
        self._fileobj.seek(info.header_offset)
        header = self._fileobj.read(_ZIP_LOCAL_HEADER.size)
        if len(header) != _ZIP_LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise TmktError(f"{self.label}{MEMBER_SEPARATOR}{name}: damaged local header")
        fields = _ZIP_LOCAL_HEADER.unpack(header)
        name_length, extra_length = fields[-2], fields[-1]
        start = info.header_offset + _ZIP_LOCAL_HEADER.size + name_length + extra_length
        return _Window(self._fileobj, start, info.file_size)

    def close(self) -> None:
        self._zip.close()
        if self._owns:
            self._fileobj.close()


class _TarArchive(_Archive):
    def __init__(self, fileobj: BinaryIO, label: str, owns: bool):
        self.label, self._fileobj, self._owns = label, fileobj, owns
        try:
            # Plain 'r:' keeps random access: compressed tars were decompressed before.
            self._tar = tarfile.open(fileobj=fileobj, mode="r:")
            members = self._tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise TmktError(f"{label}: not a readable zip or tar archive ({e})") from None
        for member in members:
            check_member_name(member.name, label)
            if member.issym() or member.islnk():
                raise TmktError(f"{label}: refusing member {member.name!r}: a link (to "
                                f"{member.linkname!r}), not a file; tmkt reads no links in "
                                f"archives")
        # A name can repeat in a tar (later copies win when extracting): keep the last.
        self._files = {m.name: m for m in members if m.isfile()}

    def names(self) -> list[str]:
        return list(self._files)

    def _member(self, name: str) -> tarfile.TarInfo:
        member = self._files.get(name)
        if member is None:
            raise TmktError(f"{self.label}: no member {name!r}")
        return member

    def read(self, name: str) -> bytes:
        member = self._member(name)
        self._fileobj.seek(member.offset_data)
        data = self._fileobj.read(member.size)
        if len(data) != member.size:
            raise TmktError(f"{self.label}{MEMBER_SEPARATOR}{name}: truncated member "
                            f"({len(data)} of {member.size} bytes)")
        return data

    def open_member(self, name: str) -> BinaryIO:
        member = self._member(name)
        return _Window(self._fileobj, member.offset_data, member.size)

    def close(self) -> None:
        self._tar.close()
        if self._owns:
            self._fileobj.close()


class _Window(io.RawIOBase):
    """A read-only, seekable view of ``length`` bytes of ``base`` starting at ``start``."""

    def __init__(self, base: BinaryIO, start: int, length: int):
        super().__init__()
        self._base, self._start, self._length, self._position = base, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        origin = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}
        self._position = max(0, origin[whence] + offset)
        return self._position

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self._length - self._position)
        if count <= 0:
            return 0
        self._base.seek(self._start + self._position)
        data = self._base.read(count)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def read_file(path: str | Path, label: str | None = None, what: str = "a file") -> bytes:
    """A whole file's bytes; a missing, unreadable or folder path is one TmktError naming
    ``label`` (default: the path)."""
    label = label if label is not None else str(path)
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TmktError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise TmktError(f"{label}: is a folder, expected {what}") from None
    except PermissionError:
        raise TmktError(f"{label}: permission denied") from None
