"""The planner's pages under Streamlit's own test runner (AppTest): each page renders with its
defaults and shows the numbers the cost model gives; bad input shows a message, never a traceback."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import hardware  # noqa: E402
import workloads  # noqa: E402
from app import views  # noqa: E402

ENTRY = str(Path(__file__).resolve().parents[2] / "app" / "planner.py")
TIMEOUT = 60
DEFAULTS = {"batch": 16, "prompt": 2048, "gen": 256, "w_bits": 16, "a_bits": 16, "kv_bits": 16, "tp": 1, "samples": 1}


def page(name: str, setup: str = "") -> AppTest:
    """One page's render() as a script, with optional setup lines before it."""
    return AppTest.from_string(f"{setup}\nfrom app.ui import {name}\n{name}.render()\n", default_timeout=TIMEOUT)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def expected_metrics(model: str, device: str, **changes) -> dict[str, str]:
    result = views.plan(workloads.load(model), hardware.load(device), views.scenario({**DEFAULTS, **changes}))
    texts = views.metric_texts(result["row"])
    return {"TTFT": texts["TTFT"], "TPOT": texts["TPOT"], "Throughput": texts["Throughput"],
            "Cost per Mtok": texts["Cost"], "Memory": texts["Memory"]}


def no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.fixture(scope="module")
def planner() -> AppTest:
    at = AppTest.from_file(ENTRY, default_timeout=TIMEOUT).run()
    no_traceback(at)
    return at


# -- Plan -----------------------------------------------------------------------------------------
def test_plan_is_the_default_page_and_shows_the_model_numbers(planner):
    assert planner.title[0].value == "Plan a deployment"
    assert metrics(planner) == expected_metrics("llama-3-8b", "h200-sxm")
    assert not planner.error
    assert any("perfmodel predict --hardware h200-sxm --model llama-3-8b --batch 16" in c.value for c in planner.code)


def test_plan_widget_change_changes_the_numbers():
    at = AppTest.from_file(ENTRY, default_timeout=TIMEOUT).run()
    before = metrics(at)
    at.number_input(key="plan.batch").set_value(64)
    at.selectbox(key="plan.w_bits").set_value(4)
    at.run()
    no_traceback(at)
    after = metrics(at)
    assert after == expected_metrics("llama-3-8b", "h200-sxm", batch=64, w_bits=4)
    assert after["Throughput"] != before["Throughput"] and after["Memory"] != before["Memory"]


@pytest.mark.parametrize("field, value, fragment", [
    ("plan.batch", -1, "batch: -1 is invalid"),
    ("plan.prompt", 0, "prompt: 0 is invalid"),
    ("plan.gen", 1_000_000, "exceeds llama-3-8b's maximum context"),
])
def test_bad_scenario_values_show_a_message(field, value, fragment):
    at = page("plan").run()
    at.number_input(key=field).set_value(value).run()
    no_traceback(at)
    assert any(fragment in e.value for e in at.error), [e.value for e in at.error]
    assert not at.metric


def test_model_that_does_not_fit_shows_needs_and_has():
    at = page("plan").run()
    at.selectbox(key="plan.model").set_value("llama-3.1-405b").run()
    no_traceback(at)
    message = " ".join(e.value for e in at.error)
    assert message.startswith("does not fit: llama-3.1-405b") and "needs" in message and "has 151.4 GB" in message
    assert metrics(at)["Throughput"] == "does not fit"
    assert any("What would fit" in m.value for m in at.markdown)


def test_custom_spec_form_defaults_reproduce_the_preset():
    at = page("plan").run()
    at.radio(key="plan.device_mode").set_value("Custom").run()
    no_traceback(at)
    assert not at.error
    assert metrics(at) == expected_metrics("llama-3-8b", "h200-sxm")


def test_custom_spec_form_shows_each_bad_field():
    at = page("plan").run()
    at.radio(key="plan.device_mode").set_value("Custom").run()
    at.text_input(key="plan.spec.h200-sxm.memory.bandwidth").set_value("4.8 TB")
    at.text_input(key="plan.spec.h200-sxm.power").set_value("lots")
    at.run()
    no_traceback(at)
    errors = [e.value for e in at.error]
    assert any("memory.bandwidth" in e and "wrong unit" in e for e in errors), errors
    assert any("power" in e and "'lots'" in e for e in errors), errors
    assert any("2 invalid field(s)" in w.value for w in at.warning)
    assert not at.metric


def test_custom_spec_with_less_memory_changes_the_fit():
    at = page("plan").run()
    at.radio(key="plan.device_mode").set_value("Custom").run()
    at.text_input(key="plan.spec.h200-sxm.memory.capacity").set_value("16 GB").run()
    no_traceback(at)
    assert any(e.value.startswith("does not fit") and "has 16.0 GB" in e.value for e in at.error)


def _upload_mode(at: AppTest, content: bytes, name: str = "my-gpu.yaml") -> AppTest:
    at.radio(key="plan.device_mode").set_value("Upload YAML").run()
    at.file_uploader(key="plan.device_upload").upload(name, content, "application/x-yaml")
    return at.run()


@pytest.mark.parametrize("content, fragments", [
    (b"compute: [1, 2\nname: x\n", ["not valid YAML at line"]),
    (b"- a\n- list\n", ["expected a mapping"]),
    (yaml.safe_dump({"name": "x", "kind": "tpu", "sources": {"d": "me"}, "compute": {"bf16": "1 TB [d]"}}).encode(),
     ["kind", "compute.bf16", "memory.capacity", "power"]),
])
def test_malformed_spec_upload_shows_field_messages(content, fragments):
    at = _upload_mode(page("plan").run(), content)
    no_traceback(at)
    message = " ".join(e.value for e in at.error)
    for fragment in fragments:
        assert fragment in message, message
    assert not at.metric


def test_valid_spec_upload_plans_on_it():
    doc = views.spec_document(hardware.load("l4"))
    at = _upload_mode(page("plan").run(), yaml.safe_dump(doc).encode(), "l4-copy.yaml")
    no_traceback(at)
    assert not at.error or all(e.value.startswith("does not fit") for e in at.error)
    assert metrics(at) == expected_metrics("llama-3-8b", "l4")
    assert any("--hardware l4-copy.yaml" in c.value for c in at.code)


def test_uploaded_hf_config_plans_and_bad_json_is_a_message():
    entry = workloads.catalog_entry("qwen3-8b")
    text = (workloads.CATALOG_DIR / entry["config"]).read_bytes()
    at = page("plan").run()
    at.radio(key="plan.model_mode").set_value("Upload config.json").run()
    at.file_uploader(key="plan.model_upload").upload("qwen3-8b.json", text, "application/json").run()
    no_traceback(at)
    assert metrics(at) == expected_metrics("qwen3-8b", "h200-sxm")
    at.file_uploader(key="plan.model_upload").set_value(("broken.json", b"{nope", "application/json")).run()
    no_traceback(at)
    assert any("not valid JSON" in e.value for e in at.error)


# -- Compare --------------------------------------------------------------------------------------
def test_compare_renders_and_reports_the_best_configuration():
    at = page("compare").run()
    no_traceback(at)
    shown = metrics(at)
    assert set(shown) == {"Best throughput", "Most tokens per dollar", "Fastest TPOT"}
    devices = [d for d in ("h200-sxm", "h100-sxm", "a100-80gb-sxm", "l40s") if d in hardware.names()]
    grid = {"batch": [1, 4, 16, 64, 256], "prompt": 2048, "gen": 256, "w_bits": [4, 8, 16], "kv_bits": [16],
            "tp": [1], "a_bits": 16}
    frame, _ = views.compare([(workloads.load(m), hardware.load(h)) for h in devices
                              for m in ("llama-3-8b", "qwen3-8b")], grid)
    fits = frame[frame["fits"]]
    assert shown["Best throughput"] == f"{fits['throughput_tok_s'].max():,.0f} tok/s"
    assert len(at.dataframe[0].value) == len(frame)


def test_compare_bad_batch_list_is_a_message():
    at = page("compare").run()
    at.text_input(key="compare.batches").set_value("1, -4").run()
    no_traceback(at)
    assert any("-4 is invalid" in e.value for e in at.error)


def test_compare_nothing_fits_is_a_message():
    at = page("compare").run()
    at.multiselect(key="compare.models").set_value(["llama-3.1-405b"])
    at.multiselect(key="compare.devices").set_value(["l4"] if "l4" in hardware.names() else ["h200-sxm"])
    at.multiselect(key="compare.w_bits").set_value([16]).run()
    no_traceback(at)
    assert any("None of the configurations fits" in e.value for e in at.error)


# -- Validation -----------------------------------------------------------------------------------
def test_validation_without_a_report_says_where_it_looked(tmp_path, monkeypatch):
    from app.ui import validation

    monkeypatch.setattr(validation, "reports_dir", lambda: tmp_path)   # AppTest runs in this process
    at = page("validation").run()
    no_traceback(at)
    assert any("No committed validation report" in i.value for i in at.info)


def test_validation_report_upload_shows_error_statistics():
    frame = pd.DataFrame({"case_id": list("abcdef"), "class": ["matmul"] * 3 + ["copy"] * 3,
                          "split": ["evaluation"] * 6, "measured_s": [1e-3, 2e-3, 4e-3, 1e-4, 2e-4, 4e-4],
                          "predicted_datasheet_s": [0.5e-3, 1e-3, 2e-3, 0.5e-4, 1e-4, 2e-4],
                          "predicted_calibrated_s": [1.1e-3, 2e-3, 4e-3, 1e-4, 2.2e-4, 4e-4]})
    at = page("validation").run()
    at.file_uploader(key="validation.upload").upload("r.csv", frame.to_csv(index=False).encode(), "text/csv").run()
    no_traceback(at)
    assert metrics(at) == {"predicted_datasheet_s: median |error|": "50.0%",
                           "predicted_calibrated_s: median |error|": "0.0%"}
    stats = at.dataframe[0].value
    assert set(stats["kernel_class"]) == {"matmul", "copy", "all"}


def test_validation_bad_csv_is_a_message():
    at = page("validation").run()
    at.file_uploader(key="validation.upload").upload("r.csv", b"a,b\n1,2\n", "text/csv").run()
    no_traceback(at)
    assert any("no measured-time column" in e.value for e in at.error)


def test_validation_defaults_to_the_committed_h200_report():
    from app.ui import validation

    found = validation.committed_reports(validation.reports_dir())
    if not found:
        pytest.skip("no committed H200 validation report")
    at = page("validation").run()
    no_traceback(at)
    report, variants = views.read_report(pd.read_csv(found[0]))
    report = report[report["split"] == "evaluation"] if "split" in report.columns else report
    stats = views.error_stats(report, variants)
    pooled = stats[stats["kernel_class"] == ("all kernels" if (stats["kernel_class"] == "all kernels").any() else "all")]
    assert metrics(at) == {f"{r.prediction}: median |error|": f"{r.median_ape_pct:.1f}%" for r in pooled.itertuples()}


def test_calibrated_spec_upload_plans_with_its_measured_roof():
    spec = Path(ENTRY).parents[1] / "validate" / "reports" / "h200" / "h200-sxm-calibrated.yaml"
    if not spec.exists():
        pytest.skip("no calibrated H200 spec committed")
    at = _upload_mode(page("plan").run(), spec.read_bytes(), spec.name)
    no_traceback(at)
    assert any("calibrated spec" in c.value for c in at.caption)
    hw = hardware.Hardware.from_yaml(spec)
    result = views.plan(workloads.load("llama-3-8b"), hw, views.scenario(DEFAULTS))
    assert metrics(at)["TPOT"] == views.metric_texts(result["row"])["TPOT"]
    assert [r["roof"] for r in result["roofs"]][-1] == "tensor (calibrated)"


def test_a_widget_change_re_renders_in_well_under_a_second():
    """New batch values miss the cache, so each rerun predicts and redraws the whole page."""
    import time

    at = page("plan").run()
    times = []
    for batch in (17, 18, 19):
        start = time.perf_counter()
        at.number_input(key="plan.batch").set_value(batch).run()
        times.append(time.perf_counter() - start)
        no_traceback(at)
    assert sorted(times)[1] < 1.0, times
