"""A small headless-Chromium driver over the DevTools protocol, for the browser tests.

``Browser(width)`` starts Chromium with a phone- or desktop-sized viewport; ``goto(url)`` loads a page and collects
what went wrong while it loaded (exceptions, ``console.error`` calls, error log entries, failed requests);
``js(expr)`` evaluates JavaScript in the page and returns its (JSON-able) value.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request

import websocket

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0"]


class Browser:
    """One Chromium process with one page, ``width`` x ``height`` CSS pixels (mobile emulation below 600 px)."""

    def __init__(self, width: int = 1280, height: int = 900):
        self._profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        self.proc = subprocess.Popen([shutil.which("chromium"), *FLAGS, f"--user-data-dir={self._profile.name}",
                                      f"--window-size={width},{height}", "about:blank"],
                                     stderr=subprocess.PIPE, text=True)
        port = None
        deadline = time.time() + 60
        while port is None and time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode} before it listened")
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = int(m.group(1)) if m else None
        if port is None:
            raise RuntimeError("chromium did not print its DevTools address within 60 s")
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
        ws_url = next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]
        self.ws = websocket.create_connection(ws_url, timeout=60)
        self._id = 0
        self.events: list[dict] = []
        for method in ("Runtime.enable", "Log.enable", "Network.enable", "Page.enable"):
            self.call(method)
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=width < 600)

    def call(self, method: str, **params) -> dict:
        """Send one DevTools command and return its result (events that arrive meanwhile are kept)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait(self, seconds: float) -> None:
        """Collect events for ``seconds`` (scripts, fonts and widgets finish loading meanwhile)."""
        end = time.time() + seconds
        self.ws.settimeout(0.2)
        try:
            while time.time() < end:
                try:
                    self.events.append(json.loads(self.ws.recv()))
                except websocket.WebSocketTimeoutException:
                    pass
        finally:
            self.ws.settimeout(60)

    def goto(self, url: str, settle: float = 3.0, quiet: float = 0.75) -> list[str]:
        """Load ``url``; return the problems seen while it loaded and settled (empty list: a clean page). It has
        settled when the load event has fired and no request has been in flight for ``quiet`` seconds (scripts,
        fonts and widget modules load meanwhile), or after ``settle`` seconds at most."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        end = time.time() + settle
        self.ws.settimeout(0.1)
        loaded, inflight, calm_since = False, set(), time.time()
        try:
            while time.time() < end:
                try:
                    msg = json.loads(self.ws.recv())
                except websocket.WebSocketTimeoutException:
                    if loaded and not inflight and time.time() - calm_since >= quiet:
                        break
                    continue
                self.events.append(msg)
                method, rid = msg.get("method", ""), msg.get("params", {}).get("requestId")
                if method == "Page.loadEventFired":
                    loaded = True
                elif method == "Network.requestWillBeSent":
                    inflight.add(rid)
                elif method in ("Network.loadingFinished", "Network.loadingFailed"):
                    inflight.discard(rid)
                calm_since = time.time() if method.startswith("Network.") else calm_since
        finally:
            self.ws.settimeout(60)
        return problems(self.events)

    def js(self, expression: str):
        """Evaluate ``expression`` in the page (promises awaited) and return its value."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"].get("text", "exception"))
        return res.get("result", {}).get("value")

    def screenshot(self, path) -> None:
        import base64

        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.kill()
            self.proc.wait()
            self._profile.cleanup()


def problems(events: list[dict]) -> list[str]:
    """Exceptions, console errors, error log entries and failed requests among DevTools ``events``."""
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            out.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", ""))[:300])
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            out.append("console.error: " + args[:300])
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"log: {p['entry']['text'][:300]} ({p['entry'].get('url', '')})")
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            out.append(f"failed request: {p.get('errorText')}")
    return out
