"""Authentication at the edge (``--auth-users FILE``): HTTP Basic in front of the proxy.

nginx's ``auth_basic`` and HAProxy's ``userlist`` + ``http-request auth``, as an ASGI layer
that only proxied requests pass through (the balancer's own routes, /health to /control,
never do). What it guarantees, and why:

- A proxied request without good credentials gets 401 and ``WWW-Authenticate: Basic
  realm="ticslab"``, a JSON error in the request's language, counted as ``401_UNAUTHORIZED``
  in ``/errors/stats``; the request is never sent to a server.
- The server sees who asked in ``X-Authenticated-User``, and never the password
  (``Authorization`` is not forwarded). A client's own ``X-Authenticated-User`` is always
  removed, with authentication off too, so no server can be fooled by one.
- bcrypt is slow on purpose (~50 ms at cost 10): it runs in a small pool of its own threads,
  ``CHECK_THREADS``, with at most ``MAX_WAITING`` checks queued (503 past that), so a flood of
  bad passwords cannot hold the event loop that proxies everyone else.
- Timing tells nothing: ``bcrypt.checkpw`` compares in constant time, and an unknown user is
  checked against a dummy hash of the same cost, as long as a known one.
- A client address that failed ``MAX_FAILURES`` times within ``FAILURE_WINDOW`` seconds gets
  429 with ``Retry-After`` until its oldest failure leaves the window; at most
  ``MAX_ADDRESSES`` addresses are remembered (the least recently failed go first).
- A header verified in the last ``CACHE_SECONDS`` is not checked again (a client sends the same
  one on every request): the cache is keyed by a SHA-256 of the header, holds at most
  ``CACHE_ENTRIES``; only verified headers go in. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import math
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import bcrypt
import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from services.balancer.htpasswd import BCRYPT_BYTES, load_users
from services.balancer.proxy import endpoint
from services.common import error_type
from services.web import asked_language, json_error

if TYPE_CHECKING:
    from services.balancer.balancer import Balancer

REALM = b'Basic realm="ticslab"'
AUTHORIZATION = b"authorization"
USER_HEADER = b"x-authenticated-user"
# An Authorization header longer than this is no Basic credential of ours: refused unread.
MAX_HEADER_BYTES = 1024
CHECK_THREADS = 2  # half the lab machine's cores at most
MAX_WAITING = 32  # checks queued for those threads; past it, 503 at once
MAX_FAILURES = 5
FAILURE_WINDOW = 10.0  # seconds
MAX_ADDRESSES = 4096
CACHE_SECONDS = 30.0
CACHE_ENTRIES = 1024
DUMMY_COST = 10  # the cost ``ticslab passwd`` uses; the dummy hash takes the file's highest


class FailureLimiter:
    """Failed attempts per client address in a sliding window, in bounded memory."""

    def __init__(
        self,
        limit: int = MAX_FAILURES,
        window: float = FAILURE_WINDOW,
        addresses: int = MAX_ADDRESSES,
    ) -> None:
        self.limit = limit
        self.window = window
        self.addresses = addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str, now: float) -> float | None:
        """Seconds until ``address`` may try again, None when it may now."""
        failures = self._failures.get(address)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        if len(failures) < self.limit:
            return None
        return failures[0] + self.window - now

    def failed(self, address: str, now: float) -> None:
        failures = self._failures.pop(address, None) or deque(maxlen=self.limit)
        failures.append(now)
        self._failures[address] = failures  # the most recently failed last
        while len(self._failures) > self.addresses:
            self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)


class VerifiedCache:
    """Authorization headers verified lately, by their SHA-256, with the user each names."""

    def __init__(self, seconds: float = CACHE_SECONDS, entries: int = CACHE_ENTRIES) -> None:
        self.seconds = seconds
        self.entries = entries
        self._verified: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    @staticmethod
    def key(header: bytes) -> bytes:
        return hashlib.sha256(header).digest()

    def user(self, key: bytes, now: float) -> str | None:
        entry = self._verified.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._verified[key]
            return None
        return entry[0]

    def add(self, key: bytes, user: str, now: float) -> None:
        if self.entries <= 0:
            return
        self._verified[key] = (user, now + self.seconds)
        self._verified.move_to_end(key)
        while len(self._verified) > self.entries:
            self._verified.popitem(last=False)


def basic_credentials(header: bytes) -> tuple[str, bytes] | None:
    """``(user, password)`` of a ``Basic`` Authorization value, None when it is not one."""
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"basic" or len(header) > MAX_HEADER_BYTES:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode(), password
    except UnicodeDecodeError:
        return None


class Checker:
    """bcrypt checks off the event loop, in a bounded pool with a bounded queue."""

    def __init__(self, users: dict[str, str], threads: int = CHECK_THREADS) -> None:
        self.users = {name: hashed.encode() for name, hashed in users.items()}
        cost = max((int(h[4:6]) for h in users.values()), default=DUMMY_COST)
        # Costs as much as the dearest real hash: an unknown name is no quicker to refuse.
        self.dummy = bcrypt.hashpw(b"not a password", bcrypt.gensalt(cost))
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bcrypt")
        self.waiting = 0

    @property
    def busy(self) -> bool:
        return self.waiting >= MAX_WAITING

    async def check(self, user: str, password: bytes) -> bool:
        """Whether ``password`` is ``user``'s; the same work whether or not the user exists."""
        hashed = self.users.get(user)
        self.waiting += 1
        try:
            loop = asyncio.get_running_loop()
            right = await loop.run_in_executor(
                self.pool, bcrypt.checkpw, password[:BCRYPT_BYTES], hashed or self.dummy
            )
        finally:
            self.waiting -= 1
        return right and hashed is not None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def edge_checker(users_file: str | None) -> Checker | None:
    """The checker of ``--auth-users``, None without one; UsersFileError (a ValueError) when
    the file cannot be used."""
    return None if users_file is None else Checker(load_users(Path(users_file)))


def without(
    headers: list[tuple[bytes, bytes]], drop: tuple[bytes, ...]
) -> list[tuple[bytes, bytes]]:
    """The headers minus those named in ``drop``: a new list, the scope's is not changed."""
    return [(name, value) for name, value in headers if name not in drop]


class EdgeAuth:
    """The ASGI layer in front of the proxy; ``checker`` None: authentication is off and only
    a client's own ``X-Authenticated-User`` is removed."""

    def __init__(
        self, app: ASGIApp, balancer: Balancer, lang: str, checker: Checker | None
    ) -> None:
        self.app = app
        self.balancer = balancer
        self.lang = lang
        self.checker = checker
        self.limiter = FailureLimiter()
        self.cache = VerifiedCache()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if self.checker is None:
            if any(name == USER_HEADER for name, _ in headers):
                scope = {**scope, "headers": without(headers, (USER_HEADER,))}
            await self.app(scope, receive, send)
            return
        user = await self._user(scope, headers, receive, send)
        if user is None:
            return
        kept = without(headers, (AUTHORIZATION, USER_HEADER))
        kept.append((USER_HEADER, user.encode()))
        await self.app({**scope, "headers": kept}, receive, send)

    async def _user(
        self, scope: Scope, headers: list[tuple[bytes, bytes]], receive: Receive, send: Send
    ) -> str | None:
        """The user the request authenticates as, or None once it has been refused."""
        assert self.checker is not None
        given = [value for name, value in headers if name == AUTHORIZATION]
        credentials = basic_credentials(given[0]) if len(given) == 1 else None
        if credentials is None:
            await self._refuse(scope, send, 401, "auth_required", [(b"www-authenticate", REALM)])
            return None
        now = time.monotonic()
        key = self.cache.key(given[0])
        if (cached := self.cache.user(key, now)) is not None:
            return cached
        address = scope["client"][0] if scope.get("client") else ""
        wait = self.limiter.retry_after(address, now)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            retry = [(b"retry-after", b"%d" % seconds)]
            await self._refuse(scope, send, 429, "auth_too_many", retry, seconds=seconds)
            return None
        if self.checker.busy:
            await self._refuse(scope, send, 503, "auth_busy", [(b"retry-after", b"1")])
            return None
        user, password = credentials
        if not await self.checker.check(user, password):
            self.limiter.failed(address, time.monotonic())
            await self._refuse(scope, send, 401, "auth_failed", [(b"www-authenticate", REALM)])
            return None
        self.cache.add(key, user, time.monotonic())
        return user

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        status: int,
        code: str,
        extra: list[tuple[bytes, bytes]],
        **fields: int,
    ) -> None:
        """The edge's own answer: counted as a request and as an error of its status's type
        (``401_UNAUTHORIZED``), never sent to a server; uvicorn discards an unread body."""
        self.balancer.count_request()
        lang = asked_language(Headers(scope=scope), self.lang)
        answer = json_error(status, code=code, lang=lang, **fields)
        message = orjson.loads(answer.body)["error"]
        self.balancer.errors.record(status, message, endpoint(scope), kind=error_type(status))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(answer.body)),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
