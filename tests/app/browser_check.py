"""Drive the planner in a real headless Chromium: load the Plan page, change the batch, check that
the rendered numbers change, save a screenshot.

    python tests/app/browser_check.py --screenshot docs/planner.png

Needs Debian's `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver); talks
the W3C WebDriver protocol to chromedriver directly over HTTP (a few calls, so no Selenium needed).
Everything runs on localhost: the Streamlit server, chromedriver and the browser, which is started
with networking features (sync, component updates, QUIC) off.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "app" / "planner.py"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference
ENTER, CTRL, RELEASE = "\ue007", "\ue009", "\ue000"
#: Chromium as root in a container: no sandbox, no GPU, nothing that phones out.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
                 "--window-size=1500,1700"]


class BrowserMissing(RuntimeError):
    """Chromium or chromedriver is not installed."""


def missing_browser() -> str | None:
    """Why the check cannot run here (None when it can)."""
    for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not (path and Path(path).exists()):
            return f"{name} not installed (apt-get install -y chromium chromium-driver)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(probe, timeout_s: float, what: str, interval_s: float = 0.2):
    """Call `probe` until it returns something truthy; TimeoutError naming `what` otherwise."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (OSError, urllib.error.URLError, WebDriverError) as err:
            last = err
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}" + (f" (last error: {last})" if last else ""))


class WebDriverError(RuntimeError):
    pass


class WebDriver:
    """The handful of W3C WebDriver commands the check needs."""

    def __init__(self, url: str):
        self.url, self.session = url.rstrip("/"), None

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"{}").get("value")
        except urllib.error.HTTPError as err:
            raise WebDriverError(f"{method} {path}: {err.code} {err.read()[:300]!r}") from None

    def start(self, user_data_dir: str) -> None:
        options = {"binary": CHROMIUM, "args": CHROMIUM_ARGS + [f"--user-data-dir={user_data_dir}"]}
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def cmd(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def find_all(self, css: str) -> list[str]:
        return [e[ELEMENT] for e in self.cmd("POST", "/elements", {"using": "css selector", "value": css})]

    def text(self, element: str) -> str:
        return self.cmd("GET", f"/element/{element}/text")

    def prop(self, element: str, name: str):
        return self.cmd("GET", f"/element/{element}/property/{name}")

    def type(self, element: str, text: str) -> None:
        self.cmd("POST", f"/element/{element}/value", {"text": text})

    def screenshot(self) -> bytes:
        return base64.b64decode(self.cmd("GET", "/screenshot"))

    def quit(self) -> None:
        if self.session:
            try:
                self._call("DELETE", f"/session/{self.session}")
            except (OSError, WebDriverError):
                pass


def start_app(port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamlit", "run", str(ENTRY), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200


def metrics(driver: WebDriver) -> dict[str, str]:
    """The Plan page's metric cards, label -> rendered value."""
    labels = [driver.text(e) for e in driver.find_all('[data-testid="stMetricLabel"]')]
    values = [driver.text(e) for e in driver.find_all('[data-testid="stMetricValue"]')]
    return dict(zip(labels, values))


def set_number(driver: WebDriver, label: str, value: int) -> None:
    """Replace a Streamlit number input's value (select all, type, Enter commits it)."""
    field = wait_until(lambda: driver.find_all(f'input[aria-label="{label}"]'), 30, f"the {label!r} input")[0]
    driver.type(field, CTRL + "a" + RELEASE + str(value) + ENTER)


def check(screenshot: Path, batch: int = 128, timeout_s: float = 90.0) -> dict:
    """Run the whole check; returns the metrics before and after the change (raises on failure)."""
    reason = missing_browser()
    if reason:
        raise BrowserMissing(reason)
    app_port, driver_port = free_port(), free_port()
    app = start_app(app_port)
    chromedriver = subprocess.Popen([CHROMEDRIVER, f"--port={driver_port}"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    driver = WebDriver(f"http://127.0.0.1:{driver_port}")
    profile = tempfile.mkdtemp(prefix="planner-chromium-")
    try:
        wait_until(lambda: app.poll() is None and http_ok(f"http://127.0.0.1:{app_port}/_stcore/health"),
                   timeout_s, "the Streamlit server")
        wait_until(lambda: http_ok(f"http://127.0.0.1:{driver_port}/status"), 30, "chromedriver")
        driver.start(profile)
        driver.get(f"http://127.0.0.1:{app_port}/")  # Plan is the default page
        before = wait_until(lambda: _ready(metrics(driver)), timeout_s, "the Plan page's metrics")
        set_number(driver, "Batch", batch)
        after = wait_until(lambda: _changed(metrics(driver), before), timeout_s, "the metrics to change")
        time.sleep(1.5)  # let the charts finish their redraw before the picture
        after = metrics(driver)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(driver.screenshot())
        return {"before": before, "after": after, "screenshot": str(screenshot)}
    finally:
        driver.quit()
        for proc in (chromedriver, app):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def _ready(found: dict[str, str]) -> dict[str, str] | None:
    return found if "tok/s" in found.get("Throughput", "") and found.get("Memory") else None


def _changed(found: dict[str, str], before: dict[str, str]) -> dict[str, str] | None:
    keys = ("Throughput", "Memory")
    return found if _ready(found) and all(found.get(k) != before.get(k) for k in keys) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "planner.png")
    parser.add_argument("--batch", type=int, default=128, help="batch to type into the Plan page")
    args = parser.parse_args(argv)
    try:
        result = check(args.screenshot, args.batch)
    except BrowserMissing as err:
        print(f"browser check: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
