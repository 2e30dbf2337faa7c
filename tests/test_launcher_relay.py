"""The supervisor with real children that print too much, ignore a stop, or find their port
taken (issue 23, items 9 and 22): nothing freezes, and stopping has a bound."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from support import TICSLAB, free_port, wait_until_async

from services.lang import missing_keys
from services.launcher.i18n import TEXT
from services.launcher.logs import MAX_LINE, LineSplitter
from services.launcher.supervisor import ActionError, Managed, ProcessSpec, Supervisor

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/cmdline").exists(), reason="the children's ports are found via /proc"
)
BIG = 1_000_000  # bytes of the one long line

# A child that prints a 1 MB line, then serves /health and logs 2 KB per request (stderr).
CHATTY = f"""
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
print("x" * {BIG}, flush=True)
print("after the long line", flush=True)
class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        sys.stderr.write("served " + "y" * 2048 + "\\n")
HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""
# A child that prints a 1 MB line and then floods its output until it is stopped.
FLOOD = f"""
import sys
print("x" * {BIG}, flush=True)
while True:
    sys.stdout.write("flood " + "z" * 1000 + "\\n")
"""
# A child that ignores SIGTERM and says when it does.
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
time.sleep(60)
"""


class Recorded:
    """A LogSink that keeps every line and note; lines holding ``fails_on`` raise."""

    def __init__(self, fails_on: str | None = None) -> None:
        self.lines: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.fails_on = fails_on

    def line(self, name: str, text: str) -> None:
        if self.fails_on is not None and self.fails_on in text:
            raise RuntimeError("the sink broke")
        self.lines.append((name, text))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def close(self) -> None: ...

    def said(self, start: str) -> list[str]:
        return [text for _, text in self.lines if text.startswith(start)]


def spec(code: str, port: int | None = None) -> ProcessSpec:
    argv = [sys.executable, "-c", code, *([str(port)] if port else [])]
    health = f"http://127.0.0.1:{port}/health" if port else None
    return ProcessSpec("server1", "taskserver", argv, {}, port, health)


async def keeps_answering(port: int, times: int) -> None:
    """``times`` health checks, each answered within 2 s (each logs 2 KB: ~0.5 MB in all,
    far more than a pipe holds, so the child would block if nobody drained its output)."""
    async with httpx.AsyncClient(timeout=2.0) as client:
        for _ in range(times):
            assert (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200


def test_a_1_mb_line_is_cut_and_the_child_keeps_running() -> None:
    logs = Recorded()
    port = free_port()

    async def scenario() -> None:
        supervisor = Supervisor(logs)
        try:
            managed = await supervisor.spawn(spec(CHATTY, port))
            await supervisor.wait_listening(managed, timeout=15)
            await keeps_answering(port, 250)
            await wait_until_async(lambda: len(logs.said("served")) >= 250, what="every line")
        finally:
            await supervisor.stop_all()

    asyncio.run(scenario())
    [long] = logs.said("x")
    assert long == "x" * MAX_LINE + f" [... line cut: {BIG - MAX_LINE} more bytes]"
    assert logs.said("after the long line") == ["after the long line"]
    assert logs.notes == []


@pytest.mark.parametrize(
    ("lang", "sentence"),
    [
        ("en", "server1's output can no longer be shown (the sink broke)"),
        ("es", "ya no se puede mostrar la salida de server1 (the sink broke)"),
    ],
)
def test_a_relay_that_fails_is_reported_and_the_child_keeps_running(
    lang: str, sentence: str
) -> None:
    logs = Recorded(fails_on="after the long line")
    port = free_port()

    async def scenario() -> None:
        supervisor = Supervisor(logs, lang)
        try:
            managed = await supervisor.spawn(spec(CHATTY, port))
            await supervisor.wait_listening(managed, timeout=15)
            await wait_until_async(lambda: logs.notes, what="the failure to be reported")
            await keeps_answering(port, 250)  # its output is still read, and dropped
        finally:
            await supervisor.stop_all()

    asyncio.run(scenario())
    [note] = logs.notes
    assert note.startswith(sentence)
    assert logs.said("served") == []


def test_stopping_a_child_that_floods_its_output_takes_under_5_s() -> None:
    logs = Recorded()

    async def scenario() -> float:
        supervisor = Supervisor(logs)
        await supervisor.spawn(spec(FLOOD))
        try:
            await wait_until_async(lambda: len(logs.said("flood")) > 100, what="the flood")
        finally:
            started = time.monotonic()
            await asyncio.wait_for(supervisor.stop_all(), timeout=30)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 5.0


def test_kill_all_ends_a_stop_that_waits_for_a_child_ignoring_sigterm() -> None:
    """A second Ctrl+C: the stop in progress ends at once, not after its 5 s grace."""
    logs = Recorded()

    async def scenario() -> float:
        supervisor = Supervisor(logs)
        managed = await supervisor.spawn(spec(STUBBORN))
        await wait_until_async(lambda: logs.said("ignoring SIGTERM"), what="the child's start")
        stopping = asyncio.create_task(supervisor.stop_all())
        await wait_until_async(lambda: managed.expected_exit, what="the stop to begin")
        started = time.monotonic()
        supervisor.kill_all()
        await asyncio.wait_for(stopping, timeout=30)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 2.0


class Answering(BaseHTTPRequestHandler):
    """Another program on the port: it answers every path with 200."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None: ...


def test_a_start_whose_port_another_program_answers_on_fails(tmp_path: Path) -> None:
    """Our task server cannot bind the port, so it exits: the answer from the other program
    on that port must not pass for its start."""
    port = free_port()
    other = ThreadingHTTPServer(("127.0.0.1", port), Answering)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    argv = [*TICSLAB, "taskserver", "--name", "server1", "--port", str(port)]
    argv += ["--tasks-file", str(tmp_path / "tasks.json")]

    async def scenario() -> str:
        supervisor = Supervisor(Recorded())
        managed: Managed = await supervisor.spawn(
            ProcessSpec("server1", "taskserver", argv, {}, port, f"http://127.0.0.1:{port}/health")
        )
        try:
            await supervisor.wait_listening(managed, timeout=30)
        except ActionError as error:
            return str(error)
        finally:
            await supervisor.stop_all()
        return "started"

    try:
        assert asyncio.run(scenario()).startswith("server1 exited with code ")
    finally:
        other.shutdown()
        other.server_close()


def test_the_splitter_keeps_lines_whole_across_chunks_and_bounded() -> None:
    splitter = LineSplitter(limit=4)
    assert splitter.feed(b"ab") == []
    assert splitter.feed(b"c\nabcdefg") == [(b"abc", 0)]
    assert splitter.feed(b"hij\r\nk") == [(b"abcd", 7)]
    assert splitter.flush() == [(b"k", 0)]
    assert splitter.flush() == []


def test_the_launchers_sentences_exist_in_both_languages() -> None:
    assert missing_keys(TEXT) == {}
