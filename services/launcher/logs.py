"""Where the processes' output goes: the terminal, prefixed and coloured, or one file each.

A child writes to a pipe, so its lines hold no colours of its own; any control character in
them came from the network (a task's title, a request path) and is shown escaped
(``printable``), in the terminal and in the files a ``cat`` would send to one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TextIO

from rich.console import Console
from rich.text import Text

from services.common import printable

COLOURS = ("cyan", "green", "magenta", "yellow", "blue", "bright_red", "bright_cyan")
LAUNCHER = "ticslab"
NAME_WIDTH = 10  # the name column of ``name      | line``


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
