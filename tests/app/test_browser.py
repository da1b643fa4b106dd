"""The planner in a real browser: Streamlit on localhost, headless Chromium driven over WebDriver.

Chromium comes from Debian (apt-get install -y chromium chromium-driver); .ci/run installs it. A test
never changes the machine it runs on (issue 16: running pytest as root used to apt-install Chromium
and about 130 system packages), so where the browser is missing this test is skipped with the reason.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tests.app import browser_check


def ensure_browser() -> str | None:
    """The skip reason when Chromium or ChromeDriver is missing (None when both are there). Installing
    them is .ci/run's job, never a test's."""
    reason = browser_check.missing_browser()
    return f"{reason}; .ci/run installs it, tests never do" if reason else None


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


def test_issue16_missing_browser_skips_without_installing(monkeypatch, tmp_path):
    """Issue 16: with Chromium missing, the test must skip with the reason, never run apt-get."""
    import subprocess

    def forbidden(*args, **kwargs):
        raise AssertionError(f"a test tried to run {args[0] if args else kwargs}")

    for name in ("run", "Popen", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, forbidden)
    monkeypatch.setattr(os, "system", forbidden)
    monkeypatch.setattr(browser_check, "CHROMIUM", str(tmp_path / "no-chromium"))
    reason = ensure_browser()
    assert reason and "chromium not installed" in reason and "tests never do" in reason
