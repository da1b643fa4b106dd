"""validate.aiconfigurator on a tiny stand-in of aiconfigurator's tables (fixtures/aiconfigurator, made
by its make_fixture.py): layout, units, kinds, dtypes, version choice, subsampling, the missing-package
error. None of it needs aiconfigurator installed."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.report_scripts import load_report_script
from validate import aiconfigurator as aic
from validate.cases import kernel_class

ROOT = Path(__file__).parent / "fixtures" / "aiconfigurator" / "systems" / "data"


@pytest.fixture
def parquet():
    pytest.importorskip("pyarrow")


def cases(engine="trtllm", **kwargs):
    return aic.read_cases("h200_sxm", engine, root=ROOT, **kwargs)


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ValueError, match=r"aiconfigurator.*perfmodel\[aiconfigurator\]"):
        aic.data_root()
    with pytest.raises(ValueError, match=r"perfmodel\[aiconfigurator\]"):
        aic.read_cases("h200_sxm", "trtllm")


def test_version_order():
    ordered = ["0.1.dev5", "1.2.0", "1.3.0rc9", "1.3.0rc10", "1.3.0rc20", "1.3.0", "1.3.0.post1", "2.27", "2.27.3"]
    assert sorted(reversed(ordered), key=aic.version_key) == ordered
    assert aic.version_key("2.27") == aic.version_key("2.27.0")
    assert aic.version_key("0.14.1.dev1+gd68209402") < aic.version_key("0.14.1")


def test_available_lists_the_layout():
    listing = aic.available(ROOT)
    assert list(listing.columns[:5]) == ["system", "engine", "version", "table", "path"]
    row = listing[(listing.table == "gemm_perf") & (listing.version == "1.3.0rc20")].iloc[0]
    assert (row.system, row.engine, row.family) == ("h200_sxm", "trtllm", "gemm") and Path(row.path).is_file()
    assert set(listing.engine) == {"trtllm", "vllm", "nccl"}


def test_newest_version_per_table_and_current():
    newest = aic.tables("h200_sxm", "trtllm", root=ROOT).set_index("table")["version"]
    assert newest["gemm_perf"] == "1.3.0rc20"         # not 1.3.0rc9, the string maximum
    assert newest["moe_perf"] == "1.3.0rc23"
    current = aic.tables("h200_sxm", "trtllm", "current", root=ROOT).set_index("table")["version"]
    assert current["moe_perf"] == "1.3.0rc20"         # query_versions.yaml: current 1.3.0rc20
    assert aic.tables("h200_sxm", "trtllm", "1.2.0", root=ROOT)["table"].tolist() == ["gemm_perf"]
    assert aic.tables("h200_sxm", "nccl", root=ROOT)["version"].tolist() == ["2.29.2"]
    assert aic.tables("h200_sxm", "nccl", "current", root=ROOT)["version"].tolist() == ["2.26.2"]  # misc.nccl_version


def test_matmul_units_dtypes_and_duplicates(parquet):
    rows = [c for c in cases(kinds=["matmul", "matmul_wo"]) if c["kind"] == "matmul"]
    small = [c for c in rows if (c["m"], c["n"], c["k"]) == (1, 128, 128)]
    assert sorted((c["dtype"], c["measured_s"]) for c in small) == [
        ("bf16", pytest.approx(4e-6)), ("bf16", pytest.approx(4.2e-6)), ("fp8", pytest.approx(6e-6))]
    assert all(c["timing"] == "graph" and c["engine"] == "trtllm" and c["system"] == "h200_sxm" for c in rows)
    assert rows[0]["source"].startswith("aiconfigurator ")
    assert rows[0]["source"].endswith(" h200_sxm/gemm/trtllm/1.3.0rc20/gemm_perf.parquet")
    everything = {c.get("dtype") for c in cases(kinds="matmul", all_dtypes=True)}
    assert {"fp8_block", "nvfp4"} <= everything


def test_weight_only_gemms(parquet):
    wo = sorted((c["w_bits"], c["group"], c["m"], c["n"], c["k"]) for c in cases(kinds="matmul_wo"))
    assert wo == [(4, 0, 16, 256, 512), (8, 0, 16, 256, 512)]


def test_attention_lengths_and_dropped_rows(parquet):
    rows = cases(kinds="attention")
    prefill = sorted((c["batch"], c["q_len"], c["kv_len"]) for c in rows if c["phase"] == "prefill")
    assert prefill == [(1, 16, 16), (2, 1024, 1024)]  # fp8, fp8-KV and windowed rows dropped
    decode = sorted((c["batch"], c["q_len"], c["kv_len"], c["measured_s"]) for c in rows if c["phase"] == "decode")
    assert decode == [(1, 1, 1024, pytest.approx(9e-6)), (8, 1, 4096, pytest.approx(3e-5))]
    assert {(c["heads"], c["kv_heads"], c["head_dim"], c["dtype"], c["kv_dtype"]) for c in rows} == {(32, 8, 128, "bf16", "bf16")}
    fp8 = [c for c in cases(kinds="attention", all_dtypes=True) if c["kv_dtype"] == "fp8"]
    assert sorted((c["phase"], c["dtype"]) for c in fp8) == [("decode", "bf16"), ("prefill", "bf16"), ("prefill", "fp8")]


def test_sglang_192_wide_heads_are_mimo_v2s_with_128_wide_values():
    """The tables carry no value width: SGLang's collector runs 192-wide heads only as MiMo-V2-Flash's
    (values 128 wide); every other row, and other engines' 192-wide rows, have values as wide as
    head_dim (left empty)."""
    raw = pd.DataFrame({"batch_size": [1, 1], "isl": [64, 64], "num_heads": [16, 16], "num_key_value_heads": [1, 1],
                        "head_dim": [192, 128], "beam_width": [1, 1], "attn_dtype": ["bfloat16"] * 2,
                        "kv_cache_dtype": ["bfloat16"] * 2, "step": [0, 0], "window_size": [0, 0],
                        "kernel_source": ["fa3"] * 2, "latency": [0.01, 0.01]})
    assert aic._attention(raw, "prefill", False, "sglang")["v_head_dim"].tolist() == pytest.approx([128, np.nan], nan_ok=True)
    assert aic._attention(raw, "prefill", False, "trtllm")["v_head_dim"].isna().all()


def test_allreduce_bytes_strategy_timing(parquet):
    trt = sorted((c["tp"], c["bytes"], c["strategy"], c["timing"]) for c in cases(kinds="allreduce"))
    assert trt == [(2, 8192, "custom", "graph"), (8, 1048576, "custom", "graph")]  # bf16 elements x 2
    vllm = {c["kernel"]: c for c in cases("vllm")}
    assert vllm["vLLM_custom_graph"]["timing"] == "graph" and "timing" not in vllm["vLLM_custom_eager"]
    assert vllm["vLLM_custom_eager"]["measured_s"] == pytest.approx(2.1e-5)
    nccl = sorted((c["dtype"], c["bytes"], c["strategy"], c["engine"], "timing" in c) for c in cases("nccl"))
    assert nccl == [("fp16", 8192, "nccl", "nccl", False), ("int8", 4096, "nccl", "nccl", False)]  # no all_gather


def test_moe_rows_and_current_version(parquet):
    assert cases(kinds="moe") == []                       # newest folder: a drop of a dtype we cannot express
    moe = cases(version="current", kinds="moe")
    assert sorted((c["dtype"], c["tokens"], c["experts"], c["top_k"], c["hidden"], c["inter"]) for c in moe) == [
        ("bf16", 1, 8, 2, 4096, 14336), ("fp8", 64, 8, 2, 4096, 14336)]
    assert sorted(c["measured_s"] for c in moe) == pytest.approx([3e-5, 4e-5])


def test_bad_requests_name_the_field():
    with pytest.raises(ValueError, match="system: 'b999'"):
        aic.read_cases("b999", "trtllm", root=ROOT)
    with pytest.raises(ValueError, match="engines: .*'trtllm'"):
        aic.read_cases("h200_sxm", "tensorrt", root=ROOT)
    with pytest.raises(ValueError, match="kinds"):
        aic.read_cases("h200_sxm", "trtllm", root=ROOT, kinds=["conv"])
    with pytest.raises(ValueError, match="versions of 'trtllm'"):
        aic.read_cases("h200_sxm", "trtllm", version="9.9", root=ROOT)
    with pytest.raises(ValueError, match="root"):
        aic.available(ROOT / "missing")


def test_subsample_is_stratified_and_deterministic():
    grid = [dict(kind="matmul", m=m, n=n, k=4096, dtype=d, measured_s=1e-5)
            for m in range(1, 201) for n in (1024, 8192) for d in ("bf16", "fp8")]
    grid += [dict(kind="allreduce", bytes=2 ** p, tp=2, strategy="custom", measured_s=1e-5) for p in range(8, 20)]
    sample = aic.subsample(grid, 40)
    assert sample == aic.subsample(list(grid), 40)
    counts = pd.Series([kernel_class(c) for c in sample]).value_counts()
    assert counts["matmul"] == 40 and counts[kernel_class(grid[-1])] == 12   # small classes stay whole
    matmuls = [c for c in sample if c["kind"] == "matmul"]
    assert {c["dtype"] for c in matmuls} == {"bf16", "fp8"}
    sizes = [aic.case_size(c) for c in grid if c["kind"] == "matmul"]
    assert min(map(aic.case_size, matmuls)) == min(sizes) and max(map(aic.case_size, matmuls)) == max(sizes)
    assert [grid.index(c) for c in sample] == sorted(grid.index(c) for c in sample)  # order kept
    with pytest.raises(ValueError, match="n: 0"):
        aic.subsample(grid, 0)


def test_cases_are_predictable(parquet):
    import hardware
    from validate.predict_cases import predict_many

    rows = [c for c in cases(kinds=["matmul", "matmul_wo", "attention"])]
    predicted = predict_many(rows, hardware.load("h200-sxm"))
    assert len(predicted) == len(rows) and (predicted > 0).all()


def test_extract_writes_csvs_and_sources(parquet, tmp_path):
    extract = load_report_script("aiconfigurator", "extract")
    assert extract.main(["--root", str(ROOT), "--out", str(tmp_path), "--per-kind", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "h200_sxm").iterdir()) == ["nccl.csv", "trtllm.csv", "vllm.csv"]
    frame = pd.read_csv(tmp_path / "h200_sxm" / "trtllm.csv")
    assert set(frame["kind"]) == {"matmul", "matmul_wo", "attention", "allreduce", "moe"}   # current: rc20 MoE
    assert frame.groupby(frame.apply(lambda r: kernel_class(r.to_dict()), axis=1)).size().max() <= 2
    assert list(frame.columns[:2]) == ["kind", "m"] and frame["measured_s"].gt(0).all()
    sources = (tmp_path / "SOURCES.md").read_text()
    assert "Apache-2.0" in sources and "h200_sxm/moe/trtllm/1.3.0rc20/moe_perf.parquet" in sources


def test_attention_rows_are_priced_as_replayed_on_one_cache(parquet):
    """The reader's attention rows were timed on one replayed KV cache (the collectors' one call in
    benchmark_with_power), its GEMM rows on weight copies cycled past the L2: only the attention
    ops predict_cases builds from them are marked L2-warm (Op.warm_l2), never a suite case's."""
    from validate.predict_cases import attention_ops

    rows = cases(kinds=["matmul", "attention"])
    attention = [c for c in rows if c["kind"] == "attention"]
    assert attention and all(aic.replays_one_buffer(c) for c in attention)
    assert not any(aic.replays_one_buffer(c) for c in rows if c["kind"] == "matmul")
    assert np.all(attention_ops(attention[:1], 132.0)[1][0][1].warm_l2)
    suite = {k: v for k, v in attention[0].items() if k not in ("source", "engine")}
    assert not aic.replays_one_buffer(suite)
    assert not np.any(attention_ops([suite], 132.0)[1][0][1].warm_l2)
