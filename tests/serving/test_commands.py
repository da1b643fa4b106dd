"""`perfmodel serve` and `perfmodel plan`: the JSON contract, files written, one-line errors."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from app import cli
from serving import workload as W


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_serve_json_contract(capsys, tmp_path):
    code, out, err = run(capsys, "serve", "--model", "llama-3-8b", "--hardware", "h200-sxm-calibrated", "--rate", "10",
                         "--requests", "200", "--prompt", "512", "--gen", "64", "--seed", "3", "--slo-ttft", "0.5s",
                         "--slo-tpot", "40ms", "--json", "--output", str(tmp_path / "r.csv"))
    assert code == 0, err
    s = json.loads(out)
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        assert s[key]["p50"] <= s[key]["p90"] <= s[key]["p99"]
    assert s["throughput_tok_s"] > 0 and s["preempted"] == 0 and 0 < s["goodput_req_s"] <= s["request_rate_req_s"]
    frame = pd.read_csv(tmp_path / "r.csv")
    assert list(frame.columns[:8]) == ["arrival_s", "prompt_tokens", "output_tokens", "first_token_s", "finish_s",
                                       "ttft_s", "tpot_s", "e2e_s"]
    assert len(frame) == 200 and frame["ttft_s"].median() == pytest.approx(s["ttft_s"]["p50"])


def test_serve_trace_gives_the_same_result_as_its_requests(capsys, tmp_path):
    req = W.generate(100, 8.0, W.Lengths("uniform", 1, low=100, high=900), 32, seed=4)
    W.write_trace(req, tmp_path / "trace.csv")
    code, out, err = run(capsys, "serve", "--trace", str(tmp_path / "trace.csv"), "--json",
                         "--output", str(tmp_path / "r.json"))
    assert code == 0, err
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [r["prompt_tokens"] for r in rows] == req.prompt_tokens.tolist()


def test_serve_text_plot_and_modes(capsys, tmp_path):
    code, out, err = run(capsys, "serve", "--rate", "5", "--requests", "60", "--gen", "16", "--plot",
                         str(tmp_path / "load.png"))
    assert code == 0, err
    assert "TTFT" in out and "throughput" in out and (tmp_path / "load.png").stat().st_size > 1000
    engine_settings = ["--decode-batch-sizes", "1,2,4,8,16,32,64,128,256", "--prefill-token-sizes", "256,1024,8192",
                       "--sequential-prefill", "--static-cache-tokens", "2048"]
    for extra in (["--disagg", "1:1"], ["--replicas", "2"], ["--spec-k", "3"], ["--static"], ["--preemption", "swap"],
                  engine_settings):
        code, out, err = run(capsys, "serve", "--rate", "5", "--requests", "40", "--gen", "16", "--json", *extra)
        assert code == 0, (extra, err)


@pytest.mark.parametrize("argv,field", [
    (["--rate", "-2"], "--rate"),
    (["--rate", "5", "--slo-ttft", "1us"], "--slo-ttft"),
    (["--rate", "5", "--slo-tpot", "10us"], "--slo-tpot"),
    (["--rate", "5", "--prompt", "8000", "--gen", "500"], "context window"),
    (["--rate", "5", "--prompt", "lognormal:x"], "--prompt"),
    (["--rate", "5", "--disagg", "3"], "--disagg"),
    (["--rate", "5", "--decode-batch-sizes", "4,2"], "--decode-batch-sizes"),
    (["--rate", "5", "--prefill-token-sizes", "0,16"], "--prefill-token-sizes"),
    (["--rate", "5", "--static-cache-tokens", "100"], "static_cache_tokens"),
    ([], "--rate"),
])
def test_serve_bad_input_one_line(capsys, argv, field):
    code, out, err = run(capsys, "serve", "--requests", "20", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and field in err


def test_serve_empty_trace(capsys, tmp_path):
    (tmp_path / "e.csv").write_text("arrival_s,prompt_tokens,output_tokens\n")
    code, _, err = run(capsys, "serve", "--trace", str(tmp_path / "e.csv"))
    assert code == 2 and "no requests" in err


def test_plan_finds_cheapest_and_pareto(capsys):
    code, out, err = run(capsys, "plan", "--model", "llama-3-8b", "--hardware", "h200-sxm-calibrated,l40s-calibrated",
                         "--rate", "4", "--prompt", "512", "--gen", "64", "--slo-ttft", "500ms", "--slo-tpot", "40ms",
                         "--gpus", "1,2", "--tps", "1,2", "--engines", "vllm", "--bits", "16", "--requests", "60", "--json")
    assert code == 0, err
    s = json.loads(out)
    best = s["cheapest"]
    assert best["status"] == "meets" and best["ttft_s"] <= 0.5 and best["tpot_s"] <= 0.04
    front = s["pareto"]
    for a in front:  # no front member is beaten on both axes by another
        assert not any(b["tok_s_per_gpu"] > a["tok_s_per_gpu"] and b["tok_s_per_user"] > a["tok_s_per_user"] for b in front)


def test_plan_impossible_slo_says_best_achievable(capsys):
    code, out, err = run(capsys, "plan", "--hardware", "l40s-calibrated", "--rate", "3", "--prompt", "2048",
                         "--gen", "64", "--slo-ttft", "200ms", "--gpus", "1", "--tps", "1", "--engines", "vllm",
                         "--bits", "16", "--requests", "40")
    assert code == 0, err
    assert "no configuration meets the SLO; best achievable: TTFT p99" in out and "aggregated)" in out
    assert "nan" not in out
    code, out, err = run(capsys, "plan", "--hardware", "l40s-calibrated", "--rate", "50", "--prompt", "2048",
                         "--gen", "64", "--slo-ttft", "200ms", "--gpus", "1", "--tps", "1", "--engines", "vllm",
                         "--bits", "16", "--requests", "40")
    assert code == 0 and "req/s at saturation" in out and "nan" not in out


def test_plan_slo_below_one_prefill_is_an_error(capsys):
    code, out, err = run(capsys, "plan", "--hardware", "h200-sxm-calibrated", "--rate", "5", "--slo-ttft", "1ms",
                         "--gpus", "1", "--tps", "1", "--engines", "vllm", "--bits", "16", "--requests", "20")
    assert code == 2 and "--slo-ttft" in err and "prefill" in err


def test_compare_replays_the_measured_requests(capsys, tmp_path):
    """A simulator's own per-request output, fed back as a 'measurement', replays exactly (ratio 1);
    a file without the measured columns is a one-line error."""
    code, _, err = run(capsys, "serve", "--rate", "6", "--requests", "150", "--prompt", "uniform:100:900", "--gen", "40",
                       "--output", str(tmp_path / "m.csv"))
    assert code == 0, err
    code, out, err = run(capsys, "serve", "--compare", str(tmp_path / "m.csv"), "--json")
    assert code == 0, err
    table = json.loads(out)["compare"]
    assert {r["metric"] for r in table} == {"ttft_p50_s", "ttft_p90_s", "tpot_p50_s", "tpot_p90_s", "throughput_tok_s"}
    assert all(r["ratio"] == pytest.approx(1.0, rel=1e-9) and r["within"] for r in table)
    (tmp_path / "trace.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0,10,5\n")
    code, _, err = run(capsys, "serve", "--compare", str(tmp_path / "trace.csv"))
    assert code == 2 and "first_token_s" in err
