"""Turning request bodies and headers into checked values, or a clear 4xx for the student."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from services.web import BodyTooLarge, bounded_body

MAX_BODY_BYTES = 64 * 1024
MAX_PAGE = 10_000  # tasks in one ?limit= page (no limit at all still lists every task)
MAX_TITLE_CHARS = 200
MAX_KEY_CHARS = 200
# Fields the server sets itself: ignored in a body, so a task read with GET can be sent back.
SERVER_FIELDS = frozenset({"id", "created_at", "updated_at", "server", "idempotency_key"})
# A quiesce covers the moment between its answer and a pause; minutes would only hide writes.
MAX_QUIESCE_SECONDS = 30.0


class InputError(Exception):
    """Bad input: answered with ``status`` (400 unless said) as the error ``code`` of
    services/errors.py, filled in with ``fields``, in the request's language."""

    def __init__(self, code: str, status: int = 400, /, **fields: Any) -> None:
        super().__init__(code)
        self.code = code
        self.status = status
        self.fields = fields


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refusing with 413 as soon as it is known to exceed ``limit`` bytes."""
    try:
        return await bounded_body(request, limit)
    except BodyTooLarge:
        raise InputError("body_too_large", 413, limit_bytes=limit) from None


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
    raise InputError("not_json", 415, content_type=declared[:60])


def page_query(request: Request) -> tuple[int, int | None, bool]:
    """``?offset=M&limit=N&order=asc|desc`` of a listing: (offset, limit or None, newest
    first). Parameters are optional; other parameters are ignored, as caches add their own."""
    query = request.query_params
    offset = _whole_number(query, "offset", None) or 0
    limit = _whole_number(query, "limit", MAX_PAGE)
    order = query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise InputError("bad_order", value=order[:20])
    return offset, limit, order == "desc"


def _whole_number(query: Any, name: str, maximum: int | None) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    limits = {} if maximum is None else {"maximum": maximum}
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        raise InputError(f"bad_{name}", value=raw[:20], **limits)
    value = int(raw)
    if maximum is not None and value > maximum:
        raise InputError(f"bad_{name}", value=raw, **limits)
    return value


def parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or an error saying exactly what is wrong with it."""
    if not body.strip():
        raise InputError("body_empty")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("body_not_utf8") from None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InputError("body_not_json", detail=str(error)) from None
    if not isinstance(data, dict):
        raise InputError("body_not_object", type=_kind(data))
    return data


def new_task_fields(data: dict[str, Any]) -> tuple[str, bool]:
    """``title`` (required) and ``completed`` (default false) of a POST."""
    _refuse_unknown_fields(data)
    if "title" not in data:
        raise InputError("field_missing", field="title")
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
        raise InputError("nothing_to_change")
    return changes


def _refuse_unknown_fields(data: dict[str, Any]) -> None:
    """A misspelt field (``"complete": true``) must not be silently dropped."""
    unknown = sorted(set(data) - {"title", "completed"} - SERVER_FIELDS)
    if unknown:
        raise InputError("unknown_fields", fields=[name[:40] for name in unknown[:3]])


def check_title(title: Any) -> str:
    if not isinstance(title, str):
        raise InputError("title_not_text", type=_kind(title))
    text = title.strip()
    if not text:
        raise InputError("title_empty")
    if len(text) > MAX_TITLE_CHARS:
        raise InputError("title_too_long", length=len(text), maximum=MAX_TITLE_CHARS)
    if "\x00" in text:  # PostgreSQL's text cannot hold it: refused alike on every backend
        raise InputError("title_has_nul")
    return text


def check_completed(completed: Any) -> bool:
    if not isinstance(completed, bool):
        raise InputError("completed_not_bool", type=_kind(completed))
    return completed


def quiesce_seconds(body: bytes) -> float:
    """The ``seconds`` of ``{"seconds": 2}``: a number above 0 and at most 30, nothing else."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    seconds = data.get("seconds") if isinstance(data, dict) and data.keys() == {"seconds"} else None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InputError("bad_quiesce")
    if not 0 < seconds <= MAX_QUIESCE_SECONDS:
        raise InputError("bad_quiesce_seconds", maximum=MAX_QUIESCE_SECONDS)
    return float(seconds)


def task_id(raw: str) -> int | None:
    """The integer id in a path, or None when it is not a whole number (so no task has it).
    Python's integers have no size limit; a number past every stored id is simply not found."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 40 else None


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header: 1-200 visible ASCII characters, or absent. Sent twice
    it is refused: which one the client meant is not for the server to guess."""
    keys = request.headers.getlist("idempotency-key")
    if not keys:
        return None
    if len(keys) > 1:
        raise InputError("two_idempotency_keys", count=len(keys))
    key = keys[0]
    if not 0 < len(key) <= MAX_KEY_CHARS or not all(" " < char < "\x7f" for char in key):
        raise InputError("bad_idempotency_key", maximum=MAX_KEY_CHARS)
    return key


def _kind(value: Any) -> str:
    """A JSON value's type, by JSON's own name (the same in every language)."""
    names = {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
