"""Native Windows is refused at start, with one clear line, before anything starts.

The local stack relies on what Windows lacks: ``ticslab up`` hands each child the reading end
of its lifeline pipe with ``pass_fds`` (services/lifeline.py), and the task server appends to
``tasks.json`` in place with ``os.pwrite`` (services/taskserver/storage/file.py). Rather than fail
halfway with a traceback, ``up``, ``demo`` and every stack they build say where the lab runs on
Windows: in WSL, or with Docker Desktop.
"""

from __future__ import annotations

import os
import sys

from services.lang import Translator, chosen

CATALOGUE = {
    "en": {
        "refused": "ticslab {command} does not run on native Windows (it needs pass_fds and "
        "os.pwrite, which Windows lacks): run it inside WSL (`wsl --install`, then the same "
        "commands in Ubuntu) or use Docker Desktop (`docker compose up --build`, README).",
    },
    "es": {
        "refused": "ticslab {command} no funciona en Windows nativo (necesita pass_fds y "
        "os.pwrite, que Windows no tiene): úsalo dentro de WSL (`wsl --install` y luego los "
        "mismos comandos en Ubuntu) o usa Docker Desktop (`docker compose up --build`, README).",
    },
}
EXIT_CODE = 2  # a usage error: nothing was started


def native_windows() -> bool:
    """True on native Windows (WSL is Linux and passes); a function so tests can force it."""
    return os.name == "nt" or sys.platform == "win32"


def refusal(command: str, lang: str | None = None) -> str | None:
    """The line that refuses ``ticslab COMMAND`` here, in the class's language, or None when
    this platform runs the local stack."""
    if not native_windows():
        return None
    return Translator(CATALOGUE, chosen(lang))("refused", command=command)


def refused(command: str, lang: str | None = None) -> bool:
    """Print the refusal on stderr and return True when this platform cannot run the stack
    (the caller then exits with ``EXIT_CODE`` before starting anything)."""
    line = refusal(command, lang)
    if line is not None:
        print(line, file=sys.stderr)
    return line is not None
