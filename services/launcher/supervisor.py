"""The supervisor owns the stack's processes: it spawns them, streams their output, acts on
them when the balancer's control API asks, and reports (never hides) unexpected deaths.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import httpx

from services.common import CAN_FREEZE, DRIVER_ACTIONS, FREEZE_ACTIONS, printable
from services.lang import Translator
from services.launcher.i18n import TEXT
from services.launcher.logs import LogSink, Relay
from services.launcher.ports import listens
from services.lifeline import Lifeline
from services.taskserver.options import checked_options
from services.waiting import wait_ready

STOP_SECONDS = 5.0
START_SECONDS = 20.0
LISTEN_POLL_SECONDS = 0.1  # between two looks at a starting process
STOPPED_SECONDS = 1.0  # a SIGSTOP takes effect within microseconds; this is a safety bound
DRAIN_SECONDS = 2.0  # for a process's last lines once it has exited (a grandchild may hold on)


class ActionError(Exception):
    """An action that cannot be done (``status`` 409) or that failed (502)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ProcessSpec:
    """How to (re)start one process: same name, command, port and files every time."""

    name: str
    role: str  # "taskserver", "balancer" or "client"
    argv: list[str]
    env: dict[str, str]
    port: int | None = None
    health_url: str | None = None  # answered (any status) once the process is listening
    # Flags added to ``argv`` by a rollout's restart (services/taskserver/options.py).
    options: tuple[str, ...] = ()


@dataclass
class Managed:
    """A spec and its current process, if any."""

    spec: ProcessSpec
    proc: asyncio.subprocess.Process | None = None
    paused: bool = False
    expected_exit: bool = False  # set before we stop or kill it ourselves
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    relay: Relay | None = field(default=None, repr=False)

    @property
    def state(self) -> str:
        if self.proc is None or self.proc.returncode is not None:
            return "exited"
        return "paused" if self.paused else "running"

    def describe(self) -> dict[str, object]:
        proc = self.proc
        return {
            "state": self.state,
            "role": self.spec.role,
            "pid": proc.pid if proc else None,
            "port": self.spec.port,
            "returncode": proc.returncode if proc else None,
            "options": list(self.spec.options),
        }


class Supervisor:
    """Every process of one ``ticslab up``, by name."""

    def __init__(self, logs: LogSink, lang: str = "en") -> None:
        self.logs = logs
        self.t = Translator(TEXT, lang)
        self.processes: dict[str, Managed] = {}
        self.closing = False
        # One action at a time per process: two concurrent starts of a stopped server would
        # otherwise both spawn, and one process would escape every later stop.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Children end with us even when we are killed (services/lifeline.py).
        self.lifeline = Lifeline()

    async def spawn(self, spec: ProcessSpec) -> Managed:
        """Start ``spec``'s process (replacing an exited one of the same name).

        Its output goes to a pipe of our own that a ``Relay`` reads, not to asyncio's
        subprocess pipes: the process's exit is then seen at once, whether or not its output
        has reached its end (a stop never waits for a pipe to be drained).
        """
        managed = self.processes.get(spec.name) or Managed(spec)
        self.processes[spec.name] = managed
        read_fd, write_fd = os.pipe()
        try:
            managed.proc = await asyncio.create_subprocess_exec(
                *spec.argv,
                *spec.options,
                env={**os.environ, **spec.env, **self.lifeline.env(), "PYTHONUNBUFFERED": "1"},
                pass_fds=(self.lifeline.read_fd,),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd,
                stderr=asyncio.subprocess.STDOUT,
                # Ctrl+C reaches only the launcher, which then stops everyone in order.
                start_new_session=os.name != "nt",
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the child holds its own copy
        try:
            managed.relay = await self._relay(spec.name, read_fd)
        except BaseException:  # unread, it would block on its first lines: never leave it so
            managed.proc.kill()
            raise
        managed.paused = False
        managed.expected_exit = False
        managed.watcher = asyncio.create_task(self._watch(managed, managed.proc, managed.relay))
        managed.watcher.add_done_callback(lambda task: self._watcher_ended(spec.name, task))
        return managed

    async def _relay(self, name: str, read_fd: int) -> Relay:
        """Relay the pipe ``read_fd`` to the logs as ``name``'s lines."""

        def show(data: bytes, cut: int) -> None:
            text = data.decode(errors="replace").rstrip()
            self.logs.line(name, text + (self.t("line_cut", count=cut) if cut else ""))

        def failed(error: Exception) -> None:
            self.report(self.t("relay_failed", name=name, error=error))

        relay = Relay(show, failed)
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        await asyncio.get_running_loop().connect_read_pipe(lambda: relay, pipe)
        return relay

    async def _watch(
        self, managed: Managed, proc: asyncio.subprocess.Process, relay: Relay
    ) -> None:
        """When the process ends (and its last lines are shown), say so if nobody asked it to."""
        code = await proc.wait()
        await asyncio.wait({relay.closed}, timeout=DRAIN_SECONDS)
        if managed.expected_exit or self.closing:
            return
        if code == 0 and managed.spec.role == "client":
            self.logs.note(self.t("finished", name=managed.spec.name))
        else:
            self.logs.note(self.t("died", name=managed.spec.name, code=code))

    def _watcher_ended(self, name: str, task: asyncio.Task[None]) -> None:
        """A watcher that fails is said: otherwise a death would go unreported."""
        if not task.cancelled() and task.exception() is not None:
            self.report(self.t("watcher_failed", name=name, error=task.exception()))

    def report(self, text: str) -> None:
        """A note that must be seen: on stderr when the logs themselves fail."""
        try:
            self.logs.note(text)
        except Exception:
            print(f"ticslab: {printable(text)}", file=sys.stderr)

    async def wait_listening(self, managed: Managed, timeout: float = START_SECONDS) -> None:
        """Wait until the process itself listens on its port and answers its health URL (not
        some other program on that port); ActionError if it exits or hangs."""
        url = managed.spec.health_url
        if url is None:
            return
        async with httpx.AsyncClient(timeout=1.0) as client:

            async def probe() -> str | None:
                proc = managed.proc
                if proc is None or proc.returncode is not None:
                    code = proc.returncode if proc else None
                    message = self.t("start_exited", name=managed.spec.name, code=code)
                    raise ActionError(502, message)
                if await self._answers(client, proc.pid, managed.spec.port, url):
                    return None
                return "not answering yet"

            if await wait_ready(probe, timeout, LISTEN_POLL_SECONDS) is not None:
                message = self.t("start_timeout", name=managed.spec.name, seconds=timeout)
                raise ActionError(502, message)

    @staticmethod
    async def _answers(client: httpx.AsyncClient, pid: int, port: int | None, url: str) -> bool:
        """True once process ``pid`` listens on ``port`` and ``url`` answers (any status)."""
        if port is not None and not await asyncio.to_thread(listens, pid, port):
            return False
        try:
            await client.get(url)
        except httpx.HTTPError:
            return False
        return True

    async def terminate(self, managed: Managed, timeout: float = STOP_SECONDS) -> None:
        """SIGTERM (waking a frozen process so it can obey), SIGKILL after ``timeout``."""
        proc = managed.proc
        if proc is None or proc.returncode is not None:
            return
        managed.expected_exit = True
        proc.terminate()
        if managed.paused:
            os.kill(proc.pid, signal.SIGCONT)
            managed.paused = False
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await self._drained(managed)

    async def _drained(self, managed: Managed) -> None:
        """Let the watcher print the last lines before we report (bounded: it waits for the
        pipe's end at most ``DRAIN_SECONDS``)."""
        if managed.watcher is not None:
            await asyncio.wait({managed.watcher}, timeout=DRAIN_SECONDS + 1.0)

    async def stop_all(self) -> None:
        """Clients first, then the balancer, then the task servers: nothing left behind, even
        a process an action in progress is starting (it is waited for, then stopped)."""
        self.closing = True
        for role in ("client", "balancer", "taskserver"):
            group = [m for m in self.processes.values() if m.spec.role == role]
            await asyncio.gather(*(self._terminate_locked(m) for m in group))
        for managed in self.processes.values():
            if managed.relay is not None:
                managed.relay.close()
        self.lifeline.close()

    def kill_all(self) -> None:
        """SIGKILL every process now (a second Ctrl+C): ``stop_all`` then finds them gone."""
        for managed in self.processes.values():
            proc = managed.proc
            if proc is not None and proc.returncode is None:
                managed.expected_exit = True
                proc.kill()  # SIGKILL ends a frozen (SIGSTOP) process too

    async def _terminate_locked(self, managed: Managed) -> None:
        async with self._locks[managed.spec.name]:
            await self.terminate(managed)

    async def retire(self, name: str) -> None:
        """Stop ``name``'s process (as ``stop`` does, under its lock) and forget it: a server
        scaled in leaves nothing behind, not even its name (launcher/scaling.py)."""
        managed = self.processes[name]
        async with self._locks[name]:
            await self.terminate(managed)
            if managed.relay is not None:
                managed.relay.close()
            del self.processes[name]
        self._locks.pop(name, None)

    async def act(
        self, name: str, action: str, options: Sequence[str] | None = None
    ) -> dict[str, object]:
        """Carry out a control action on a task server; the answer names result and state.
        ``options`` (a restart's only): the new process's allowed extra flags, kept for the
        restarts after it (a rollout's new version)."""
        managed = self.processes.get(name)
        if managed is None or managed.spec.role != "taskserver":
            raise ActionError(404, self.t("not_ours", name=name))
        if action not in DRIVER_ACTIONS:
            raise ActionError(409, self.t("unknown_action", action=action))
        if action in FREEZE_ACTIONS and not CAN_FREEZE:
            raise ActionError(409, self.t("no_freeze", action=action))
        if options is not None and action != "restart":
            raise ActionError(409, self.t("options_restart_only"))
        async with self._locks[name]:
            if self.closing:
                raise ActionError(409, self.t("closing"))
            if options is not None:
                try:
                    managed.spec = replace(managed.spec, options=checked_options(options))
                except ValueError as error:
                    raise ActionError(409, str(error)) from None
            result = await getattr(self, f"_{action}")(managed)
        self.logs.note(self.t("action_done", name=name, action=action, result=result))
        pid = managed.proc.pid if managed.proc else None
        answer = {"server": name, "action": action, "result": result, "process": managed.state}
        return {**answer, "pid": pid}

    def _not_in(self, managed: Managed, wanted: str) -> str:
        """Why an action needs ``managed`` in the state ``wanted``."""
        return self.t("not_in_state", name=managed.spec.name, state=managed.state, wanted=wanted)

    async def _stop(self, managed: Managed) -> str:
        if managed.state == "exited":
            return "already exited"
        await self.terminate(managed)
        return "stopped"

    async def _kill(self, managed: Managed) -> str:
        proc = managed.proc
        if proc is None or managed.state == "exited":
            raise ActionError(409, self.t("not_running", name=managed.spec.name))
        managed.expected_exit = True
        proc.kill()
        await proc.wait()
        await self._drained(managed)
        return "killed"

    async def _start(self, managed: Managed) -> str:
        if managed.state != "exited":
            return f"already {managed.state}"
        await self.spawn(managed.spec)
        await self.wait_listening(managed)
        return "started"

    async def _restart(self, managed: Managed) -> str:
        await self.terminate(managed)
        await self.spawn(managed.spec)
        await self.wait_listening(managed)
        return "restarted"

    async def _pause(self, managed: Managed) -> str:
        if managed.state != "running":
            raise ActionError(409, self._not_in(managed, "running"))
        assert managed.proc is not None
        os.kill(managed.proc.pid, signal.SIGSTOP)
        await asyncio.to_thread(wait_stopped, managed.proc.pid)
        managed.paused = True
        return "paused"

    async def _unpause(self, managed: Managed) -> str:
        if managed.state != "paused":
            raise ActionError(409, self._not_in(managed, "paused"))
        assert managed.proc is not None
        os.kill(managed.proc.pid, signal.SIGCONT)
        managed.paused = False
        return "unpaused"


def wait_stopped(pid: int) -> None:
    """Return once the child ``pid`` is stopped (or gone): signals are delivered asynchronously,
    and "paused" must be true when we say it (the control API asked the server to hold its
    writes for a moment first, so it is frozen holding no tasks file lock).

    ``waitid`` with ``WNOWAIT`` only looks, so asyncio's own wait for the child still sees
    its exit. Without ``waitid`` (macOS before Python 3.13) a short pause stands in for it.
    """
    if not hasattr(os, "waitid"):
        time.sleep(0.05)
        return
    flags = os.WSTOPPED | os.WEXITED | os.WNOWAIT | os.WNOHANG
    deadline = time.monotonic() + STOPPED_SECONDS
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, flags) is not None:
                return
        except ChildProcessError:  # already reaped: it holds nothing
            return
        time.sleep(0.001)
