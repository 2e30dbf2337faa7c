"""``ticslab up`` as a user runs it: a real launcher process and its real children; and the
balancer's command line it builds, as the balancer reads it."""

from __future__ import annotations

import argparse
import os
import pty
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from support import TICSLAB, free_port, free_run, pids_where, taskserver, wait_until

from services.balancer import cli as balancer_cli
from services.balancer.config import BalancerConfig
from services.common import default_token_file
from services.launcher import cli as up
from services.launcher import demo
from services.launcher.i18n import TEXT
from services.launcher.stack import StackOptions, plan


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    return pids_where(lambda entry: parent_of(entry) == pid)


def parent_of(entry: Path) -> int:
    return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class UpStack:
    """``ticslab up`` on free ports, its output in a file, its token in a file of its own."""

    def __init__(
        self, tmp: Path, servers: int = 2, clients: int = 0, own_token_file: bool = True
    ) -> None:
        self.tmp = tmp
        self.balancer_port = free_port()
        self.first_port = free_run(servers)
        self.server_ports = [self.first_port + i for i in range(servers)]
        self.url = f"http://127.0.0.1:{self.balancer_port}"
        # A token file of its own, or (False) where ticslab keeps it: by the balancer's address.
        self.own_token_file = own_token_file
        self.token_file = tmp / "token" if own_token_file else default_token_file(self.url)
        self.log = tmp / "up.log"
        self.args = [
            "--servers", str(servers), "--clients", str(clients),
            "--balancer-port", str(self.balancer_port),
            "--first-server-port", str(self.first_port), "--data-dir", str(tmp / "data"),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self, subcommand: str) -> list[str]:
        """``ticslab up`` (or ``demo``) with this stack's options."""
        return [*TICSLAB, subcommand, *self.args]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "TICSLAB_TOKEN"}
        if self.own_token_file:
            env["TICSLAB_TOKEN_FILE"] = str(self.token_file)
        return env

    def start(self) -> UpStack:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command("up"),
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, timeout=30, what="ticslab up to start")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"ticslab up exited {self.proc.returncode}: {self.output()}")
        return any(texts["stop_hint"] in self.output() for texts in TEXT.values())  # es, en

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl+C, as a terminal sends it; the launcher's exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kids = children(self.proc.pid)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                for pid in kids:
                    if alive(pid):
                        os.kill(pid, signal.SIGKILL)


def balancer_config(*up_args: str) -> BalancerConfig:
    """What the balancer ``ticslab up`` (or ``demo``) would start makes of the command line
    the stack gives it, read by the balancer's own parser."""
    parser = argparse.ArgumentParser()
    up.add_arguments(parser)
    options = up.options_from_args(parser.parse_args(list(up_args)))
    argv = next(
        spec.argv
        for spec in plan(options, "t0ken", "http://127.0.0.1:1")
        if spec.role == "balancer"
    )
    balancer_parser = argparse.ArgumentParser()
    balancer_cli.add_arguments(balancer_parser)
    return balancer_cli.config_from_args(
        balancer_parser.parse_args(argv[argv.index("balancer") + 1 :])
    )


def test_the_language_reaches_the_balancers_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ticslab up --lang`` and ``ticslab demo --lang`` (the dashboard's flag) both choose
    the language of the balancer's log; unset, the balancer reads TICSLAB_LANG itself."""
    monkeypatch.delenv("TICSLAB_LANG", raising=False)
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    assert balancer_config("--lang", "es").lang == "es"
    assert balancer_config().lang == "en"
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert up.options_from_args(parser.parse_args(["--lang", "es"])).lang == "es"


def test_weights_and_balancer_tuning_reach_the_balancer() -> None:
    config = balancer_config(
        "--servers", "3", "--weight", "server2=3", "--weight", "server3=0",
        "--slow-start", "20", "--eject-after-5xx", "5", "--eject-time", "15", "--retries", "0",
    )  # fmt: skip
    assert [name for name, _ in config.backends] == ["server1", "server2", "server3"]
    assert config.weights == {"server2": 3, "server3": 0}
    assert (config.slow_start, config.eject_after_5xx, config.eject_time) == (20, 5, 15)
    assert config.max_retries == 0
    defaults = BalancerConfig()
    config = balancer_config()  # none given: the balancer's own defaults
    assert config.weights == {}
    assert (config.slow_start, config.eject_after_5xx, config.eject_time) == (
        defaults.slow_start,
        defaults.eject_after_5xx,
        defaults.eject_time,
    )
    assert config.max_retries == defaults.max_retries


def test_a_weight_for_a_server_that_does_not_exist_is_refused() -> None:
    options = StackOptions(
        servers=2, balancer_port=free_port(), first_server_port=free_run(2), weights={"server5": 2}
    )
    assert options.problems() == ["--weight server5: there is no server5 (server1 to server2)"]


def test_retries_out_of_range_are_refused_before_anything_starts() -> None:
    options = StackOptions(balancer_port=free_port(), first_server_port=free_run(2), retries=11)
    assert options.problems() == ["--retries is 0 to 10"]


def test_a_plugin_reaches_the_balancer_by_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mine.py").write_text(
        "class Mine:\n    def pick(self, servers, client):\n        return servers[0]\n"
    )
    monkeypatch.chdir(tmp_path)
    config = balancer_config("--algorithm", "mine.py:Mine")
    assert config.algorithm == "Mine" and config.algorithm_names[-1] == "Mine"
    assert config.plugin is not None and config.plugin.path == tmp_path / "mine.py"
    monkeypatch.setenv("TICSLAB_ALGORITHM", "mine.py:Mine")  # as the balancer reads it
    parser = argparse.ArgumentParser()
    up.add_arguments(parser)
    assert up.options_from_args(parser.parse_args([])).algorithm == "mine.py:Mine"
    assert (
        up.options_from_args(parser.parse_args(["--algorithm", "ip_hash"])).algorithm == "ip_hash"
    )


def test_up_refuses_a_broken_plugin_before_starting_anything(tmp_path: Path) -> None:
    stack = UpStack(tmp_path, servers=1)
    bad = tmp_path / "bad.py"
    bad.write_text("class Mine:\n    def pick(self, servers, client):\n        return servers[0\n")
    done = subprocess.run(
        [*stack.command("up"), "--algorithm", f"{bad}:Mine"],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert f"could not start the stack: {bad}:3: syntax error" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert not listening(stack.balancer_port) and not listening(stack.server_ports[0])
    assert not (tmp_path / "data").exists()


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


@pytest.mark.slow
@needs_proc
def test_output_closed_by_the_reader_still_stops_everything(tmp_path: Path) -> None:
    """``ticslab up | head``: once nobody reads the logs, Ctrl+C must still stop every child."""
    stack = UpStack(tmp_path, servers=2, clients=1)
    proc = subprocess.Popen(
        stack.command("up"),
        env=stack.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if b"Ctrl+C stops everything" in line:
                break
        kids = children(proc.pid)
        assert len(kids) == 4
        proc.stdout.close()  # the reader goes away, as `head` does after its lines
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        wait_until(lambda: not [pid for pid in kids if alive(pid)], what="every child to stop")
        ports = [stack.balancer_port, *stack.server_ports]
        assert [port for port in ports if listening(port)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in children(proc.pid):
            os.kill(pid, signal.SIGKILL)


@needs_proc
@pytest.mark.slow  # 1.4-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_ctrl_c_stops_everything_and_frees_every_port(tmp_path: Path) -> None:
    stack = UpStack(tmp_path, servers=2, clients=1).start()
    try:
        assert stack.proc is not None
        kids = children(stack.proc.pid)
        assert len(kids) == 4  # two task servers, the balancer, one client
        requests = lambda: httpx.get(stack.url + "/status").json()["requests_total"]  # noqa: E731
        wait_until(lambda: requests() > 0, what="the client's traffic through the balancer")
        assert httpx.get(stack.url + "/health").status_code == 200
        assert stack.token_file.stat().st_mode & 0o777 == 0o600
        banner = stack.output()
        for port in stack.server_ports:
            assert f"http://127.0.0.1:{port}" in banner
        assert "balancer + 2 task servers + 1 client\n" in banner
        assert f"balancer   {stack.url}" in banner
        assert f"token      {stack.token_file}" in banner  # where, never the token itself
        assert stack.token not in banner
        assert f"ticslab dashboard --url {stack.url}" in banner
        ports = [stack.balancer_port, *stack.server_ports]
        assert all(listening(port) for port in ports)

        assert stack.interrupt() == 0
        assert [pid for pid in kids if alive(pid)] == []
        assert [port for port in ports if listening(port)] == []
        assert "stopped: no process left running" in stack.output()
        assert "client1   | " in stack.output()  # each process's log, prefixed with its name
    finally:
        stack.close()


def relayed(stack: UpStack, sentence: str) -> bool:
    """Whether ``ticslab up`` relayed a line of the balancer's own log (its time, its level)
    that says ``sentence``."""
    line = rf"^balancer +\| \S+ \S+ (INFO|WARNING): +{re.escape(sentence)}"
    return re.search(line, stack.output(), re.MULTILINE) is not None


@pytest.mark.slow
def test_up_relays_the_balancers_story_in_spanish_with_who_did_it(tmp_path: Path) -> None:
    """``ticslab up --lang es``: a stop and a start through /control, with the token, are
    told in the balancer's relayed lines with who asked, and so are the state changes they
    cause; the token itself never is."""
    stack = UpStack(tmp_path, servers=2)
    stack.args += ["--lang", "es"]
    stack.start()
    try:
        auth = {"Authorization": f"Bearer {stack.token}"}
        control = f"{stack.url}/control/servers/server1"
        for action, said in (
            ("stop", ["server1 detener → detenido (por 127.0.0.1)", "server1 UP → DOWN: "]),
            ("start", ["server1 iniciar → iniciado (por 127.0.0.1)", "server1 DOWN → UP: "]),
        ):
            assert httpx.post(f"{control}/{action}", headers=auth, timeout=15).status_code == 200
            for sentence in said:
                wait_until(lambda s=sentence: relayed(stack, s), what=repr(sentence))
        assert stack.token not in stack.output()
    finally:
        stack.close()


@pytest.mark.smoke
def test_port_taken_is_named_and_nothing_starts(tmp_path: Path) -> None:
    stack = UpStack(tmp_path, servers=2)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", stack.server_ports[1]))
        blocker.listen()
        done = subprocess.run(
            stack.command("up"),
            env=stack.env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert f"port {stack.server_ports[1]} is already in use" in done.stdout
    assert f"pid {os.getpid()} holds it" in done.stdout  # this test process
    assert not listening(stack.balancer_port)
    assert not listening(stack.server_ports[0])
    assert not (tmp_path / "data").exists()


@needs_proc
def test_a_port_held_by_an_earlier_ticslab_process_says_how_to_stop_it(tmp_path: Path) -> None:
    stack = UpStack(tmp_path, servers=1)
    earlier = taskserver("server1", tmp_path / "old.json", port=stack.server_ports[0]).start()
    try:
        done = subprocess.run(
            stack.command("up"), env=stack.env(), capture_output=True, text=True, timeout=30
        )
    finally:
        earlier.close()
    assert done.returncode == 1
    assert f"an earlier ticslab process holds it (pid {earlier.proc.pid}" in done.stdout
    assert f"kill {earlier.proc.pid}" in done.stdout


@pytest.mark.slow
def test_unexpected_death_is_reported_not_restarted(tmp_path: Path) -> None:
    stack = UpStack(tmp_path, servers=1).start()
    try:
        pid = httpx.get(f"http://127.0.0.1:{stack.first_port}/info").json()["pid"]
        os.kill(pid, signal.SIGKILL)  # behind the launcher's back
        wait_until(
            lambda: "server1 exited unexpectedly with code -9 (not restarted)" in stack.output(),
            what="the death to be reported",
        )
        assert not listening(stack.first_port)
        assert stack.proc is not None
        kids = children(stack.proc.pid)
        stack.proc.terminate()  # a polite kill stops everything, as Ctrl+C does
        assert stack.proc.wait(timeout=30) == 0
        assert [pid for pid in kids if alive(pid)] == [] and not listening(stack.balancer_port)
        assert "stopped: no process left running" in stack.output()
    finally:
        stack.close()


class Terminal:
    """A pseudo-terminal for a full-screen child (the dashboard): keys in, everything out."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.output = b""
        self._reader = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the child closed its side
                return
            if not chunk:
                return
            self.output += chunk

    def start(self) -> Terminal:
        self._reader.start()
        return self

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def close(self) -> None:
        os.close(self.slave)
        self._reader.join(timeout=5)
        os.close(self.master)


@pytest.mark.slow
@needs_proc
def test_demo_quits_with_the_dashboard_and_says_where_the_logs_are(tmp_path: Path) -> None:
    stack = UpStack(tmp_path, servers=1)
    terminal = Terminal().start()
    env = {**stack.env(), "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    demo = subprocess.Popen(
        [*stack.command("demo"), "--lang", "es"],
        env=env,
        stdin=terminal.slave,
        stdout=terminal.slave,
        stderr=terminal.slave,
        start_new_session=True,
    )
    try:
        wait_until(lambda: "server1" in terminal.text() and listening(stack.balancer_port),
                   timeout=30, what="the dashboard showing the stack")  # fmt: skip
        wait_until(lambda: "balanceador de carga" in terminal.text(), what="--lang es reaching it")
        kids = children(demo.pid)
        terminal.type(b"q")
        assert demo.wait(timeout=30) == 0
        assert [pid for pid in kids if alive(pid)] == []
        log_dir = tmp_path / "data" / "logs"
        line = f"servicios detenidos; registros: {log_dir}/"
        wait_until(lambda: terminal.text().rstrip().endswith(line), what="the last line")
        assert (log_dir / "server1.log").exists()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        terminal.close()


@pytest.mark.slow
@needs_proc
@pytest.mark.parametrize("paused", [False, True])
def test_kill_9_of_ticslab_up_ends_every_child_within_2_s(tmp_path: Path, paused: bool) -> None:
    stack = UpStack(tmp_path, servers=2, clients=1).start()
    assert stack.proc is not None
    kids = children(stack.proc.pid)
    assert len(kids) == 4  # two servers, the balancer, a client
    if paused:  # a frozen child cannot read its lifeline: the kernel ends it
        os.kill(kids[0], signal.SIGSTOP)
    stack.proc.kill()
    stack.proc.wait(timeout=10)
    wait_until(lambda: not any(alive(pid) for pid in kids), timeout=2.0, what="children gone")
    ports = [stack.balancer_port, *stack.server_ports]
    wait_until(lambda: not any(listening(port) for port in ports), timeout=1.0, what="ports free")


@pytest.mark.slow
@needs_proc
def test_two_stacks_keep_their_own_tokens_never_on_a_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stack's token in the file of its balancer's address; the dashboard finds it."""
    from dashboard.options import resolve_options

    monkeypatch.delenv("TICSLAB_TOKEN_FILE")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    stacks = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        stack = UpStack(tmp_path / name, servers=1, own_token_file=False)
        stacks.append(stack)
        stack.start()
    try:
        tokens = [stack.token for stack in stacks]
        assert tokens[0] != tokens[1]
        for stack, token in zip(stacks, tokens, strict=True):
            assert f"tokens/127.0.0.1-{stack.balancer_port}" in str(stack.token_file)
            assert str(stack.token_file) in stack.output()  # the banner names the file
            assert token not in stack.output()
            answer = httpx.post(
                stack.url + "/control/servers/server1/drain",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 200
            assert stack.proc is not None
            for pid in [stack.proc.pid, *children(stack.proc.pid)]:
                assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        urls = [stack.url.replace("127.0.0.1", "localhost") for stack in stacks]
        assert [resolve_options(url).token for url in urls] == tokens
    finally:
        for stack in stacks:
            stack.close()


@pytest.mark.slow
@needs_proc
def test_a_refused_start_leaves_the_running_stacks_token_file_alone(tmp_path: Path) -> None:
    """``ticslab up`` and ``demo`` on a running stack's balancer port are refused, and the
    running stack's token file keeps its token (it still opens /control)."""
    stack = UpStack(tmp_path, servers=1).start()
    try:
        token = stack.token
        (tmp_path / "second").mkdir()
        second = UpStack(tmp_path / "second", servers=1)
        for command in ("up", "demo"):
            args = [*second.command(command), "--balancer-port", str(stack.balancer_port)]
            done = subprocess.run(args, env=stack.env(), capture_output=True, timeout=60)
            assert done.returncode == 1
            assert f"port {stack.balancer_port} is already in use" in done.stdout.decode()
            assert stack.token_file.read_text().strip() == token
        answer = httpx.post(
            stack.url + "/control/servers/server1/drain",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200
    finally:
        stack.close()


@pytest.mark.slow
@needs_proc
@pytest.mark.parametrize(
    ("lang", "warning"),
    [
        ("en", "warning: --token is visible to every user of this machine"),
        ("es", "aviso: --token es visible para todos los usuarios de este equipo"),
    ],
)
def test_token_file_keeps_the_token_out_of_every_command_line(
    tmp_path: Path, lang: str, warning: str
) -> None:
    """``--token-file``: the stack uses its token and no process shows it; ``--token`` is
    taken with a warning on stderr, in the environment's language."""
    secret = f"s3cret-{lang}-token-from-a-file"
    (tmp_path / "given").write_text(secret + "\n")
    stack = UpStack(tmp_path, servers=1)
    stack.args += ["--token-file", str(tmp_path / "given")]
    stack.start()
    try:
        assert stack.token == secret
        assert stack.proc is not None
        for pid in [stack.proc.pid, *children(stack.proc.pid)]:
            assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        answer = httpx.post(
            stack.url + "/control/servers/server1/drain",
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert answer.status_code == 200
    finally:
        stack.close()
    env = {**stack.env(), "TICSLAB_LANG": lang}
    for command in ("up", "demo", "balancer", "dashboard"):
        done = subprocess.run(
            [*TICSLAB, command, "--token", "x", "--help"], env=env, capture_output=True, timeout=30
        )
        assert warning in done.stderr.decode(), command
        assert "--token-file" in done.stdout.decode(), command


@pytest.mark.slow
@needs_proc
def test_a_second_ctrl_c_kills_a_stop_that_would_wait(tmp_path: Path) -> None:
    """A task server frozen behind the launcher's back ignores SIGTERM for the 5 s grace; a
    second Ctrl+C ends everything at once."""
    stack = UpStack(tmp_path, servers=1).start()
    try:
        assert stack.proc is not None
        kids = children(stack.proc.pid)
        server = httpx.get(f"http://127.0.0.1:{stack.first_port}/info").json()["pid"]
        os.kill(server, signal.SIGSTOP)
        stack.proc.send_signal(signal.SIGINT)
        wait_until(lambda: "stopping everything..." in stack.output(), what="the first stop")
        second = time.monotonic()
        assert stack.interrupt() == 0
        assert time.monotonic() - second < 3.0
        assert "stopping at once: every process is killed" in stack.output()
        wait_until(lambda: not [pid for pid in kids if alive(pid)], what="every child gone")
    finally:
        stack.close()
