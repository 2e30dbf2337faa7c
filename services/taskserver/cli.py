"""``ticslab taskserver``: options on the command line or in TICSLAB_* variables (Compose).

The admin token is read only from ``TICSLAB_TOKEN``, never from the command line, where every
user of the machine could read it with ``ps``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from services.balancer.cli import seconds, whole
from services.common import START_FAULTS
from services.lang import add_lang_argument, chosen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--name", default=env("TICSLAB_NAME", "server1"), help="server name (TICSLAB_NAME)"
    )
    parser.add_argument(
        "--port", type=int, default=env("TICSLAB_PORT", "5001"), help="port (TICSLAB_PORT)"
    )
    parser.add_argument(
        "--host", default=env("TICSLAB_HOST", "127.0.0.1"), help="address (TICSLAB_HOST)"
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a Host name /admin answers besides localhost, IP addresses and the Compose "
        "service names; repeatable (TICSLAB_ALLOWED_HOSTS=NAME,NAME)",
    )
    parser.add_argument(
        "--tasks-file",
        type=Path,
        default=env("TICSLAB_TASKS_FILE", "tasks.json"),
        help="the shared tasks file, created as [] if missing (TICSLAB_TASKS_FILE)",
    )
    parser.add_argument(
        "--storage",
        default=env("TICSLAB_STORAGE", ""),
        metavar="URL",
        help="where the tasks are: file:PATH or a path (the shared file, as --tasks-file), or "
        "postgresql://USER:PASSWORD@HOST:PORT/DB (needs pip install -e '.[postgres]'); "
        "default: --tasks-file (TICSLAB_STORAGE)",
    )
    parser.add_argument(
        "--request-timeout",
        type=seconds,
        default=env("TICSLAB_REQUEST_TIMEOUT", "10"),
        metavar="S",
        help="seconds a client has to send its request headers, and for each pause in its "
        "body (408 after; TICSLAB_REQUEST_TIMEOUT, default 10)",
    )
    parser.add_argument(
        "--max-connections",
        type=whole(1),
        default=env("TICSLAB_MAX_CONNECTIONS"),
        metavar="N",
        help="open client connections, 503 past it (TICSLAB_MAX_CONNECTIONS; default: as many "
        "as the file-descriptor limit allows)",
    )
    parser.add_argument(
        "--fault",
        choices=START_FAULTS,
        default=env("TICSLAB_FAULT", "none"),
        help="start in this fault mode, with its default parameters: a broken new version to "
        "roll out (TICSLAB_FAULT, default none)",
    )
    add_lang_argument(parser, "language of error answers to requests without Accept-Language")


def run(args: argparse.Namespace) -> int:
    from services.common import allowed_hosts_from_env
    from services.protocol import Limits, serve_guarded
    from services.taskserver.app import TaskServerSettings, create_app
    from services.taskserver.storage import StorageConfigError, StorageError, storage_kind

    if args.storage:
        try:
            storage_kind(args.storage)
        except StorageConfigError as error:
            print(f"ticslab taskserver: {error}", file=sys.stderr)
            return 2
    settings = TaskServerSettings(
        name=args.name,
        tasks_file=args.tasks_file.resolve(),
        port=args.port,
        token=os.environ.get("TICSLAB_TOKEN") or None,
        allowed_hosts=tuple(args.allowed_host or allowed_hosts_from_env()),
        lang=chosen(args.lang),
        fault=args.fault,
        storage=args.storage,
    )
    try:
        app = create_app(settings)
    except (StorageError, StorageConfigError) as error:
        print(f"ticslab taskserver: {error}", file=sys.stderr)
        return 2
    # The balancer's client-side bounds (a slowloris costs it nothing), one descriptor per
    # connection; bodies are bounded by the app, which counts its 413 (validation.py).
    limits = Limits(
        request_timeout=args.request_timeout,
        max_connections=args.max_connections,
        lang=settings.lang,
    )
    serve_guarded(app, args.host, args.port, limits, fds_each=1)
    return 0
