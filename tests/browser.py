"""A real headless Chromium driven over the DevTools protocol, for the web dashboard's tests.

textual-serve draws the dashboard with xterm.js on a canvas, so the page's DOM holds no text.
The text is read from xterm.js's own buffer: a script that runs before the page's catches the
``Terminal`` textual-serve creates (it stores it as ``this.terminal``), and each read returns
the terminal's rows as lines.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-port=0", "--window-size=1400,1000",
)  # fmt: skip

# Keeps every value assigned to a ``terminal`` property (textual-serve's ``this.terminal =
# new Terminal(...)``) in window.__terminals, and assigns it as usual.
CATCH_TERMINAL = """
(() => {
  const seen = [];
  Object.defineProperty(window, "__terminals", {value: seen});
  Object.defineProperty(Object.prototype, "terminal", {
    configurable: true,
    set(value) {
      Object.defineProperty(this, "terminal", {
        value, writable: true, configurable: true, enumerable: true,
      });
      seen.push(value);
    },
  });
})();
"""
TERMINAL = "window.__terminals.find((t) => t && t.buffer && t.buffer.active)"
SCREEN_TEXT = f"""
(() => {{
  const terminal = {TERMINAL};
  if (!terminal) return "";
  const buffer = terminal.buffer.active, rows = [];
  for (let i = 0; i < buffer.length; i++) rows.push(buffer.getLine(i).translateToString(true));
  return rows.join("\\n");
}})()
"""


def chromium_problem() -> str | None:
    """Why no Chromium can be used here (the browser tests skip saying so), or None."""
    if not Path(CHROMIUM).exists():
        return f"no {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)"
    return None


class Chromium:
    """One headless Chromium with a profile of its own, and its first tab."""

    def __init__(self) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="ticslab-test-chromium-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    async def start(self, timeout: float = 30.0) -> Chromium:
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"  # Chromium writes its port there
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit code {self.proc.poll()})")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        self._http = aiohttp.ClientSession()
        async with self._http.get(f"http://127.0.0.1:{port}/json/list") as answer:
            targets = await answer.json()
        tab = next(target for target in targets if target["type"] == "page")
        self._ws = await self._http.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0)
        await self.call("Page.enable")
        await self.call("Page.addScriptToEvaluateOnNewDocument", source=CATCH_TERMINAL)
        return self

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events that arrive meanwhile are dropped)."""
        assert self._ws is not None
        number = next(self._ids)
        await self._ws.send_json({"id": number, "method": method, "params": params})
        async for message in self._ws:
            answer = message.json()
            if answer.get("id") == number:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
        raise RuntimeError("chromium closed the DevTools connection")

    async def open(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def screen_text(self) -> str:
        """The terminal's rows as the page shows them ("" until the terminal exists)."""
        result = await self.call("Runtime.evaluate", expression=SCREEN_TEXT, returnByValue=True)
        return str(result["result"].get("value") or "")

    async def wait_for_text(self, *words: str, timeout: float = 30.0) -> str:
        """The screen's text once it shows every one of ``words``."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = await self.screen_text()
            if all(word in text for word in words):
                return text
            await asyncio.sleep(0.1)
        raise AssertionError(f"the page never showed {words} within {timeout}s; it shows:\n{text}")

    async def press(self, key: str) -> None:
        """Type one printable key into the terminal, as a keyboard would."""
        await self.call("Runtime.evaluate", expression=f"{TERMINAL}.focus()")
        await self.call("Input.dispatchKeyEvent", type="keyDown", key=key, text=key)
        await self.call("Input.dispatchKeyEvent", type="keyUp", key=key)

    async def close(self) -> None:
        """Quit Chromium (its tabs close as when a user quits) and remove its profile."""
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self.proc is not None and self.proc.poll() is None:
            # Its helpers (renderer, network service) outlive it a moment, writing the profile.
            helpers = psutil.Process(self.proc.pid).children(recursive=True)
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
            _, left = await asyncio.to_thread(psutil.wait_procs, helpers, 10)
            for helper in left:
                helper.kill()
        shutil.rmtree(self.profile, ignore_errors=True)
