"""CPU used by the dashboard at 1 Hz against a running stack, as % of one core.

Starts ``ticslab up`` (balancer, 2 task servers, 1 client emulator) on free loopback ports,
then runs, one after the other, each in its own 100x30 pseudo-terminal for ``--seconds``:
  * reference: a bare Textual app (Header, Static, Footer) idling;
  * dashboard: ``python -m dashboard --refresh 1`` polling the stack;
  * charts: the same with its chart view open (``c``), redrawn from ``/history`` each second.
CPU is read from /proc/<pid>/stat after a warm-up, so start-up is not counted. Everything is
bounded in time and stopped at the end. Linux only.

    .venv/bin/python bench/bench_dashboard.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import httpx
from stack import ROOT, ServiceProcess, cpu_seconds, free_run, wait_until

WARM_UP = 5.0
REFERENCE_APP = """
from textual.app import App
from textual.widgets import Footer, Header, Static
class Reference(App):
    def compose(self):
        yield Header(); yield Static("reference"); yield Footer()
Reference().run()
"""


def in_terminal(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``args`` on a new 100x30 pseudo-terminal whose output is drained and dropped."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)

    def drain() -> None:
        try:
            while os.read(master, 65536):
                pass
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    return proc, master


def measure(args: list[str], seconds: float, env: dict[str, str], keys: bytes = b"") -> float:
    """% of one core used by ``args`` over ``seconds`` after the warm-up; ``keys`` are typed
    once it has started."""
    proc, master = in_terminal(args, env)
    try:
        time.sleep(WARM_UP / 2)
        os.write(master, keys)
        time.sleep(WARM_UP / 2)
        if proc.poll() is not None:
            raise RuntimeError(f"{args} exited with {proc.returncode}")
        cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, wall1 = cpu_seconds(proc.pid), time.monotonic()
    finally:
        os.write(master, b"q")
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(master)
    return 100 * (cpu1 - cpu0) / (wall1 - wall0)


def ticslab_up(data: Path, token: str) -> ServiceProcess:
    """``ticslab up`` with 2 task servers and 1 client emulator (not started yet)."""
    first = free_run(3)  # server1, server2, then the balancer
    args = ["up", "--servers", "2", "--clients", "1", "--balancer-port", str(first + 2)]
    args += ["--first-server-port", str(first), "--data-dir", str(data), "--token", token]
    return ServiceProcess(args, first + 2, env={"TICSLAB_TOKEN_FILE": str(data / "token")})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window (max 600)")
    seconds = min(parser.parse_args().seconds, 600.0)
    token = secrets.token_urlsafe(16)
    env = {**os.environ, "TERM": "xterm-256color", "LANG": "C.UTF-8"}
    data = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    stack = ticslab_up(data, token)
    url = stack.url
    try:
        stack.start(health_path="/status", timeout=30)
        wait_until(
            lambda: httpx.get(url + "/status", timeout=1).json()["servers_up"] == 2,
            timeout=30,
            what="both task servers UP",
        )
        reference = measure([sys.executable, "-c", REFERENCE_APP], seconds, env)
        dashboard_args = [sys.executable, "-m", "dashboard", "--url", url, "--refresh", "1"]
        dashboard = measure([*dashboard_args, "--token", token], seconds, env)
        charts = measure([*dashboard_args, "--token", token], seconds, env, keys=b"c")
        requests = httpx.get(url + "/status", timeout=5).json()["requests_total"]
    finally:
        stack.close()  # SIGTERM: ``ticslab up`` stops its children as on Ctrl+C
        shutil.rmtree(data, ignore_errors=True)
    load = os.getloadavg()[0]
    cores = os.cpu_count()
    print(f"window {seconds:.0f} s per app, 100x30 pty, load average {load:.2f}, {cores} cores")
    print(f"stack served {requests} requests (1 client emulator) during the run")
    print(f"reference bare Textual app : {reference:5.2f} % of one core")
    print(f"dashboard at 1 Hz          : {dashboard:5.2f} % of one core (target < 5 %)")
    print(f"dashboard, chart view      : {charts:5.2f} % of one core (target < 5 %)")
    if reference > 0:
        print(f"ratio dashboard / reference: {dashboard / reference:5.1f}x")
        print(f"ratio charts / reference   : {charts / reference:5.1f}x")
    return 0 if max(dashboard, charts) < 5.0 else 1


if __name__ == "__main__":
    sys.exit(main())
