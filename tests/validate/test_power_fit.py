"""fit_power: the fitter recovers known board-power parameters; the constant-power baseline is exact
when every case draws the same power."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("fit_power", ROOT / "validate/reports/power/fit_power.py")
fit_power = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fit_power)

TRUE = {"idle_w": 80.0, "j_per_flop_bf16": 0.7e-12, "j_per_flop_fp8": 0.4e-12, "j_per_hbm_byte": 100e-12}


def case(i, kind, dtype, flops, nbytes, duration, holdout=0):
    energy = (TRUE["idle_w"] * duration + flops * TRUE.get(f"j_per_flop_{dtype}", 0.0)
              + nbytes * TRUE["j_per_hbm_byte"])
    return {"id": f"c{i}", "kind": kind, "dtype_class": dtype, "flops_per_call": str(flops),
            "bytes_per_call": str(nbytes), "calls": "1", "duration_s": str(duration),
            "energy_j": str(energy), "holdout": str(holdout), "error": ""}


def test_fit_recovers_known_parameters_and_predicts_held_out_cases():
    rows = [case(0, "idle", "", 0, 0, 3.0),
            case(1, "gemm", "bf16", 2e15, 3e11, 3.0), case(2, "gemm", "bf16", 1.8e15, 2.7e12, 3.1),
            case(3, "gemm", "fp8", 3.6e15, 9e11, 3.0), case(4, "gemm", "fp8", 3e15, 6e12, 3.2),
            case(5, "copy", "", 0, 1.2e13, 3.0), case(6, "gemm", "bf16", 1.9e15, 1e12, 3.0, holdout=1)]
    params = fit_power.fit(rows)
    for key, value in TRUE.items():
        assert params[key] == pytest.approx(value, rel=1e-6)
    assert fit_power.score(rows, params)[-1]["ape"] < 1e-9
    assert params["j_per_flop_fp32"] != params["j_per_flop_fp32"]  # no fp32 case: NaN, not zero


def test_constant_power_baseline_is_exact_at_constant_power():
    rows = [dict(id=f"c{i}", kind="gemm", duration_s=str(t), energy_j=str(650.0 * t), holdout=str(h), error="")
            for i, (t, h) in enumerate([(3.0, 0), (2.0, 0), (5.0, 1)])]
    watts, ape = fit_power.constant_power_baseline(rows)
    assert watts == pytest.approx(650.0) and ape == pytest.approx(0.0, abs=1e-12)
