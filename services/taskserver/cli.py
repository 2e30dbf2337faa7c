"""``ticslab taskserver``: options on the command line or in TICSLAB_* variables (Compose).

The admin token is read only from ``TICSLAB_TOKEN``, never from the command line, where every
user of the machine could read it with ``ps``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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
    add_lang_argument(parser, "language of error answers to requests without Accept-Language")


def run(args: argparse.Namespace) -> int:
    from services.common import allowed_hosts_from_env, serve
    from services.taskserver.app import Settings, create_app
    from services.taskserver.storage import TasksFileError

    settings = Settings(
        name=args.name,
        tasks_file=args.tasks_file.resolve(),
        port=args.port,
        token=os.environ.get("TICSLAB_TOKEN") or None,
        allowed_hosts=tuple(args.allowed_host or allowed_hosts_from_env()),
        lang=chosen(args.lang),
    )
    try:
        app = create_app(settings)
    except TasksFileError as error:
        print(f"ticslab taskserver: {error}", file=sys.stderr)
        return 2
    serve(app, args.host, args.port)
    return 0
