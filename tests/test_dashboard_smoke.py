"""``textual run dashboard ...`` starts in a real terminal (tmux) and quits on ``q``."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
    pytest.mark.smoke,  # also run at the lowest allowed versions (.ci/run)
]


def screen(session: str) -> str:
    command = ["tmux", "capture-pane", "-p", "-t", session]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


@pytest.mark.slow  # 1.2-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_textual_run_dashboard_starts_and_quits(tmp_path: Path) -> None:
    session = f"ticslab-dashboard-smoke-{os.getpid()}"
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: it must start anyway
    bin_dir = Path(sys.executable).parent
    command = (
        f"cd {shlex.quote(str(ROOT))} && PATH={shlex.quote(str(bin_dir))}:$PATH LANG=C "
        f"TICSLAB_TOKEN_FILE={shlex.quote(str(tmp_path / 'none'))} "
        f"textual run dashboard --url {url} --read-only --lang en; echo EXIT=$?; sleep 60"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command],
        check=True,
    )
    try:
        wait_until(lambda: "READ-ONLY" in screen(session), timeout=20, what="the dashboard")
        wait_until(lambda: "DISCONNECTED" in screen(session), timeout=10, what="the banner")
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        wait_until(lambda: "EXIT=0" in screen(session), timeout=10, what="a clean exit")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


@pytest.mark.parametrize(
    "command", [["-m", "dashboard", "--help"], ["-m", "services.cli", "dashboard", "--help"]]
)
def test_every_way_of_starting_it_knows_the_options(command: list[str]) -> None:
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    for flag in ("--url", "--token", "--read-only", "--refresh", "--lang", "--theme"):
        assert flag in done.stdout


# The dashboard with SIGWINCH blocked (a blocked signal stays blocked across exec): a pty
# resized now is one whose signal never came, as in ``docker-compose run``'s race.
NO_SIGWINCH = (
    "import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH}); "
    "os.execv(sys.executable, [sys.executable, '-m', 'dashboard', *sys.argv[1:]])"
)


@pytest.mark.slow  # a start and a resize in tmux: 3-8 s
def test_a_window_resized_without_sigwinch_is_filled_all_the_same(tmp_path: Path) -> None:
    """80x24 at start, then 150x40 with no SIGWINCH: within the 0.5 s check (and a margin),
    the status line reaches the 150th column."""
    session = f"ticslab-dashboard-winch-{os.getpid()}"
    url = f"http://127.0.0.1:{free_port()}"
    command = (
        f"cd {shlex.quote(str(ROOT))} && LANG=C "
        f"TICSLAB_TOKEN_FILE={shlex.quote(str(tmp_path / 'none'))} "
        f"{shlex.quote(sys.executable)} -c {shlex.quote(NO_SIGWINCH)} "
        f"--url {url} --read-only --lang en; sleep 60"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", command],
        check=True,
    )

    def status_line() -> str:
        return next((line for line in screen(session).splitlines() if "READ-ONLY" in line), "")

    try:
        wait_until(lambda: "READ-ONLY" in status_line(), timeout=20, what="the dashboard")
        assert len(status_line().rstrip()) <= 80
        subprocess.run(
            ["tmux", "resize-window", "-t", session, "-x", "150", "-y", "40"], check=True
        )
        wait_until(
            lambda: len(status_line().rstrip()) > 140, timeout=10, what="the status line at 150"
        )
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
