"""Where the processes' output goes: the terminal, prefixed and coloured, or one file each.

A child writes to a pipe, so its lines hold no colours of its own; any control character in
them came from the network (a task's title, a request path) and is shown escaped
(``printable``), in the terminal and in the files a ``cat`` would send to one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TextIO

from rich.console import Console
from rich.text import Text

from services.common import printable

COLOURS = ("cyan", "green", "magenta", "yellow", "blue", "bright_red", "bright_cyan")
LAUNCHER = "ticslab"
NAME_WIDTH = 10  # the name column of ``name      | line``
MAX_LINE = 16 * 1024  # bytes of one relayed line that are kept; the rest is cut and counted


class LogSink(Protocol):
    """Receives every line a process prints, and the launcher's own notes."""

    def line(self, name: str, text: str) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


class ConsoleLogs:
    """docker-compose style: ``server1  | line``, one colour per process name.

    Output that can no longer be written (``ticslab up | head``, a closed terminal) is dropped:
    losing log lines must never keep the launcher from stopping its processes.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False, soft_wrap=True)
        self._colours: dict[str, str] = {}
        self._closed = False

    def colour(self, name: str) -> str:
        if name not in self._colours:
            self._colours[name] = COLOURS[len(self._colours) % len(COLOURS)]
        return self._colours[name]

    def line(self, name: str, text: str) -> None:
        prefix = Text(f"{name:<{NAME_WIDTH}}| ", style=self.colour(name))
        self.print(prefix + Text(printable(text)))

    def note(self, text: str) -> None:
        self.print(Text(f"{LAUNCHER:<{NAME_WIDTH}}| ", style="bold") + Text(printable(text)))

    def print(self, text: Text | str) -> None:
        if self._closed:
            return
        try:
            self.console.print(text)
        except OSError:  # BrokenPipeError and friends: nobody reads the output any more
            self._closed = True

    def close(self) -> None:
        return None


class FileLogs:
    """One file per process under ``folder`` (the launcher's notes in ticslab.log)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, TextIO] = {}

    def _file(self, name: str) -> TextIO:
        if name not in self._files:
            self._files[name] = (self.folder / f"{name}.log").open("a", buffering=1)
        return self._files[name]

    def line(self, name: str, text: str) -> None:
        self._file(name).write(printable(text) + "\n")

    def note(self, text: str) -> None:
        self._file(LAUNCHER).write(printable(text) + "\n")

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()


class LineSplitter:
    """Bytes in, lines out, in bounded memory whatever a child prints: a line longer than
    ``limit`` keeps its first ``limit`` bytes and counts the bytes cut."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._head = bytearray()
        self._cut = 0

    def feed(self, data: bytes) -> list[tuple[bytes, int]]:
        """The lines ``data`` completes, each as (its kept bytes, how many bytes were cut)."""
        *whole, rest = data.split(b"\n")
        lines = []
        for piece in whole:
            self._keep(piece)
            lines.append(self._take())
        self._keep(rest)
        return lines

    def flush(self) -> list[tuple[bytes, int]]:
        """At the end of the output: its last line, when that had no newline."""
        return [self._take()] if self._head or self._cut else []

    def _keep(self, piece: bytes) -> None:
        room = max(0, self.limit - len(self._head))
        self._head += piece[:room]
        self._cut += max(0, len(piece) - room)

    def _take(self) -> tuple[bytes, int]:
        line = (bytes(self._head), self._cut)
        self._head.clear()
        self._cut = 0
        return line


class Relay(asyncio.Protocol):
    """The reading end of a child's output pipe, read as fast as it comes and never paused, so
    a child never blocks on a log write; each line goes to ``show``.

    If ``show`` fails, ``failed`` is told once and the rest of the output is read and dropped:
    the child keeps running, and the failure is said, not hidden.
    """

    def __init__(
        self,
        show: Callable[[bytes, int], None],
        failed: Callable[[Exception], None],
    ) -> None:
        self.show = show
        self.failed = failed
        self.splitter = LineSplitter()
        self.broken = False
        self.transport: asyncio.BaseTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._show(self.splitter.feed(data))

    def connection_lost(self, exc: Exception | None) -> None:
        self._show(self.splitter.flush())
        if not self.closed.done():
            self.closed.set_result(None)

    def _show(self, lines: list[tuple[bytes, int]]) -> None:
        for line in lines:
            if self.broken:
                return
            try:
                self.show(*line)
            except Exception as error:  # a sink that fails must not stop the draining
                self.broken = True
                self.failed(error)

    def close(self) -> None:
        """Stop reading (a grandchild may still hold the pipe open): nothing waits for EOF."""
        if self.transport is not None:
            self.transport.close()
