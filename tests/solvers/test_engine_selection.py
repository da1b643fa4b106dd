"""--engine on every solver command that prices GPU steps (offload, attention-offload, kv serve,
kv setting, bits with --model) and `engine=` on every solver function that does: hf-eager changes the
decode time against the default (vllm, a serving engine); an unknown name is one line naming
--engine, the value and the known names, exit code 2."""
import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

import hardware
import solvers
import workloads
from perfmodel import engines
from perfmodel.ops import Precision
from solvers import attention_offload, bits, bits_cost, kv, offload

MODEL, HW = "llama-3.2-1b", "h200-sxm-calibrated"
from tests.engine_cli import assert_unknown_engine, pricing_functions_without_engine, run


def json_of(capsys, *argv):
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def sens(tmp_path):
    table = bits_cost.model_layer_table(workloads.load(MODEL))
    path = tmp_path / "sens.csv"
    table.assign(name=table["layer"], params=table["rows"] * table["cols"], coef=1.0).to_csv(path, index=False)
    return path


def commands(sens):
    """(argv, decode time from the command's --json output) per solver command that prices steps."""
    return [
        (["solve", "offload", "--model", "opt-6.7b", "--hardware", "t4", "--json"], lambda d: d["decode_s"]),
        (["solve", "attention-offload", "--model", MODEL, "--compute", HW, "--memory", HW, "--batch", "64",
          "--json"], lambda d: d[0]["t_model_s"]),
        (["solve", "kv", "serve", "--model", MODEL, "--hardware", HW, "--context", "8192", "--tp", "1", "--json"],
         lambda d: d[0]["decode_s_per_token"]),
        (["solve", "kv", "setting", "--model", MODEL, "--hardware", HW, "--context", "8192", "--users", "8",
          "--memory", "2 GB", "--json"], lambda d: d["decode_s_per_token"]),
        (["solve", "bits", "--sensitivities", str(sens), "--avg-bits", "4", "--hardware", HW, "--model", MODEL,
          "--json"], lambda d: d["latency_s"]),
    ]


def test_solver_commands_engine_changes_decode_time(sens, capsys):
    for argv, decode in commands(sens):
        default, eager = json_of(capsys, *argv), json_of(capsys, *argv, "--engine", "hf-eager")
        assert decode(eager) > decode(default), argv[:3]
        assert decode(json_of(capsys, *argv, "--engine", engines.DEFAULT_ENGINE)) == decode(default), argv[:3]


def test_solver_commands_unknown_engine_is_one_line(sens, capsys):
    for argv, _ in commands(sens):
        code, _, err = run(capsys, *argv, "--engine", "nope")
        assert_unknown_engine(code, err, context=argv[:3])


def test_text_outputs_name_the_engine(capsys):
    code, out, _ = run(capsys, "solve", "offload", "--model", "opt-6.7b", "--hardware", "t4", "--engine", "trtllm")
    assert code == 0 and out.splitlines()[0].endswith(", engine trtllm]")
    code, out, _ = run(capsys, "solve", "kv", "serve", "--model", MODEL, "--hardware", HW, "--context", "8192",
                       "--tp", "1", "--engine", "sglang")
    assert code == 0 and "engine sglang]" in out.splitlines()[0]


# -- every solver function that prices time takes engine= --------------------------------------------
@pytest.fixture(scope="module")
def setup():
    return workloads.load(MODEL), hardware.load(HW), Precision(16, 16, 16)


def _decode_times(setup):
    model, hw, p = setup
    opt, t4 = workloads.load("opt-6.7b"), hardware.load("t4")
    sc = workloads.Scenario(prompt=512, gen=32)
    policy = offload.OffloadPolicy.from_percent(8, 2, 100, 0, 100, 0, 100, 0)
    frame = bits_cost.model_layer_table(model).assign(params=lambda f: f["rows"] * f["cols"], coef=1.0)
    # attention kernel families priced apart (the shipped H200 calibration has no per-family numbers yet)
    families = dataclasses.replace(hw, calibration=dataclasses.replace(
        hw.calibration, attention_kernels={"sdpa": {"flops_fraction": 0.3, "overhead_s": 5e-5}}))
    return [
        (offload.layer_times, lambda e: offload.layer_times(opt, t4, p, 8.0, 1.0, 512.0, engine=e)["common"]),
        (offload.evaluate_policy, lambda e: offload.evaluate_policy(opt, t4, sc, policy, engine=e).decode_s),
        (offload.evaluate_fractions, lambda e: offload.evaluate_fractions(
            opt, t4, sc, 8, 2, [[1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0]], engine=e)["decode_s"].iloc[0]),
        (offload.offload_policy, lambda e: offload.offload_policy(opt, t4, sc, gbs=[8], n_batches=[2],
                                                                  engine=e).decode_s),
        (attention_offload.model_time_s, lambda e: attention_offload.model_time_s(model, hw, 64.0, 4096.0, p, 1,
                                                                                  engine=e)),
        (attention_offload.attention_time_s, lambda e: attention_offload.attention_time_s(
            model, families, 64.0, 4096.0, p, 1, engine=e)),
        (attention_offload.attention_offload, lambda e: attention_offload.attention_offload(
            model, hw, hw, workloads.Scenario(prompt=4096, gen=512), 1, 1, 64, engine=e).lamina["t_model_s"]),
        (kv.kv_setting_costs, lambda e: kv.kv_setting_costs(model, hw, 8192, 8, 16.0, 8192.0, 0.0, 0,
                                                            engine=e)["decode_s_per_token"]),
        (kv.cheapest_kv_setting, lambda e: kv.cheapest_kv_setting(model, hw, 8192, users=8, memory_target_bytes=2e9,
                                                                  engine=e).decode_s_per_token),
        (bits_cost.fixed_step_time_s, lambda e: bits_cost.fixed_step_time_s(model, hw, engine=e)),
        (bits_cost.costs_from_frame, lambda e: bits_cost.costs_from_frame(frame, hw, model, engine=e).fixed_s),
        (bits.allocate_bits, lambda e: bits.allocate_bits(frame, 4.0, hardware=hw, model=model,
                                                          engine=e).latency_s),
    ]


def test_every_solver_pricing_function_takes_engine(setup):
    for function, decode in _decode_times(setup):
        param = inspect.signature(function).parameters.get("engine")
        assert param is not None, function.__qualname__
        assert param.default in (engines.DEFAULT_ENGINE, None), function.__qualname__
        default, eager = float(np.asarray(decode(None if param.default is None else engines.DEFAULT_ENGINE))), \
            float(np.asarray(decode("hf-eager")))
        assert eager != default, function.__qualname__
        assert float(np.asarray(decode(engines.load(engines.DEFAULT_ENGINE)))) == default, function.__qualname__
        with pytest.raises(ValueError, match="'nope'"):
            decode("nope")


#: Solver functions that call a step pricer for what no engine changes.
ENGINE_FREE = {
    ("bits_cost.py", "model_layer_table"),  # names and shapes of the quantizable layers, not times
    ("offload.py", "cpu_attention_s"),      # CPU attention: the op's FLOPs and bytes at the CPU's rates
}
#: Handlers take the engine as --engine.
HANDLERS = {("bits_commands.py", "run_bits"), ("kv_commands.py", "run_serve"), ("kv_commands.py", "run_setting"),
            ("offload_commands.py", "run_offload"), ("offload_commands.py", "run_attention")}
PRICERS = {"step_time", "evaluate", "predict", "step_ops", "mean_decode_step", "breakdown", "split_step_time",
           "offloaded_step_time", "prefill_time_s", "decode_time_s", "analyze", "layer_times", "evaluate_policy",
           "evaluate_fractions", "offload_policy", "kv_setting_costs", "cheapest_kv_setting", "fixed_step_time_s",
           "costs_from_frame", "model_time_s", "attention_time_s", "attention_offload"}


def test_no_solver_function_prices_time_without_an_engine_parameter():
    root = Path(solvers.__file__).parent
    assert not pricing_functions_without_engine(root, PRICERS, ENGINE_FREE | HANDLERS)

