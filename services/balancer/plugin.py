"""A student's own algorithm, from a file named at start: ``--algorithm FILE.py:CLASS``.

The file is named only on the command line or in ``TICSLAB_ALGORITHM``, never by a request:
loading a file a request named would run anyone's code on the balancer's machine. The class
has the built-ins' interface (algorithms.py). Whatever is wrong with it is one line naming
the file and, where there is one, the line: at start the balancer refuses to run
(``PluginError``); at run time a ``pick`` that raises or returns something else than one of
its servers is reported and round robin over the same servers answers instead (``Guarded``),
so no request pays for it. ``pick`` is given read-only ``View``s, never the balancer's
``Server`` objects, so it cannot rename a server or set its weight or state. A ``pick``
slower than ``SLOW_PICK`` is told on the timeline (it held every request meanwhile); one that
never returns cannot be bounded on the event loop it runs on: that is left out
(docs/algorithm-plugin.md).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import itertools
import os
import re
import reprlib
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from services.balancer.algorithms import ALGORITHMS, RoundRobin, S
from services.balancer.server import Server, decayed_cost, ramped_weight
from services.common import printable

HOW = "FILE.py:CLASS"
# A plugin's name is shown in /status, the dashboard and reports: short and plain.
NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")
MAX_MESSAGE = 300  # characters of an exception's message kept in an event or log line
# Reports a failed pick: where (file:line), the exception, or what was returned instead.
PickFailureReport = Callable[[str, str | None, str | None], None]
# A pick this slow (seconds) is told (where its ``def pick`` is, how long it took): the event
# loop waited for it, and every request with it.
SLOW_PICK = 0.05
SlowReport = Callable[[str, float], None]
_module_numbers = itertools.count(1)


class PluginError(ValueError):
    """The plugin cannot be used: one line, naming the file and, where known, the line. It
    may quote the student's code (an exception's message), so it is made printable."""

    def __init__(self, message: str) -> None:
        super().__init__(printable(message))


@dataclass(frozen=True)
class Plugin:
    """A checked class: the algorithm called ``name``, from the file ``path`` (absolute);
    ``pick_at`` is where its ``pick`` is defined, for a pick that returns amiss."""

    name: str
    cls: type[Any]
    path: Path
    pick_at: str

    def start(self, report: PickFailureReport, slow: SlowReport | None = None) -> Guarded:
        """A fresh instance behind its safety net; PluginError if the constructor raises."""
        return Guarded(self, self.instance(), report, slow)

    def instance(self) -> Any:
        try:
            return self.cls()
        except BaseException as error:  # exit() in a constructor included
            raised = f"{self.cls.__name__}() raised {describe(error)}"
            raise PluginError(f"{where(error, self.path, self.cls)}: {raised}") from error


# A View's fields: name, url, in_flight, weight, ramp_from, slow_start, ewma, ewma_at.
ViewFields = tuple[str, str, int, int, float | None, float, float, float]


class View(ViewFields):
    """What a plugin sees of a server (``ServerView``, algorithms.py), copied when its pick
    begins: a tuple, so nothing it sets reaches the balancer (or is set at all). Views of
    the same server are equal (by name), so a plugin may keep them as keys across picks."""

    __slots__ = ()

    @classmethod
    def of(cls, server: Server) -> View:
        return tuple.__new__(
            cls,
            (
                server.name,
                server.url,
                server.in_flight,
                server.weight,
                server.ramp_from,
                server.slow_start,
                server.ewma,
                server.ewma_at,
            ),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, View) and other[0] == self[0]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self[0])

    def __repr__(self) -> str:
        return f"<server {self[0]}>"

    @property
    def name(self) -> str:
        return self[0]

    @property
    def url(self) -> str:
        return self[1]

    @property
    def in_flight(self) -> int:
        return self[2]

    @property
    def weight(self) -> int:
        return self[3]

    def effective_weight(self, now: float) -> float:
        return ramped_weight(self[3], self[4], self[5], now)

    def latency_cost(self, now: float) -> float:
        return decayed_cost(self[6], self[7], now)


class Guarded:
    """A plugin's instance, given ``View``s: what its ``pick`` raises, or returns that is not
    one of the views it was given, is reported, and round robin over the same servers
    answers; a pick slower than ``SLOW_PICK`` is reported to ``slow``."""

    def __init__(
        self,
        plugin: Plugin,
        algorithm: Any,
        report: PickFailureReport,
        slow: SlowReport | None = None,
    ) -> None:
        self._plugin = plugin
        self._pick = algorithm.pick
        self._fallback = RoundRobin()
        self._report = report
        self._slow = slow

    def pick(self, servers: Sequence[S], client: str) -> S:
        servers = tuple(servers)
        # The balancer gives a plugin only its Servers; View.of reads more than ServerView has.
        views = tuple(View.of(server) for server in servers)  # type: ignore[arg-type]
        started = time.perf_counter()
        try:
            chosen = self._pick(views, client)
        except asyncio.CancelledError:
            raise  # the request was cancelled, not the pick's fault
        except BaseException as error:  # exit() or KeyboardInterrupt in a pick included
            self._timed(started)
            self._report(where(error, self._plugin.path), describe(error), None)
            return self._fallback.pick(servers, client)
        self._timed(started)
        for view, server in zip(views, servers, strict=True):
            if isinstance(chosen, View) and chosen == view:
                return server
        self._report(self._plugin.pick_at, None, shown(chosen))
        return self._fallback.pick(servers, client)

    def _timed(self, started: float) -> None:
        took = time.perf_counter() - started
        if took > SLOW_PICK and self._slow is not None:
            self._slow(self._plugin.pick_at, took)


def choose(text: str) -> tuple[str, Plugin | None]:
    """What ``--algorithm`` names: a built-in, or a plugin loaded and checked (PluginError);
    ValueError for anything else."""
    if text in ALGORITHMS:
        return text, None
    if ":" in text:
        plugin = load(text)
        return plugin.name, plugin
    hint = f"; for your own class write {text}:ClassName" if text.endswith(".py") else ""
    raise ValueError(
        f"unknown algorithm {text!r}; choose one of {', '.join(ALGORITHMS)}, or your own "
        f"as {HOW}{hint}"
    )


def absolute(text: str) -> str:
    """``--algorithm`` with a plugin's file made absolute, for a process started elsewhere."""
    if text in ALGORITHMS or ":" not in text:
        return text
    file, _, class_name = text.rpartition(":")
    return f"{_absolute(file)}:{class_name}"


def _absolute(file: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(file)))


def _load(spec: str) -> Plugin:
    """``load`` for the failures it names itself."""
    file, _, class_name = spec.rpartition(":")
    if not file or not class_name:
        raise PluginError(f"write your algorithm as {HOW}, e.g. mi_algoritmo.py:MiAlgoritmo")
    path = _absolute(file)
    if path.suffix != ".py":
        raise PluginError(f"{path}: an algorithm is a Python file, ending in .py")
    if not path.is_file():
        raise PluginError(f"{path}: no such file")
    module = _run(path)
    cls = vars(module).get(class_name)
    if cls is None:
        defined = _classes(module)
        hint = f" (it defines {', '.join(defined)})" if defined else " (it defines no class)"
        raise PluginError(f"{path}: there is no {class_name} in it{hint}")
    if not isinstance(cls, type):
        raise PluginError(f"{path}: {class_name} is a {type(cls).__name__}, not a class")
    at = _defined_at(cls, path)
    pick = getattr(cls, "pick", None)
    if not callable(pick):
        raise PluginError(f"{at}: class {class_name} has no method pick(self, servers, client)")
    if inspect.iscoroutinefunction(pick):
        raise PluginError(f"{at}: {class_name}.pick must be a plain def, not an async def")
    name = getattr(cls, "name", class_name)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise PluginError(
            f"{at}: {class_name}.name must be 1 to 40 letters, digits, _ or -, not {shown(name)}"
        )
    if name in ALGORITHMS:
        raise PluginError(
            f"{at}: {name!r} is a built-in algorithm's name; give {class_name} a name of its "
            f'own (name = "...")'
        )
    plugin = Plugin(name, cls, path, _defined_at(pick, path))
    _check_signature(plugin, plugin.instance())  # a raising constructor is found now
    return plugin


def load(spec: str) -> Plugin:
    """The class ``FILE.py:CLASS`` names, run and checked as the balancer will use it; any
    failure, even of an odd class (a ``name`` property that raises), is a PluginError."""
    try:
        return _load(spec)
    except PluginError:
        raise
    except BaseException as error:
        path = _absolute(spec.rpartition(":")[0])
        raise PluginError(f"{where(error, path)}: {describe(error)} while checking it") from error


def _run(path: Path) -> ModuleType:
    """The file run as a module of its own (registered, as dataclasses and inspect expect)."""
    name = f"ticslab_algorithm_{next(_module_numbers)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        del sys.modules[name]
        raise PluginError(f"{error.filename}:{error.lineno}: syntax error: {error.msg}") from error
    except BaseException as error:
        del sys.modules[name]
        raise PluginError(f"{where(error, path)}: {describe(error)} while loading") from error
    return module


def _check_signature(plugin: Plugin, instance: Any) -> None:
    try:
        inspect.signature(instance.pick).bind((), "")
    except TypeError:
        taken = f"{plugin.cls.__name__}.pick must take (self, servers, client)"
        raise PluginError(f"{plugin.pick_at}: {taken}") from None
    except ValueError:
        pass  # no signature to read (written in C): a wrong one shows at the first pick


def _classes(module: ModuleType) -> list[str]:
    return [
        name
        for name, value in vars(module).items()
        if isinstance(value, type) and value.__module__ == module.__name__
    ]


def _defined_at(thing: Any, path: Path) -> str:
    """``file:line`` where a class or function is defined; the plugin's file if unknown."""
    try:
        return f"{inspect.getsourcefile(thing)}:{inspect.getsourcelines(thing)[1]}"
    except (OSError, TypeError):
        return str(path)


def where(error: BaseException, path: Path, defined: Any = None) -> str:
    """``file:line`` of the deepest line of the plugin's file the error went through; else
    where ``defined`` is, else the file alone."""
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename == str(path)
    ]
    if lines:
        return f"{path}:{lines[-1]}"
    return _defined_at(defined, path) if defined is not None else str(path)


def describe(error: BaseException) -> str:
    """``ZeroDivisionError: division by zero``, made printable and cut at ``MAX_MESSAGE``
    characters; an error whose message cannot even be made is named by its type."""
    try:
        text = str(error)
    except BaseException:
        text = ""
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE] + "..."
    return printable(f"{type(error).__name__}: {text}" if text else type(error).__name__)


def shown(value: object) -> str:
    """A short, printable repr of what a student's code returned."""
    try:
        return printable(reprlib.repr(value))
    except Exception:
        return f"a {type(value).__name__}"
