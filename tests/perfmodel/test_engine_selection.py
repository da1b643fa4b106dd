"""--engine on every core command that prices time (predict, sweep, recommend, best-batch), and
`engine=` on every core function that does: hf-eager changes the decode time against the default
(vllm, a serving engine); an unknown name is one line naming --engine, the value and the known names."""
import inspect
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hardware
import perfmodel
import planning
import workloads
from app.cli import main
from perfmodel import engines, longctx, tiers
from perfmodel.ops import Precision, step_ops
from perfmodel.predict import breakdown, evaluate, mean_decode_step, step_time
from planning import recommend, sweep

MODEL, HW = "llama-3.2-1b", "h200-sxm-calibrated"
from tests.engine_cli import KNOWN, assert_unknown_engine, pricing_functions_without_engine, run


def table(text: str, first_column: str) -> pd.DataFrame:
    """A DataFrame.to_string table printed by a command, from its header line on."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() and line.split()[0] == first_column)
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
    return pd.read_fwf(io.StringIO("\n".join(lines[start:end])))


# -- predict ----------------------------------------------------------------------------------------
def test_predict_engine_changes_decode_time_and_is_named(capsys):
    base = ["predict", "--model", MODEL, "--hardware", HW, "--json"]
    code, out, _ = run(capsys, *base)
    default = json.loads(out)
    code2, out2, _ = run(capsys, *base, "--engine", "hf-eager")
    eager = json.loads(out2)
    assert code == code2 == 0
    assert default["engine"] == engines.DEFAULT_ENGINE and eager["engine"] == "hf-eager"
    assert eager["tpot_s"] > 1.5 * default["tpot_s"]  # Python dispatch bounds the eager step
    code, text, _ = run(capsys, "predict", "--model", MODEL, "--hardware", HW, "--engine", "trtllm")
    assert code == 0 and text.splitlines()[0].endswith("[calibrated, engine trtllm]")


def test_predict_unknown_engine_is_one_line(capsys):
    code, _, err = run(capsys, "predict", "--engine", "nope")
    assert_unknown_engine(code, err)


def test_engine_flag_help_lists_the_profiles(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--engine {" + ",".join(KNOWN) + "}" in text and "default vllm, a serving engine" in text


# -- sweep --------------------------------------------------------------------------------------------
def _sweep_csv(capsys, tmp_path, name, *extra):
    path = tmp_path / f"{name}.csv"
    # --grid keeps the default sweep's other axes (issue 16), so pin them to one value each
    pinned = [arg for axis in ("prompt=2048", "w_bits=16", "kv_bits=16", "tp=1") for arg in ("--grid", axis)]
    code, out, err = run(capsys, "sweep", "--grid", f"model={MODEL}", "--grid", f"hardware={HW}",
                         "--grid", "batch=1,8", *pinned, "--no-progress", "-o", str(path), *extra)
    assert code == 0, err
    return pd.read_csv(path), out


def test_sweep_engine_option_and_axis(capsys, tmp_path):
    default, text = _sweep_csv(capsys, tmp_path, "default")
    assert set(default["engine"]) == {engines.DEFAULT_ENGINE} and "engine vllm" in text
    eager, text = _sweep_csv(capsys, tmp_path, "eager", "--engine", "hf-eager")
    assert set(eager["engine"]) == {"hf-eager"} and "engine hf-eager" in text
    assert np.all(eager["tpot_s"].to_numpy() > default["tpot_s"].to_numpy())
    both, _ = _sweep_csv(capsys, tmp_path, "both", "--grid", "engine=vllm,hf-eager")
    assert len(both) == 4
    for name, frame in (("vllm", default), ("hf-eager", eager)):
        rows = both[both["engine"] == name].sort_values("batch")
        np.testing.assert_allclose(rows["tpot_s"], frame.sort_values("batch")["tpot_s"], rtol=1e-12)


def test_sweep_engine_errors(capsys, tmp_path):
    grid = ["sweep", "--grid", f"model={MODEL}", "--grid", f"hardware={HW}", "--no-progress"]
    code, _, err = run(capsys, *grid, "--engine", "nope")
    assert_unknown_engine(code, err)
    code, _, err = run(capsys, *grid, "--grid", "engine=vllm,nope")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "engine" in err and "'nope'" in err and all(name in err for name in KNOWN)
    code, _, err = run(capsys, *grid, "--grid", "engine=vllm", "--engine", "vllm")
    assert code == 2 and "--engine" in err and len(err.strip().splitlines()) == 1
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"axes: {{model: [{MODEL}], hardware: [{HW}]}}\nengine: nope\n")
    code, _, err = run(capsys, "sweep", str(spec), "--no-progress")
    assert code == 2 and "'nope'" in err and all(name in err for name in KNOWN)


def test_sweep_spec_engine_key_and_axis_rows():
    spec = sweep.SweepSpec.from_dict({"axes": {"model": [MODEL], "hardware": [HW], "batch": [1]},
                                      "engine": "hf-eager"})
    assert spec.engine.name == "hf-eager" and spec.engine_axis is None
    swept = sweep.grid(model=[MODEL], hardware=[HW], engine=["vllm", "hf-eager"], batch=[1])
    frame = sweep.run(swept).frame
    assert list(frame["engine"]) == ["vllm", "hf-eager"]
    assert frame["tpot_s"].iloc[1] == pytest.approx(sweep.run(spec).frame["tpot_s"].iloc[0], rel=1e-12)
    with pytest.raises(sweep.SweepError, match="not both"):
        sweep.build({"model": [MODEL], "hardware": [HW], "engine": ["vllm"]}, engine="vllm")


# -- recommend and best-batch -------------------------------------------------------------------------
PLAN = ["--model", MODEL, "--hardware", HW, "--max-batch", "16", "--no-progress"]


def test_best_batch_engine_changes_decode_time(capsys):
    code, out, _ = run(capsys, "best-batch", *PLAN, "--objective", "throughput_tok_s")
    code2, out2, _ = run(capsys, "best-batch", *PLAN, "--objective", "throughput_tok_s", "--engine", "hf-eager")
    assert code == code2 == 0
    assert "engine vllm" in out.splitlines()[0] and "engine hf-eager" in out2.splitlines()[0]
    default, eager = table(out, "hardware"), table(out2, "hardware")
    assert default["batch"].iloc[0] == eager["batch"].iloc[0] == 16  # the whole range fits either way
    assert default["tpot_s"].iloc[0] != eager["tpot_s"].iloc[0]
    code, _, err = run(capsys, "best-batch", *PLAN, "--engine", "nope")
    assert_unknown_engine(code, err)


def test_recommend_engine_changes_decode_time(capsys):
    argv = ["recommend", *PLAN, "--rate", "2000", "--tp", "1", "--w-bits", "16", "--kv-bits", "16"]
    code, out, _ = run(capsys, *argv)
    code2, out2, _ = run(capsys, *argv, "--engine", "hf-eager")
    assert code == code2 == 0
    assert "engine vllm" in out.splitlines()[0] and "engine hf-eager" in out2.splitlines()[0]
    assert table(out, "hardware")["tpot_s"].iloc[0] != table(out2, "hardware")["tpot_s"].iloc[0]
    code, _, err = run(capsys, *argv, "--engine", "nope")
    assert_unknown_engine(code, err)


# -- every core function that prices time takes engine= ---------------------------------------------
@pytest.fixture(scope="module")
def setup():
    return workloads.load(MODEL), hardware.load(HW), Precision(16, 16, 16)


def _decode_times(setup):
    """(function, call(engine) -> a decode-step time) for each core function that prices time."""
    model, hw, p = setup
    sc = workloads.Scenario(batch=4, prompt=512, gen=64)
    plan = dict(hardware=[HW], batch={"start": 1, "stop": 4, "step": 1}, prompt=512, gen=64, w_bits=[16],
                kv_bits=[16], tp=[1])
    return [
        (perfmodel.predict, lambda e: perfmodel.predict(model, hw, sc, engine=e)["tpot_s"]),
        (evaluate, lambda e: evaluate(model, hw, sc, engine=e)["tpot_s"]),
        (step_time, lambda e: step_time(model, hw, seqs=4.0, new_tokens=1.0, past=512.0, p=p, engine=e)["time_s"]),
        (mean_decode_step, lambda e: mean_decode_step(model, hw, seqs=4.0, past_first=512.0, past_last=574.0,
                                                      p=p, engine=e)["time_s"]),
        (breakdown, lambda e: breakdown(model, hw, sc, "decode", engine=e)["time_s"].sum()),
        (step_ops, lambda e: sum(op.count * op.kernels for op in step_ops(model, seqs=4.0, new_tokens=1.0,
                                                                          past=512.0, p=p, engine=e))),
        (tiers.split_step_time, lambda e: sum(np.asarray(t) for t in tiers.split_step_time(model, hw, 4.0, 1.0,
                                                                                            512.0, p, engine=e))),
        (tiers.offloaded_step_time, lambda e: tiers.offloaded_step_time(model, hw, 4.0, 1.0, 512.0, p, 8,
                                                                        engine=e)["time_s"]),
        (longctx.decode_time_s, lambda e: longctx.decode_time_s(model, hw, 4096, 4, engine=e)),
        (longctx.prefill_time_s, lambda e: longctx.prefill_time_s(model, hw, 4096, engine=e)),
        (longctx.analyze, lambda e: longctx.analyze(model, hw, 4096, engine=e)["decode_s_per_token"]),
        (recommend.best_batch, lambda e: recommend.best_batch(model, engine=e, objective="throughput_tok_s",
                                                              **plan)["tpot_s"].iloc[0]),
        (recommend.cheapest, lambda e: recommend.cheapest(model, 1000, engine=e, **plan).best["tpot_s"]),
        (sweep.build, lambda e: sweep.run(sweep.build({"model": [model], "hardware": [hw], "batch": [4]},
                                                      engine=e)).frame["tpot_s"].iloc[0]),
    ]


def test_every_core_pricing_function_takes_engine(setup):
    for function, decode in _decode_times(setup):
        param = inspect.signature(function).parameters.get("engine")
        assert param is not None, function.__qualname__
        assert param.default in (engines.DEFAULT_ENGINE, None), function.__qualname__
        default, eager = np.asarray(decode(engines.DEFAULT_ENGINE), float), np.asarray(decode("hf-eager"), float)
        assert np.all(eager != default), function.__qualname__
        np.testing.assert_array_equal(np.asarray(decode(engines.load("vllm")), float), default)
        with pytest.raises(ValueError, match="'nope'"):
            decode("nope")


#: Step pricers: a function that calls one prices time.
PRICERS = {"step_time", "evaluate", "predict", "step_ops", "mean_decode_step", "breakdown", "split_step_time",
           "offloaded_step_time", "prefill_time_s", "decode_time_s", "analyze", "host_dispatch_s",
           "host_overhead_s", "context_ops", "cheapest", "best_batch", "build"}


def test_no_core_function_prices_time_without_an_engine_parameter():
    """Any top-level function of perfmodel or planning that calls a step pricer takes `engine`
    (command handlers take it as --engine; sweep.grid / random take it as an axis; sweep._fill reads
    the spec's)."""
    exempt = {("commands.py", "run_predict"), ("commands.py", "run_predict_dit"), ("commands.py", "run_recommend"),
              ("commands.py", "run_best_batch"), ("sweep.py", "grid"), ("sweep.py", "random"),
              ("sweep.py", "_fill")}
    for package in (perfmodel, planning):
        assert not pricing_functions_without_engine(Path(package.__file__).parent, PRICERS, exempt)
