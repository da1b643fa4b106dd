"""Board power model: hand derivations, the clip at the board limit, the power roof under a lower cap,
monotonicity, vectorized == scalar, the calibration section read from a spec, request energy on a
prediction (conservation against the ops), the DiT request energy, and the CLI."""
import dataclasses
import json

import numpy as np
import pytest

import hardware
import perfmodel
import workloads
from hardware.spec import Hardware, SpecError, to_yaml_dict
from perfmodel import energy
from perfmodel.ops import Precision, step_ops

PM = energy.PowerModel(idle_w=100.0, joules_per_flop={"bf16": 1e-12, "fp8": 0.5e-12, "fp32": 10e-12},
                       joules_per_hbm_byte=50e-12, tdp_w=700.0, cap_w=700.0)


def test_hand_derived_power_and_energy_below_the_limit():
    # 1 s of 300 J of work: P = 100 + 300 = 400 W; E = 400 J; no stretch
    t, power, e = energy.capped_phase(1.0, 300.0, PM)
    assert (t, power, e) == pytest.approx((1.0, 400.0, 400.0))


def test_demand_above_the_board_limit_draws_the_limit():
    # 900 J in 1 s would be 1000 W: the board draws its 700 W limit (the sustained rates price the clock)
    t, power, e = energy.capped_phase(1.0, 900.0, PM)
    assert (t, power, e) == pytest.approx((1.0, 700.0, 700.0))


def test_a_lower_cap_stretches_by_the_power_roof_and_pays_idle_for_the_longer_time():
    capped = dataclasses.replace(PM, cap_w=400.0)
    # at the limit the phase carries 600 J of dynamic energy; 300 W of headroom: 2 s, 200 J idle
    t, power, e = energy.capped_phase(1.0, 900.0, capped)
    assert (t, power, e) == pytest.approx((2.0, 400.0, 800.0))
    # a phase already under the cap is untouched
    assert energy.capped_phase(1.0, 200.0, capped) == pytest.approx((1.0, 300.0, 300.0))


def test_lower_cap_never_shortens_time_and_vectorized_equals_scalar():
    dyn = np.array([1.0, 300.0, 900.0])
    times = [energy.capped_phase(np.ones(3), dyn, dataclasses.replace(PM, cap_w=c))[0] for c in (700.0, 500.0, 300.0)]
    assert np.all(np.diff(np.stack(times), axis=0) >= 0)
    for i in range(3):
        one = energy.capped_phase(1.0, dyn[i], dataclasses.replace(PM, cap_w=500.0))
        assert one[0] == pytest.approx(times[1][i])


def test_op_energy_by_class_hand_derived():
    p8, p16 = Precision(8, 8, 16), Precision(16, 16, 16)
    model = workloads.load("llama-3-8b")
    ops = step_ops(model, seqs=1, new_tokens=64.0, past=0.0, p=p16, tp=1)
    gemm = next(op for op in ops if op.kind == "matmul")
    expect16 = gemm.count * (gemm.flops * 1e-12 + gemm.bytes * 50e-12)
    assert energy.op_dynamic_energy_j(gemm, p16, PM) == pytest.approx(expect16)
    # the same op at fp8 precision is priced on the 8-bit datapath class
    assert energy.op_dynamic_energy_j(gemm, p8, PM) == pytest.approx(gemm.count * (gemm.flops * 0.5e-12
                                                                                  + gemm.bytes * 50e-12))
    attn = next(op for op in ops if op.kind == "attention")
    with_attention = dataclasses.replace(PM, joules_per_flop={**PM.joules_per_flop, "attention": 2e-12})
    assert energy.op_dynamic_energy_j(attn, p16, with_attention) == pytest.approx(
        attn.count * (attn.flops * 2e-12 + attn.bytes * 50e-12))
    # without an attention class, attention FLOPs cost what 16-bit GEMM FLOPs do
    assert energy.op_dynamic_energy_j(attn, p16, PM) == pytest.approx(attn.count * (attn.flops * 1e-12 + attn.bytes * 50e-12))


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="power cap"):
        energy.power_model(hardware.load("h200-sxm"), cap_w=-5.0)
    with pytest.raises(ValueError, match="power cap"):
        energy.power_model(hardware.load("h200-sxm"), cap_w=900.0)  # above the board's own 700 W
    with pytest.raises(ValueError, match="power cap"):
        dataclasses.replace(PM, cap_w=50.0)  # below idle
    with pytest.raises(ValueError, match="joules_per_flop.fp8"):
        dataclasses.replace(PM, joules_per_flop={"bf16": 1e-12, "fp32": 1e-11})


def test_defaults_follow_their_stated_derivation():
    hw = hardware.load("h200-sxm")
    pm = energy.power_model(hw)
    assert pm.source == "defaults" and pm.cap_w == pm.tdp_w == 700.0
    assert pm.idle_w == pytest.approx(energy.IDLE_FRACTION_OF_TDP * 700)
    # a bf16 GEMM alone at TDP_AT_PEAK_FRACTION of the datasheet peak reaches the TDP
    rate = energy.TDP_AT_PEAK_FRACTION * hw.peak_flops_per_s("bf16")
    assert energy.board_power_w(1.0, rate * pm.joules_per_flop["bf16"], pm) == pytest.approx(700.0)


def test_calibration_power_section_is_read_used_and_round_trips():
    doc = to_yaml_dict(hardware.load("h200-sxm"))
    doc["sources"]["measured"] = "test"
    doc["calibration"] = {"matmul": {"bf16": "700 TFLOP/s [measured]"}, "memory_bandwidth": "4000 GB/s [measured]",
                          "kernel_overhead": "2 us [measured]",
                          "power": {"idle": "95 W [measured]", "energy_per_flop": {"bf16": "0.75 pJ/FLOP [measured]"},
                                    "energy_per_hbm_byte": "40 pJ/B [measured]",
                                    "sustained_fraction": {"bf16": "0.9 [measured]"}}}
    hw = Hardware.from_dict(doc)
    assert hw.calibration.idle_power_w == 95.0
    assert hw.calibration.joules_per_flop == {"bf16": pytest.approx(0.75e-12)}
    pm = energy.power_model(hw)
    assert pm.source == "calibration" and pm.joules_per_hbm_byte == pytest.approx(40e-12)
    assert pm.joules_per_flop["fp8"] == energy.default_power_model(hw).joules_per_flop["fp8"]  # uncalibrated class
    again = Hardware.from_dict(to_yaml_dict(hw))
    assert again.calibration == hw.calibration
    doc["calibration"]["power"]["energy_per_flop"]["bf16"] = "-1 pJ/FLOP [measured]"
    with pytest.raises(SpecError, match="energy_per_flop.bf16"):
        Hardware.from_dict(doc)
    doc["calibration"]["power"]["energy_per_flop"]["bf16"] = "0.75 pJ/FLOP [measured]"
    doc["calibration"]["power"]["sustained_fraction"]["bf16"] = "1.5 [measured]"
    with pytest.raises(SpecError, match="sustained_fraction.bf16"):
        Hardware.from_dict(doc)


def test_prediction_energy_conserves_the_ops_energy():
    hw = hardware.load("h200-sxm-calibrated")
    model = workloads.load("llama-3-8b")
    sc = workloads.Scenario(prompt=np.array([512, 2048, 2048]), gen=np.array([128, 128, 512]), batch=np.array([1, 1, 4]))
    pred = perfmodel.predict(model, hw, sc)
    out = energy.prediction_energy(pred)
    pm = energy.power_model(hw)
    cols = pred.columns
    # prefill: the ops step_time prices, priced op by op, over ttft at the clipped power
    p = Precision(16, 16, 16)
    for i in range(3):
        ops = step_ops(model, seqs=float(cols["batch"][i]), new_tokens=float(cols["prompt"][i]), past=0.0, p=p,
                       logits_tokens=float(cols["batch"][i]), engine=pred.engine)
        dyn = sum(float(energy.op_dynamic_energy_j(op, p, pm)) for op in ops)
        ttft = float(cols["ttft_s"][i])
        assert out["prefill_power_w"][i] == pytest.approx(min(pm.idle_w + dyn / ttft, pm.tdp_w))
    np.testing.assert_allclose(out["joules_per_token"], out["energy_j"] / (cols["batch"] * cols["samples"] * cols["gen"]))
    # the board draws between idle and its limit; decode is memory-bound and under the limit
    assert np.all((out["avg_power_w"] > pm.idle_w) & (out["avg_power_w"] <= pm.tdp_w + 1e-9))
    assert np.all(out["decode_power_w"] < pm.tdp_w)
    np.testing.assert_allclose(out["tpot_capped_s"], cols["tpot_s"])  # no cap below the board's own
    # a 350 W cap stretches the compute-bound prefill more than the decode
    capped = energy.prediction_energy(pred, power_cap_w=350.0)
    assert np.all(capped["ttft_capped_s"] / cols["ttft_s"] > capped["tpot_capped_s"] / cols["tpot_s"])
    assert np.all(capped["energy_j"] >= out["energy_j"])  # same work, longer time: more idle energy
    # batching amortises: 4 sequences cost less per token than 1 at the same prompt
    assert out["joules_per_token"][2] < out["joules_per_token"][1]
    # one scenario alone gives the same numbers (vectorized == scalar)
    one = energy.prediction_energy(perfmodel.predict(model, hw, workloads.Scenario(prompt=2048, gen=512, batch=4)))
    assert one["energy_j"][0] == pytest.approx(out["energy_j"][2])


def test_dit_request_energy_adds_up_its_stages():
    from perfmodel import dit as dit_cost
    from workloads import dit

    pipe, hw = dit.load("flux.1-dev"), hardware.load("h200-sxm-calibrated")
    pred = dit_cost.predict_dit(pipe, hw, pipe.request(height=1024, width=1024, steps=28))
    stages = pred.stage_energy()
    expect = stages["text_encode"][2] + pred.steps_run * stages["step"][2] + stages["vae_decode"][2]
    assert pred.energy_j == pytest.approx(expect)
    assert pm_between(pred.to_dict()["avg_power_w"], energy.power_model(hw))
    capped = dit_cost.predict_dit(pipe, hw, pipe.request(height=1024, width=1024, steps=28), power_cap_w=400.0)
    assert capped.e2e_capped_s > pred.e2e_capped_s == pytest.approx(pred.e2e_s)


def pm_between(watts, pm):
    return pm.idle_w < watts <= pm.tdp_w + 1e-9


def test_cli_json_carries_energy_and_a_lower_cap_stretches_prefill(capsys):
    from app.cli import main

    argv = ["predict", "--model", "llama-3-8b", "--hardware", "h200-sxm-calibrated", "--prompt", "2048", "--json"]
    assert main(argv) == 0
    full = json.loads(capsys.readouterr().out)
    assert main(argv + ["--power-cap", "400"]) == 0
    capped = json.loads(capsys.readouterr().out)
    assert full["energy_j"] > 0 and full["power_cap_w"] == 700 and capped["power_cap_w"] == 400
    assert capped["ttft_capped_s"] > 1.2 * full["ttft_capped_s"]
    assert capped["energy_j"] > full["energy_j"]
    assert main(argv + ["--power-cap", "50"]) == 2
    assert "power cap" in capsys.readouterr().err
    assert main(["predict", "--model", "flux.1-dev", "--resolution", "512x512", "--steps", "4", "--json"]) == 0
    dit = json.loads(capsys.readouterr().out)
    assert dit["energy_j"] > 0 and dit["power_model"] == "calibration"
