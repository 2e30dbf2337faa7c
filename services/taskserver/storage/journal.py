"""``tasks.json.journal``: how an append cut short by a crash is undone by the next lock
holder. A writer records, durably and before it appends, where the file ended and the bytes
it is about to write; recovery keeps that append if it is whole, else cuts the file back,
and touches nothing it cannot prove is that one append (docs/design/taskserver.md, "the
crash argument").
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

from services.taskserver.storage.disk import fsync_folder, pwrite_all
from services.taskserver.storage.format import CLOSING
from services.taskserver.storage.model import TasksFileError

# A journal record names the bytes just before its append's start (their CRC-32), so a cut
# can only land where that append began.
JOURNAL_PREFIX_BYTES = 64
JOURNAL_VERSION = b"j2"
# Far above any record (a task is well under 2 KiB); a longer journal is not one we wrote,
# and reading it whole would be unbounded.
JOURNAL_MAX_BYTES = 1 << 16


@dataclass(frozen=True)
class JournalRecord:
    """``tasks.json.journal`` while an append is in flight: the file (inode) and its size
    before it, the CRC-32 of the bytes just before the append's start, the bytes appended,
    and whether a whole append may be kept (not when its writer failed and could not undo
    it: it was never answered, and keeping it would let a keyless retry make two tasks).
    A checksum over it all tells a whole record from one cut short or edited."""

    inode: int
    size: int
    prefix_crc: int
    added: bytes
    keep: bool = True

    def encode(self) -> bytes:
        mode = b"keep" if self.keep else b"cut"
        fields = [b"%d" % self.inode, b"%d" % self.size, mode, b"%08x" % self.prefix_crc]
        body = b" ".join([JOURNAL_VERSION, *fields, base64.b64encode(self.added)])
        return body + b" %08x\n" % zlib.crc32(body)

    @classmethod
    def decode(cls, raw: bytes) -> JournalRecord:
        """The record in ``raw``; ValueError saying why it is not one this package wrote."""
        fields = raw.split(b" ")
        if len(fields) != 7 or fields[0] != JOURNAL_VERSION or not raw.endswith(b"\n"):
            raise ValueError("is not a whole record (cut short, or not written by ticslab)")
        try:
            checksum = int(fields[6], 16)
            if checksum != zlib.crc32(b" ".join(fields[:6])) or fields[3] not in (b"keep", b"cut"):
                raise ValueError
            return cls(
                int(fields[1]),
                int(fields[2]),
                int(fields[4], 16),
                base64.b64decode(fields[5], validate=True),
                fields[3] == b"keep",
            )
        except ValueError:
            raise ValueError("does not match its checksum (cut short or edited)") from None


def prefix_crc(before: bytes) -> int:
    """CRC-32 of the last bytes before an append's start, which fix where it began."""
    return zlib.crc32(before[-JOURNAL_PREFIX_BYTES:])


def _part_of(after: bytes, added: bytes) -> bool:
    """True when ``after`` (the bytes from an append's start) can be what a crash left of
    ``added``: no longer, and each byte the append's own, zero (a power cut's unwritten
    page) or, in the first three, the closing bracket it wrote over."""
    if len(after) > len(added):
        return False
    return all(
        byte in (added[i], 0) or (i < len(CLOSING) and byte == CLOSING[i])
        for i, byte in enumerate(after)
    )


class Journal:
    """The journal beside one tasks file. Every method but :meth:`check` runs under the
    file lock; the store forgets its version in memory when one answers that it cut."""

    def __init__(self, tasks_path: Path) -> None:
        self.tasks_path = tasks_path
        self.path = tasks_path.with_name(tasks_path.name + ".journal")
        self.cut_pending: JournalRecord | None = None  # an append failed here, not yet cut

    def ensure(self) -> None:
        """Create it when missing, its folder entry made durable (a server starting)."""
        if not self.path.exists():
            self.clear(durable=True)
            fsync_folder(self.path.parent)

    def write(self, entry: JournalRecord) -> None:
        """Record, durably and before the append, the file as it is without it."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, 0)
            pwrite_all(fd, entry.encode(), 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def clear(self, durable: bool = False) -> None:
        """An empty journal: no append in flight. After an append it is not fsynced (a journal
        that survives a power cut only makes the next lock holder check that whole append);
        ``durable`` before a rewrite, which must leave no journal behind."""
        if not durable:
            with contextlib.suppress(OSError):  # the next append overwrites it anyway
                os.truncate(self.path, 0)
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def pending(self) -> bool:
        """True when an append may be in flight, or was cut short."""
        try:
            return self.path.stat().st_size > 0
        except OSError:
            return False

    def recover(self) -> bool:
        """Finish what a writer that died mid-append left: keep the append if it is whole,
        else cut the file back to where it ended before it. A record that is not whole, or
        does not match the file, leaves the file as it is. True when the file was cut."""
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(JOURNAL_MAX_BYTES)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise TasksFileError(
                self.tasks_path, f"its journal cannot be read: {error.strerror}"
            ) from None
        if not raw:
            return False
        record = self._record(raw)
        if (pending := self.cut_pending) and (pending.inode, pending.size) == (
            record.inode,
            record.size,
        ):
            record = pending  # this process failed that append: never keep it
        try:
            cut = self.undo(record, keep_whole=record.keep)
        except OSError as error:
            raise TasksFileError(self.tasks_path, f"cannot be repaired: {error.strerror}") from None
        self.cut_pending = None
        self.clear()
        return cut

    def cut_back(self, record: JournalRecord) -> None:
        """Undo an append that failed here: it was never answered, so it is cut even if
        whole. If that fails too, the journal is marked ``cut`` (and this process remembers
        it), so the next lock holder cuts it instead of keeping a task nobody was given."""
        try:
            self.undo(record, keep_whole=False)
            self.clear()
            return
        except (OSError, TasksFileError):
            pass
        self.cut_pending = replace(record, keep=False)
        with contextlib.suppress(OSError):
            self.write(self.cut_pending)

    def undo(self, record: JournalRecord, keep_whole: bool) -> bool:
        """Cut the file back to ``record.size`` bytes, unless ``keep_whole`` and the append
        after them is whole (a crash after its write: it is kept, and made durable). Only
        when the cut lands on that append's start and removes nothing but part of it. True
        when the file was cut (or is gone); False when it was left as it is."""
        with contextlib.suppress(FileNotFoundError), open(self.tasks_path, "r+b") as handle:
            stat = os.fstat(handle.fileno())
            cut = record.size - len(CLOSING)
            if cut < 0 or stat.st_ino != record.inode or stat.st_size < cut:
                return False  # replaced or emptied since: the record is stale
            start = max(0, cut - JOURNAL_PREFIX_BYTES)
            handle.seek(start)
            before = handle.read(cut - start)
            after = handle.read(len(record.added) + 1)  # one more: more is never one task
            if prefix_crc(before) != record.prefix_crc:
                raise self._damaged(f"the journal names an append at byte {cut}, not there")
            if not _part_of(after, record.added):
                raise self._damaged(
                    f"the {len(after)} bytes after byte {cut} are not the journal's append"
                )
            if keep_whole and after == record.added:
                os.fsync(handle.fileno())  # the writer may have died before its fsync
                return False
            handle.seek(cut)
            handle.write(CLOSING)
            handle.truncate(record.size)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def check(self) -> None:
        """Raise if the journal is damaged, without the lock: a record read while a writer
        writes it may look cut short, so it counts only if a second read finds the same."""
        try:
            with open(self.path, "rb") as handle:
                first = handle.read(JOURNAL_MAX_BYTES)
            if not first:
                return
            with contextlib.suppress(ValueError):
                JournalRecord.decode(first)
                return
            time.sleep(0.01)
            with open(self.path, "rb") as handle:
                again = handle.read(JOURNAL_MAX_BYTES)
            if again == first:
                self._record(first)
        except OSError:
            return  # gone or unreadable meanwhile: the next lock holder will say

    def _record(self, raw: bytes) -> JournalRecord:
        try:
            return JournalRecord.decode(raw)
        except ValueError as error:
            raise self._damaged(f"its journal record {error}") from None

    def _damaged(self, why: str) -> TasksFileError:
        """A journal that cannot be trusted: the file is left as it is for a person."""
        problem = (
            f"{why}; the file was left as it is: check that it ends with a whole task, "
            f"then empty {self.path.name}"
        )
        return TasksFileError(self.tasks_path, problem, "tasks_journal_damaged")
