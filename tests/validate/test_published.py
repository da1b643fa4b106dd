"""validate/reports/published: the published TensorRT-LLM rows parse with their sources, the
trtllm-bench settings heuristic matches a hand derivation, and the predictor runs on a small row."""
import math
import re

import numpy as np

import hardware
import workloads
from tests.report_scripts import load_report_script


def test_every_published_row_parses_and_cites_its_source():
    report = load_report_script("published", "make_report")
    frame = report.load_published()
    assert len(frame) > 100 and frame["row"].is_unique
    commit = re.compile(r"^https://github\.com/NVIDIA/TensorRT-LLM/blob/[0-9a-f]{40}/docs/source/.+perf-overview\.md$")
    assert frame["source"].map(lambda s: bool(commit.match(s))).all()
    assert frame["doc_version"].str.len().gt(0).all() and frame["table"].str.len().gt(0).all()
    assert set(frame["metric"]) <= {"output_tok_s_total", "output_tok_s_per_gpu"}
    assert (frame["value"] > 0).all() and (frame["num_requests"] > 0).all()
    assert set(frame["tp"]) <= {1, 2, 4, 8} and (frame[["isl", "osl"]] > 0).all().all()
    for name in frame["catalog_model"].unique():
        workloads.load(name)
    for name in frame["hardware_spec"].unique():
        hardware.load(name)


def test_trtllm_bench_settings_match_a_hand_derivation():
    """Llama-3.1-8B fp8 on the H200 (141 GiB), 128/128, fp8 KV: 2 x 32 layers x 8 kv heads x 128 x 1 B
    = 65536 B per token; 141 GiB - 8.03e9 B = 133.5 GiB free; 0.95 x that / (256 tokens x
    65536 B / 2^30) = 8118 requests -> capped at 4096 (a multiple of 256 already); tokens
    min(4096 x 2, 32768) = 8192 -> 1024 x 8 = 8192. Llama-3.1-70B on one H100 (81559 MiB = 79.65 GiB;
    70.55e9 B of weights = 65.70 GiB; 163840 B of KV per token): 128/128 fits 0.95 x 13.94 GiB /
    (256 x 163840 B) = 339 requests -> 128 x 3 = 384 (the middle range), tokens 678 -> at least 2048;
    128/2048 fits 39.9 -> at least 64 (the low range), tokens 42 -> 2048."""
    report = load_report_script("published", "make_report")
    model, hw = workloads.load("llama-3.1-8b"), hardware.load("h200-sxm-calibrated")
    assert report.trtllm_bench_settings(model, hw, tp=1, isl=128, osl=128, kv_bits=8) == (4096, 8192)
    big, h100 = workloads.load("llama-3.1-70b"), hardware.load("h100-sxm-calibrated")
    assert report.trtllm_bench_settings(big, h100, tp=1, isl=128, osl=128, kv_bits=8) == (384, 2048)
    assert report.trtllm_bench_settings(big, h100, tp=1, isl=128, osl=2048, kv_bits=8) == (64, 2048)
    # twice the KV bytes per token never allows a larger batch
    assert report.trtllm_bench_settings(big, hw, tp=2, isl=1000, osl=1000, kv_bits=16)[0] <= \
        report.trtllm_bench_settings(big, hw, tp=2, isl=1000, osl=1000, kv_bits=8)[0]


def test_predictor_runs_on_a_small_row_without_preemption():
    report = load_report_script("published", "make_report")
    frame = report.load_published()
    row = frame[(frame["metric"] == "output_tok_s_per_gpu") & (frame["tp"] == 2) & (frame["isl"] == 1000)].iloc[0]
    out = report.predict_row(row, kv_bits=8, requests=24)
    assert math.isfinite(out["predicted"]) and out["predicted"] > 0
    assert np.isclose(out["predicted"] * 2, out["predicted_total"])  # per-GPU rows divide by tp
    assert out["preempted"] == 0  # no-evict admission: every admitted request's KV fits
    assert out["seqs"] <= min(out["max_bs"], out["max_tokens"])
