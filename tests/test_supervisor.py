"""The supervisor with real child processes: actions on one process never race (issue 12)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import pytest
from support import pids_where, wait_until_async
from test_launcher import alive

from services.common import DRIVER_ACTIONS
from services.launcher.supervisor import ProcessSpec, Supervisor

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/cmdline").exists(), reason="finds processes through Linux /proc"
)


class Quiet:
    """A LogSink that keeps nothing."""

    def line(self, name: str, text: str) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


def with_marker(marker: str) -> list[int]:
    """The pids of live processes whose command line holds ``marker``."""
    found = pids_where(lambda entry: marker.encode() in (entry / "cmdline").read_bytes())
    return [pid for pid in found if alive(pid)]


def sleeper(marker: str) -> ProcessSpec:
    code = f"import time; time.sleep(60)  # {marker}"
    return ProcessSpec("server1", "taskserver", [sys.executable, "-c", code], {})


def test_the_supervisor_carries_out_every_driver_action() -> None:
    """``act`` runs ``_<action>``: an action the drivers send needs its method here."""
    assert all(callable(getattr(Supervisor, f"_{action}", None)) for action in DRIVER_ACTIONS)


def test_concurrent_starts_of_one_server_spawn_one_process() -> None:
    marker = f"ticslab-test-{uuid.uuid4().hex}"

    async def scenario() -> list[str]:
        supervisor = Supervisor(Quiet())
        await supervisor.spawn(sleeper(marker))
        try:
            await supervisor.act("server1", "stop")
            answers = await asyncio.gather(*(supervisor.act("server1", "start") for _ in range(4)))
            # A process just spawned shows its command line once its exec has finished.
            started = supervisor.processes["server1"].proc
            assert started is not None
            await wait_until_async(lambda: started.pid in with_marker(marker), what="the exec")
            assert len(with_marker(marker)) == 1
            return sorted(str(answer["result"]) for answer in answers)
        finally:
            await supervisor.stop_all()

    results = asyncio.run(scenario())
    assert results == ["already running"] * 3 + ["started"]
    assert with_marker(marker) == []  # stop_all left nothing behind


def test_an_action_during_stop_all_is_refused_and_leaves_nothing() -> None:
    marker = f"ticslab-test-{uuid.uuid4().hex}"

    async def scenario() -> str:
        supervisor = Supervisor(Quiet())
        await supervisor.spawn(sleeper(marker))
        stopping = asyncio.create_task(supervisor.stop_all())
        await asyncio.sleep(0)  # stop_all holds the process's lock now
        try:
            await supervisor.act("server1", "restart")
        except Exception as error:
            return str(error)
        finally:
            await stopping
        return "acted"

    assert asyncio.run(scenario()) == "the stack is stopping"
    assert with_marker(marker) == []
