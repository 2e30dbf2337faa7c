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

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
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
        response = await self._request("POST", f"/processes/{server}/{action}")
        body = self._answer(response, 200)
        return {"result": body["result"], "process": body["process"], "pid": body.get("pid")}

    async def recreate(self, server: str, options: Sequence[str] | None) -> dict[str, Any]:
        """A new process for ``server``: with the allowed ``options`` (a rollout's version,
        kept for its later restarts; the supervisor checks them again), or None: as before."""
        body = {"options": list(options)} if options is not None else None
        answer = self._answer(
            await self._request("POST", f"/processes/{server}/restart", json=body), 200
        )
        return {"result": answer["result"], "process": answer["process"], "pid": answer.get("pid")}

    async def scale_out(self, name: str | None) -> dict[str, Any]:
        """One more task server process on the next free port (launcher/scaling.py)."""
        asked = {} if name is None else {"name": name}
        response = await self._request("POST", "/processes", json=asked)
        body = self._answer(response, 201)
        return {"server": body["server"], "url": body["url"], "process": body["process"]}

    async def scale_in(self, server: str) -> dict[str, Any]:
        body = self._answer(await self._request("DELETE", f"/processes/{server}"), 200)
        return {"result": body["result"], "process": body["process"]}

    @staticmethod
    def _answer(response: httpx.Response, expected: int) -> dict[str, Any]:
        """The supervisor's JSON answer; its refusals (400, 404, 409) DriverUnsupported, any
        other status DriverFailure, each with the supervisor's own sentence."""
        if response.status_code == expected:
            body: dict[str, Any] = response.json()
            return body
        message = answer_text(response, "error")
        if response.status_code in (400, 404, 409):
            raise DriverUnsupported(message)
        raise DriverFailure(message)

    async def aclose(self) -> None:
        await self._client.aclose()
