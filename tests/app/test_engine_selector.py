"""The planner's engine selector: every page that prices time offers the profiles (default vllm, each
profile's title and description in the help), passes the choice to the cost model, and puts
`--engine` in the CLI line it shows to reproduce."""
from __future__ import annotations

import json
import shlex

import pytest

pytest.importorskip("streamlit")

import hardware  # noqa: E402
import workloads  # noqa: E402
from app import cli, views  # noqa: E402
from perfmodel import engines  # noqa: E402
from planning.sweep import SweepSpec  # noqa: E402
from tests.app.test_app import DEFAULTS, metrics, no_traceback, page  # noqa: E402


def codes(at) -> list[str]:
    return [c.value for c in at.code]


def test_selector_offers_every_profile_with_the_default_and_help():
    at = page("plan").run()
    no_traceback(at)
    box = at.selectbox(key="plan.engine")
    assert list(box.options) == list(engines.names()) and box.value == engines.DEFAULT_ENGINE
    for name in engines.names():
        assert engines.load(name).title in box.help and name in box.help


def test_plan_page_engine_changes_the_numbers_and_the_cli_line():
    at = page("plan").run()
    before = metrics(at)
    assert any("--engine vllm" in c for c in codes(at))
    at.selectbox(key="plan.engine").set_value("hf-eager").run()
    no_traceback(at)
    result = views.plan(workloads.load("llama-3-8b"), hardware.load("h200-sxm"), views.scenario(DEFAULTS), "hf-eager")
    assert metrics(at)["TPOT"] == views.metric_texts(result["row"])["TPOT"] != before["TPOT"]
    assert any("--engine hf-eager" in c for c in codes(at))


def test_cli_line_reproduces_the_plan_of_an_engine(capsys):
    inputs = {**DEFAULTS, "batch": 4}
    model, hw = workloads.load("llama-3.2-1b"), hardware.load("h200-sxm-calibrated")
    result = views.plan(model, hw, views.scenario(inputs), "torch-compile")
    line = views.cli_command("h200-sxm-calibrated", "llama-3.2-1b", inputs, "torch-compile")
    argv = [a for a in shlex.split(line)[1:] if a != "--breakdown"] + ["--json"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["engine"] == "torch-compile" and result["summary"]["engine"][0] == "torch-compile"
    assert printed["tpot_s"] == pytest.approx(result["row"]["tpot_s"], rel=1e-12)
    with pytest.raises(ValueError, match="'nope'"):
        views.plan(model, hw, views.scenario(inputs), "nope")


def test_compare_page_engine_reaches_the_results_and_the_sweep_spec():
    at = page("compare").run()
    before = metrics(at)
    at.selectbox(key="compare.engine").set_value("hf-eager").run()
    no_traceback(at)
    assert metrics(at)["Best throughput"] != before["Best throughput"]
    doc = views.sweep_document(["h200-sxm"], ["llama-3-8b"], {"batch": [1], "prompt": 512, "gen": 64},
                               "tpot_s", "hf-eager")
    assert SweepSpec.from_dict(doc).engine.name == "hf-eager"


#: (page, engine selectbox key, metric that moves, CLI commands that must carry the engine)
SOLVER_PAGES = (("kv", "kv.engine", "Decode per token", ("perfmodel solve kv serve", "perfmodel solve kv setting")),
                ("offload", "offload.lp.engine", "Throughput", ("perfmodel solve offload",)),
                ("bits", "bits.engine", "Decode step (modeled)", ("perfmodel solve bits",)))


def test_solver_pages_pass_the_engine_and_show_it_in_the_cli_line():
    for name, key, metric, commands in SOLVER_PAGES:
        at = page(name).run()
        before = metrics(at)[metric]
        at.selectbox(key=key).set_value("hf-eager").run()
        no_traceback(at)
        assert metrics(at)[metric] != before, name
        for command in commands:
            assert any(c.startswith(command) and "--engine hf-eager" in c for c in codes(at)), command