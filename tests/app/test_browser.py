"""The planner in a real browser: Streamlit on localhost, headless Chromium driven over WebDriver.

Chromium comes from Debian (apt-get install -y chromium chromium-driver). When it is missing and
this runs as root with apt-get available, the test installs it once (Debian's packages only, no
browser download); it is skipped, with the reason, only where that install is impossible.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.app import browser_check

APT_PACKAGES = ("chromium", "chromium-driver")


def ensure_browser() -> str | None:
    """Install Debian's Chromium and ChromeDriver if missing and possible; the skip reason if not."""
    reason = browser_check.missing_browser()
    if reason is None:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{reason}; cannot install it here (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *APT_PACKAGES]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode:
            return f"{reason}; `{' '.join(cmd)}` failed: {done.stderr.strip()[-300:]}"
    browser_check.CHROMIUM = shutil.which("chromium") or browser_check.CHROMIUM
    browser_check.CHROMEDRIVER = shutil.which("chromedriver") or browser_check.CHROMEDRIVER
    return browser_check.missing_browser()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_plan_page_in_chromium_reacts_to_the_batch(tmp_path):
    reason = ensure_browser()
    if reason:
        pytest.skip(reason)
    # PLANNER_SCREENSHOT=docs/planner.png keeps the picture (the README's screenshot is made so)
    shot = Path(os.environ.get("PLANNER_SCREENSHOT") or tmp_path / "planner.png")
    result = browser_check.check(shot, batch=128)
    before, after = result["before"], result["after"]
    for label in ("TTFT", "TPOT", "Throughput", "Cost per Mtok", "Memory"):
        assert before.get(label) and after.get(label), (label, before, after)
    assert after["Throughput"] != before["Throughput"]
    assert after["Memory"] != before["Memory"]
    # the rendered numbers are the cost model's: compare with the page helpers at batch 128
    from tests.app.test_app import expected_metrics

    assert before == expected_metrics("llama-3-8b", "h200-sxm")
    assert after == expected_metrics("llama-3-8b", "h200-sxm", batch=128)
    width, height = png_size(shot.read_bytes())
    assert width >= 1000 and height >= 800
