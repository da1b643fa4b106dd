"""The Visual generation page and its pure helpers: the page shows the cost model's numbers, a
widget change changes them, and the CLI line it prints reproduces them."""
from __future__ import annotations

import json
import shlex

import pytest

from app import dit_views

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

DEFAULTS = {"model": "flux.1-dev", "height": 1024, "width": 1024, "frames": 1, "steps": 28, "cfg": False, "batch": 1,
            "engine": "torch-compile", "devices": 1, "w_bits": 16, "a_bits": 16, "density": 1.0,
            "cached_fraction": 0.0}


def page() -> AppTest:
    return AppTest.from_string("from app.ui import visual\nvisual.render()\n", default_timeout=60)


def test_page_shows_the_model_numbers_and_reacts_to_steps():
    at = page().run()
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    expected = dit_views.metric_texts(dit_views.predict(DEFAULTS, "h200-sxm-calibrated"))
    assert shown["End to end"] == expected["End to end"] and shown["Cost per image"] == expected["Cost per image"]
    at.sidebar.number_input(key="visual.flux.1-dev.steps").set_value(4).run()
    fewer = dit_views.metric_texts(dit_views.predict({**DEFAULTS, "steps": 4}, "h200-sxm-calibrated"))
    assert {m.label: m.value for m in at.metric}["End to end"] == fewer["End to end"]


def test_bad_resolution_shows_a_message_not_a_traceback():
    at = page().run()
    at.sidebar.number_input(key="visual.flux.1-dev.h").set_value(1000).run()
    assert not at.exception and any("multiple of 16" in e.value for e in at.error)


def test_cli_line_reproduces_the_page(capsys):
    from app.cli import main

    inputs = {**DEFAULTS, "model": "wan2.1-t2v-1.3b", "height": 480, "width": 832, "frames": 33, "cfg": True,
              "devices": 2, "density": 0.5}
    line = dit_views.cli_command(inputs, "h200-sxm-calibrated")
    assert main(shlex.split(line)[1:] + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["e2e_s"] == pytest.approx(dit_views.predict(inputs, "h200-sxm-calibrated").e2e_s)


def test_every_preset_notes_the_ones_that_cannot_run_it():
    frame = dit_views.every_preset({**DEFAULTS, "devices": 8})
    assert set(frame.loc[frame["e2e_s"].isna(), "hardware"]) >= {"rtx-4090"}
    assert frame["e2e_s"].notna().sum() >= 5
