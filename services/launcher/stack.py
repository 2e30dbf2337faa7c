"""The local stack: N task servers, the balancer and M clients, run on an event loop of its own
in a background thread, so the main thread stays free for signals (``up``) or the dashboard
(``demo``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import uvicorn

from services.balancer.algorithms import ALGORITHMS
from services.balancer.certificates import CertificateError, checked_user_files
from services.balancer.compression import ENCODINGS, parse_encodings
from services.balancer.config import MAX_RETRIES, BalancerConfig
from services.balancer.htpasswd import UsersFileError, load_users
from services.balancer.plugin import absolute, choose
from services.common import CA_FILE, default_tls_dir, log_config, write_token_file
from services.lang import LANG_ENV, Translator, default_language
from services.launcher.api import supervisor_app
from services.launcher.i18n import TEXT
from services.launcher.logs import LogSink
from services.launcher.ports import holder, listening_socket, taken_ports
from services.launcher.scaling import Scaler
from services.launcher.supervisor import ActionError, ProcessSpec, Supervisor
from services.launcher.windows import refusal
from services.taskserver.storage import (
    POSTGRES_INSTALL,
    StorageConfigError,
    safe_storage,
    storage_kind,
)

HOST = "127.0.0.1"
# Clients of the local stack make steady, gentle traffic for as long as the stack runs.
CLIENT_OPTIONS = ("--duration", "12h", "--rate", "5", "--concurrency", "2")


@dataclass(frozen=True)
class TlsOptions:
    """The balancer's TLS flags as ``ticslab up`` was given them (off by default)."""

    on: bool = False
    port: int = BalancerConfig.tls_port
    cert: Path | None = None
    key: Path | None = None
    folder: Path | None = None  # the local CA's (--tls-dir); None: the state folder's
    redirect_http: bool = False

    @property
    def enabled(self) -> bool:
        return self.on or self.cert is not None

    @property
    def ca(self) -> Path | None:
        """The local CA's certificate clients trust; None without TLS, or with the user's own
        certificate."""
        if not self.enabled or self.cert is not None:
            return None
        return (self.folder or default_tls_dir()) / CA_FILE

    def flags(self) -> list[str]:
        """The balancer's flags for these options (paths made absolute: its folder is ours,
        but a flag is read more safely whole)."""
        if not self.enabled:
            return []
        given: dict[str, object] = {
            "--tls-port": self.port,
            "--tls-cert": self.cert and self.cert.resolve(),
            "--tls-key": self.key and self.key.resolve(),
            "--tls-dir": self.folder and self.folder.resolve(),
        }
        found = ["--tls", *(f"{flag}={value}" for flag, value in given.items() if value)]
        return [*found, "--redirect-http"] if self.redirect_http else found

    def problems(self, t: Translator, clients: int) -> list[str]:
        """Why these cannot work, before anything starts (the balancer checks them again)."""
        if (self.cert is None) != (self.key is None):
            return [t("tls_pair")]
        if self.redirect_http and not self.enabled:
            return [t("redirect_needs_tls")]
        if self.redirect_http and clients:
            return [t("redirect_clients")]
        if self.cert is not None and self.key is not None:
            try:
                checked_user_files(self.cert, self.key)
            except CertificateError as error:
                return [str(error)]
        return []


class StartError(Exception):
    """The stack could not start; everything already started has been stopped again."""


@dataclass
class StackOptions:
    """What ``ticslab up`` was asked for."""

    servers: int = 2
    clients: int = 2
    balancer_port: int = 8080
    first_server_port: int = 5001
    data_dir: Path = Path("data")
    # --storage, given to every task server: file:PATH, a path, or a postgresql:// URL;
    # empty: data_dir/tasks.json
    storage: str = ""
    algorithm: str = "random"  # a built-in's name, or a plugin's FILE.py:CLASS
    # For the balancer; None keeps its own default.
    weights: dict[str, int] = field(default_factory=dict)  # by server name
    slow_start: float | None = None
    eject_after_5xx: int | None = None
    eject_time: float | None = None
    retries: int | None = None
    auth_users: Path | None = None  # the balancer's --auth-users (an htpasswd file)
    compress: str | None = None  # the balancer's --compress, as given
    # TLS termination at the balancer (its --tls flags; services/balancer/tls.py).
    tls: TlsOptions = field(default_factory=lambda: TlsOptions())
    # What the launcher prints and every process of the stack speaks (``ticslab experiment``'s
    # stacks: the environment's, TICSLAB_LANG or the locale).
    lang: str = field(default_factory=default_language)

    @property
    def server_ports(self) -> list[int]:
        return [self.first_server_port + i for i in range(self.servers)]

    @property
    def balancer_url(self) -> str:
        return f"http://{HOST}:{self.balancer_port}"

    @property
    def tasks_file(self) -> Path:
        """The shared file (``--storage file:PATH`` or a path, else the data folder's)."""
        if self.storage and storage_kind(self.storage)[0] == "file":
            return Path(storage_kind(self.storage)[1])
        return self.data_dir / "tasks.json"

    @property
    def storage_shown(self) -> str:
        """Where the tasks are, as the banner shows it (a database URL without password)."""
        if self.storage and storage_kind(self.storage)[0] == "postgresql":
            return safe_storage(self.storage)
        return str(self.tasks_file)

    def storage_refusal(self) -> str | None:
        """Why ``--storage`` names no usable storage, in one line of ``lang``; None if it
        does. Checked before anything starts (every task server would refuse it)."""
        if not self.storage:
            return None
        t = Translator(TEXT, self.lang)
        try:
            kind, _ = storage_kind(self.storage)
        except StorageConfigError:
            shown = self.storage.split("://", 1)[0] + "://…" if "://" in self.storage else ""
            return t("storage_bad", value=shown or self.storage)
        if kind == "postgresql" and not all(
            importlib.util.find_spec(name) for name in ("psycopg", "psycopg_pool")
        ):
            return t("storage_needs_psycopg", install=POSTGRES_INSTALL)
        return None

    def balancer_flags(self) -> list[str]:
        """The balancer's tuning flags that were given (the balancer checks their values), and
        the language of its log."""
        given = {
            "--slow-start": self.slow_start,
            "--eject-after-5xx": self.eject_after_5xx,
            "--eject-time": self.eject_time,
            "--retries": self.retries,
            "--auth-users": self.auth_users and self.auth_users.absolute(),
            "--compress": self.compress,
            "--lang": self.lang,
        }
        flags = [f"{flag}={value}" for flag, value in given.items() if value is not None]
        return [*flags, *self.tls.flags()]

    def problems(self) -> list[str]:
        """Why these options cannot work, in words of ``lang`` (empty when they can)."""
        t = Translator(TEXT, self.lang)
        found = []
        if ":" not in self.algorithm and self.algorithm not in ALGORITHMS:
            found.append(t("unknown_algorithm", name=self.algorithm, names=", ".join(ALGORITHMS)))
        else:
            try:
                choose(self.algorithm)  # a plugin is loaded here, as the balancer will load it
            except ValueError as error:
                found.append(str(error))
        if self.servers < 1:
            found.append(t("servers_min"))
        if self.clients < 0:
            found.append(t("clients_negative"))
        if self.retries is not None and not 0 <= self.retries <= MAX_RETRIES:
            found.append(t("retries_range", maximum=MAX_RETRIES))
        if self.auth_users is not None:
            try:
                load_users(self.auth_users)  # as the balancer will read it
            except UsersFileError as error:
                found.append(str(error))
        if self.compress is not None:
            try:
                parse_encodings(self.compress)
            except ValueError:
                found.append(t("compress_bad", text=self.compress, names=",".join(ENCODINGS)))
        names = {f"server{number}" for number in range(1, self.servers + 1)}
        for name in sorted(self.weights.keys() - names):
            found.append(t("weight_no_server", name=name, servers=self.servers))
        found += self.tls.problems(t, self.clients)
        ports = [self.balancer_port, *self.server_ports]
        tls_ports = [self.tls.port] if self.tls.enabled else []
        if any(not 1 <= port <= 65535 for port in ports):
            found.append(t("ports_range", low=min(ports), high=max(ports)))
        elif self.balancer_port in self.server_ports:
            found.append(t("port_shared", port=self.balancer_port))
        elif self.tls.port in ports and tls_ports:
            found.append(t("tls_port_shared", port=self.tls.port))
        else:
            found += [self._taken(t, port) for port in taken_ports(ports + tls_ports, HOST)]
        return found

    @staticmethod
    def _taken(t: Translator, port: int) -> str:
        """Why ``port`` cannot be used, naming its holder when it is known."""
        who = holder(port)
        if who is None:
            return t("port_taken", port=port, host=HOST)
        pid, command, ours = who
        named = t("holder_ticslab" if ours else "holder_other", pid=pid, command=command)
        return t("port_taken_by", port=port, host=HOST, holder=named)


def python_command(*args: str) -> list[str]:
    """``ticslab <args>`` with the same interpreter, so the venv need not be on PATH."""
    return [sys.executable, "-m", "services.cli", *args]


def stack_env(options: StackOptions, token: str) -> dict[str, str]:
    """What every process of the stack gets in its environment (never on a command line)."""
    return {"TICSLAB_TOKEN": token, LANG_ENV: options.lang}


def taskserver_spec(
    options: StackOptions, env: dict[str, str], name: str, port: int
) -> ProcessSpec:
    """Task server ``name`` on ``port``: the one command every task server of the stack runs,
    at its start or added later (launcher/scaling.py), on the same tasks file or database
    (a database's URL in the environment, never on the command line: ``ps`` shows that)."""
    if options.storage:
        env = {**env, "TICSLAB_STORAGE": options.storage}
    argv = python_command(
        "taskserver", "--name", name, "--host", HOST, "--port", str(port),
        "--tasks-file", str(options.tasks_file),
    )  # fmt: skip
    return ProcessSpec(name, "taskserver", argv, env, port, f"http://{HOST}:{port}/health")


def plan(options: StackOptions, token: str, supervisor_url: str) -> list[ProcessSpec]:
    """Every process of the stack, task servers first, then the balancer, then clients."""
    env = stack_env(options, token)
    specs = [
        taskserver_spec(options, env, f"server{number}", port)
        for number, port in enumerate(options.server_ports, start=1)
    ]
    backends = [
        f"--backend={s.name}=http://{HOST}:{s.port}"
        + (f" weight={options.weights[s.name]}" if s.name in options.weights else "")
        for s in specs
    ]
    balancer = python_command(
        "balancer", "--host", HOST, "--port", str(options.balancer_port),
        "--algorithm", absolute(options.algorithm), "--driver", "local", *backends,
        *options.balancer_flags(),
    )  # fmt: skip
    specs.append(
        ProcessSpec(
            "balancer",
            "balancer",
            balancer,
            {**env, "TICSLAB_SUPERVISOR_URL": supervisor_url},
            options.balancer_port,
            f"{options.balancer_url}/health",
        )
    )
    for number in range(1, options.clients + 1):
        name = f"client{number}"
        argv = python_command(
            "client", "--url", options.balancer_url, "--name", name, *CLIENT_OPTIONS
        )
        specs.append(ProcessSpec(name, "client", argv, env))
    return specs


class Stack:
    """Start with ``start()`` (returns once everything listens), end with ``stop()``."""

    def __init__(
        self, options: StackOptions, token: str, logs: LogSink, token_file: Path | None = None
    ) -> None:
        self.options = options
        self.token = token
        # Written only once every process listens: a stack that did not start (its port is
        # another stack's) must not overwrite the running stack's token.
        self.token_file = token_file
        self.logs = logs
        self.supervisor = Supervisor(logs, options.lang)
        self.supervisor_url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticslab-stack", daemon=True)

    def start(self) -> None:
        """Check the options, start every process; StartError (nothing left running) if not."""
        if line := refusal("up"):  # ticslab experiment's stacks too
            raise StartError(line)
        problems = self.options.problems()
        if problems:
            raise StartError("; ".join(problems))
        self.options.data_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise StartError(str(self._error)) from self._error
        if self.token_file is not None:
            try:
                write_token_file(self.token, self.token_file)
            except OSError as error:
                self.stop()
                message = Translator(TEXT, self.options.lang)("token_not_stored", error=error)
                raise StartError(message) from error

    def request_stop(self, now: bool = False) -> None:
        """Ask the stack to stop, without waiting (safe from a signal handler); ``now`` (a
        second Ctrl+C) kills every process instead of asking it to end."""
        self._stop_requested.set()
        loop = self._loop
        if loop is None or self._stop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._stop.set)
            if now:
                loop.call_soon_threadsafe(self.supervisor.kill_all)
        except RuntimeError:  # the loop closed meanwhile: everything is stopped already
            pass

    def stop(self) -> None:
        """Stop every process (clients, balancer, task servers) and wait until they are gone.
        Safe to call again once stopped."""
        if self._thread.is_alive():
            self.request_stop()
            self._thread.join()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._stop_requested.is_set():  # asked before the loop existed
            self._stop.set()
        sock = listening_socket(HOST)
        self.supervisor_url = f"http://{HOST}:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            supervisor_app(self.supervisor, self.token, self._scaler()),
            log_level="warning",
            log_config=log_config(),
            lifespan="off",
        )
        api = uvicorn.Server(config)
        api_task = asyncio.create_task(api.serve(sockets=[sock]))
        try:
            starting = asyncio.create_task(self._start_processes())
            stopping = asyncio.create_task(self._stop.wait())
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()
                self._error = KeyboardInterrupt("stopped while starting")
            elif starting.exception() is not None:
                self._error = starting.exception()
            else:
                self._ready.set()
                await stopping
        finally:
            await self.supervisor.stop_all()
            api.should_exit = True
            await api_task
            sock.close()
            self._ready.set()

    def _scaler(self) -> Scaler:
        """What adds and removes task servers live, with the same command as the first ones."""
        env = stack_env(self.options, self.token)
        return Scaler(self.supervisor, partial(taskserver_spec, self.options, env), HOST)

    async def _start_processes(self) -> None:
        """Task servers (all listening), then the balancer (listening), then the clients."""
        specs = plan(self.options, self.token, self.supervisor_url)
        for role in ("taskserver", "balancer", "client"):
            group = [await self.supervisor.spawn(s) for s in specs if s.role == role]
            try:
                await asyncio.gather(*(self.supervisor.wait_listening(m) for m in group))
            except ActionError as error:
                see_log = Translator(TEXT, self.options.lang)("see_log", error=error)
                raise StartError(see_log) from error
