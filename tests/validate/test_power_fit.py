"""fit_power: the fitter recovers known board-power parameters from steady-state powers; the sustained
fraction is the median burst-to-tail ratio of the GEMMs at the limit; the constant-power baseline is
exact when every case draws the same power; the YAML section it writes reads back through the spec."""
import importlib.util
from pathlib import Path

import pytest

from hardware.spec import Hardware

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("fit_power", ROOT / "validate/reports/power/fit_power.py")
fit_power = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fit_power)

TRUE = {"idle_w": 80.0, "j_per_flop_bf16": 0.7e-12, "j_per_flop_fp8": 0.4e-12, "j_per_hbm_byte": 100e-12}


def case(i, kind, dtype, flops_per_s, bytes_per_s, holdout=0, burst=None):
    power = TRUE["idle_w"] + flops_per_s * TRUE.get(f"j_per_flop_{dtype}", 0.0) + bytes_per_s * TRUE["j_per_hbm_byte"]
    return {"id": "idle" if kind == "idle" else f"c{i}", "kind": kind, "dtype_class": dtype,
            "tail_flops_per_s": str(flops_per_s), "tail_bytes_per_s": str(bytes_per_s), "duration_s": "3",
            "first_chunk_flops_per_s": str(burst or flops_per_s), "tail_power_w": str(power),
            "holdout": str(holdout), "error": ""}


def test_fit_recovers_known_parameters_and_predicts_held_out_cases():
    rows = [case(0, "idle", "", 0, 0),
            case(1, "gemm", "bf16", 6e14, 3e11), case(2, "gemm", "bf16", 5e14, 2.4e12),
            case(3, "gemm", "fp8", 1.2e15, 3e11), case(4, "gemm", "fp8", 1e15, 2e12),
            case(5, "copy", "", 0, 4e12), case(6, "gemm", "bf16", 5.5e14, 1e12, holdout=1)]
    params = fit_power.fit(rows)
    for key, value in TRUE.items():
        assert params[key] == pytest.approx(value, rel=1e-6)
    assert fit_power.score(rows, params)[-1]["ape"] < 1e-9
    assert params["j_per_flop_fp32"] != params["j_per_flop_fp32"]  # no fp32 case: NaN, not zero


def test_sustained_fraction_is_the_median_ratio_of_gemms_at_the_limit():
    # power at the limit needs flops: 6e14 x 0.7 pJ + 80 W = 500 W; cap 500 W: cases 1-3 at the limit
    rows = [case(1, "gemm", "bf16", 6e14, 0, burst=6e14 / 0.9), case(2, "gemm", "bf16", 6e14, 0, burst=6e14 / 0.8),
            case(3, "gemm", "bf16", 6e14, 0, burst=6e14 / 0.95), case(4, "gemm", "bf16", 1e14, 0, burst=2e14)]
    assert fit_power.sustained_fractions(rows, 500.0) == {"bf16": pytest.approx(0.9)}


def test_yaml_section_reads_back_through_the_spec(tmp_path):
    rows = [case(0, "idle", "", 0, 0), case(1, "gemm", "bf16", 6e14, 3e11), case(2, "gemm", "fp8", 1.2e15, 3e11),
            case(3, "copy", "", 0, 4e12)]
    params = fit_power.fit(rows)
    section = fit_power.yaml_section(params, {"bf16": 0.9}, "test")
    text = (ROOT / "hardware/presets/h100-sxm.yaml").read_text().replace("sources:\n", "sources:\n  measured: test\n", 1)
    text += "calibration:\n  matmul:\n    bf16: 700 TFLOP/s [measured]\n  memory_bandwidth: 3000 GB/s [measured]\n" \
            "  kernel_overhead: 2 us [measured]\n" + "".join("  " + line + "\n" for line in section.splitlines()[1:])
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    cal = Hardware.from_yaml(path).calibration
    assert cal.idle_power_w == pytest.approx(80.0)
    assert cal.joules_per_flop["bf16"] == pytest.approx(0.7e-12, rel=1e-9)
    assert cal.joules_per_hbm_byte == pytest.approx(100e-12, rel=1e-9)
    assert cal.sustained_fraction == {"bf16": pytest.approx(0.9)}


def test_constant_power_baseline_is_exact_at_constant_power():
    rows = [dict(id=f"c{i}", kind="gemm", duration_s="3", tail_power_w="650", holdout=str(h), error="")
            for i, h in enumerate([0, 0, 1])]
    watts, ape = fit_power.constant_power_baseline(rows)
    assert watts == pytest.approx(650.0) and ape == pytest.approx(0.0, abs=1e-12)


def test_the_awake_launch_case_is_the_idle_power_and_stays_out_of_the_fit():
    """A run with a "launch" case (tiny kernels launched back to back) fits over the awake board's
    power, not the parked idle: the busy cases' powers here are built on the awake baseline, and the
    fit recovers the per-unit energies exactly only with it."""
    awake = 120.0
    rows = [case(0, "idle", "", 0, 0)]  # parked: 80 W
    busy = [case(1, "gemm", "bf16", 6e14, 3e11), case(2, "gemm", "bf16", 5e14, 2.4e12),
            case(3, "gemm", "fp8", 1.2e15, 3e11), case(4, "gemm", "fp8", 1e15, 2e12), case(5, "copy", "", 0, 4e12)]
    for r in busy:
        r["tail_power_w"] = str(float(r["tail_power_w"]) - TRUE["idle_w"] + awake)
    launch = dict(case(9, "copy", "", 0, 0), id="launch", kind="launch", tail_power_w=str(awake))
    params = fit_power.fit(rows + busy + [launch])
    assert params["idle_w"] == pytest.approx(awake)
    assert fit_power.parked_idle_w(rows + [launch]) == pytest.approx(TRUE["idle_w"])
    assert launch not in fit_power.busy(rows + busy + [launch])
    for key in ("j_per_flop_bf16", "j_per_flop_fp8", "j_per_hbm_byte"):
        assert params[key] == pytest.approx(TRUE[key], rel=1e-6)
    assert fit_power.idle_w(rows + busy) == pytest.approx(TRUE["idle_w"])  # no launch case: the parked idle
