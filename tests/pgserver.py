"""A real PostgreSQL server for the tests and benchmarks: the machine's own binaries (Debian's
``postgresql`` package), a cluster made in a temporary folder, listening on 127.0.0.1 on a free
port, stopped and deleted on ``stop``.

PostgreSQL refuses to run as root, so under root (CI, containers) every binary runs as the
unprivileged ``nobody`` through ``runuser``, in a folder that user owns. Nothing here is a
mock: the server is the one a class would install.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from support import free_port

USER = "ticslab"  # the cluster's superuser; trust authentication, loopback only
UNPRIVILEGED = "nobody"
START_SECONDS = 30


def binaries() -> Path | None:
    """The folder of ``initdb``, ``pg_ctl`` and ``createdb``: on PATH, or Debian's
    ``/usr/lib/postgresql/N/bin`` (the newest N); None when PostgreSQL is not installed."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_major)
    return Path(found[-1]).parent if found else None


def _major(path: str) -> int:
    version = Path(path).parent.parent.name
    return int(version) if version.isdigit() else 0


def postgres_problem() -> str | None:
    """Why no test server can run here (the tests skip saying it), or None."""
    if binaries() is None:
        return "PostgreSQL is not installed (apt-get install postgresql; .ci/run installs it)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL refuses to run as root"
    return None


class PostgresServer:
    """One throwaway cluster. ``url(name)`` is a database's ``postgresql://`` URL."""

    def __init__(self) -> None:
        folder = binaries()
        if folder is None:
            raise RuntimeError(postgres_problem())
        self.bin = folder
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="ticslab-postgres-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:  # the cluster's folder belongs to the user that runs it
            shutil.chown(self.folder, UNPRIVILEGED)
        self.running = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        """initdb (once) and start; RuntimeError with the server's log if it does not start."""
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "-E", "UTF8")
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=on -c max_connections=200"
        )
        try:
            self._run(
                "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log),
                "-w", "-t", str(START_SECONDS), "start",
            )  # fmt: skip
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{self._log_tail()}") from None
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: rolls back sessions; ``immediate``: as a crash)."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self.running = False

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        return self.url(name)

    def close(self) -> None:
        """Stop it and delete its folder."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self._as_root:
            command = ["runuser", "-u", UNPRIVILEGED, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=START_SECONDS + 30, cwd=self.folder
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""
