"""validate/engine_model.py and validate/reports/engine/measure_engine.py, on the CPU.

Physics first: decoding token by token through the static cache gives the logits a prefill over the
whole sequence gives (dense GQA, Qwen3 qk-norm, MoE); the grouped MoE equals a per-token loop over
experts; fp8 quantization is within e4m3's rounding. Then the measurement script's --quick run: its
CSV schema, resume, and a torn last line."""
import csv
import dataclasses
import json

import pytest

torch = pytest.importorskip("torch", reason="validate's engine model needs torch")

import workloads  # noqa: E402
from tests.report_scripts import load_report_script  # noqa: E402
from validate import engine_model as em  # noqa: E402

TINY = dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=96, vocab_size=128)


def tiny(name: str, **extra):
    return dataclasses.replace(workloads.load(name), **{**TINY, **extra})


SPECS = {"dense-gqa": lambda: tiny("llama-3.2-1b"), "qk-norm": lambda: tiny("qwen3-8b"),
         "moe": lambda: tiny("qwen3-30b-a3b", n_experts=8, top_k=2, moe_d_ff=32)}


@pytest.fixture(scope="module")
def measure():
    return load_report_script("engine", "measure_engine")


# -- the model ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(SPECS))
def test_decoding_token_by_token_equals_prefill(kind):
    spec = SPECS[kind]()
    engine = em.build(spec, "fp32", max_batch=2, max_seq=16, seed=1)
    tokens = torch.randint(0, spec.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        prefill = em.step(engine, tokens, past=0)
        for i in range(tokens.shape[1]):
            decoded = em.step(engine, tokens[:, i:i + 1], past=i)
    assert prefill.shape == (2, spec.vocab_size)
    assert torch.allclose(decoded, prefill, rtol=1e-4, atol=1e-5)
    assert prefill.std() > 0.05  # not a degenerate (all-equal) output


def test_cache_view_is_written_in_place_at_the_step_positions():
    spec = SPECS["dense-gqa"]()
    engine = em.build(spec, "fp32", max_batch=1, max_seq=16)
    before = [k.clone() for k, _ in engine.caches(1, 16)]
    with torch.inference_mode():
        em.step(engine, torch.tensor([[3]]), past=5)
    for old, (new, _) in zip(before, engine.caches(1, 16)):
        changed = (old != new).any(dim=-1).any(dim=1)[0]          # per position
        assert changed.nonzero().flatten().tolist() == [5]


def moe_reference(h: torch.Tensor, w: dict, dims: em.Dims) -> torch.Tensor:
    """Per token: softmax over experts, top-k renormalised, sum of the k expert FFNs (Qwen3-MoE)."""
    out = torch.zeros_like(h)
    for t in range(h.shape[0]):
        probs = (w["router"] @ h[t]).softmax(-1)
        weights, experts = probs.topk(dims.top_k)
        for p, e in zip(weights / weights.sum(), experts.tolist()):
            gate, up = (w["w13"][e] @ h[t]).chunk(2)
            out[t] += p * (w["w2"][e] @ (torch.nn.functional.silu(gate) * up))
    return out


@pytest.mark.parametrize("impl", ["grouped", "loop"])
def test_moe_equals_a_per_token_loop_over_experts(impl):
    if impl == "grouped" and not em.grouped_mm_works(torch.device("cpu"), torch.float32):
        pytest.skip("torch._grouped_mm does not run on this CPU build (the loop is the CPU path)")
    spec = SPECS["moe"]()
    engine = em.build(spec, "fp32", max_batch=1, max_seq=8)
    dims = dataclasses.replace(engine.dims, moe_impl=impl)
    w = engine.layers[0]
    h = torch.randn(13, spec.d_model, generator=torch.Generator().manual_seed(2))
    got = em.moe(h.view(1, 13, -1), w, dims).view(13, -1)
    assert torch.allclose(got, moe_reference(h, w, dims), rtol=1e-4, atol=1e-6)


def test_sort_by_expert_offsets_are_cumulative_counts():
    experts = torch.tensor([[3, 0], [3, 1], [0, 3]])
    order, offsets = em.sort_by_expert(experts, 5)
    assert offsets.dtype == torch.int32 and offsets.tolist() == [2, 3, 3, 6, 6]
    assert sorted(experts.flatten()[order].tolist()) == experts.flatten()[order].tolist()


# -- fp8 ----------------------------------------------------------------------------------------------

def test_fp8_quantize_roundtrip_is_within_e4m3_rounding():
    t = torch.randn(64, 96, generator=torch.Generator().manual_seed(3)) * 0.02
    q, scale = em.quantize_fp8(t)
    assert q.dtype == torch.float8_e4m3fn and scale.dim() == 0
    assert q.float().abs().max().item() == em.FP8_MAX                 # amax maps to 448
    assert scale.item() == pytest.approx(t.abs().max().item() / em.FP8_MAX, rel=1e-6)
    back = em.dequantize_fp8(q, scale)
    # 3 mantissa bits: half an ulp is 2^-4 relative; below the normals, half of 2^-9 absolute
    assert ((back - t).abs() <= 2 ** -4 * t.abs() + scale * 2 ** -10 + 1e-12).all()


def test_fp8_linear_matches_the_bf16_product():
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(5)) * 0.02
    out = em.fp8_linear(x, em.Fp8Weight(*em.quantize_fp8(w)))
    ref = x.float() @ w.t()
    assert out.dtype == torch.bfloat16 and out.shape == (5, 32)
    assert ((out.float() - ref).norm() / ref.norm()).item() < 0.08


def test_scaled_mm_equals_the_dequantized_product_where_it_runs():
    x, w = torch.randn(16, 64) * 0.5, torch.randn(32, 64) * 0.02
    (qx, sx), (qw, sw) = em.quantize_fp8(x), em.quantize_fp8(w)
    try:
        out = torch._scaled_mm(qx, qw.t(), scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16)
    except (RuntimeError, NotImplementedError, AttributeError) as err:
        pytest.skip(f"torch._scaled_mm does not run on this CPU: {err}")
    ref = em.dequantize_fp8(qx, sx) @ em.dequantize_fp8(qw, sw).t()
    assert torch.allclose(out.float(), ref, rtol=2e-2, atol=1e-3)


def test_fp8_engine_step_is_finite():
    engine = em.build(tiny("llama-3.2-1b", d_model=64, d_ff=128), "fp8", max_batch=1, max_seq=8)
    assert isinstance(engine.layers[0]["qkv"], em.Fp8Weight)
    assert engine.lm_head.dtype == torch.bfloat16                     # the LM head stays bf16
    with torch.inference_mode():
        assert torch.isfinite(em.step(engine, torch.tensor([[1, 2, 3]]), past=0)).all()


# -- refusals ---------------------------------------------------------------------------------------

def test_unsupported_inputs_are_named():
    with pytest.raises(ValueError, match="is_mla"):
        em.build(workloads.load("deepseek-v3") if "deepseek-v3" in workloads.names() else
                 dataclasses.replace(tiny("llama-3.2-1b"), kv_lora_rank=8, qk_rope_head_dim=8), "bf16")
    with pytest.raises(ValueError, match="v_head_dim != head_dim"):  # its V is built head_dim wide
        em.build(dataclasses.replace(SPECS["dense-gqa"](), v_head_dim=4), "fp32")
    engine = em.build(SPECS["dense-gqa"](), "fp32", max_batch=1, max_seq=8)
    with pytest.raises(ValueError, match="chunked prefill"):
        em.step(engine, torch.tensor([[1, 2]]), past=3)
    with pytest.raises(ValueError, match="exceeds"):
        engine.caches(2, 8)
    with pytest.raises(ValueError, match="dtype"):
        em.build(SPECS["dense-gqa"](), "int3")


# -- the measurement script -------------------------------------------------------------------------

def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_full_grid_is_ordered_bounded_and_estimated(measure):
    cases = measure.grid(quick=False, cuda=True)
    ids = [measure.case_id(c) for c in cases]
    assert len(ids) == len(set(ids))
    assert cases[0]["engine"] == "torch-compile" and cases[0]["model"] == "llama-3-8b" and cases[0]["dtype"] == "bf16"
    order = list(dict.fromkeys((c["model"], c["dtype"]) for c in cases))
    assert order == [("llama-3-8b", "bf16"), ("qwen3-8b", "bf16"), ("llama-3.2-1b", "bf16"), ("llama-3-8b", "fp8"),
                     ("qwen3-30b-a3b", "bf16")]
    assert all(c["batch"] * c["kv_len"] <= measure.MAX_KV_TOKENS for c in cases)
    assert all(measure.s_max_of(c) > c["kv_len"] + (c["phase"] == "decode") for c in cases)
    per_engine = {e: sum(c["engine"] == e for c in cases) for e in measure.ENGINES}
    assert per_engine == {"torch-compile": 100, "torch-eager-graph": 25, "torch-eager": 10}
    assert len(measure.compile_groups(cases)) == 20        # 5 models x (decode, prefill) x (B = 1, B > 1)
    assert measure.estimate_s(cases) < 480


def test_quick_run_writes_the_schema_and_resumes(tmp_path, measure):
    assert measure.main(["--out", str(tmp_path), "--quick", "--cpu"]) == 0
    path = tmp_path / "steps.csv"
    rows = _rows(path)
    expected = len(measure.grid(quick=True, cuda=False))
    assert len(rows) == expected
    assert tuple(rows[0].keys()) == measure.COLUMNS
    assert {r["status"] for r in rows} == {"ok"} and all(float(r["measured_s"]) > 0 for r in rows)
    assert {r["kind"] for r in rows} == {"model_step"} and {r["dtype"] for r in rows} == {"bf16", "fp8"}
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["ceilings"]["gemm_tflops"] > 0 and meta["ceilings"]["copy_gbps_read_plus_write"] > 0

    assert measure.main(["--out", str(tmp_path), "--quick", "--cpu"]) == 0       # nothing left to do
    assert len(_rows(path)) == expected

    data = path.read_bytes()                                              # a run killed mid-row
    path.write_bytes(data[:-25])
    assert measure.main(["--out", str(tmp_path), "--quick", "--cpu"]) == 0
    again = _rows(path)
    assert len(again) == expected and [r["case_id"] for r in again] == [r["case_id"] for r in rows]
    assert all(r["timestamp"] for r in again)
    assert len(json.loads((tmp_path / "meta.json").read_text())["previous_runs"]) == 2


def test_a_failed_case_is_recorded_and_the_run_goes_on(tmp_path, measure, monkeypatch):
    real = measure.Session._measure

    def flaky(self, case):
        if case["phase"] == "prefill" and case["batch"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, case)
    monkeypatch.setattr(measure.Session, "_measure", flaky)
    assert measure.main(["--out", str(tmp_path), "--quick", "--cpu", "--only", "llama-3.2-1b-tiny.*bf16"]) == 0
    rows = _rows(tmp_path / "steps.csv")
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 4 and len(failed) == 1 and "out of memory" in failed[0]["error"]
    monkeypatch.setattr(measure.Session, "_measure", real)
    assert measure.main(["--out", str(tmp_path), "--quick", "--cpu", "--only", "llama-3.2-1b-tiny.*bf16",
                         "--retry-failed"]) == 0
    assert [r["status"] for r in _rows(tmp_path / "steps.csv")][-1] == "ok"


def test_fp32_reference_is_the_step_itself_for_an_fp32_engine_and_near_for_bf16():
    for kind in ("qk-norm", "moe"):
        spec = SPECS[kind]()
        tokens = torch.randint(0, spec.vocab_size, (2, 5), generator=torch.Generator().manual_seed(6))
        with torch.inference_mode():
            e32 = em.build(spec, "fp32", max_batch=2, max_seq=8)
            assert torch.allclose(em.reference_step(e32, tokens, 0), em.step(e32, tokens, 0), rtol=1e-5, atol=1e-6)
            e16 = em.build(spec, "bf16", max_batch=2, max_seq=8)
            ref, low = em.reference_step(e16, tokens, 0), em.step(e16, tokens, 0).float()
        assert ref.dtype == torch.float32
        assert ((low - ref).norm(dim=-1) / ref.norm(dim=-1)).max() < 0.05


def test_compare_reports_compiled_eager_and_fp32_errors(measure):
    spec = SPECS["dense-gqa"]()
    engine = em.build(spec, "bf16", max_batch=1, max_seq=16)
    tokens = torch.tensor([[5, 6, 7]])
    with torch.inference_mode():
        same = measure.compare(em.step(engine, tokens, 0, s_max=16), engine, tokens, 0, s_max=16)
    assert float(same["max_rel_err"]) == 0.0
    assert 0 < float(same["rel_err_eager_fp32"]) == float(same["rel_err_compiled_fp32"]) < 0.05


def test_table_routing_takes_distinct_random_experts_with_the_routers_weights():
    """engine_model.route with a routing_table: each token's k experts are distinct (the table's row),
    the weights are the router's probabilities of those experts, renormalised; over many tokens the
    experts in use follow E (1 - (1 - k/E)^n), the cost model's expectation."""
    import torch

    from validate import engine_model as em

    torch.manual_seed(0)
    n, d, e, k = 37, 16, 8, 3
    x, router = torch.randn(n, d), torch.randn(e, d)
    table = em.routing_table(64, e, k, "cpu", seed=1)
    weights, experts = em.route(x, router, k, table)
    assert torch.equal(experts, table[:n]) and all(len(set(row.tolist())) == k for row in experts)
    probs = (x @ router.t()).float().softmax(dim=-1).gather(1, experts)
    assert torch.allclose(weights, probs / probs.sum(dim=-1, keepdim=True))
    big = em.routing_table(20000, 128, 8, "cpu", seed=2)
    used = [len(torch.unique(big[i:i + 16])) for i in range(0, 16000, 16)]  # 1000 draws of 16 tokens
    assert sum(used) / len(used) == __import__("pytest").approx(128 * (1 - (1 - 8 / 128) ** 16), rel=0.01)


def test_suite_compiles_lift_dynamo_recompile_limit_and_fail_loudly():
    """Past dynamo's default recompile limit (8) torch.compile silently runs a function eagerly, which
    turned 22 of the suite's 30 compiled MoE cases into eager ones: the suite lifts the limit and makes
    hitting it an error (restored after the test: it is process-global)."""
    import torch._dynamo

    from validate import bench

    config = torch._dynamo.config
    saved = {key: getattr(config, key) for key in ("recompile_limit", "cache_size_limit", "fail_on_recompile_limit_hit")
             if hasattr(config, key)}
    try:
        settings = bench.raise_recompile_limit()
        assert settings["recompile_limit"] == bench.RECOMPILE_LIMIT >= 30
        for key in saved:
            assert getattr(config, key) == settings[key]
    finally:
        for key, value in saved.items():
            setattr(config, key, value)
