"""``ticslab passwd FILE USER``: add a user to an ``--auth-users`` file, or change its password.

What ``htpasswd -B`` does, without needing apache2-utils: a bcrypt hash (cost 10 unless
``--cost``), the file rewritten atomically and 0600 (htpasswd.py). The password comes from
stdin when it is not a terminal (``echo secreto | ticslab passwd ...``, one line), else it is
asked twice without echo. An existing file with a bad line is refused, not rewritten.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TextIO

from services.balancer.htpasswd import (
    BCRYPT_BYTES,
    MAX_COST,
    MIN_COST,
    UsersFileError,
    parse_users,
    read_text,
    user_name_problem,
    with_user,
    write_atomically,
)
from services.balancer.passwd_i18n import TEXT
from services.common import printable
from services.lang import Translator, add_lang_argument, chosen, default_language

DEFAULT_COST = 10
MAX_LINE = 4096  # a password read from stdin: the first line, at most this long


class Refusal(Exception):
    """Nothing is written: the sentence says why."""


def cost(text: str) -> int:
    """An argparse type: a bcrypt cost from ``MIN_COST`` to ``MAX_COST``."""
    value = int(text) if text.isdigit() else 0
    if not MIN_COST <= value <= MAX_COST:
        raise argparse.ArgumentTypeError(f"expected {MIN_COST} to {MAX_COST}; got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    t = Translator(TEXT, default_language())
    parser.add_argument("file", type=Path, metavar="FILE", help=t("help_file"))
    parser.add_argument("user", metavar="USER", help=t("help_user"))
    parser.add_argument(
        "--cost",
        type=cost,
        default=DEFAULT_COST,
        metavar="N",
        help=t("help_cost", low=MIN_COST, high=MAX_COST, default=DEFAULT_COST),
    )
    add_lang_argument(parser, "language of what is printed")


def read_password(t: Translator, user: str, stdin: TextIO) -> str:
    """The password: the first line of a piped stdin, else asked twice at the terminal.
    Longer than bcrypt reads: refused, never cut short unseen."""
    if not stdin.isatty():
        password = stdin.readline(MAX_LINE).rstrip("\r\n")
    else:
        password = getpass.getpass(t("prompt", user=user))
        if getpass.getpass(t("prompt_again")) != password:
            raise Refusal(t("mismatch"))
    if not password:
        raise Refusal(t("no_password"))
    length = len(password.encode())
    if length > BCRYPT_BYTES:
        raise Refusal(t("too_long", length=length, maximum=BCRYPT_BYTES))
    return password


def set_password(t: Translator, path: Path, user: str, password: str, rounds: int) -> str:
    """Write ``user``'s new hash into ``path``; the sentence saying what was done."""
    import bcrypt  # only here: `ticslab passwd --help` stays quick

    text = read_text(path) if path.exists() else ""
    try:
        known = parse_users(text)
    except UsersFileError as error:
        raise Refusal(t("bad_file", file=path, problem=error)) from None
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()
    try:
        write_atomically(path, with_user(text, user, hashed))
    except OSError as error:
        raise Refusal(t("not_written", file=path, problem=error.strerror or error)) from None
    return t("changed" if user in known else "added", user=user, file=path)


def run(args: argparse.Namespace) -> int:
    t = Translator(TEXT, chosen(args.lang))
    try:
        if user_name_problem(args.user) is not None:
            raise Refusal(t("bad_user", user=args.user))
        password = read_password(t, args.user, sys.stdin)
        print(set_password(t, args.file, args.user, password, args.cost))
    except (Refusal, UsersFileError) as error:
        print(f"ticslab passwd: {printable(str(error))}", file=sys.stderr)
        return 2
    return 0
