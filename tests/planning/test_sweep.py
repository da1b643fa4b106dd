"""Sweeps: rows equal the cost model's, chunking never changes them, Dask gives the local result,
Pareto fronts equal brute force, constraints filter, bad specs fail with clear messages."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hardware
import perfmodel
import workloads
from app.cli import main
from planning import sweep
from planning.sweep import SweepError
from workloads.scenario import ScenarioError

OBJECTIVES = "throughput_per_device_tok_s:max,tpot_s:min"


def small_grid(**extra):
    axes = dict(model=["llama-3-8b", "qwen3-0.6b"], hardware=["h200-sxm", "l40s"],
                batch={"start": 1, "stop": 64, "num": 5, "log": True}, prompt=[512, 4096], w_bits=[4, 16],
                tp=[1, 2])
    axes.update(extra)
    return sweep.grid(constraints=["fits", "tpot_s <= 0.02"], pareto=OBJECTIVES, **axes)


def small_random(n=3000, seed=7):
    return sweep.random(n, seed=seed, model=["llama-3-8b", "qwen3-0.6b"], hardware=["h200-sxm", "l40s"],
                        batch={"start": 1, "stop": 512, "log": True}, prompt={"start": 64, "stop": 4096},
                        w_bits={"start": 3, "stop": 16}, kv_bits=[8, 16], constraints={"fits": True},
                        pareto=OBJECTIVES + ",ttft_s:min")


# -- rows ------------------------------------------------------------------------------------------
def test_grid_rows_are_the_cost_model_rows():
    result = sweep.run(small_grid())
    frame = result.frame
    assert len(frame) == 2 * 2 * 5 * 2 * 2 * 2 == result.rows
    assert list(frame["index"]) == list(range(len(frame)))
    for (m, h), group in frame.groupby(["model", "hardware"], observed=True):
        sc = workloads.Scenario(**{k: group[k].to_numpy() for k in ("batch", "prompt", "w_bits", "tp")})
        direct = perfmodel.evaluate(workloads.load(m), hardware.load(h), sc)
        for column in ("ttft_s", "tpot_s", "throughput_tok_s", "total_bytes", "usd_per_mtok"):
            np.testing.assert_array_equal(group[column].to_numpy(), direct[column])
        np.testing.assert_array_equal(group["fits"].to_numpy(), direct["fits"])
        np.testing.assert_array_equal(group["decode_bound"].astype(str).to_numpy(), direct["decode_bound"])


def test_every_input_column_is_kept_and_derived_columns_follow():
    frame = sweep.run(small_grid()).frame
    for column in ("model", "hardware") + sweep.SCENARIO_FIELDS + sweep.DERIVED_COLUMNS:
        assert column in frame.columns
    hw_price = frame["hardware"].map({h: hardware.load(h).price_per_hour_usd for h in ("h200-sxm", "l40s")})
    np.testing.assert_allclose(frame["usd_per_hour"], hw_price.astype(float) * frame["tp"])
    np.testing.assert_allclose(frame["throughput_per_device_tok_s"], frame["throughput_tok_s"] / frame["tp"])
    np.testing.assert_allclose(frame["tok_per_usd"], 1e6 / frame["usd_per_mtok"])


def test_log_and_step_ranges_expand_to_whole_numbers_once():
    spec = sweep.grid(model="gpt2", hardware="l4", batch={"start": 1, "stop": 100, "num": 10, "log": True},
                      prompt={"start": 100, "stop": 500, "step": 200})
    batch, prompt = spec.axes[2].values, spec.axes[3].values
    assert batch == (1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 22.0, 36.0, 60.0, 100.0)
    assert prompt == (100.0, 300.0, 500.0)
    assert spec.size == 30
    inside = sweep.grid(model="gpt2", hardware="l4", batch={"start": 1.2, "stop": 3.0, "num": 3})
    assert inside.axes[2].values == (2.0, 3.0)  # rounding never leaves the range


def test_nothing_feasible_gives_an_empty_front(capsys):
    spec = sweep.grid(model="gpt2", hardware="l4", batch=[1, 2], constraints=["tpot_s <= 1e-9"], pareto=OBJECTIVES)
    result = sweep.run(spec, chunk_rows=1)
    assert result.feasible_rows == 0 and result.front is not None and result.front.empty
    assert "throughput_per_device_tok_s" in result.front.columns
    assert main(["sweep", "--grid", "model=gpt2", "--grid", "hardware=l4", "--max-tpot", "1e-9",
                 "--pareto", OBJECTIVES, "--no-progress"]) == 0
    assert "the front is empty" in capsys.readouterr().out


@pytest.mark.parametrize("make, rows", [(small_grid, 37), (small_random, 401)])
def test_chunking_never_changes_the_rows(make, rows):
    spec = make()
    whole = sweep.run(spec)
    split = sweep.run(spec, chunk_rows=rows)
    pd.testing.assert_frame_equal(whole.frame, split.frame)
    pd.testing.assert_frame_equal(whole.front, split.front)


def test_random_rows_stay_in_their_ranges_and_cover_lists():
    frame = sweep.run(small_random(n=6000)).frame
    assert frame["batch"].between(1, 512).all() and (frame["batch"] % 1 == 0).all()
    assert frame["prompt"].between(64, 4096).all() and (frame["prompt"] % 1 == 0).all()
    assert frame["w_bits"].between(3, 16).all() and (frame["w_bits"] % 1 != 0).any()  # bits are continuous
    # each of the 2 x 2 (model, hardware) pairs is drawn 1/4 of the time: 1500 +- 5 sigma (33.5)
    counts = frame.groupby(["model", "hardware"], observed=True).size()
    assert len(counts) == 4 and (abs(counts - 1500) < 170).all()
    # log-uniform batch: the median is near sqrt(512) = 22.6, not 256
    assert 16 <= frame["batch"].median() <= 32


def test_random_seed_changes_the_sample_and_uniforms_are_uniform():
    a = sweep.run(small_random(n=500, seed=1)).frame
    b = sweep.run(small_random(n=500, seed=2)).frame
    assert not np.array_equal(a["prompt"].to_numpy(), b["prompt"].to_numpy())
    u = sweep.uniform(3, 0, np.arange(200_000))
    v = sweep.uniform(3, 1, np.arange(200_000))
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(np.corrcoef(u, v)[0, 1]) < 0.01
    hist = np.histogram(u, bins=10, range=(0, 1))[0]
    assert (abs(hist - 20_000) < 5 * np.sqrt(20_000 * 0.9)).all()


def test_device_fields_make_device_variants():
    spec = sweep.grid(model="llama-3-8b", hardware="h200-sxm", hbm_bytes_per_s=["2.4 TB/s", 4.8e12],
                      batch=[1])
    frame = sweep.run(spec).frame
    assert list(frame["hbm_bytes_per_s"]) == [2.4e12, 4.8e12]
    # batch-1 decode is memory bound: half the bandwidth, about twice the time per token
    ratio = frame["tpot_s"].iloc[0] / frame["tpot_s"].iloc[1]
    assert 1.8 < ratio <= 2.0 + 1e-9
    faster = sweep.run(sweep.grid(model="llama-3-8b", hardware="h200-sxm", batch=[64], prompt=[4096],
                                  **{"flops_per_s.bf16": [100e12, 1000e12]})).frame
    assert faster["ttft_s"].iloc[0] > 5 * faster["ttft_s"].iloc[1]  # prefill is compute bound


def test_hardware_objects_and_edited_copies_get_distinct_labels():
    h200 = hardware.load("h200-sxm")
    cheap = dataclasses.replace(h200, price_per_hour_usd=1.0)
    frame = sweep.run(sweep.grid(model="gpt2", hardware=[h200, cheap], batch=[1])).frame
    assert list(frame["hardware"]) == ["h200-sxm", "h200-sxm#2"]
    assert frame["usd_per_hour"].tolist() == [h200.price_per_hour_usd, 1.0]


def test_rows_past_the_model_context_are_never_feasible():
    frame = sweep.run(sweep.grid(model="gpt2", hardware="h200-sxm", prompt=[512, 2000], gen=[128])).frame
    assert frame["context_ok"].tolist() == [True, False]  # gpt2's context is 1024 tokens
    assert frame["feasible"].tolist() == [True, False]


# -- constraints -----------------------------------------------------------------------------------
def test_constraints_filter_exactly():
    result = sweep.run(small_grid())
    frame = result.frame
    expected = frame["fits"].to_numpy() & (frame["tpot_s"].to_numpy() <= 0.02) & frame["context_ok"].to_numpy()
    np.testing.assert_array_equal(frame["feasible"].to_numpy(), expected)
    assert 0 < expected.sum() < len(frame)  # the filter removes some rows and keeps some
    assert result.feasible_rows == expected.sum()
    kept = sweep.run(small_grid(), keep="feasible").frame
    pd.testing.assert_frame_equal(kept, result.feasible)


def test_constraint_forms_agree():
    forms = [["ttft_s <= 0.5", "fits"], {"ttft_s": {"max": 0.5}, "fits": True}, {"ttft_s": "<= 0.5", "fits": "== true"},
             "ttft_s<=0.5,fits"]
    parsed = [sweep.parse_constraints(f) for f in forms]
    assert all(p == parsed[0] for p in parsed)
    assert parsed[0] == (sweep.Constraint("ttft_s", "<=", 0.5), sweep.Constraint("fits", "==", 1.0))


def test_budget_constraint():
    spec = small_grid()
    spec = dataclasses.replace(spec, constraints=sweep.parse_constraints(["usd_per_hour <= 5"]))
    frame = sweep.run(spec).frame
    np.testing.assert_array_equal(frame["feasible"], (frame["usd_per_hour"] <= 5) & frame["context_ok"])


# -- Pareto ----------------------------------------------------------------------------------------
def brute_force(points: np.ndarray, senses) -> np.ndarray:
    x = points * np.array([-1.0 if s == "max" else 1.0 for s in senses])
    finite = np.all(np.isfinite(x), axis=1)
    keep = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(finite):
        others = x[finite]
        dominated = np.any(np.all(others <= x[i], axis=1) & np.any(others < x[i], axis=1))
        keep[i] = not dominated
    return keep


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4).flatmap(lambda d: st.tuples(
    st.lists(st.lists(st.integers(0, 6), min_size=d, max_size=d), min_size=0, max_size=200),
    st.lists(st.sampled_from(["max", "min"]), min_size=d, max_size=d))))
def test_pareto_mask_equals_brute_force(case):
    rows, senses = case
    # small integers: many ties; over 64 rows the anchor prefilter runs before the exact pass
    points = np.array(rows, dtype=float).reshape(-1, len(senses))
    np.testing.assert_array_equal(sweep.pareto_mask(points, senses), brute_force(points, senses))


@pytest.mark.parametrize("d", [2, 3, 5])
def test_pareto_mask_on_continuous_points_with_nan(d):
    rng = np.random.default_rng(d)
    points = rng.normal(size=(1500, d))
    points[::97, 0] = np.nan
    points[5, 1] = np.inf
    senses = ["max", "min", "max", "min", "min"][:d]
    expected = brute_force(points, senses)
    np.testing.assert_array_equal(sweep.pareto_mask(points, senses), expected)
    assert expected.sum() >= 2


def test_nd_front_of_a_large_front_is_exact():
    """Points on a sphere: every one is on the front, so the block method's memory slicing is used."""
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(1500, 3)))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert sweep.pareto_mask(x, ["max", "max", "max"]).all()
    assert sweep.pareto_mask(np.vstack([x, x * 0.5]), ["max"] * 3).sum() == 1500


def test_merged_chunk_fronts_equal_the_front_of_all_rows():
    for spec in (small_grid(), small_random()):
        result = sweep.run(spec, chunk_rows=173)
        direct = sweep.pareto_front(result.feasible, spec.objectives)
        pd.testing.assert_frame_equal(result.front, direct)
        assert len(result.front) > 1


def test_keep_front_returns_only_the_front(tmp_path):
    full = sweep.run(small_grid())
    front_only = sweep.run(small_grid(), keep="front", path=tmp_path / "front.parquet")
    pd.testing.assert_frame_equal(front_only.frame, full.front)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "front.parquet"), full.front)


# -- output ------------------------------------------------------------------------------------------
def test_parquet_and_csv_round_trip(tmp_path):
    result = sweep.run(small_grid(), chunk_rows=40, path=tmp_path / "s.parquet", csv_path=tmp_path / "s.csv")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "s.parquet"), result.frame)
    csv = pd.read_csv(tmp_path / "s.csv")
    assert list(csv.columns) == list(result.frame.columns) and len(csv) == len(result.frame)
    np.testing.assert_allclose(csv["tpot_s"], result.frame["tpot_s"], rtol=1e-15)


def test_uncollected_run_keeps_counts_and_front_only():
    result = sweep.run(small_grid(), keep="none", collect=False)
    assert result.frame is None and result.rows == 160 and len(result.front) > 0
    with pytest.raises(SweepError, match="not kept"):
        result.feasible


def test_plot_front_writes_a_png(tmp_path):
    result = sweep.run(small_grid())
    result.plot_front(tmp_path / "front.png")
    assert (tmp_path / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- bad specs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("axes, message", [
    ({"batchh": [1]}, "sweep axis 'batchh': unknown field"),
    ({"batch": []}, "sweep axis 'batch': empty list"),
    ({"batch": {"start": 64, "stop": 1, "num": 4}}, "sweep axis 'batch': empty range, start 64 > stop 1"),
    ({"batch": {"start": 1, "stop": 8, "num": 0}}, "sweep axis 'batch': empty range, num = 0"),
    ({"prompt": {"start": 1.2, "stop": 1.8, "num": 3}}, "sweep axis 'prompt': empty range, no whole number"),
    ({"batch": {"start": 1, "stop": 8}}, "range needs 'num' or 'step' in a grid"),
    ({"batch": {"start": 0, "stop": 8, "num": 3, "log": True}}, "log range needs start > 0"),
    ({"batch": {"begin": 1, "stop": 8}}, "unknown range key"),
    ({"batch": ["eight"]}, "'eight' is not a number"),
    ({"hbm_bytes_per_s": ["4.8 TFLOP/s"]}, "hbm_bytes_per_s: '4.8 TFLOP/s' has the wrong unit"),
    ({"model": ["no-such-model"]}, "no-such-model"),
])
def test_bad_axes_raise_clear_errors(axes, message):
    base = {"model": ["gpt2"], "hardware": ["l4"]}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sweep.build({**base, **axes})


def test_bad_scenario_values_name_the_field():
    with pytest.raises(ScenarioError, match="batch: 0 is invalid"):
        sweep.grid(model="gpt2", hardware="l4", batch=[0, 1])


@pytest.mark.parametrize("data, message", [
    ({"axes": {"model": "gpt2", "hardware": "l4"}, "modee": "grid"}, "unknown key"),
    ({"axes": {}}, "'axes' must map"),
    ({"axes": {"hardware": "l4"}}, "'model' is required"),
    ({"axes": {"model": "gpt2", "hardware": "l4"}, "mode": "lhs"}, "mode: 'lhs'"),
    ({"axes": {"model": "gpt2", "hardware": "l4"}, "mode": "random"}, "n: 0 must be"),
    ({"axes": {"model": "gpt2", "hardware": "l4"}, "pareto": "tpot_s:lowest"}, "direction 'lowest'"),
    ({"axes": {"model": "gpt2", "hardware": "l4"}, "constraints": ["tpot_s ~ 3"]}, "expected 'column <= value'"),
    ({"axes": {"model": "gpt2", "hardware": "l4"}, "constraints": {"tpot_s": {"below": 3}}}, "max and/or min"),
])
def test_bad_specs_raise_clear_errors(data, message):
    with pytest.raises(SweepError, match=message):
        sweep.SweepSpec.from_dict(data)


def test_unknown_columns_fail_before_any_chunk_runs():
    spec = sweep.grid(model="gpt2", hardware="l4", constraints=["latency_s <= 1"])
    with pytest.raises(SweepError, match="unknown column 'latency_s'"):
        sweep.run(spec)
    spec = sweep.grid(model="gpt2", hardware="l4", pareto="speed:max,tpot_s:min")
    with pytest.raises(SweepError, match="unknown column 'speed'"):
        sweep.run(spec)


def test_spec_from_yaml(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("axes:\n  model: [gpt2]\n  hardware: [l4, t4]\n  batch: {start: 1, stop: 16, num: 5, log: true}\n"
                    "constraints:\n  fits: true\n  tpot_s: {max: 0.01}\npareto: {throughput_tok_s: max, tpot_s: min}\n")
    spec = sweep.SweepSpec.from_yaml(path)
    assert spec.size == 10 and [str(o) for o in spec.objectives] == ["throughput_tok_s:max", "tpot_s:min"]
    with pytest.raises(SweepError, match="does not exist"):
        sweep.SweepSpec.from_yaml(tmp_path / "missing.yaml")


# -- Dask --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dask_client():
    pytest.importorskip("distributed")
    from planning import sweep_dask

    with sweep_dask.local_cluster(n_workers=2) as client:
        yield client


@pytest.mark.parametrize("make, rows", [(small_grid, 23), (small_random, 499)])
def test_dask_results_identical_to_local(dask_client, make, rows, tmp_path):
    from planning import sweep_dask

    spec = make()
    local = sweep.run(spec, chunk_rows=rows)
    remote = sweep_dask.run(spec, client=dask_client, chunk_rows=rows, window=3, path=tmp_path / "d.parquet")
    pd.testing.assert_frame_equal(local.frame, remote.frame)
    pd.testing.assert_frame_equal(local.front, remote.front)
    assert (local.rows, local.feasible_rows) == (remote.rows, remote.feasible_rows)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "d.parquet"), local.frame)


def test_dask_keep_front_identical_to_local(dask_client):
    from planning import sweep_dask

    spec = small_random(n=5000)
    local = sweep.run(spec, keep="front", collect=False)
    remote = sweep_dask.run(spec, client=dask_client, chunk_rows=500, keep="front", collect=False)
    pd.testing.assert_frame_equal(local.front, remote.front)


def test_dask_worker_errors_reach_the_caller(dask_client):
    from planning import sweep_dask

    # the second device has no fp32 rate for vector ops; its rows come after row 0, so prepare()
    # passes and the error is raised on a worker
    no_fp32 = dataclasses.replace(hardware.load("l4"), name="no-fp32", flops_per_s={"bf16": 1e14})
    spec = sweep.grid(model="gpt2", hardware=[hardware.load("l4"), no_fp32], batch=[1, 2])
    local_error = _error_of(lambda: sweep.run(spec, chunk_rows=2))
    remote_error = _error_of(lambda: sweep_dask.run(spec, client=dask_client, chunk_rows=2))
    assert isinstance(local_error, hardware.SpecError) and "no-fp32 lists no rate usable" in str(local_error)
    assert type(remote_error) is type(local_error) and str(remote_error) == str(local_error)


def _error_of(call):
    try:
        call()
    except Exception as err:  # noqa: BLE001 - comparing whatever each path raises
        return err
    return None


def test_bad_scheduler_address_is_a_clear_error():
    pytest.importorskip("distributed")
    from planning import sweep_dask

    with pytest.raises(SweepError, match="scheduler 'tcp://127.0.0.1:1': cannot connect"):
        sweep_dask.run(small_grid(), scheduler="tcp://127.0.0.1:1", scheduler_timeout_s=1)


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_grid_sweep_writes_parquet_and_csv(tmp_path, capsys):
    out = tmp_path / "out.parquet"
    code = main(["sweep", "--grid", "model=llama-3.2-1b,qwen3-0.6b", "--grid", "hardware=l4,t4", "--grid", "batch=1:64:4:log",
                 "--grid", "prompt=512", "--grid", "w_bits=16", "--grid", "kv_bits=16", "--grid", "tp=1",
                 "--max-tpot", "0.01", "--fits", "--pareto", "throughput_tok_s:max,tpot_s:min", "-o", str(out),
                 "--csv", "--no-progress", "--plot", str(tmp_path / "f.png")])
    text = capsys.readouterr().out
    assert code == 0
    assert "16 scenarios" in text and "Pareto front over throughput_tok_s:max, tpot_s:min" in text
    frame = pd.read_parquet(out)
    assert len(frame) == 16 and len(pd.read_csv(tmp_path / "out.csv")) == 16
    assert (((frame["tpot_s"] <= 0.01) & frame["fits"]) == frame["feasible"]).all()
    assert (tmp_path / "f.png").exists()


def test_cli_default_sweep_runs(capsys):
    assert main(["sweep", "--no-progress", "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "Pareto front over tok_per_usd:max, tpot_s:min" in text and "more front rows" in text


def test_cli_spec_file_with_overrides_and_random(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text("axes:\n  model: gpt2\n  hardware: [l4]\n  batch: [1, 2]\npareto: {tpot_s: min}\n")
    assert main(["sweep", str(path), "--grid", "prompt=64:512", "--random", "50", "--seed", "3", "--no-progress"]) == 0
    assert "50 scenarios" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--grid", "batchh=1,2", "--grid", "model=gpt2", "--grid", "hardware=l4"], "unknown field"),
    (["sweep", "--grid", "model=gpt2", "--grid", "hardware=l4", "--grid", "batch=8:1:3"], "empty range"),
    (["sweep", "--grid", "batch"], "expected FIELD=VALUES"),
    (["sweep", "--csv"], "--csv: needs -o"),
    (["sweep", "missing.yaml"], "does not exist"),
])
def test_cli_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
