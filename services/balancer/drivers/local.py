"""The local driver: asks the supervisor of ``ticslab up`` to act on its task-server processes.

The supervisor listens on loopback (its URL comes in ``TICSLAB_SUPERVISOR_URL``) and checks
the same bearer token as the control API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from services.balancer.drivers.base import DriverFailure, DriverUnsupported
from services.common import DRIVER_WAIT, LOCAL_ACTIONS, answer_text

# Restart waits for the process to listen again, so allow the supervisor time.
TIMEOUT = httpx.Timeout(DRIVER_WAIT[1], connect=DRIVER_WAIT[0])


class LocalDriver:
    """Processes of ``ticslab up``, through its supervisor's HTTP API."""

    name = "local"
    actions = LOCAL_ACTIONS  # the supervisor runs on this machine

    def __init__(self, supervisor_url: str, token: str) -> None:
        self.url = supervisor_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.url, timeout=TIMEOUT, headers={"Authorization": f"Bearer {token}"}
        )

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        try:
            return await self._client.request(method, path, json=body)
        except httpx.HTTPError as error:
            reason = str(error) or type(error).__name__
            message = f"the ticslab up supervisor at {self.url} failed: {reason}"
            raise DriverFailure(message) from error

    async def processes(self) -> dict[str, str]:
        response = await self._request("GET", "/processes")
        if response.status_code != 200:
            raise DriverFailure(f"the supervisor answered {response.status_code}: {response.text}")
        listed = response.json()["processes"]
        return {name: p["state"] for name, p in listed.items() if p["role"] == "taskserver"}

    async def perform(self, server: str, action: str) -> dict[str, Any]:
        return self._answer(await self._request("POST", f"/processes/{server}/{action}"))

    async def recreate(self, server: str, options: Sequence[str] | None) -> dict[str, Any]:
        """A new process for ``server``: with the allowed ``options`` (a rollout's version,
        kept for its later restarts; the supervisor checks them again), or None: as before."""
        body = {"options": list(options)} if options is not None else None
        return self._answer(await self._request("POST", f"/processes/{server}/restart", body))

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        """The supervisor's answer as a driver's: DriverUnsupported for 400/404/409."""
        if response.status_code == 200:
            body = response.json()
            return {"result": body["result"], "process": body["process"], "pid": body.get("pid")}
        message = answer_text(response, "error")
        if response.status_code in (400, 404, 409):
            raise DriverUnsupported(message)
        raise DriverFailure(message)

    async def aclose(self) -> None:
        await self._client.aclose()
