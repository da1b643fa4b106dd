"""Issue 16 (hardening), item by item: each test names the item and fails on the old behaviour.

Other items are tested beside their code: the browser test that never installs (tests/app/
test_browser.py), SIGTERM forwarding (tests/app/test_commands.py), the dense-model refusal
(tests/solvers/test_moe_hybrid.py), config uploads (tests/app/test_views.py), validate-predict rows
(tests/validate/test_pipeline.py), and the fuzz test of every entry point (tests/test_fuzz.py).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hardware
import perfmodel
import workloads
from app.cli import main

ROOT = Path(__file__).resolve().parents[1]


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def refused(capsys, *argv, match: str = "") -> str:
    """Exit 2 with one line (no traceback) that contains `match`."""
    code, out, err = cli(capsys, *argv)
    assert code == 2, (argv, code, out[-300:], err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert match in err, (match, err)
    return err


@pytest.fixture
def docs(tmp_path):
    (tmp_path / "dir").mkdir()
    preset = (hardware.PRESETS_DIR / "l4.yaml").read_text()
    files = {
        "list.json": "[1, 2]", "null.json": "null", "number.json": "3", "string.json": '"llama"',
        "mt_list.json": '{"model_type": ["llama"]}',
        "bigint.json": '{"model_type":"llama","hidden_size":%s,"num_attention_heads":32,"num_hidden_layers":2,'
                       '"intermediate_size":10,"vocab_size":10}' % ("9" * 400),
        "nest.yaml": "a: " + "[" * 5000 + "]" * 5000,
        "laughs.yaml": "axes:\n  a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
            f"  {c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
        "bare.yaml": preset.replace("capacity: 23034 MiB", "capacity: 24152899584", 1),
        "comma.yaml": preset.replace("bandwidth: 300 GB/s", "bandwidth: 4,8 TB/s", 1),
        "tower.yaml": preset.replace("bandwidth: 300 GB/s", "bandwidth: 10**10**10 B/s", 1),
        "sens.csv": "params,coef\n1000,1\n2000,3\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


# -- paths -------------------------------------------------------------------------------------
def test_issue16_paths_a_directory_as_input_is_one_line(capsys, docs):
    d = docs / "dir"
    for argv in (["predict", "--model", d], ["predict", "--hardware", d], ["hardware", "show", d], ["sweep", d],
                 ["validate", "predict", d, "-o", docs / "o.csv"], ["solve", "flash", "--model", d, "--dram-budget", "7 GB"],
                 ["solve", "bits", "--sensitivities", d, "--avg-bits", "4"], ["solve", "tts", "--budget", "1e15", "--curves", d],
                 ["solve", "kv", "split", "--importance", d, "--total", "10"]):
        refused(capsys, *argv, match=str(d))


def test_issue16_paths_huge_binary_and_empty_inputs(capsys, docs):
    big = docs / "big.yaml"
    with big.open("wb") as fh:  # sparse: no disk used
        fh.truncate(65 * 2**20)
    refused(capsys, "predict", "--hardware", big, match="the limit is 67,108,864 bytes")
    (docs / "bin.yaml").write_bytes(b"\x00\xff" * 64)
    refused(capsys, "predict", "--hardware", docs / "bin.yaml", match="binary file")
    (docs / "empty.csv").write_text("")
    refused(capsys, "solve", "bits", "--sensitivities", docs / "empty.csv", "--avg-bits", "4", match="is empty")


@pytest.mark.parametrize("where, match", [
    ("dir", "is a directory"), ("no/x.csv", "does not exist"), ("/dev/full", "No space left on device"),
    ("", "is not a file name"), ("a" * 300 + ".csv", "255-byte limit")])
def test_issue16_paths_bad_outputs_are_one_line(capsys, docs, where, match):
    path = where if where.startswith("/") or where == "" else str(docs / where)
    small = ["--grid", "model=qwen3-0.6b", "--grid", "hardware=l4", "--grid", "batch=1", "--grid", "prompt=512",
             "--grid", "w_bits=16", "--grid", "kv_bits=16", "--grid", "tp=1", "--no-progress"]
    refused(capsys, "sweep", *small, "-o", path, match=match)
    (docs / "cases.csv").write_text("kind,m,n,k,dtype\nmatmul,16,64,64,bf16\n")
    refused(capsys, "validate", "predict", docs / "cases.csv", "-o", path, match=match)
    refused(capsys, "solve", "tts", "--budget", "1e15", "--plot", path, match=match)
    refused(capsys, "solve", "bits", "--sensitivities", docs / "sens.csv", "--avg-bits", "4", "--out", path, match=match)


def test_issue16_paths_checked_before_the_sweep_computes(capsys, docs, monkeypatch):
    from planning import sweep

    monkeypatch.setattr(sweep, "run", lambda *a, **k: pytest.fail("the sweep ran before its output was checked"))
    refused(capsys, "sweep", "-o", docs / "no" / "x.parquet", "--no-progress", match="does not exist")


def test_issue16_pyarrow_missing_is_reported_before_computing(capsys, docs, monkeypatch):
    import sys

    from planning import sweep

    monkeypatch.setattr(sweep, "run", lambda *a, **k: pytest.fail("the sweep ran before pyarrow was checked"))
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    refused(capsys, "sweep", "-o", docs / "x.parquet", "--no-progress", match="perfmodel[sweep]")


# -- malformed documents ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, match", [
    ("list.json", "expected a JSON object"), ("null.json", "expected a JSON object"),
    ("number.json", "expected a JSON object"), ("string.json", "expected a JSON object"),
    ("mt_list.json", "unknown architecture"), ("bigint.json", "digits is out of range")])
def test_issue16_malformed_configs(capsys, docs, name, match):
    refused(capsys, "predict", "--model", docs / name, match=match)


def test_issue16_deep_yaml_and_billion_laughs(capsys, docs):
    refused(capsys, "sweep", docs / "nest.yaml", match="nested more than 64 levels")
    started = time.monotonic()
    refused(capsys, "sweep", docs / "laughs.yaml", match="once aliases are expanded")
    refused(capsys, "predict", "--hardware", docs / "laughs.yaml", match="once aliases are expanded")
    assert time.monotonic() - started < 10


# -- sizes -----------------------------------------------------------------------------------------
def test_issue16_sizes_refused_with_their_size(capsys):
    refused(capsys, "sweep", "--grid", "batch=1:1000000000:10000", "--no-progress", match="batch")
    refused(capsys, "sweep", "--random", "1000000000000", match="1,000,000,000")
    refused(capsys, "best-batch", "--max-batch", "100000000", match="--max-batch")
    from planning import sweep

    started = time.monotonic()
    big = sweep.random(10**9, model=["qwen3-0.6b"], hardware=["l4"], batch={"start": 1, "stop": 10**6},
                       prompt={"start": 1, "stop": 4096})
    assert len(sweep.chunks(big)) == -(-10**9 // sweep.DEFAULT_CHUNK_ROWS)  # lazy: no ranges built
    with pytest.raises(sweep.SweepError, match="keeping 1,000,000,000 rows in memory"):
        sweep.run(big)  # refused before any chunk runs
    with pytest.raises(sweep.SweepError, match="exceed the limit"):
        sweep.grid(model=["qwen3-0.6b"], hardware=["l4"], batch={"start": 1, "stop": 10**6, "step": 1},
                   prompt={"start": 1, "stop": 10**6, "step": 1})
    assert time.monotonic() - started < 5


# -- unit strings --------------------------------------------------------------------------------
def test_issue16_unit_strings_with_exponent_towers_do_not_hang(capsys, docs):
    started = time.monotonic()
    refused(capsys, "predict", "--hardware", docs / "tower.yaml", match="10**10**10 B/s")
    refused(capsys, "solve", "offload", "--cpu-memory", "10**10**10 GB", match="--cpu-memory")
    refused(capsys, "solve", "kv", "setting", "--context", "4096", "--latency", "10**10**10 s", match="--latency")
    refused(capsys, "solve", "kv", "split", "--importance", "1,2,3", "--total", "1e20", "--method", "cvxpy",
            match="--total")
    assert time.monotonic() - started < 10


def test_issue16_units_bare_numbers_refused_everywhere(capsys, docs):
    refused(capsys, "predict", "--hardware", docs / "bare.yaml", match="has no unit")
    refused(capsys, "solve", "offload", "--gpu-memory", "16000000000", match="has no unit")
    refused(capsys, "solve", "kv", "capacity", "--context", "4096", "--hbm-budget", "80000000000", match="has no unit")
    err = refused(capsys, "solve", "kv", "capacity", "--context", "4096", "--hbm-budget", "80000000000")
    assert "'80 GB'" in err and "GB = 1e9 bytes" in err  # shows the accepted form
    refused(capsys, "predict", "--hardware", docs / "comma.yaml", match="use '.' for decimals")


# -- arithmetic and wrong numbers ------------------------------------------------------------------
def test_issue16_arithmetic(capsys):
    refused(capsys, "solve", "kv", "capacity", "--kv-bits", "0", "--context", "8192", match="--kv-bits")
    refused(capsys, "recommend", "--top", "0", "--rate", "1000", "--hardware", "h200-sxm", match="--top")
    refused(capsys, "recommend", "--top", "-1", "--rate", "1000", "--hardware", "h200-sxm", match="--top")


def test_issue16_first_k_dense_replace_above_layers(capsys, tmp_path):
    config = json.loads((workloads.CATALOG_DIR / "configs" / "deepseek-v3.json").read_text())
    config["first_k_dense_replace"] = config["num_hidden_layers"] + 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    refused(capsys, "predict", "--model", tmp_path / "config.json", match="first_k_dense_replace")
    with pytest.raises(workloads.ModelError, match="first_k_dense_replace"):
        workloads.ModelSpec.from_hf_config(config)


def test_issue16_wrong_numbers_are_refused(capsys):
    refused(capsys, "solve", "kv", "serve", "--w-bits", "-4", match="--w-bits")
    refused(capsys, "solve", "kv", "serve", "--w-bits", "1e400", match="--w-bits")
    for weight in ("kv_bits=-1", "kv_bits=nan"):
        refused(capsys, "solve", "kv", "setting", "--context", "8192", "--latency", "20 ms", "--weights", weight,
                match="--weights kv_bits")
    refused(capsys, "solve", "kv", "split", "--importance", "0,0,0", "--total", "10", match="importance")
    refused(capsys, "sweep", "--max-tpot", "-1", match="--max-tpot")


# -- silent accepts --------------------------------------------------------------------------------
def test_issue16_silent_accepts(capsys, tmp_path):
    refused(capsys, "predict", "--w-bits", "3.7", match="--w-bits")
    refused(capsys, "predict", "--w-bits", "64", match="--w-bits")
    refused(capsys, "sweep", "--random", "٣", match="--random")
    refused(capsys, "predict", "--kv-bits", "٨", match="--kv-bits")
    for text in ("params,coef\n100,1e300\n", "params,coef,rmin\n100,1,-5\n", "params,coef\n100,nan\n"):
        (tmp_path / "s.csv").write_text(text)
        refused(capsys, "solve", "bits", "--sensitivities", tmp_path / "s.csv", "--avg-bits", "4", match="row 1")
    (tmp_path / "c.csv").write_text("kind,m,n,k,dtype\nmatmul,16,64,64,bf16\nmatmul,1e300,64,64,bf16\n")
    refused(capsys, "validate", "predict", tmp_path / "c.csv", "-o", tmp_path / "o.csv", match="row 2: matmul m")


def test_issue16_app_spec_form_counts_must_be_whole():
    from app import views

    base = views.form_defaults(hardware.load("h200-sxm"))
    for path in ("node.devices", "cpu.cores"):
        hw, errors = views.build_spec(views.spec_from_form({**base, path: "0.5"}), origin="custom spec")
        assert hw is None and "whole number" in errors[path]


# -- Python API ----------------------------------------------------------------------------------
def test_issue16_scenario_errors_name_the_fields():
    with pytest.raises(workloads.ScenarioError, match=r"batch \(3,\), prompt \(2,\)"):
        workloads.Scenario(batch=[1, 2, 3], prompt=[1, 2])
    with pytest.raises(workloads.ScenarioError, match="prompt: .* out of range"):
        workloads.Scenario(prompt=10**400)


def test_issue16_breakdown_of_many_scenarios_needs_an_index():
    pred = perfmodel.predict(workloads.load("qwen3-0.6b"), hardware.load("l4"), workloads.Scenario(batch=[1, 8]))
    with pytest.raises(ValueError, match="holds 2 scenarios"):
        pred.breakdown("decode")
    assert len(pred.breakdown("decode", 1)) and np.isfinite(pred.breakdown("decode", 1).select_dtypes("number")).all().all()


def test_issue16_offload_result_prints_one_line():
    import solvers

    result = solvers.offload_policy(workloads.load("opt-6.7b"), hardware.load("t4"))
    assert "\n" not in repr(result) and len(repr(result)) < 300


# -- resume --------------------------------------------------------------------------------------
def test_issue16_resume_drops_a_torn_row_and_retries_failures(tmp_path, monkeypatch):
    from validate import bench, runner

    measured = []
    monkeypatch.setattr(bench, "measure", lambda case, dev: measured.append(case["elements"]) or (1e-3, 3))
    monkeypatch.setattr(bench, "clocks", lambda: {})
    cases = [dict(kind="elementwise", op="add", elements=n, dtype="fp32") for n in (1, 2, 3)]
    path = runner.run(cases, tmp_path / "m.csv", progress=False)
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    rows = list(csv.DictReader(lines))
    # the second row failed, the third was torn half way by a power loss
    lines[2] = lines[2].replace(",ok,", ",failed,", 1)
    path.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    measured.clear()
    runner.run(cases, path, progress=False)
    assert sorted(measured) == [2, 3]  # the failed case retried, the torn one measured again
    again = list(csv.DictReader(path.open()))
    assert sorted(r["case_id"] for r in again) == sorted(r["case_id"] for r in rows)
    assert all(r["status"] == "ok" and r["timestamp"] for r in again)


# -- security ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["/tmp/escape", "../../x", "..", "a/../../b"])
def test_issue16_calibrated_spec_is_written_inside_out(tmp_path, monkeypatch, capsys, name):
    import validate.calibrate

    out = tmp_path / "out"
    out.mkdir()
    pd.DataFrame([dict(device_name="cpu", device_type="cpu", torch="2", timestamp="2026-01-01T00:00:00")]).to_csv(
        out / "measurements.csv", index=False)
    monkeypatch.setattr(validate.calibrate, "calibrate",
                        lambda records, base, source: dataclasses.replace(base, name=name))
    monkeypatch.setattr(validate.calibrate, "with_error_bands", lambda records, hw: hw)
    assert main(["validate", "calibrate", "--out", str(out), "--hardware", "l4"]) == 0
    written = [p for p in tmp_path.rglob("*.yaml")]
    assert len(written) == 1 and written[0].parent == out, written


# -- nonsense accepted -------------------------------------------------------------------------------
def test_issue16_tp_against_heads_and_node(capsys):
    refused(capsys, "predict", "--tp", "1000", match="tp: 1000 exceeds the 8 devices per node")
    refused(capsys, "predict", "--tp", "3", match="does not divide llama-3-8b's 32 attention heads")
    refused(capsys, "predict", "--tp", "16", match="exceeds the 8 devices per node")
    from perfmodel import checks

    model, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm")
    assert list(checks.tp_allowed(model, hw, [1, 2, 3, 4, 6, 8, 16])) == [True, True, False, True, False, True, False]


def test_issue16_context_and_dense_model_nonsense(capsys):
    refused(capsys, "solve", "attention-offload", "--prompt", "1000000", match="maximum context")
    refused(capsys, "solve", "moe-hybrid", "--model", "llama-3-8b", match="dense model")


def test_issue16_kv_serve_runs_on_its_own_defaults(capsys):
    code, out, err = cli(capsys, "solve", "kv", "serve")
    assert code == 0 and "8192" in out, err


def test_issue16_tts_plot_on_a_full_disk_is_an_error(capsys):
    refused(capsys, "solve", "tts", "--budget", "1e15", "--plot", "/dev/full", match="No space left")


def test_issue16_best_batch_says_when_no_batch_meets_the_limit(capsys):
    code, out, err = cli(capsys, "best-batch", "--max-tpot", "1e-9", "--hardware", "h200-sxm", "--no-progress")
    assert code == 0 and "no batch meets: tpot_s <= 1e-09" in out and "nan" not in out.lower()


def test_issue16_model_that_does_not_fit(capsys):
    refused(capsys, "predict", "--batch", "2000", match="does not fit")
    code, out, _ = cli(capsys, "predict", "--batch", "2000", "--allow-oversize")
    assert code == 0 and "fits: NO" in out


def test_issue16_recommend_ranks_one_price_basis(capsys):
    from planning import recommend

    assert set(recommend._catalog_devices()) & {"rtx-4090", "h20", "m1-max", "m2-ultra", "h200-sxm-calibrated"} == set()
    with pytest.raises(recommend.SweepError, match="rtx-4090 is priced on the 'purchase-3y' basis"):
        recommend._devices(["rtx-4090", "l4"], "cloud")
    code, out, err = cli(capsys, "recommend", "--rps", "10", "--no-progress", "--max-batch", "64")
    assert code == 0 and "prices: cloud on-demand" in out and "rtx-4090" not in out, err


def test_issue16_random_sweep_draws_distinct_rows():
    from planning import sweep

    spec = sweep.random(100, model=["qwen3-0.6b"], hardware=["l4"], batch=[1, 2, 4, 8, 16],
                        prompt=[128, 256, 512, 1024], w_bits=[4, 8, 16], kv_bits=[8, 16], tp=[1])
    frame = sweep.run(spec, chunk_rows=7).frame
    assert len(frame) == 100
    keys = ["batch", "prompt", "w_bits", "kv_bits"]
    assert not frame.duplicated(keys).any()
    with pytest.raises(sweep.SweepError, match="exceeds the 120 distinct combinations"):
        sweep.random(500, model=["qwen3-0.6b"], hardware=["l4"], batch=[1, 2, 4, 8, 16], prompt=[128, 256, 512, 1024],
                     w_bits=[4, 8, 16], kv_bits=[8, 16])


def test_issue16_grid_keeps_the_default_axes(capsys):
    code, out, err = cli(capsys, "sweep", "--grid", "batch=1,2", "--no-progress")
    assert code == 0 and "model: 3" in out and "batch: 2" in out, err


def test_issue16_validate_report_on_a_cpu_run():
    from validate import report

    frame = pd.DataFrame({"cuda": [np.nan], "driver": [""], "torch": ["2.13"]})
    assert report._cell(frame, "cuda") == "-" and report._cell(frame, "driver") == "-"
    assert report._datasheet_rate(hardware.load("xeon-8480"), "fp32") != "0 TFLOP/s"
    from hardware.units import format_si

    assert format_si(3.2e10, "FLOP/s") == "32 GFLOP/s"


def test_issue16_tts_seconds_checks_that_the_samples_kv_fits():
    from solvers import tts

    curves = tts.AccuracyCurves.demo()
    cost = tts.CostModel(unit="seconds", hardware=hardware.load("l4"))
    plan = tts.plan_tts(curves, 1e6, tts.load_models(curves.models), cost, [1, 64])
    assert plan.table["fits"].all() and not (plan.table["samples"] == 64).all()
    assert plan.best["memory_bytes"] <= hardware.load("l4").hbm_capacity_bytes


def test_issue16_bits_closed_form_prints_a_histogram(capsys, tmp_path):
    rows = ["params,coef"] + [f"{1000 + i},{np.exp(i / 30):.4f}" for i in range(128)]
    (tmp_path / "s.csv").write_text("\n".join(rows))
    code, out, _ = cli(capsys, "solve", "bits", "--sensitivities", tmp_path / "s.csv", "--avg-bits", "4")
    assert code == 0 and "groups per bit range" in out and len(out.splitlines()) < 15


# -- activations -------------------------------------------------------------------------------------
def test_issue16_activations_chunked_prefill_and_tp():
    from perfmodel import memory

    model, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm")
    one = perfmodel.predict(model, hw, workloads.Scenario(batch=1, prompt=2048, gen=256)).row(0)
    assert one["max_batch"] > 400  # vLLM-style: weights + one chunk + KV per request (was 275)
    big = perfmodel.predict(model, hw, workloads.Scenario(batch=64, prompt=2048, gen=256)).row(0)
    p = perfmodel.Precision(16, 16, 16)
    chunk = memory.activation_bytes(model, p, memory.PREFILL_CHUNK_TOKENS, 64)
    assert big["activation_bytes"] == pytest.approx(chunk)  # a chunk's, not 64 x the prompt's
    tp8 = perfmodel.predict(model, hw, workloads.Scenario(batch=64, prompt=2048, gen=256, tp=8)).row(0)
    assert tp8["activation_bytes"] < big["activation_bytes"] / 2


# -- app ---------------------------------------------------------------------------------------------
def test_issue16_app_zero_delta_is_grey_without_arrow():
    from app import views

    zero = views.metric_delta(0.0004, "{:+.2f} GB vs uniform", lower_is_better=True)
    assert zero["delta_color"] == "off" and zero["delta_arrow"] == "off" and zero["delta"].startswith("±0.00")
    assert views.metric_delta(-1.0, "{:+.2f} GB", lower_is_better=True)["delta_color"] == "inverse"


def test_issue16_app_decode_chart_keeps_every_op_label():
    from app import charts, views

    result = views.plan(workloads.load("llama-3-8b"), hardware.load("h200-sxm"), views.scenario(
        {"batch": 16, "prompt": 2048, "gen": 256, "w_bits": 16, "a_bits": 16, "kv_bits": 16, "tp": 1, "samples": 1}))
    spec = charts.op_times(result["decode"], "decode")
    ops = len(spec["data"]["values"])
    assert isinstance(spec["height"], int) and spec["height"] >= charts.OP_ROW_PX * ops
    assert spec["encoding"]["y"]["axis"]["labelOverlap"] is False


def test_issue16_app_plan_url_resolves():
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "planner.py"), default_timeout=120).run()
    pages = at._registered_pages
    manager = PagesManager(str(ROOT / "app" / "planner.py"))
    manager.set_script_intent("", "plan")
    found = manager.set_pages_and_resolve(pages, fallback_page_hash="")
    assert found is not None and found["page_name"] == "Plan"
    manager.set_script_intent("", "no-such-page")
    assert manager.set_pages_and_resolve(pages, fallback_page_hash="") is None


# -- new-user trial ------------------------------------------------------------------------------------
def test_issue16_readme_installs_the_cpu_torch_build():
    index = "--index-url https://download.pytorch.org/whl/cpu"
    assert f"pip install torch==2.13.0 {index}" in (ROOT / "README.md").read_text()
    assert f"pip install -q torch==2.13.0 {index}" in (ROOT / ".ci" / "run").read_text()
