"""Text from the network is shown, never obeyed: ``printable`` itself, and the log lines and
reports it reaches on a terminal (the dashboard's part is in test_dashboard_format.py)."""

from __future__ import annotations

import io
import logging
import socket

import httpx
import pytest
from backends import RawBackend
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from support import ACTED_ON, wait_until
from test_balancer_helpers import balancer_process, status_of

from services.client.checks import LossCheck
from services.client.config import ClientConfig
from services.client.plan import Kind
from services.client.progress import summary_line
from services.client.report import build_report, render_report
from services.client.stats import Recorder
from services.common import PrintableLog, printable
from services.launcher.logs import ConsoleLogs, FileLogs

pytestmark = pytest.mark.smoke  # also run at the lowest allowed versions (.ci/run)

HOSTILE = "\x1b]0;pwned\x07\x1b[5;41m\r\nFAKE\x9b2J\u202e"
ACTED_ON_CHARS = [chr(c) for c in range(0x2070) if ACTED_ON.match(chr(c))]


def acted_on(text: str) -> list[str]:
    return ACTED_ON.findall(text)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("a\r\nb\tc\x00", "a\\r\\nb\\tc\\x00"),
        ("\x7f\x9b\x85", "\\x7f\\x9b\\x85"),
        ("\u202eevil\u2066\u061c\u200e\u200f", "\\u202eevil\\u2066\\u061c\\u200e\\u200f"),
        ("tarea ñandú 日本 🎉 C:\\tmp [b]x[/b]", "tarea ñandú 日本 🎉 C:\\tmp [b]x[/b]"),
    ],
)
def test_printable_writes_each_control_as_its_python_escape(text: str, shown: str) -> None:
    assert printable(text) == shown


@given(st.text(st.sampled_from(ACTED_ON_CHARS) | st.characters()))
def test_printable_output_holds_nothing_a_terminal_acts_on_and_is_idempotent(text: str) -> None:
    shown = printable(text)
    assert not acted_on(shown)
    assert printable(shown) == shown
    plain = ACTED_ON.sub("", text)
    assert printable(plain) == plain  # everything else is left as it is


def test_a_log_record_is_escaped_but_a_traceback_keeps_its_lines() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PrintableLog())
    logger = logging.getLogger("ticslab.test-printable")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        logger.exception("answer to %s", "GET /\x1b]0;x\x07")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "answer to GET /\\x1b]0;x\\x07"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == f"ValueError: {printable(HOSTILE)}"
    assert not acted_on(stream.getvalue().replace("\n", ""))


@pytest.mark.slow  # 1.4-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_a_hostile_path_in_the_balancers_log_is_escaped() -> None:
    """uvicorn percent-decodes the path: ``%1b`` is ESC by the time the balancer logs it."""

    def cut_short(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n" + b"x" * 200_000)
        sock.close()

    backend = RawBackend(lambda request: cut_short).start()
    process = balancer_process([("server1", backend.url)]).start()
    try:
        wait_until(lambda: status_of(process)["servers"][0]["state"] == "UP", what="UP")
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(process.url + "/%1b]0;x%07%0d%0aFAKE")

        def logged() -> str:
            process._stderr.seek(0)  # support.ServiceProcess keeps stderr in a file
            return process._stderr.read().decode()

        line = wait_until(
            lambda: next((x for x in logged().splitlines() if "broke off" in x), ""),
            what="the balancer's log line",
        )
        assert "GET /\\x1b]0;x\\x07\\r\\nFAKE" in line
        assert not acted_on(logged().replace("\n", ""))
    finally:
        process.close()
        backend.close()


def test_ticslab_up_relays_each_line_escaped_to_the_terminal_and_the_files(tmp_path) -> None:
    screen = io.StringIO()
    console = ConsoleLogs(Console(file=screen, color_system=None, width=200))
    files = FileLogs(tmp_path)
    for sink in (console, files):
        sink.line("client1", f"title {HOSTILE}")
        sink.note(f"server1 said {HOSTILE}")
    files.close()
    shown = printable(HOSTILE)
    assert screen.getvalue().splitlines() == [
        f"client1   | title {shown}",
        f"ticslab   | server1 said {shown}",
    ]
    assert (tmp_path / "client1.log").read_text() == f"title {shown}\n"
    assert (tmp_path / "ticslab.log").read_text() == f"server1 said {shown}\n"


def test_the_clients_report_shows_network_text_escaped_and_never_as_markup() -> None:
    recorder = Recorder()
    detail = f"POST /api/tasks: {HOSTILE} [bold red]x[/]"
    recorder.record(Kind.CREATE, "502", 0.01, "[/oops]\x1b[2J", detail)
    recorder.keep(1, 1)
    recorder.finish()
    check = LossCheck(checked=1, error=f"could not list the tasks: [/oops] {HOSTILE}")
    config = ClientConfig(url="http://127.0.0.1:9", name="c", tasks=1)
    report = build_report(config, recorder, check, interrupted=False, run_id="r")
    screen = io.StringIO()
    render_report(report, Console(file=screen, color_system=None, width=300))
    text = screen.getvalue()
    assert not acted_on(text.replace("\n", ""))
    assert f"([/oops]\\x1b[2J): POST /api/tasks: {printable(HOSTILE)} [bold red]x[/]" in text
    assert "[/oops]\\x1b[2J" in text  # the server's row
    assert f"(could not list the tasks: [/oops] {printable(HOSTILE)})" in text
    line = summary_line(config, recorder.snapshot())
    assert "[/oops]\\x1b[2J 100%" in line and not acted_on(line)
