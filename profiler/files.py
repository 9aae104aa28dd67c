"""Files a user or the store names: read only when they are regular files (bounded), written
only onto a regular file or a new path, whole or not at all (write-then-rename).

One rule for every reader and writer of EffiScope, because each alternative hurts: open() on a
FIFO blocks for ever, /dev/zero never ends, a symlink in a run folder can point at /etc/shadow,
and a rename onto /dev/full (as root) turns the device node into a regular file. So a path is
looked at with lstat before it is opened or replaced, and anything but a regular file is refused
with a sentence that names it. Torch-free and Qt-free: the store, the reports, the doctor, the
tuner and the app all use it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0))
"""Never follow a symlink, never wait on a FIFO's writer (both are refused anyway: this closes
the gap between the look and the open)."""


class FileRefused(OSError):
    """A path that is not a regular file (or is too large) where one was needed; the text says
    which path, what it is and what to do. An OSError, so that every `except OSError` around a
    read or a write already says it (its strerror is the sentence)."""

    def __init__(self, sentence: str):
        super().__init__(sentence)
        self.strerror = sentence

    def __str__(self) -> str:
        return self.strerror


def kind(mode: int) -> str:
    """What a file is, in words ("a pipe (FIFO)", "a device", "a file", ...)."""
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "neither a file nor a folder"


def shown(path: str | os.PathLike) -> str:
    """A path fit for a sentence: long ones shortened, control characters escaped."""
    from profiler.text import safe

    text = os.fspath(path)
    text = text if len(text) <= 160 else f"{text[:100]}... ({len(text):,} characters)"
    return safe(text)


# --- writing -------------------------------------------------------------------------------------
WRITE_FIX = "choose another file name"


def check_target(path: str | os.PathLike, fix: str = WRITE_FIX) -> None:
    """Refuse to write onto anything but a regular file or a path that does not exist yet;
    `fix` ends the sentence (what the user should do)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:  # ENOTDIR, ENAMETOOLONG, EACCES: said, never written through
        raise FileRefused(f"cannot write {shown(path)} ({exc.strerror or exc}); {fix}") from None
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused(f"{shown(path)} is {kind(info.st_mode)}, not a regular file; EffiScope "
                          f"writes only onto a regular file or a new path and left it as it is: "
                          f"{fix}")


def _temporary(path: Path) -> tuple[int, Path]:
    """A new file beside path (same folder, so the rename is atomic), with the permissions of
    the file it replaces, or the umask's for a new one."""
    try:
        mode = stat.S_IMODE(os.stat(path, follow_symlinks=False).st_mode)
    except OSError:
        mode = 0o666
    for _ in range(100):
        tmp = path.with_name(f".{path.name[:200]}.{secrets.token_hex(4)}.part")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                         mode)
        except FileExistsError:
            continue
        return fd, tmp
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def replacing(path: str | os.PathLike, binary: bool = False, fix: str = WRITE_FIX
              ) -> Iterator[IO]:
    """A file to write whose content replaces `path` whole when the block ends without an
    error; on an error nothing is left behind and `path` is as it was.

    FileRefused (before anything is written) when `path` is not a regular file or a new path;
    OSError when the write itself fails (a full disk, a read-only folder).
    """
    path = Path(path)
    check_target(path, fix)
    fd, tmp = _temporary(path)
    try:
        with (os.fdopen(fd, "wb") if binary else
              os.fdopen(fd, "w", encoding="utf-8", newline="")) as fh:
            yield fh
        check_target(path, fix)  # it may have been swapped for a link or a FIFO meanwhile
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str, fix: str = WRITE_FIX) -> None:
    """Write text (UTF-8) to path whole or not at all; FileRefused / OSError as `replacing`."""
    with replacing(path, fix=fix) as fh:
        fh.write(text)


def write_bytes(path: str | os.PathLike, data: bytes, fix: str = WRITE_FIX) -> None:
    with replacing(path, binary=True, fix=fix) as fh:
        fh.write(data)


def open_growing(path: str | os.PathLike, fix: str = WRITE_FIX) -> IO[bytes]:
    """A file written while something goes on (a live mirror of a run): a new path, or a
    regular file emptied first, opened unbuffered so each write lands at once (a crash of the
    writer loses nothing written). Never through a symlink, never onto a FIFO or a device:
    FileRefused with a sentence ending in `fix`."""
    check_target(path, fix)
    flags = (os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        raise FileRefused(f"cannot write {shown(path)} ({exc.strerror or exc}); {fix}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # swapped between the look and the open
        os.close(fd)
        raise FileRefused(f"{shown(path)} is {kind(info.st_mode)}, not a regular file; {fix}")
    if hasattr(os, "O_NONBLOCK"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "wb", buffering=0)


def append_text(path: str | os.PathLike, text: str, limit: int = 64 * 1024 * 1024) -> None:
    """Add text at the end of a regular file (or start a new one), by writing the whole file
    anew and renaming it over the old one: a FIFO or a device is refused, never appended to."""
    try:
        old = read_text(path, limit)
    except FileNotFoundError:
        old = ""
    write_text(path, old + text)


def output_folder(path: str | os.PathLike, fix: str = WRITE_FIX) -> Path:
    """A folder to write files into: created when missing; FileRefused when the path is a file,
    a FIFO or a device (mkdir would fail on it with a bare "File exists")."""
    folder = Path(path)
    try:
        info = os.stat(folder)
    except FileNotFoundError:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FileRefused(f"cannot create the folder {shown(folder)} "
                              f"({exc.strerror or exc}); {fix}") from None
        return folder
    except OSError as exc:
        raise FileRefused(f"cannot use the folder {shown(folder)} ({exc.strerror or exc}); "
                          f"{fix}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise FileRefused(f"{shown(folder)} is {kind(info.st_mode)}, not a folder; {fix}")
    return folder


# --- reading -------------------------------------------------------------------------------------
def _inside(path: Path, folder: Path) -> None:
    """Refuse a path that is not below `folder` or that reaches it through a symbolic link."""
    try:
        relative = path.relative_to(folder)
    except ValueError:
        raise FileRefused(f"{shown(path)} is outside {shown(folder)}; only files inside it are "
                          "read") from None
    if ".." in relative.parts:
        raise FileRefused(f"{shown(path)} is outside {shown(folder)}; only files inside it are "
                          "read")
    here = folder
    for part in relative.parts[:-1]:
        here = here / part
        info = _lstat_to_read(here)
        if not stat.S_ISDIR(info.st_mode):
            raise FileRefused(f"{shown(here)} is {kind(info.st_mode)}, not a folder; it was not "
                              "followed")


def _lstat_to_read(path: Path) -> os.stat_result:
    """lstat of a path about to be read: FileNotFoundError as it is (absent), any other failure
    a FileRefused sentence."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise FileRefused(f"{shown(path)} cannot be read ({exc.strerror or exc})") from None


def open_regular(path: str | os.PathLike, inside: str | os.PathLike | None = None) -> IO[bytes]:
    """A regular file opened for reading (binary), never a symlink, FIFO, device or folder.

    FileNotFoundError when it does not exist (callers treat that as absent); FileRefused with a
    sentence for anything else that is not a readable regular file. `inside`: the folder it must
    lie in (a run folder), reached without following a symbolic link.
    """
    path = Path(path)
    if inside is not None:
        _inside(path, Path(inside))
    info = _lstat_to_read(path)
    if not stat.S_ISREG(info.st_mode):
        what = kind(info.st_mode)
        raise FileRefused(f"{shown(path)} is {what}, not a regular file; it was not "
                          f"{'followed' if what == 'a symbolic link' else 'read'}")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise FileRefused(f"{shown(path)} cannot be read ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # swapped between the look and the open
            raise FileRefused(f"{shown(path)} is {kind(info.st_mode)}, not a regular file; it "
                              "was not read")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike, limit: int,
               inside: str | os.PathLike | None = None) -> bytes:
    """A regular file's bytes, at most `limit` of them (FileRefused, naming the size, when it is
    larger); FileNotFoundError when it does not exist. See open_regular."""
    with open_regular(path, inside) as fh:
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        raise FileRefused(f"{shown(path)} is {max(size, len(data)):,} bytes, more than the "
                          f"{limit:,} such a file may have; it was not read")
    return data


def read_text(path: str | os.PathLike, limit: int,
              inside: str | os.PathLike | None = None) -> str:
    """read_bytes decoded as UTF-8; FileRefused when it is not UTF-8 text."""
    data = read_bytes(path, limit, inside)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FileRefused(f"{shown(path)} is not UTF-8 text") from None


def read_tail(path: str | os.PathLike, limit: int,
              inside: str | os.PathLike | None = None) -> tuple[bytes, int]:
    """The last `limit` bytes of a regular file (a log) and the file's whole size."""
    with open_regular(path, inside) as fh:
        size = os.fstat(fh.fileno()).st_size
        fh.seek(max(0, size - limit))
        return fh.read(limit), size


def bounded_lines(fh: IO[bytes], max_line: int) -> Iterator[tuple[int, bytes | None]]:
    """(number, line) for each line of an open file (open_regular), streamed: memory stays
    bounded by `max_line` whatever the file holds. A line longer than that is yielded as None
    (its bytes dropped) so the caller can skip it with a warning."""
    number = 0
    while True:
        line = fh.readline(max_line + 1)
        if not line:
            return
        number += 1
        if len(line) > max_line and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # drop the rest of the long line
                line = fh.readline(max_line)
            yield number, None
            continue
        yield number, line
