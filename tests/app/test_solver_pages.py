"""Solver pages under AppTest: each renders with its defaults and shows the solver's own numbers;
impossible requests show the solver's message; a page whose solver is missing says so."""
from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import hardware  # noqa: E402
import workloads  # noqa: E402
from app import solver_views  # noqa: E402
from tests.app.test_app import metrics, no_traceback, page  # noqa: E402


def errors(at: AppTest) -> str:
    return " | ".join(e.value for e in at.error)


# -- bit allocation -------------------------------------------------------------------------------
def test_bits_page_shows_the_allocation_of_the_demo_sensitivities():
    at = page("bits").run()
    no_traceback(at)
    model, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm")
    out = solver_views.allocate(solver_views.demo_sensitivities(model, 0), model, hw, 4.0)
    shown = metrics(at)
    assert shown["Average bits"] == f"{out['result']['avg_bits']:.3f}"
    assert shown["Predicted loss vs uniform"] == f"{out['result']['predicted_gain']:.3f}x"
    assert float(shown["Predicted loss vs uniform"][:-1]) < 1      # beats uniform on its own loss model
    assert any("SYNTHETIC" in c.value for c in at.caption)


def test_bits_page_impossible_budgets_are_messages():
    at = page("bits").run()
    at.number_input(key="bits.avg_bits").set_value(-1.0).run()
    no_traceback(at)
    assert "avg_bits" in errors(at)
    at.number_input(key="bits.avg_bits").set_value(4.0)
    at.number_input(key="bits.latency").set_value(0.001).run()      # 1 us for 128 linear layers
    no_traceback(at)
    assert "infeasible" in errors(at) and "smallest feasible" in errors(at)


def test_bits_page_reads_uploaded_sensitivities():
    csv = "name,params,coef\na,1000,1.0\nb,1000,4.0\nc,2000,0.5\n"
    at = page("bits").run()
    at.file_uploader(key="bits.upload").upload("sens.csv", csv.encode(), "text/csv").run()
    no_traceback(at)
    widths = at.dataframe[0].value.set_index("name")["width"]
    assert widths["b"] > widths["a"] > widths["c"]      # more sensitive groups get more bits
    at.file_uploader(key="bits.upload").set_value(("bad.csv", b"x,y\n1,2\n", "text/csv")).run()
    no_traceback(at)
    assert "missing column" in errors(at)


def test_bits_page_within_layer_scope_keeps_each_layer_average():
    csv = ("name,layer,params,coef\nq:0,q,100,1.0\nq:1,q,100,64.0\nd:0,d,100,0.01\nd:1,d,100,0.02\n")
    at = page("bits").run()
    at.file_uploader(key="bits.upload").upload("cols.csv", csv.encode(), "text/csv").run()
    shared = at.dataframe[0].value.groupby("layer")["width"].mean()
    assert shared.max() - shared.min() > 1          # one budget moves bits to the layer with large coefficients
    at.checkbox(key="bits.within").check().run()
    no_traceback(at)
    within = at.dataframe[0].value.groupby("layer")["width"].mean()
    assert within.tolist() == pytest.approx([4.0, 4.0])
    assert any("--scope layer" in c.value for c in at.code)
    at.number_input(key="bits.memory").set_value(1.0).run()
    assert "scope: 'layer' takes an average-bit budget only" in errors(at)


# -- KV budgets -----------------------------------------------------------------------------------
def test_kv_page_capacity_and_setting_match_the_solver():
    at = page("kv").run()
    no_traceback(at)
    model, hw = workloads.load("llama-3.1-8b"), hardware.load("h200-sxm")
    cap = solver_views.kv_capacity(model, hw, 32768, 8)
    shown = metrics(at)
    assert shown["Max users at 32,768 tokens"] == f"{int(cap.iloc[0]['value']):,}"
    assert shown["Max context for 8 users"] == f"{int(cap.iloc[1]['value']):,} tokens"
    best = solver_views.kv_setting(model, hw, 32768, 32, latency_target_s=0.02)["best"]
    assert shown["KV bits"] == f"{best['kv_bits']:g}"
    assert "Predicted loss sum" in shown


def test_kv_page_context_beyond_the_model_is_a_message():
    at = page("kv").run()
    at.number_input(key="kv.context").set_value(10_000_000).run()
    no_traceback(at)
    assert "exceeds llama-3.1-8b's maximum" in errors(at)


# -- offloading -----------------------------------------------------------------------------------
def test_offload_page_shows_the_lp_placement_and_the_flash_plan():
    at = page("offload").run()
    no_traceback(at)
    out = solver_views.offload(workloads.load("opt-6.7b"), hardware.load("t4"), 512, 32)
    row = out["summary"].iloc[0]
    shown = metrics(at)
    assert shown["Throughput"] == f"{row['throughput_tok_s']:,.2f} tok/s"
    assert shown["Block"] == f"{int(row['gbs'])} x {int(row['n_batches'])}"
    plan = solver_views.flash_plan(workloads.load("opt-6.7b"), hardware.load("m1-max"), 7e9)["summary"].iloc[0]
    assert shown["Speed-up over naive loading"] == f"{plan['speedup']:.2f}x"


def test_offload_page_budget_below_the_resident_minimum_is_a_message():
    at = page("offload").run()
    at.number_input(key="offload.dram").set_value(0.5).run()
    no_traceback(at)
    assert "below the resident minimum" in errors(at) and "missing" in errors(at)


# -- test-time scaling ----------------------------------------------------------------------------
def test_tts_page_shows_the_best_configuration_within_the_budget():
    at = page("tts").run()
    no_traceback(at)
    out = solver_views.tts_plan(None, 1e15, "efflops", hardware.load("b200"), "pass@k", [1, 2, 4, 8, 16, 32, 64])
    shown = metrics(at)
    assert shown["Expected accuracy"] == f"{out['best']['accuracy']:.3f}"
    assert shown["Model"] == out["best"]["model"]


def test_tts_page_budget_below_the_cheapest_option_is_a_message():
    at = page("tts").run()
    at.number_input(key="tts.budget.efflops").set_value(1.0).run()
    no_traceback(at)
    assert "below the cheapest option" in errors(at)


# -- a solver that has not landed -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["bits", "offload", "kv", "tts"])
def test_page_of_a_missing_solver_says_not_available_yet(name, monkeypatch):
    monkeypatch.setitem(solver_views.PAGE_MODULES, name, ("solvers.not_written_yet",))  # AppTest runs in-process
    at = page(name).run()
    no_traceback(at)
    assert any(i.value.startswith("not available yet") and "solvers.not_written_yet" in i.value for i in at.info)
    assert not at.metric
