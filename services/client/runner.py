"""The virtual users: coroutines sharing one httpx client, one rate limit and one plan."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx

from services.client.config import ClientConfig
from services.client.plan import Kind, Plan, Step, extra_title, is_expected, task_title
from services.client.stats import LARGEST_ID, Recorder

TASKS_PATH = "/api/tasks"
# A list asks for the newest page, as an app listing tasks would: the whole list grows with
# every run (``ticslab up``'s clients run for hours) and nobody reads it.
LIST_QUERY = {"order": "desc", "limit": 20}
MISSING_ID = 999_999_999  # an id no lab run gets near, so asking for it answers 404
# Bodies the task server must refuse with 400: no title, an empty title, not JSON at all.
BAD_BODIES = (b"{}", b'{"title": ""}', b"this is not json")
RETRY_BACKOFF = 0.2  # seconds before the first retry of a create; doubles each time


class RateLimiter:
    """Spaces requests evenly so all users together send at most ``rate`` per second."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next_slot = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


def make_client(config: ClientConfig) -> httpx.AsyncClient:
    """The one client every user shares; proxies from the environment are ignored on purpose,
    since the balancer is always on the lab's own network."""
    return httpx.AsyncClient(
        base_url=config.base_url,
        timeout=config.timeout,
        limits=httpx.Limits(
            max_connections=config.concurrency, max_keepalive_connections=config.concurrency
        ),
        headers={"User-Agent": f"ticslab-client ({config.name})"},
        trust_env=False,
    )


def no_answer_kind(error: httpx.HTTPError) -> str:
    """The name the report uses for a request that got no HTTP answer."""
    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    if isinstance(error, httpx.ConnectError):
        return "connect_error"
    return "transport_error"


def _task_in(response: httpx.Response) -> dict[str, Any] | None:
    """The task a create answered with, or None when the body is not a task (an id that is
    not a whole number from 0 to LARGEST_ID is not one)."""
    try:
        task = response.json()
    except ValueError:
        return None
    if not isinstance(task, dict):
        return None
    task_id = task.get("id")
    return task if type(task_id) is int and 0 <= task_id <= LARGEST_ID else None


class Load:
    """Runs the plan's operations against the balancer and records every request."""

    def __init__(
        self,
        config: ClientConfig,
        client: httpx.AsyncClient,
        recorder: Recorder,
        plan: Plan | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.recorder = recorder
        self.plan = plan or Plan(config.errors, config.tasks)
        self.limiter = RateLimiter(config.rate)
        self.run_id = secrets.token_hex(4)  # names this run in its report
        self._extras = 0
        self._deadline = time.monotonic() + config.duration if config.duration is not None else None

    async def run(self) -> None:
        """Every virtual user until the plan or the duration runs out."""
        async with asyncio.TaskGroup() as group:
            for _ in range(self.config.concurrency):
                group.create_task(self.user())

    async def user(self) -> None:
        while (step := self.next_step()) is not None:
            await self.perform(step)

    def next_step(self) -> Step | None:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return None
        return self.plan.next()

    async def perform(self, step: Step) -> None:
        if step.kind is Kind.CREATE:
            await self.create_kept(step.number)
        elif step.kind is Kind.LIST:
            await self.request(Kind.LIST, "GET", TASKS_PATH, params=LIST_QUERY)
        elif step.kind is Kind.COMPLETE:
            await self.complete_extra()
        elif step.kind is Kind.DELETE:
            await self.delete_extra()
        elif step.kind is Kind.FORCE_400:
            body = BAD_BODIES[(step.number - 1) % len(BAD_BODIES)]
            headers = {"Content-Type": "application/json"}
            await self.request(Kind.FORCE_400, "POST", TASKS_PATH, content=body, headers=headers)
        elif step.kind is Kind.FORCE_404:
            await self.request(Kind.FORCE_404, "DELETE", f"{TASKS_PATH}/{MISSING_ID}")
        elif step.kind is Kind.FORCE_500:
            await self.request(Kind.FORCE_500, "POST", f"{TASKS_PATH}/simulate-error")

    async def create_kept(self, number: int) -> None:
        title = task_title(self.config.name, number)
        task = await self.create(Kind.CREATE, title)
        if task is None:
            self.recorder.creates_failed += 1
        else:
            self.recorder.keep(task["id"], number)

    async def complete_extra(self) -> None:
        task = await self.create_extra()
        if task is not None:
            await self.request(Kind.COMPLETE, "PUT", f"{TASKS_PATH}/{task['id']}/complete")
            await self.request(Kind.DELETE, "DELETE", f"{TASKS_PATH}/{task['id']}")

    async def delete_extra(self) -> None:
        task = await self.create_extra()
        if task is not None:
            await self.request(Kind.DELETE, "DELETE", f"{TASKS_PATH}/{task['id']}")

    async def create_extra(self) -> dict[str, Any] | None:
        self._extras += 1
        return await self.create(Kind.EXTRA, extra_title(self.config.name, self._extras))

    async def create(self, kind: Kind, title: str) -> dict[str, Any] | None:
        """POST a task, retrying with the same Idempotency-Key when no answer or a 5xx came,
        so a server that dies mid-request neither loses the task nor makes it twice. The key
        is random: one that could be guessed could be used first by someone else."""
        headers = {"Idempotency-Key": secrets.token_urlsafe(18)}
        for attempt in range(self.config.retries + 1):
            if attempt:
                self.recorder.retries += 1
                await asyncio.sleep(RETRY_BACKOFF * 2 ** (attempt - 1))
            response = await self.request(
                kind, "POST", TASKS_PATH, json={"title": title}, headers=headers
            )
            if response is None or response.status_code >= 500:
                continue
            if response.status_code in (200, 201):
                return _task_in(response)
            return None  # a 4xx: asking again would get the same answer
        return None

    async def request(
        self, kind: Kind, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        """One rate-limited request, recorded; None when no HTTP answer came back."""
        await self.limiter.wait()
        start = time.perf_counter()
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            latency = time.perf_counter() - start
            detail = f"{method} {path}: {error!r}"
            self.recorder.record(kind, no_answer_kind(error), latency, None, detail)
            return None
        latency = time.perf_counter() - start
        status = str(response.status_code)
        detail = "" if is_expected(kind, status) else f"{method} {path}: {response.text[:200]}"
        server = response.headers.get("x-upstream-server")
        self.recorder.record(kind, status, latency, server, detail)
        return response
