"""Helpers the tests share: free ports, real server processes, polling with a deadline."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
# What a terminal acts on instead of showing (C0, DEL, C1, bidi controls), written out here
# rather than taken from services/common.py, so the tests check printable() independently.
ACTED_ON = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069]"
)


def page_of(tasks: list[Any], params: httpx.QueryParams) -> httpx.Response:
    """A task server's answer to ``GET /tareas?limit=N&offset=M&order=asc|desc`` over
    ``tasks`` (oldest first), with its X-Total-Count; for scripted servers (MockTransport)."""
    ordered = tasks[::-1] if params.get("order") == "desc" else tasks
    offset = int(params.get("offset", 0))
    end = offset + int(params["limit"]) if "limit" in params else None
    headers = {"X-Total-Count": str(len(tasks))}
    return httpx.Response(200, json=ordered[offset:end], headers=headers)


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_run(count: int) -> int:
    """The first of ``count`` consecutive ports that are free now (``ticslab up`` numbers its
    task servers from one port)."""
    for _ in range(50):
        first = free_port()
        if first + count <= 65536 and all(_is_free(first + i) for i in range(1, count)):
            return first
    raise RuntimeError(f"no run of {count} free ports found")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(
    check: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as error:  # the thing polled may not be up yet
            last_error = error
        else:
            if result:
                return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: {last_error}")


TICSLAB = [sys.executable, "-m", "services.cli"]


def pids_where(test: Callable[[Path], bool]) -> list[int]:
    """The pids whose /proc entry passes ``test`` (Linux); entries that vanish are skipped."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if test(entry):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def wait_until_async(
    check: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> None:
    """``wait_until`` for coroutines: polls ``check`` without blocking the event loop.

    ``check`` may be a coroutine function, so a probe can itself be an async HTTP call."""
    deadline = time.monotonic() + timeout
    while not await _checked(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(interval)


async def _checked(check: Callable[[], object]) -> object:
    result = check()
    return await result if inspect.isawaitable(result) else result


class ServiceProcess:
    """A ``ticslab <command>`` (or another ``program``) running as a real child process that
    answers HTTP on ``port``, stopped on ``close``."""

    def __init__(
        self,
        args: list[str],
        port: int,
        env: dict[str, str] | None = None,
        program: list[str] = TICSLAB,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.args = args
        self.command = [*program, *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: nobody reads it while the process runs, and a full pipe would
        # block a chatty process (long benchmark runs).
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (kept for the process life)

    def start(self, health_path: str = "/health", timeout: float = 15.0) -> ServiceProcess:
        self.proc = subprocess.Popen(
            self.command, env=self.env, stdout=subprocess.DEVNULL, stderr=self._stderr
        )
        wait_until(
            lambda: self._answers(health_path), timeout=timeout, what=f"{self.args} to listen"
        )
        return self

    def _answers(self, path: str) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            self._stderr.seek(0)
            stderr = self._stderr.read().decode(errors="replace")
            raise RuntimeError(f"{self.args} exited with {self.proc.returncode}: {stderr}")
        httpx.get(self.url + path, timeout=1.0)
        return True

    def log(self) -> str:
        """What the process wrote to stderr so far (its log lines). Read with pread: the
        process shares the file's offset, and a seek would make it write over its own lines."""
        fd = self._stderr.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL and reap: a crash, as far as clients can tell."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def close(self) -> None:
        """SIGTERM (after SIGCONT, so a frozen process can obey), SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


class Output:
    """A process's output, read line by line by a thread, so a test can wait for a line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._reader.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:  # until the process closes it
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        wait_until(lambda: any(text in line for line in self.lines), timeout, what=repr(text))
        return "".join(self.lines)

    def rest(self, start: int) -> str:
        """Everything after the first ``start`` characters, once the process has exited."""
        self._reader.join(timeout=10)
        return "".join(self.lines)[start:]


def taskserver(
    name: str, tasks_file: Path, port: int | None = None, env: dict[str, str] | None = None
) -> ServiceProcess:
    """A task server process (not yet started) on ``port`` or a free one."""
    port = port or free_port()
    args = ["taskserver", "--name", name, "--host", "127.0.0.1", "--port", str(port)]
    return ServiceProcess([*args, "--tasks-file", str(tasks_file)], port, env)


@contextmanager
def taskserver_pair(
    tasks_file: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """server1 and server2 sharing ``tasks_file``, started in parallel (a second saved), both
    closed on leaving, even when one failed to start."""
    servers = (
        taskserver("server1", tasks_file, env=env),
        taskserver("server2", tasks_file, env=env),
    )
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(ServiceProcess.start, servers))
        yield servers
    finally:
        for server in servers:
            server.close()


def docker(*args: str) -> str:
    """Run the docker CLI; its output, or RuntimeError with its error output."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def docker_engine_problem() -> str | None:
    """Why no Docker engine can be used here (the docker tests skip saying so), or None."""
    if shutil.which("docker") is None:
        return "no docker client on PATH (bash .ci/docker-setup.sh installs one)"
    try:
        docker("info", "--format", "{{.ServerVersion}}")
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        return f"no Docker engine answers (bash .ci/docker-setup.sh starts one): {error}"
    return None


# The PostgreSQL image the Compose and stack tests give as TICSLAB_POSTGRES_IMAGE: named by
# .ci/run in this variable (not a TICSLAB_ name: conftest clears those), else the files'
# default postgres:16 when this engine has it, else .ci/docker-setup.sh's local stand-in.
POSTGRES_IMAGE_VARIABLE = "DOCKER_TESTS_POSTGRES_IMAGE"
POSTGRES_STAND_IN = "ticslab/postgres:15"


def postgres_image() -> tuple[str, str | None]:
    """The PostgreSQL image to run, and why it cannot be (no such local image), or None."""
    named = os.environ.get(POSTGRES_IMAGE_VARIABLE)
    candidates = [named] if named else ["postgres:16", POSTGRES_STAND_IN]
    for image in candidates:
        try:
            docker("image", "inspect", image)
            return image, None
        except RuntimeError:
            continue
    return candidates[-1], (
        f"no local {' or '.join(candidates)} and no registry here "
        f"(bash .ci/docker-setup.sh builds {POSTGRES_STAND_IN}; .ci/run names it in "
        f"{POSTGRES_IMAGE_VARIABLE})"
    )


# Python run inside a server's container (`docker exec NAME python -c ...`): its own /health,
# on the port given with %.
HEALTH = (
    "import urllib.request as u; print(u.urlopen('http://127.0.0.1:%d/health').read().decode())"
)


def taskserver_takes_storage() -> bool:
    """Whether this code's task server takes ``--storage`` (issue 27's PostgreSQL backend):
    before that branch, TICSLAB_STORAGE is ignored and every server keeps its own file."""
    import argparse

    from services.taskserver.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return any("--storage" in action.option_strings for action in parser._actions)


def tasks_through(url: str, count: int, prefix: str) -> list[dict[str, Any]]:
    """``count`` tasks created through the balancer at ``url``, one after the other, each
    checked (201) and returned with the upstream server that answered (``upstream``)."""
    import httpx

    made = []
    with httpx.Client(base_url=url, timeout=15) as client:
        for n in range(count):
            answer = client.post("/tareas", json={"title": f"{prefix}-{n}"})
            assert answer.status_code == 201, answer.text
            made.append({**answer.json(), "upstream": answer.headers["x-upstream-server"]})
    return made


async def state_events_of_every_reason() -> list[dict[str, Any]]:
    """The ``state`` events of a real balancer, at least one per reason code: checks that
    fail and pass, failures on live traffic, an ejection and its end, drain, maint, ready."""
    from services.balancer.balancer import Balancer
    from services.balancer.config import BalancerConfig

    backends = [("server1", "http://127.0.0.1:5001"), ("server2", "http://127.0.0.1:5002")]
    config = BalancerConfig(backends=backends, fall=2, rise=2, eject_after_5xx=2, eject_time=0.01)
    balancer = Balancer(config)
    one = balancer.get("server1")

    def checks(ok: bool, times: int = 2) -> None:
        for _ in range(times):
            balancer.record_check(one, ok, 200 if ok else None, "200 OK" if ok else "timeout", 1.0)

    checks(True, 1)  # the first verdict
    checks(False)
    checks(True)
    balancer.record_live_failure(one, "refused", "connection refused")
    checks(True)
    for _ in range(2):
        balancer.record_live_failure(one, "reset", "connection reset")
    checks(True)
    for _ in range(2):
        balancer.record_answer(one, 500)
    await wait_until_async(lambda: one.state != "EJECTED", timeout=5)
    for state in ("DRAIN", "MAINT", "READY"):
        balancer.set_admin_state("server2", state, who="teacher")
    return [event for event in balancer.events.since(0) if event["kind"] == "state"]


async def events_of_every_kind() -> list[dict[str, Any]]:
    """A real balancer's events, made by its real ``/control`` routes (in process, no driver)
    and discovery calls; no health checks are wired in, so no server is ever reached."""
    from starlette.applications import Starlette

    from services.balancer.balancer import Balancer
    from services.balancer.config import BalancerConfig
    from services.balancer.control import Control
    from services.balancer.rollout import Plan

    # A port nobody listens on: the rollout below probes its health, and must reach no one.
    balancer = Balancer(BalancerConfig(backends=[("server1", f"http://127.0.0.1:{free_port()}")]))
    control = Control(balancer, "secret", "none")
    balancer.start()
    await control.start()
    transport = httpx.ASGITransport(Starlette(routes=control.routes()))
    auth = {"Authorization": "Bearer secret"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=auth
        ) as http:
            assert (await http.post("/control/servers/server1/drain")).status_code == 200
            assert (await http.post("/control/servers/server1/kill")).status_code == 409
            answer = await http.put("/control/algorithm", json={"algorithm": "ip_hash"})
            assert answer.status_code == 200
            answer = await http.put("/control/servers/server1/weight", json={"weight": 3})
            assert answer.status_code == 200
            assert (await http.post("/control/stats/reset")).status_code == 200
        balancer.add_server("server3", "http://ticslab-server3-1:5001", who="docker")
        balancer.remove_server("server3", who="docker")
        balancer.record_failure("docker discovery failed (OSError: gone); restarted in 1 s")
        balancer.record_algorithm_error(
            "/lab/mine.py:7", "ZeroDivisionError: division by zero", None
        )
        balancer.record_algorithm_error("/lab/mine.py:5", None, "None")
        balancer.record_slow_pick("/lab/mine.py:5", 0.12)
        # A rollout past /control's refusal of the none driver: it fails at the restart.
        control.rollouts.start(Plan("rolling", drain_seconds=1, health_seconds=1), "teacher")
        await wait_until_async(lambda: not control.rollouts.running, timeout=5)
    finally:
        await control.stop()
    return balancer.events.since(0)
