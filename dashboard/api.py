"""The HTTP client the dashboard talks to the balancer with.

Read-only mode is enforced here as well as in the app's ``check_action``: every write goes
through ``_write``, which refuses before any byte leaves the process.

Every answer is decoded in a worker thread (a long task list must not stall the screen), and
every string in it, keys too, comes out ``printable``: no title, path or server name the
network sends can drive the terminal. The widgets show them as plain text, never as markup.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from services.common import (
    CA_FILE,
    CONTROL_ACTION_SECONDS,
    DASHBOARD_AGENT,
    default_tls_dir,
    error_message,
    printable,
)

READ_SECONDS, CONNECT_SECONDS = 3.0, 2.0
TIMEOUT = httpx.Timeout(READ_SECONDS, connect=CONNECT_SECONDS)
# A control action answers when it is done: as long as the slowest may take (a pause's hold,
# then a restart), plus an ordinary answer's wait. Given up sooner, it still ends and is
# recorded (the balancer's control.py), but the dashboard would say it failed.
ACTION_TIMEOUT = httpx.Timeout(CONTROL_ACTION_SECONDS + READ_SECONDS, connect=CONNECT_SECONDS)
NOT_JSON = object()
# A decoded body as the balancer sent it: from the network, so its shape is checked where it
# is read (poll.py, history.py), never assumed here.
Json = Any


class ApiError(Exception):
    """A request that did not succeed; ``message`` is in words a student understands."""

    def __init__(self, message: str, status: int | None = None) -> None:
        message = printable(message)  # it may quote the balancer, or an httpx error
        super().__init__(message)
        self.message = message
        self.status = status


class Unreachable(ApiError):
    """The balancer did not answer at all (refused, timed out, name not found)."""


class CaFileError(ApiError):
    """``--ca`` names no readable PEM CA file (the command line says so in its language)."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"--ca {path}: not a readable PEM CA file ({detail})")
        self.path, self.detail = printable(path), printable(detail)


class ReadOnlyError(ApiError):
    """A write was attempted by a read-only dashboard."""

    def __init__(self) -> None:
        super().__init__("read-only dashboard: writes are disabled")


@dataclass
class TaskList:
    """The newest tasks, newest first, and how many tasks are stored in all."""

    newest: list[dict[str, Any]]
    total: int


def printable_json(value: Any) -> Any:
    """``value`` with every string in it, keys included, made ``printable``."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list):
        return [printable_json(item) for item in value]
    if isinstance(value, dict):
        return {printable(str(key)): printable_json(item) for key, item in value.items()}
    return value


def decoded(content: bytes) -> Any:
    """A JSON answer, shown-safe (``printable_json``); ``NOT_JSON`` if it is none."""
    try:
        return printable_json(orjson.loads(content))
    except (ValueError, RecursionError):  # orjson.JSONDecodeError is a ValueError
        return NOT_JSON


def server_path(server: str, *rest: str) -> str:
    """``/control/servers/<server>/...`` with the name URL-quoted: a name with ``/``, ``?``,
    ``#`` or spaces stays one path segment and never becomes a query or another route."""
    return "/".join(["/control/servers", quote(server, safe=""), *rest])


def total_count(response: httpx.Response) -> int | None:
    """The ``X-Total-Count`` header of a paged task list; None when absent or not a number."""
    value = response.headers.get("x-total-count", "").strip()
    return int(value) if value.isdigit() else None


def trusted(ca: str | None) -> ssl.SSLContext | bool:
    """What an https:// balancer's certificate is checked against: ``ca`` (``--ca``), else
    the system's store. A CA file that cannot be read is a CaFileError, at start."""
    if ca is None:
        return True
    try:
        return ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as error:
        raise CaFileError(ca, str(error)) from None


def ca_hint(error: httpx.HTTPError) -> str:
    """What to do when the certificate was not trusted: name --ca and the local CA."""
    if "CERTIFICATE_VERIFY_FAILED" not in str(error):
        return ""
    local = default_tls_dir() / CA_FILE
    return f"; the certificate is not trusted: use --ca FILE (ticslab's local CA: {local})"


class BalancerClient:
    """Reads the balancer's monitoring routes and sends control requests."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        read_only: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = TIMEOUT,
        ca: str | None = None,
    ) -> None:
        self.read_only = read_only or not token
        headers = {"Accept": "application/json", "User-Agent": DASHBOARD_AGENT}
        self._token = token
        self._http = httpx.AsyncClient(
            base_url=url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            verify=trusted(ca),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, *, json: Any = None, **kwargs: Any) -> Json:
        return (await self._exchange(method, path, json=json, **kwargs))[0]

    async def _exchange(
        self, method: str, path: str, *, json: Any = None, **kwargs: Any
    ) -> tuple[Any, httpx.Response]:
        """The decoded body and the response, or ApiError."""
        try:
            response = await self._http.request(method, path, json=json, **kwargs)
        except httpx.TimeoutException as error:
            raise Unreachable(
                f"timed out talking to the balancer ({type(error).__name__})"
            ) from None
        except httpx.HTTPError as error:
            raise Unreachable(
                f"cannot reach the balancer: {error or type(error).__name__}{ca_hint(error)}"
            ) from None
        if response.is_error:  # ApiError makes the message printable
            message = await asyncio.to_thread(error_message, response.content)
            status_line = f"{response.status_code} {response.reason_phrase}"
            raise ApiError(message or status_line, response.status_code)
        body = await asyncio.to_thread(decoded, response.content)
        if body is NOT_JSON:
            raise ApiError(f"{method} {path} did not answer JSON", response.status_code)
        return body, response

    async def _get(self, path: str, **params: Any) -> Json:
        return await self._request("GET", path, params=params or None)

    async def _write(self, method: str, path: str, body: Any = None) -> Json:
        """The only way a write leaves the dashboard; refused in read-only mode. Every write
        is a control action, given as long as the slowest may take (``ACTION_TIMEOUT``)."""
        if self.read_only:
            raise ReadOnlyError()
        headers = {"Authorization": f"Bearer {self._token}"}
        return await self._request(method, path, json=body, headers=headers, timeout=ACTION_TIMEOUT)

    # Reads (open routes).
    async def status(self) -> Json:
        return await self._get("/status")

    async def error_stats(self) -> Json:
        return await self._get("/errors/stats")

    async def events(self, since: int | None = None) -> Json:
        return await self._get("/events", **({} if since is None else {"since": since}))

    async def history(self, since: int | None = None) -> Json:
        """Per-second samples of the balancer's last minutes (``/history``), newer than
        ``since`` (a unix second) when given."""
        return await self._get("/history", **({} if since is None else {"since": since}))

    async def tasks(self, newest: int) -> TaskList:
        """The ``newest`` tasks and the total (``X-Total-Count``). A server that does not page
        (the seed's API) answers the whole list, oldest first, without the header."""
        query = {"order": "desc", "limit": newest}
        body, response = await self._exchange("GET", "/tareas", params=query)
        if not isinstance(body, list):
            raise ApiError("GET /tareas did not answer a list of tasks")
        total = total_count(response)
        if total is None:
            total, body = len(body), body[::-1]
        return TaskList([task for task in body[:newest] if isinstance(task, dict)], total)

    async def weight(self, server: str) -> int:
        """``server``'s weight as the balancer has it now (from ``/status``)."""
        status = await self.status()
        servers = status.get("servers") if isinstance(status, dict) else None
        for entry in servers if isinstance(servers, list) else []:
            if isinstance(entry, dict) and entry.get("name") == server:
                weight = entry.get("weight")
                if isinstance(weight, int) and not isinstance(weight, bool):
                    return weight
        raise ApiError(f"the balancer's /status gives no weight for {server}")

    async def control_info(self) -> Json:
        return await self._get("/control")

    # Writes (need the token).
    async def server_action(self, server: str, action: str) -> Json:
        return await self._write("POST", server_path(server, action))

    async def set_fault(self, server: str, fault: dict[str, Any]) -> Json:
        return await self._write("PUT", server_path(server, "fault"), fault)

    async def set_weight(self, server: str, weight: int) -> Json:
        return await self._write("PUT", server_path(server, "weight"), {"weight": weight})

    async def set_algorithm(self, algorithm: str) -> Json:
        return await self._write("PUT", "/control/algorithm", {"algorithm": algorithm})

    async def reset_stats(self) -> Json:
        return await self._write("POST", "/control/stats/reset")

    async def add_server(self) -> Json:
        """One more task server (the driver's next name, weight 1)."""
        return await self._write("POST", "/control/servers", {})

    async def remove_server(self, server: str) -> Json:
        return await self._write("DELETE", server_path(server))

    async def start_rollout(self, strategy: str) -> Json:
        return await self._write("POST", "/control/rollout", {"strategy": strategy})
