"""A minimal Chrome DevTools Protocol client over trio-websocket, for driving Debian's headless
Chromium from a test without Selenium or a downloaded browser."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--remote-debugging-port=0", "--window-size=1280,900",
]
STARTUP_TIMEOUT = 30  # seconds for Chromium to write DevToolsActivePort: a cold start is slow


def chromium_or_skip() -> str:
    """The browser binary; outside CI a missing one skips, in CI it fails (CI installs it)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    message = "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class Page:
    """One browser tab reached through a flattened DevTools session."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._arrived = trio.Event()
        self.session: str | None = None
        self.exceptions: list[dict[str, Any]] = []

    async def read_forever(self) -> None:
        import json

        while True:
            message = json.loads(await self._ws.get_message())
            if "id" in message:
                self._replies[message["id"]] = message
                self._arrived.set()
            elif message.get("method") == "Runtime.exceptionThrown":
                self.exceptions.append(message["params"])

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        import json

        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        await self._ws.send_message(json.dumps(message))
        while ident not in self._replies:
            await self._arrived.wait()
            self._arrived = trio.Event()
        reply = self._replies.pop(ident)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode((await self.call("Page.captureScreenshot", **params))["data"])


@asynccontextmanager
async def open_page(url: str, profile: Path) -> AsyncIterator[Page]:
    """Start headless Chromium with a fresh profile, open ``url`` in a tab, yield the tab."""
    binary = chromium_or_skip()
    process = await trio.lowlevel.open_process(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        with trio.fail_after(STARTUP_TIMEOUT):
            while not port_file.exists() or len(port_file.read_text().split()) < 2:
                if process.poll() is not None:
                    raise RuntimeError(f"chromium exited with {process.returncode} at start")
                await trio.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        async with open_websocket_url(
            f"ws://127.0.0.1:{port}{path}", max_message_size=64 << 20
        ) as ws, trio.open_nursery() as nursery:
            page = Page(ws)
            nursery.start_soon(page.read_forever)
            target = await page.call("Target.createTarget", url="about:blank")
            attached = await page.call(
                "Target.attachToTarget", targetId=target["targetId"], flatten=True
            )
            page.session = attached["sessionId"]
            await page.call("Runtime.enable")
            await page.call("Page.enable")
            await page.call(
                "Emulation.setDeviceMetricsOverride", width=1280, height=900,
                deviceScaleFactor=1, mobile=False,
            )
            await page.call("Page.navigate", url=url)
            yield page
            nursery.cancel_scope.cancel()
    finally:
        process.terminate()
        with trio.move_on_after(5) as waited:
            await process.wait()
        if waited.cancelled_caught:
            process.kill()
