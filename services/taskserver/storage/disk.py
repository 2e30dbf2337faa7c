"""File operations the store needs to be durable and safe against readers: reads by offset,
writes that are whole or an error, atomic replacement, fsyncing a folder, and the checks that
tell ``/health`` a write would fail. Nothing here knows what a task is.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from services.taskserver.storage.model import TasksFileError

WINDOWS_RENAME_ATTEMPTS = 50
# Free space below which /health reports the disk as full: an append needs well under 1 KiB,
# but the journal, a rewrite and the file system's own metadata need room too.
MIN_FREE_BYTES = 1 << 20


def pread(fd: int, length: int, offset: int, path: Path) -> bytes:
    """``length`` bytes from ``offset``, or fewer if the file is shorter."""
    chunks: list[bytes] = []
    try:
        while length > 0 and (chunk := os.pread(fd, min(length, 1 << 20), offset)):
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
    except OSError as error:
        raise TasksFileError(path, f"cannot be read: {error.strerror}") from None
    return b"".join(chunks)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """``os.pwrite``, with a short write (a full disk) raised instead of half kept."""
    if os.pwrite(fd, data, offset) != len(data):
        raise OSError(28, "short write (is the disk full?)")


def replace_file(path: Path, raw: bytes, suffix: str = ".tmp") -> os.stat_result:
    """``raw`` becomes ``path``'s content at once: a uniquely named temporary file in the
    same folder, fsynced, renamed over it, then the folder fsynced so the rename survives a
    power cut too. Readers see the old file or the new one, never a mix. Answers the new
    file's stat; raises OSError (the temporary file removed)."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}{suffix}")
    try:
        with open(temporary, "xb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
            stat = os.fstat(handle.fileno())
        _rename_over(temporary, path)
        fsync_folder(path.parent)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    return stat


def _rename_over(source: Path, target: Path) -> None:
    """``os.replace``; on Windows it fails while a reader has the target open, so retry briefly
    there (readers hold it for a few ms)."""
    for attempt in range(WINDOWS_RENAME_ATTEMPTS):
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if os.name != "nt" or attempt == WINDOWS_RENAME_ATTEMPTS - 1:
                raise
            time.sleep(0.01)


def fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (it lives in the folder's entry list). Windows cannot
    open a folder as a file; NTFS journals the rename itself."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_problem(path: Path, lock_file: str) -> str | None:
    """What would make the next write fail though reads work: the folder, the lock file or
    the disk. Checked by doing what a write does, since permissions alone can mislead (root)."""
    if not os.access(path.parent, os.W_OK):
        return f"{path}: its folder is not writable"
    try:
        os.close(os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as error:
        return f"{path}: its lock file {lock_file} cannot be opened: {error.strerror}"
    try:
        os.close(os.open(path, os.O_WRONLY))
    except FileNotFoundError:
        pass  # the next write creates it
    except OSError as error:
        return f"{path}: cannot be opened for writing: {error.strerror}"
    try:
        disk = os.statvfs(path.parent)
    except OSError:
        return None
    free = disk.f_bavail * disk.f_frsize
    if free < MIN_FREE_BYTES:
        return f"{path}: the disk is full ({free // 1024} KiB free)"
    return None
