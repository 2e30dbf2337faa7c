"""Turning request bodies and headers into checked values, or a clear 4xx for the student."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

MAX_BODY_BYTES = 64 * 1024
MAX_PAGE = 10_000  # tasks in one ?limit= page (no limit at all still lists every task)
MAX_TITLE_CHARS = 200
MAX_KEY_CHARS = 200
EXAMPLE = 'send JSON like {"title": "comprar pan"}'
# Fields the server sets itself: ignored in a body, so a task read with GET can be sent back.
SERVER_FIELDS = frozenset({"id", "created_at", "updated_at", "server", "idempotency_key"})
JSON_HINT = "send it with the header 'Content-Type: application/json'"
# A quiesce covers the moment between its answer and a pause; minutes would only hide writes.
MAX_QUIESCE_SECONDS = 30.0


class InputError(Exception):
    """Bad input: answered as ``{"error": message}`` with ``status`` (400 unless said)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refusing with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object; it must be declared as JSON (see :func:`require_json`)."""
    body = await read_body(request)
    require_json(request, body)
    return parse_object(body)


def require_json(request: Request, body: bytes) -> None:
    """Refuse a body not declared as JSON with 415. Any web page can make a visitor's browser
    post text/plain or a form to any address without asking; a JSON post must ask first
    (a CORS preflight, which this server never grants), so tasks come only from real clients."""
    if not body:
        return
    declared = request.headers.get("content-type", "")
    media = declared.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    shown = repr(declared[:60]) if declared else "missing"
    raise InputError(f"the Content-Type is {shown}, not application/json; {JSON_HINT}", 415)


def page_query(request: Request) -> tuple[int, int | None, bool]:
    """``?offset=M&limit=N&order=asc|desc`` of a listing: (offset, limit or None, newest
    first). Parameters are optional; other parameters are ignored, as caches add their own."""
    query = request.query_params
    offset = _whole_number(query, "offset", None) or 0
    limit = _whole_number(query, "limit", MAX_PAGE)
    order = query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise InputError(
            f"'order' must be asc (oldest first) or desc (newest first), not {order[:20]!r}"
        )
    return offset, limit, order == "desc"


def _whole_number(query: Any, name: str, maximum: int | None) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    top = f" from 0 to {maximum}" if maximum is not None else " (0 or more)"
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        raise InputError(f"'{name}' must be a whole number{top}, not {raw[:20]!r}")
    value = int(raw)
    if maximum is not None and value > maximum:
        raise InputError(f"'{name}' must be a whole number{top}, not {value}")
    return value


def _too_large(limit: int) -> InputError:
    return InputError(f"the body is larger than {limit // 1024} KiB; send a smaller task", 413)


def parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or an error saying exactly what is wrong with it."""
    if not body.strip():
        raise InputError(f"the body is empty; {EXAMPLE}")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("the body is not valid UTF-8 text") from None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InputError(f"the body is not valid JSON ({error}); {EXAMPLE}") from None
    if not isinstance(data, dict):
        raise InputError(f"the body must be a JSON object, not {_kind(data)}; {EXAMPLE}")
    return data


def new_task_fields(data: dict[str, Any]) -> tuple[str, bool]:
    """``title`` (required) and ``completed`` (default false) of a POST."""
    _refuse_unknown_fields(data)
    if "title" not in data:
        raise InputError(f"the field 'title' is missing; {EXAMPLE}")
    return check_title(data["title"]), check_completed(data.get("completed", False))


def task_changes(data: dict[str, Any]) -> dict[str, Any]:
    """The ``title`` and/or ``completed`` a PUT changes; at least one must be there."""
    _refuse_unknown_fields(data)
    changes: dict[str, Any] = {}
    if "title" in data:
        changes["title"] = check_title(data["title"])
    if "completed" in data:
        changes["completed"] = check_completed(data["completed"])
    if not changes:
        raise InputError('nothing to change; send {"title": "..."} and/or {"completed": true}')
    return changes


def _refuse_unknown_fields(data: dict[str, Any]) -> None:
    """A misspelt field (``"complete": true``) must not be silently dropped."""
    unknown = sorted(set(data) - {"title", "completed"} - SERVER_FIELDS)
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown[:3])
        field = "field" if len(unknown) == 1 else "fields"
        raise InputError(f"unknown {field} {names}; a task takes only 'title' and 'completed'")


def check_title(title: Any) -> str:
    if not isinstance(title, str):
        raise InputError(f"'title' must be text, not {_kind(title)}")
    title = title.strip()
    if not title:
        raise InputError("'title' must not be empty")
    if len(title) > MAX_TITLE_CHARS:
        raise InputError(f"'title' has {len(title)} characters; the maximum is {MAX_TITLE_CHARS}")
    return title


def check_completed(completed: Any) -> bool:
    if not isinstance(completed, bool):
        raise InputError(f"'completed' must be true or false, not {_kind(completed)}")
    return completed


def quiesce_seconds(body: bytes) -> float:
    """The ``seconds`` of ``{"seconds": 2}``: a number above 0 and at most 30, nothing else."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    seconds = data.get("seconds") if isinstance(data, dict) and data.keys() == {"seconds"} else None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InputError('send JSON like {"seconds": 2}, with no other field')
    if not 0 < seconds <= MAX_QUIESCE_SECONDS:
        raise InputError(f"'seconds' must be above 0 and at most {MAX_QUIESCE_SECONDS:g}")
    return float(seconds)


def task_id(raw: str) -> int | None:
    """The integer id in a path, or None when it is not a whole number (so no task has it).
    Python's integers have no size limit; a number past every stored id is simply not found."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 40 else None


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header: 1-200 visible ASCII characters, or absent."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 0 < len(key) <= MAX_KEY_CHARS or not all(" " < char < "\x7f" for char in key):
        raise InputError(
            f"the Idempotency-Key header must be 1 to {MAX_KEY_CHARS} visible ASCII characters"
        )
    return key


def _kind(value: Any) -> str:
    """How a student would name a JSON value's type."""
    names = {
        dict: "an object",
        list: "a list",
        str: "text",
        bool: "true/false",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
