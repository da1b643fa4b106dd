"""The planner's pure helpers (no streamlit): spec forms and files, exports that the CLI reproduces,
plan results, Pareto fronts, validation statistics."""
from __future__ import annotations

import dataclasses
import json
import math
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings, strategies as st

import hardware
import perfmodel
import workloads
from app import charts, cli, views
from hardware.spec import Hardware
from workloads.model import ModelError

NUMERIC = ("hbm_capacity_bytes", "hbm_bytes_per_s", "dram_capacity_bytes", "dram_bytes_per_s",
           "flash_capacity_bytes", "flash_read_bytes_per_s", "flash_latency_s", "host_link_bytes_per_s",
           "host_link_latency_s", "device_link_bytes_per_s", "device_link_latency_s", "cpu_flops_per_s",
           "cpu_cores", "devices_per_node", "compute_units", "price_per_hour_usd", "power_w")


def same_numbers(a: Hardware, b: Hardware, rel=1e-5):
    for name in NUMERIC:
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=rel), name
    assert dict(b.flops_per_s) == pytest.approx(dict(a.flops_per_s), rel=rel)
    assert dict(b.sparse_flops_per_s) == pytest.approx(dict(a.sparse_flops_per_s), rel=rel)
    assert (b.kind, b.device_link) == (a.kind, a.device_link)


# -- specs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", hardware.names())
def test_spec_document_round_trips_every_preset(name):
    hw = hardware.load(name)
    doc = views.spec_document(hw)
    same_numbers(hw, Hardware.from_dict(yaml.safe_load(yaml.safe_dump(doc))))


def test_form_round_trip_rebuilds_the_preset():
    """The form has every dense dtype (not sparse ones, which the roofline does not use)."""
    hw = hardware.load("h200-sxm")
    rebuilt, errors = views.build_spec(views.spec_from_form(views.form_defaults(hw)))
    assert errors == {}
    same_numbers(dataclasses.replace(hw, sparse_flops_per_s={}), rebuilt)


def test_every_bad_field_is_reported_at_once():
    doc = views.spec_document(hardware.load("h200-sxm"))
    doc["memory"]["bandwidth"] = "4.8 TB [user]"          # bytes, not bytes per second
    doc["power"] = "-700 W [user]"
    del doc["cpu"]["cores"]
    doc["compute"]["bf16"] = "989 TFLOP/s [nosuchtag]"
    errors = views.spec_field_errors(doc, "my.yaml")
    assert set(errors) == {"memory.bandwidth", "power", "cpu.cores", "compute.bf16"}
    assert "4.8 TB" in errors["memory.bandwidth"] and "wrong unit" in errors["memory.bandwidth"]
    assert "-700" in errors["power"]
    assert "missing field 'cpu.cores'" in errors["cpu.cores"]
    assert "[nosuchtag]" in errors["compute.bf16"]
    assert views.build_spec(doc)[0] is None


def test_blank_form_names_each_required_field():
    hw, errors = views.build_spec(views.spec_from_form(views.form_defaults(None)))
    assert hw is None
    required = {f.path for f in views.SPEC_FIELDS if f.required}
    assert required <= set(errors)
    assert not any(f.path in errors for f in views.SPEC_FIELDS if not f.required)


def test_device_link_kind_without_bandwidth_is_a_cross_field_error():
    values = views.form_defaults(hardware.load("h200-sxm"))
    values["device_link.bandwidth"] = ""
    hw, errors = views.build_spec(views.spec_from_form(values))
    assert hw is None and "device_link.bandwidth" in " ".join(errors.values())


@pytest.mark.parametrize("text, fragment", [
    ("compute: [1, 2\nname: x", "not valid YAML at line"),
    ("- just\n- a list\n", "expected a mapping"),
    ("", "expected a mapping"),
])
def test_malformed_spec_files_give_messages(text, fragment):
    hw, errors = views.parse_spec_yaml(text, "bad.yaml")
    assert hw is None and fragment in " ".join(errors.values())


def test_resolve_hardware_raises_spec_error_naming_the_field():
    with pytest.raises(hardware.SpecError, match="memory.capacity"):
        views.resolve_hardware(("yaml", "name: x\nkind: gpu\nsources: {u: me}\n"))


# -- models --------------------------------------------------------------------------------------
def test_uploaded_config_matches_the_catalog_model():
    entry = workloads.catalog_entry("qwen3-8b")
    text = (workloads.CATALOG_DIR / entry["config"]).read_text()
    model = views.resolve_model(("config", text, "qwen3-8b"))
    assert model.param_count() == workloads.load("qwen3-8b").param_count()


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not valid JSON"),
    ('{"model_type": "bert"}', "unknown architecture"),
    ("[1, 2]", "expected a JSON object"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"model_type": "llama", "hidden_size": 1' + "0" * 400 + "}", "401 digits is out of range"),
    ('{"model_type": ["llama"]}', "unknown architecture"),
])
def test_bad_configs_raise_model_errors(text, fragment):
    with pytest.raises(ModelError, match=fragment):
        views.model_from_config_text(text, "cfg")


# -- plans and their exports ------------------------------------------------------------------
INPUTS = {"batch": 16, "prompt": 2048, "gen": 256, "w_bits": 8, "a_bits": 16, "kv_bits": 8, "tp": 2, "samples": 1}


def test_cli_line_reproduces_the_plan(capsys):
    model, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm")
    result = views.plan(model, hw, views.scenario(INPUTS))
    argv = shlex.split(views.cli_command("h200-sxm", "llama-3-8b", INPUTS))
    assert argv[0] == "perfmodel"
    argv = [a for a in argv[1:] if a != "--breakdown"] + ["--json"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    for key in ("ttft_s", "tpot_s", "throughput_tok_s", "usd_per_mtok", "total_bytes"):
        assert printed[key] == pytest.approx(result["row"][key], rel=1e-12), key


def test_plan_document_carries_inputs_and_custom_spec():
    hw = hardware.load("l4")
    doc = yaml.safe_load(views.plan_document("l4.yaml", "llama-3-8b", INPUTS, views.spec_document(hw)))
    assert doc["scenario"] == INPUTS
    assert doc["cli"].startswith("perfmodel predict --hardware l4.yaml --model llama-3-8b")
    same_numbers(hw, Hardware.from_dict(doc["hardware_spec"]))


def test_plan_that_fits_has_no_verdict_and_consistent_tables():
    model, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm")
    result = views.plan(model, hw, views.scenario(INPUTS))
    assert result["does_not_fit"] is None and result["suggestions"] == []
    # the decode breakdown is the mid-generation step; its total sits between the first and last steps
    assert result["prefill"]["time_s"].sum() == pytest.approx(result["row"]["ttft_s"], rel=1e-9)
    mem = views.memory_frame(result["row"])
    assert mem["bytes"].sum() == pytest.approx(result["row"]["capacity_bytes"])
    assert result["summary"].loc[0, "throughput_tok_s"] == result["row"]["throughput_tok_s"]


def test_plan_that_does_not_fit_says_what_it_needs_and_what_fits():
    model, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm")
    sc = views.scenario({**INPUTS, "batch": 5000, "tp": 1, "w_bits": 16})
    result = views.plan(model, hw, sc)
    row = result["row"]
    assert result["does_not_fit"].startswith("does not fit")
    assert f"{row['total_bytes'] / 1e9:.1f} GB" in result["does_not_fit"]
    assert f"{hw.hbm_capacity_bytes / 1e9:.1f} GB" in result["does_not_fit"]
    max_batch = int(row["max_batch"])
    assert result["suggestions"][0] == f"batch {max_batch} or less fits at these settings"
    fits = perfmodel.predict(model, hw, sc.replace(batch=[max_batch, max_batch + 1]))["fits"]
    assert list(fits) == [True, False]


def test_weights_that_never_fit_say_so():
    model, hw = workloads.load("llama-3.1-405b"), hardware.load("l4")
    result = views.plan(model, hw, views.scenario({**INPUTS, "tp": 1, "w_bits": 16}))
    assert "the weights alone need" in result["suggestions"][0]


def test_roofline_points_sit_under_the_datasheet_roofs():
    model, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm").datasheet()
    result = views.plan(model, hw, views.scenario(INPUTS))
    points = views.roofline_points(result["prefill"], result["decode"])
    assert set(points["phase"]) == {"prefill", "decode"} and len(points) > 10
    peak = max(r["flops_per_s"] for r in result["roofs"])
    ceiling = np.minimum(peak, points["intensity_flop_per_byte"] * hw.hbm_bytes_per_s)
    assert (points["achieved_flops_per_s"] <= ceiling * (1 + 1e-9)).all()
    memory_bound = points["bound"] == "memory"
    assert memory_bound.any()
    assert np.allclose(points.loc[memory_bound, "achieved_flops_per_s"], ceiling[memory_bound], rtol=1e-9)
    chart = charts.roofline(points, result["roofs"])
    assert chart["layer"][0]["encoding"]["x"]["scale"]["type"] == "log"


def test_metric_texts_format_the_row():
    row = {"ttft_s": 0.5221, "tpot_s": 1.5, "throughput_tok_s": 2607.4, "usd_per_mtok": 0.4841,
           "total_bytes": 23.3e9, "capacity_bytes": 141e9}
    assert views.metric_texts(row) == {"TTFT": "522 ms", "TPOT": "1.5 s", "Throughput": "2,607 tok/s",
                                       "Cost": "$0.484", "Memory": "23.3 / 141 GB",
                                       "Band": "No prediction interval: this spec carries no validated error "
                                               "bands (datasheet roofline).", "Energy": ""}
    energy = {"joules_per_token": 0.2384, "avg_power_w": 510.4, "power_model": "calibration"}
    assert views.metric_texts({**row, **energy})["Energy"] == \
        "energy 0.238 J per generated token, 510 W average per device (power model calibrated on this device)"


def test_plan_carries_the_requests_energy():
    model, hw = workloads.load("llama-3-8b"), hardware.load("h200-sxm-calibrated")
    row = views.plan(model, hw, views.scenario(INPUTS))["row"]
    from perfmodel import energy

    assert row["energy_j"] > 0 and energy.power_model(hw).idle_w < row["avg_power_w"] <= hw.power_w
    assert row["joules_per_token"] == pytest.approx(row["energy_j"] / (row["batch"] * row["samples"] * row["gen"]))
    banded = dict(row, ttft_p10_s=0.5, ttft_p90_s=0.6, tpot_p10_s=1.4, tpot_p90_s=1.7)
    assert views.metric_texts(banded)["Band"] == ("p10-p90 from validated residuals: TTFT 500 ms - 600 ms, "
                                                  "TPOT 1.4 s - 1.7 s")


# -- compare --------------------------------------------------------------------------------------
def test_parse_int_list():
    assert views.parse_int_list("64, 1;8 8", "batch") == [1, 8, 64]
    for bad, fragment in (("", "at least one"), ("1, x", "'x' is not a number"), ("1, -2", "-2 is invalid"),
                          ("2.5", "2.5 is invalid")):
        with pytest.raises(ValueError, match=fragment):
            views.parse_int_list(bad, "batch")


def test_compare_grid_rows_and_skipped_tp():
    models = [workloads.load("llama-3-8b"), workloads.load("qwen3-8b")]
    devices = [hardware.load("h200-sxm"), hardware.load("rtx-4090")]
    grid = {"batch": [1, 8, 64], "prompt": 1024, "gen": 128, "w_bits": [16, 4], "kv_bits": [16], "tp": [1, 8]}
    frame, notes = views.compare([(m, h) for h in devices for m in models], grid)
    per_pair = frame.groupby(["model", "hardware"]).size()
    for m in models:
        for h in devices:
            tps = [t for t in grid["tp"] if t <= h.devices_per_node]
            assert per_pair[(m.name, h.name)] == 3 * 2 * len(tps)
    if devices[1].devices_per_node < 8:
        assert any("rtx-4090" in n for n in notes)
    assert np.allclose(frame["tokens_per_usd"] * frame["usd_per_mtok"], 1e6)


def test_sweep_document_is_a_valid_sweep_spec():
    from planning.sweep import SweepSpec

    grid = {"batch": [1, 8], "prompt": 1024, "gen": 128, "w_bits": [16, 4], "kv_bits": [16], "tp": [1],
            "a_bits": 16}
    spec = SweepSpec.from_dict(views.sweep_document(["h200-sxm", "l4"], ["llama-3-8b"], grid, "tpot_s"))
    assert spec.size == 2 * 2 * 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=25))
def test_pareto_mask_matches_brute_force(points):
    cost, value = np.array(points, float).T
    mask = views.pareto_mask(cost, value)
    for i in range(len(cost)):
        dominated = any(cost[j] <= cost[i] and value[j] >= value[i] and (cost[j] < cost[i] or value[j] > value[i])
                        for j in range(len(cost)))
        assert mask[i] == (not dominated)


# -- validation reports ---------------------------------------------------------------------------
def test_read_report_and_error_stats():
    frame = pd.DataFrame({
        "case_id": ["a", "b", "c", "d", "e"], "class": ["matmul"] * 4 + ["copy"],
        "measured_s": [1.0, 1.0, 1.0, 1.0, None], "predicted_s": [1.1, 0.9, 1.2, 1.0, 2.0],
        "status": ["ok"] * 4 + ["failed"],
    })
    report, variants = views.read_report(frame)
    assert variants == ["predicted_s"] and len(report) == 4      # the failed case has no time
    stats = views.error_stats(report, variants).set_index("kernel_class")
    assert stats.loc["matmul", "median_ape_pct"] == pytest.approx(10.0)
    assert stats.loc["matmul", "p90_ape_pct"] == pytest.approx(17.0)   # linear interpolation of 0,10,10,20
    assert stats.loc["all", "cases"] == 4
    assert math.isclose(stats.loc["matmul", "median_ratio"], 1.05)


def test_read_report_names_missing_columns():
    with pytest.raises(ValueError, match="no measured-time column"):
        views.read_report(pd.DataFrame({"predicted_s": [1.0]}), "r.csv")
    with pytest.raises(ValueError, match="no prediction column"):
        views.read_report(pd.DataFrame({"measured_s": [1.0], "datasheet_s": [1.0]}), "r.csv")


def test_prediction_columns_follow_validates_schema():
    frame = pd.DataFrame({"measured_s": [1.0], "datasheet_s": [1.0], "datasheet_ratio": [1.0], "calibrated_s": [1.0],
                          "calibrated_ape": [0.0], "repeats_s": [3.0], "predicted_mine": [1.0], "predicted_text": ["x"]})
    assert views.prediction_columns(frame) == ["datasheet_s", "calibrated_s", "predicted_mine"]


# -- charts ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vega_lite_validator():
    jsonschema = pytest.importorskip("jsonschema")
    from altair.vegalite.v6.schema.core import load_schema  # the schema streamlit's renderer speaks

    schema = load_schema()
    return jsonschema.validators.validator_for(schema)(schema)


def test_charts_are_valid_vega_lite(vega_lite_validator):
    model, hw = workloads.load("qwen3-30b-a3b"), hardware.load("h100-sxm")
    result = views.plan(model, hw, views.scenario(INPUTS))
    frame, _ = views.compare([(model, hw)], {"batch": [1, 64], "prompt": 512, "gen": 64, "w_bits": [16, 8],
                                             "kv_bits": [16], "tp": [1, 2]})
    report = pd.DataFrame({"case": ["a", "b"], "kernel_class": ["matmul", "copy"], "measured_s": [1e-3, 2e-3],
                           "predicted_s": [1.1e-3, 1.5e-3]})
    specs = {
        "memory": charts.memory_bar(views.memory_frame(result["row"]), result["row"]["capacity_bytes"]),
        "ops": charts.op_times(result["decode"], "decode"),
        "roofline": charts.roofline(views.roofline_points(result["prefill"], result["decode"]), result["roofs"]),
        "tradeoff": charts.tradeoff(frame, "tpot_s", "throughput_tok_s", "TPOT", "tok/s", "t"),
        "validation": charts.predicted_vs_measured(report, "predicted_s"),
        "line": charts.line(frame, "batch", "tpot_s", "batch", "TPOT", "l", color="hardware", log_x=True,
                            marked=frame.head(1)),
        "bars": charts.bars(frame.head(3), "tpot_s", "config", "TPOT", "b"),
    }
    for name, spec in specs.items():
        errors = [e.message for e in vega_lite_validator.iter_errors(json.loads(json.dumps(spec, allow_nan=False)))]
        assert errors == [], (name, errors[:3])
    bad = dict(specs["ops"], mark="barr")
    assert list(vega_lite_validator.iter_errors(bad))


def test_tradeoff_marks_exactly_the_pareto_front():
    frame = pd.DataFrame({"tpot_s": [1.0, 2.0, 3.0, 2.5], "throughput_tok_s": [10.0, 30.0, 50.0, 20.0],
                          "config": list("abcd"), "hardware": "h", "model": "m"})
    spec = charts.tradeoff(frame, "tpot_s", "throughput_tok_s", "x", "y", "t")
    front = [r["config"] for r in spec["layer"][0]["data"]["values"]]
    assert front == ["a", "b", "c"]          # d is slower than b and has less throughput


def test_error_stats_reproduce_the_committed_h200_report():
    """The Validation page's statistics are the validate report's own (same cases, same numbers)."""
    folder = Path(__file__).resolve().parents[2] / "validate" / "reports" / "h200"
    if not (folder / "comparison.csv").exists() or not (folder / "errors.csv").exists():
        pytest.skip("no committed H200 validation report")
    report, variants = views.read_report(pd.read_csv(folder / "comparison.csv"))
    assert {"datasheet_s", "calibrated_s"} <= set(variants)
    expected = pd.read_csv(folder / "errors.csv")
    for split in ("calibration", "evaluation"):
        ours = views.error_stats(report[report["split"] == split], variants)
        for _, row in expected[expected["split"] == split].iterrows():
            for variant in ("datasheet", "calibrated"):
                mine = ours[(ours["kernel_class"] == row["class"]) & (ours["prediction"] == f"{variant}_s")]
                assert len(mine) == 1, (row["class"], variant)
                assert mine["cases"].iloc[0] == row["cases"]
                assert mine["median_ape_pct"].iloc[0] == pytest.approx(100 * row[f"{variant}_median_ape"], rel=1e-9)
                assert mine["p90_ape_pct"].iloc[0] == pytest.approx(100 * row[f"{variant}_p90_ape"], rel=1e-9)
