"""The users file of ``--auth-users``: an htpasswd file of bcrypt hashes.

The format nginx (``auth_basic_user_file``) and HAProxy (``userlist``) read and
``htpasswd -B`` writes: one ``USER:HASH`` a line, ``#`` comments and blank lines ignored.
Only bcrypt (``$2y$``, ``$2b$``, ``$2a$``) is taken: Apache's MD5 (``$apr1$``), ``{SHA}`` and
crypt are fast hashes a stolen file gives away, so a line holding one is refused at start,
by its number, without ever echoing the hash. ``ticslab passwd`` writes lines here too.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

# A users file is a class's list, not a directory: past this it is refused, unread.
MAX_FILE_BYTES = 1024 * 1024
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
BCRYPT_HASH = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
MIN_COST, MAX_COST = 4, 31
# bcrypt reads at most 72 bytes of a password (htpasswd -B and nginx cut the rest).
BCRYPT_BYTES = 72
# Hash kinds named in the refusal, so the teacher knows what to redo (never the hash itself).
OTHER_KINDS = (
    ("$apr1$", "Apache MD5"),
    ("{SHA}", "SHA-1"),
    ("$1$", "MD5-crypt"),
    ("$5$", "SHA-256-crypt"),
    ("$6$", "SHA-512-crypt"),
    ("$argon2", "Argon2"),
)
REMAKE = "make it with `ticslab passwd FILE USER` or `htpasswd -B FILE USER`"


class UsersFileError(ValueError):
    """The users file cannot be used: one line saying why (and which line)."""


def user_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a user (None when it can): 1-64 letters, digits, ``._@-``,
    starting with a letter or digit, so it is safe in a file, a header and a terminal."""
    if USER_NAME.fullmatch(name) is None:
        return "a user name is 1 to 64 letters, digits or . _ @ -, starting with a letter or digit"
    return None


def hash_kind(text: str) -> str:
    """The name of a hash that is not bcrypt, for the refusal."""
    for prefix, kind in OTHER_KINDS:
        if text.startswith(prefix):
            return kind
    return "crypt or unknown"


def parse_line(number: int, line: str) -> tuple[str, str] | None:
    """``(user, hash)`` of one line, None for a blank or comment line; UsersFileError naming
    the line otherwise."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    user, sep, hashed = text.partition(":")
    if not sep:
        raise UsersFileError(f"line {number}: expected USER:HASH")
    if problem := user_name_problem(user):
        raise UsersFileError(f"line {number}: {problem}")
    match = BCRYPT_HASH.fullmatch(hashed)
    if match is None:
        kind = "not bcrypt: " + hash_kind(hashed) if not hashed.startswith("$2") else "malformed"
        raise UsersFileError(f"line {number}: user {user}: the hash is {kind}; {REMAKE}")
    if not MIN_COST <= int(match.group(1)) <= MAX_COST:
        raise UsersFileError(f"line {number}: user {user}: bcrypt cost out of {MIN_COST}-31")
    return user, hashed


def parse_users(text: str) -> dict[str, str]:
    """Every user and its hash; UsersFileError at the first bad line or a repeated user."""
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        entry = parse_line(number, line)
        if entry is None:
            continue
        user, hashed = entry
        if user in users:
            raise UsersFileError(f"line {number}: user {user} is listed twice")
        users[user] = hashed
    return users


def read_text(path: Path) -> str:
    """The file's text, bounded; UsersFileError when it cannot be read."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise UsersFileError(f"{error.strerror or error}") from None
    if len(data) > MAX_FILE_BYTES:
        raise UsersFileError(f"larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise UsersFileError("not UTF-8 text") from None


def load_users(path: Path) -> dict[str, str]:
    """The users of an htpasswd file; UsersFileError (one line, naming the file) when the file
    is missing, unreadable, has a bad line or no user at all."""
    try:
        users = parse_users(read_text(path))
    except UsersFileError as error:
        raise UsersFileError(f"--auth-users {path}: {error}") from None
    if not users:
        raise UsersFileError(f"--auth-users {path}: no users; {REMAKE}")
    return users


def with_user(text: str, user: str, hashed: str) -> str:
    """The file's text with ``user``'s line replaced (or added at the end); every other line,
    comments included, kept as it was."""
    lines = text.splitlines()
    line = f"{user}:{hashed}"
    for index, old in enumerate(lines):
        if old.strip().partition(":")[0] == user and not old.strip().startswith("#"):
            lines[index] = line
            break
    else:
        lines.append(line)
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` so that a reader sees the old file or the new one, never half of one:
    a 0600 temporary file beside it, fsynced, renamed over it."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
