"""The supervisor owns the stack's processes: it spawns them, streams their output, acts on
them when the balancer's control API asks, and reports (never hides) unexpected deaths.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx

from services.common import CAN_FREEZE, DRIVER_ACTIONS, FREEZE_ACTIONS
from services.lang import Translator
from services.launcher.i18n import TEXT
from services.launcher.logs import LogSink
from services.lifeline import Lifeline

STOP_SECONDS = 5.0
START_SECONDS = 20.0
STOPPED_SECONDS = 1.0  # a SIGSTOP takes effect within microseconds; this is a safety bound


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


@dataclass
class Managed:
    """A spec and its current process, if any."""

    spec: ProcessSpec
    proc: asyncio.subprocess.Process | None = None
    paused: bool = False
    expected_exit: bool = False  # set before we stop or kill it ourselves
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

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
        """Start ``spec``'s process (replacing an exited one of the same name)."""
        managed = self.processes.get(spec.name) or Managed(spec)
        self.processes[spec.name] = managed
        managed.proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            env={**os.environ, **spec.env, **self.lifeline.env(), "PYTHONUNBUFFERED": "1"},
            pass_fds=(self.lifeline.read_fd,),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Ctrl+C reaches only the launcher, which then stops everyone in order.
            start_new_session=os.name != "nt",
        )
        managed.paused = False
        managed.expected_exit = False
        managed.watcher = asyncio.create_task(self._watch(managed, managed.proc))
        return managed

    async def _watch(self, managed: Managed, proc: asyncio.subprocess.Process) -> None:
        """Stream the output; when the process ends, say so if nobody asked it to."""
        assert proc.stdout is not None
        async for raw in proc.stdout:
            self.logs.line(managed.spec.name, raw.decode(errors="replace").rstrip())
        code = await proc.wait()
        if managed.expected_exit or self.closing:
            return
        if code == 0 and managed.spec.role == "client":
            self.logs.note(self.t("finished", name=managed.spec.name))
        else:
            self.logs.note(self.t("died", name=managed.spec.name, code=code))

    async def wait_listening(self, managed: Managed, timeout: float = START_SECONDS) -> None:
        """Wait until the process answers its health URL; ActionError if it exits or hangs."""
        url = managed.spec.health_url
        if url is None:
            return
        deadline = asyncio.get_running_loop().time() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                proc = managed.proc
                if proc is None or proc.returncode is not None:
                    code = proc.returncode if proc else None
                    message = self.t("start_exited", name=managed.spec.name, code=code)
                    raise ActionError(502, message)
                try:
                    await client.get(url)
                    return
                except httpx.HTTPError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    message = self.t("start_timeout", name=managed.spec.name, seconds=timeout)
                    raise ActionError(502, message)
                await asyncio.sleep(0.1)

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
        """Let the watcher print the last lines before we report."""
        if managed.watcher is not None:
            await asyncio.wait({managed.watcher}, timeout=2.0)

    async def stop_all(self) -> None:
        """Clients first, then the balancer, then the task servers: nothing left behind, even
        a process an action in progress is starting (it is waited for, then stopped)."""
        self.closing = True
        for role in ("client", "balancer", "taskserver"):
            group = [m for m in self.processes.values() if m.spec.role == role]
            await asyncio.gather(*(self._terminate_locked(m) for m in group))
        self.lifeline.close()

    async def _terminate_locked(self, managed: Managed) -> None:
        async with self._locks[managed.spec.name]:
            await self.terminate(managed)

    async def act(self, name: str, action: str) -> dict[str, object]:
        """Carry out a control action on a task server; the answer names result and state."""
        managed = self.processes.get(name)
        if managed is None or managed.spec.role != "taskserver":
            raise ActionError(404, self.t("not_ours", name=name))
        if action not in DRIVER_ACTIONS:
            raise ActionError(409, self.t("unknown_action", action=action))
        if action in FREEZE_ACTIONS and not CAN_FREEZE:
            raise ActionError(409, self.t("no_freeze", action=action))
        async with self._locks[name]:
            if self.closing:
                raise ActionError(409, self.t("closing"))
            result = await getattr(self, f"_{action}")(managed)
        self.logs.note(self.t("action_done", name=name, action=action, result=result))
        return {"server": name, "action": action, "result": result, "process": managed.state}

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
