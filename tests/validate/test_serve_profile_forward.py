"""profile_forward.py: bucket parsing, kernel families, per-layer grouping (launch and time
conservation), span from kernel intervals, and a CPU smoke of both sources with resume."""
import csv
import math

import pytest

from validate.reports.serve import profile_forward as pf
from validate.reports.serve import ref_loop as rl


def test_buckets_parse_and_reject():
    assert pf.parse_buckets("decode_1, prefill_2048") == [("decode", 1), ("prefill", 2048)]
    for bad in ("decode", "prefill_0", "verify_4", "decode_x", "decode_1,decode_1"):
        with pytest.raises(ValueError, match="--buckets"):
            pf.parse_buckets(bad)


def test_kernel_families_from_real_names():
    # names as torch.profiler reports them on an H200 (cuBLAS, cuDNN SDPA, CUTLASS FMHA, inductor)
    assert pf.category("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x128x128") == "attention"
    assert pf.category("fmha_cutlassF_bf16_aligned_64x128_rf_sm80") == "attention"
    assert pf.category("nvjet_tst_128x64_64x8_1x1_v_bz_coopA_NTN") == "gemm"
    assert pf.category("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "gemm"
    assert pf.category("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0") == "triton"
    assert pf.category("triton_poi_fused_index_put_1") == "triton"
    assert pf.category("Memset (Device)") == "copy"
    assert pf.category("void at::native::index_elementwise_kernel<128, 4>") == "copy"
    assert pf.category("void at::native::reduce_kernel<512, 1, ArgMaxOps>") == "other"
    assert pf.category("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert pf.category("aten::mm") == "gemm"


def test_layer_grouping_conserves_launches_and_time():
    layers = 4
    table = {"qkv_gemm": (8.0, 80.0),      # 2 per layer
             "shared_gemm": (9.0, 90.0),   # 2 per layer + 1 outside (LM head): mixed, 8/9 of its time
             "embedding": (1.0, 5.0)}      # outside the layers
    rows = {r["kernel"]: r for r in pf.layer_rows(table, layers)}
    assert [r["kernel"] for r in pf.layer_rows(table, layers)] == ["shared_gemm", "qkv_gemm", "embedding"]
    assert (rows["qkv_gemm"]["scope"], rows["qkv_gemm"]["calls_per_layer"]) == ("layer", "2")
    assert float(rows["qkv_gemm"]["device_us_per_layer"]) == pytest.approx(20.0)
    assert (rows["shared_gemm"]["scope"], rows["shared_gemm"]["calls_per_layer"]) == ("mixed", "2")
    assert float(rows["shared_gemm"]["device_us_per_layer"]) == pytest.approx(90.0 * 8 / 9 / 4)
    assert rows["embedding"]["scope"] == "forward" and rows["embedding"]["device_us_per_layer"] == ""
    s = pf.summarize(list(rows.values()), layers)
    assert float(s["device_us"]) == pytest.approx(175.0)
    assert float(s["layer_us"]) == pytest.approx(160.0)  # 80 + 80 (the mixed kernel's layer share)
    assert float(s["layer_us"]) + float(s["outside_us"]) == pytest.approx(float(s["device_us"]))
    assert float(s["layer_us_per_layer"]) == pytest.approx(40.0)
    assert (s["kernels"], s["kernels_per_layer"]) == ("18", "4")
    assert float(s["gemm_us"]) == pytest.approx(170.0)  # names with 'gemm'; 'embedding' is other
    assert sum(float(s[f"{c}_us"]) for c in pf.CATEGORIES) == pytest.approx(175.0)


def test_span_is_first_start_to_last_end_per_run():
    # two runs of three kernels: spans 10 (0..10) and 7 (100..107); gaps between runs are left out
    ivs = [(0, 2), (3, 6), (8, 10), (100, 101), (102, 104), (105, 107)]
    assert pf.median_span_us(ivs[::-1], 2) == pytest.approx(8.5)
    assert math.isnan(pf.median_span_us(ivs[:5], 2))


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_cpu_smoke_both_sources_then_resume(tmp_path, capsys):
    out = tmp_path / "prof"
    assert pf.main(["--device", "cpu", "--quick", "--out", str(out), "--runs", "2"]) == 0
    summary, kernels = _rows(out / "summary.csv"), _rows(out / "kernels.csv")
    buckets = pf.QUICK_BUCKETS.split(",")
    assert [(r["source"], r["forward"]) for r in summary] == \
        [("loop-none", b) for b in buckets] + [("engine", b) for b in buckets]
    assert all(r["status"] == "ok" and r["layers"] == "2" for r in summary)
    for r in summary:
        mine = [k for k in kernels if (k["source"], k["forward"]) == (r["source"], r["forward"])]
        # the summary is the sum of its kernels (time and launches conserved)
        assert sum(float(k["device_us"]) for k in mine) == pytest.approx(float(r["device_us"]), abs=0.01)
        assert sum(float(k["calls"]) for k in mine) == pytest.approx(float(r["kernels"]))
        assert float(r["replay_us"]) > 0
        # one attention per layer in both sources: the SDPA op is launched once per layer
        sdpa = [k for k in mine if k["kernel"] == "aten::scaled_dot_product_attention"]
        assert len(sdpa) == 1 and sdpa[0]["scope"] == "layer" and sdpa[0]["calls_per_layer"] == "1"
    loop = {r["forward"]: r for r in summary if r["source"] == "loop-none"}
    engine = {r["forward"]: r for r in summary if r["source"] == "engine"}
    s_max = rl.cache_tokens(100, 6)  # the quick loop's --max-prompt / --max-output
    assert all(r["context"] == str(s_max) for r in loop.values())  # the loop attends its whole row
    assert engine["decode_4"]["context"] == str(s_max - 1)  # S_max - 2 cached + the new token
    assert engine["prefill_32"]["context"] == "32"
    log = (out / "log.txt").read_text()
    assert "loop-none decode_1" in log and "engine prefill_32" in log
    # a rerun finds everything done and adds nothing
    assert pf.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    assert _rows(out / "summary.csv") == summary and _rows(out / "kernels.csv") == kernels
    assert "8 forwards already done" in (out / "log.txt").read_text()


def test_bad_input_is_one_line(tmp_path, capsys):
    for argv, field in ((["--buckets", "decode_0"], "--buckets"), (["--sources", "gpu"], "--sources"),
                        (["--loop-compile", "max"], "--loop-compile"), (["--runs", "0"], "--runs")):
        with pytest.raises(SystemExit) as e:
            pf.parse(["--out", str(tmp_path)] + argv)
        assert e.value.code == 2 and field in capsys.readouterr().err
    # a bucket the loop does not capture (decode sizes of 4 slots: 1, 2, 4)
    with pytest.raises(SystemExit, match="decode_8 not captured"):
        pf.main(["--device", "cpu", "--quick", "--out", str(tmp_path / "x"), "--buckets", "decode_8",
                 "--sources", "loop"])


def test_sdpa_backend_restricts_the_loop(tmp_path):
    out = tmp_path / "prof"
    assert pf.main(["--device", "cpu", "--quick", "--out", str(out), "--runs", "1", "--sources", "loop",
                    "--sdpa", "math", "--buckets", "decode_1"]) == 0
    summary, kernels = _rows(out / "summary.csv"), _rows(out / "kernels.csv")
    assert [(r["source"], r["forward"], r["status"]) for r in summary] == [("loop-none-math", "decode_1", "ok")]
    names = {k["kernel"] for k in kernels}
    assert "aten::_scaled_dot_product_attention_math" in names
    assert not any("flash_attention" in n for n in names)  # the CPU default's fused kernel is gone


def test_compare_is_loop_minus_engine_per_forward():
    base = {c: "0" for c in pf.SUMMARY_COLUMNS}
    loop = {**base, "source": "loop-dynamic", "forward": "decode_1", "status": "ok", "replay_us": "5660",
            "device_us": "5000", "idle_us": "660", "attention_us": "1500", "kernels_per_layer": "20"}
    engine = {**base, "source": "engine", "forward": "decode_1", "status": "ok", "replay_us": "4740",
              "device_us": "4300", "idle_us": "440", "attention_us": "600", "kernels_per_layer": "14"}
    other = {**loop, "forward": "prefill_16"}  # no engine row: not compared
    head, row = pf.compare([loop, engine, other])
    vals = row.split()
    assert vals[:2] == ["loop-dynamic", "decode_1"]
    assert [float(v) for v in vals[2:6]] == [0.92, 0.7, 0.22, 0.9]  # replay = busy + idle differences
    assert row.endswith("20 / 14")
