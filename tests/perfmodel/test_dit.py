"""DiT cost model: FLOPs by hand, CFG, sparse attention, sequence parallelism, memory, $ and the CLI."""
import json

import numpy as np
import pytest

import hardware
from perfmodel import dit as cost
from perfmodel import energy
from perfmodel.ops import Precision
from workloads import dit

H200 = hardware.load("h200-sxm-calibrated")


def predict(name="flux.1-dev", hw=H200, **kw):
    pipe = dit.load(name)
    req = pipe.request(**{k: kw.pop(k) for k in list(kw) if k in ("height", "width", "frames", "steps", "cfg",
                                                                     "batch", "cached_fraction")})
    return cost.predict_dit(pipe, hw, req, **kw)


def op(pred, name):
    return next(o for o in pred.step.ops if o.name == name)


def test_flux_step_flops_by_hand():
    """1024^2: T = 4096 + 512 tokens, D = 3072, F = 12288, d = 128, 24 heads; single-stream lin1 is
    2 T (3D + F) D per block, joint attention 4 T^2 D per block (QK^T and PV over all heads)."""
    pred = predict()
    T, D, F = 4608, 3072, 12288
    assert op(pred, "single_lin1").flops == 2 * T * (3 * D + F) * D and op(pred, "single_lin1").count == 38
    assert op(pred, "joint_attn").flops == 4 * T * T * D and op(pred, "joint_attn").count == 19
    # every GEMM: 2 x tokens x the weights each token meets (one stream's in a double block; the
    # modulation GEMMs run on one row per sample and are left out)
    matmul = sum(o.count * o.flops for o in pred.step.ops if o.kind == "matmul" and "mod" not in o.name)
    block_weights = 19 * (4 * D * D + 2 * D * F) + 38 * ((3 * D + F) * D + (D + F) * D)
    edges = 2 * 4096 * 64 * D + 2 * 512 * 4096 * D + 2 * 4096 * D * 64
    assert matmul == pytest.approx(2 * T * block_weights + edges)


def test_request_is_encoders_plus_steps_plus_decode():
    pred = predict(steps=20)
    assert pred.e2e_s == pytest.approx(pred.text_encode.time_s + 20 * pred.step.time_s + pred.vae_decode.time_s)
    cached = predict(steps=20, cached_fraction=0.5)
    assert cached.steps_run == 10 and cached.e2e_s < pred.e2e_s


def test_cfg_doubles_the_work_of_a_step():
    off, on = predict("sd3.5-large", cfg=False), predict("sd3.5-large", cfg=True)
    assert on.step.flops["matmul"] == pytest.approx(2 * off.step.flops["matmul"], rel=1e-3)
    assert 1.8 * off.step.time_s < on.step.time_s <= 2.05 * off.step.time_s


def test_time_grows_with_resolution_faster_than_tokens():
    """Attention is quadratic in tokens: 4x the pixels costs more than 4x a step at large sizes."""
    small, big = predict(height=1024, width=1024), predict(height=2048, width=2048)
    assert big.step.time_s > 4 * small.step.time_s


def test_compiled_is_not_slower_than_eager_and_fp8_is_faster_at_scale():
    compiled, eager = predict(engine="torch-compile"), predict(engine="torch-eager")
    assert compiled.step.time_s < eager.step.time_s
    fp8 = predict(w_bits=8, a_bits=8)
    assert fp8.step.time_s < compiled.step.time_s
    assert fp8.memory["weights"] < 0.55 * compiled.memory["weights"]


def test_serving_engines_are_refused():
    with pytest.raises(dit.DiTError, match="'vllm' does not run diffusion transformers"):
        predict(engine="vllm")


def test_sparse_attention_scales_and_pays_the_reorder():
    dense = predict("wan2.1-t2v-1.3b")
    times = [predict("wan2.1-t2v-1.3b", sparse=cost.SparseAttention(rho)).step.time_s for rho in (0.2, 0.5, 0.9, 1.0)]
    assert times == sorted(times)                      # monotone in density
    assert times[0] < dense.step.time_s                # 20% density is faster than dense
    assert times[-1] > dense.step.time_s               # all blocks + the reorder is slower than dense
    sparse = predict("wan2.1-t2v-1.3b", sparse=cost.SparseAttention(0.25))
    assert sparse.step.flops["attention"] < 0.26 * dense.step.flops["attention"] + \
        op(dense, "cross_attn").count * op(dense, "cross_attn").flops
    blocks = predict("wan2.1-t2v-1.3b", sparse=cost.SparseAttention(0.25, per_block_s=1e-6))
    assert blocks.step.time_s > sparse.step.time_s


def test_sequence_parallel_splits_work_and_adds_all_to_alls():
    one, eight = predict("wan2.1-t2v-14b", devices=1), predict("wan2.1-t2v-14b", devices=8)
    assert eight.step.comm_s > 0 and one.step.comm_s == 0
    assert one.step.time_s / 8 < eight.step.time_s < one.step.time_s / 6
    assert eight.step.flops["attention"] == pytest.approx(one.step.flops["attention"] / 8, rel=1e-6)
    with pytest.raises(dit.DiTError, match="devices: 3 must divide the 40 attention heads"):
        predict("wan2.1-t2v-14b", devices=3)


def test_activation_memory_is_linear_in_tokens():
    """FlashAttention stores no Tq x Tk scores: doubling the frames' tokens doubles activations."""
    a = predict("wan2.1-t2v-1.3b", frames=41)
    b = predict("wan2.1-t2v-1.3b", frames=81)
    ta, tb = a.shape.tokens, b.shape.tokens
    assert b.memory["activations"] / a.memory["activations"] == pytest.approx(tb / ta)


def test_per_layer_bits_lie_between_the_uniform_ones():
    pipe = dit.load("pixart-sigma")
    p16, p8 = Precision(16, 16, 16), Precision(8, 8, 8)
    mixed = ((("cross", 14, p8), ("cross", 14, p16)))
    t = {name: cost.predict_dit(pipe, H200, **kw).step.time_s for name, kw in (
        ("bf16", {}), ("w8a8", dict(w_bits=8, a_bits=8)), ("mixed", dict(layer_precision=mixed)))}
    assert t["w8a8"] < t["mixed"] < t["bf16"]


def test_cost_follows_the_time_and_energy_lies_between_idle_and_the_board_limit():
    pred = predict("wan2.1-t2v-14b", devices=8)
    assert pred.usd_per_request == pytest.approx(pred.e2e_s * H200.price_per_hour_usd * 8 / 3600)
    # every device draws between the idle power and the board limit for the whole request
    pm = energy.power_model(H200)
    assert pm.idle_w * 8 * pred.e2e_s < pred.energy_j <= H200.power_w * 8 * pred.e2e_s * (1 + 1e-12)
    out = pred.to_dict()
    assert out["usd_per_video_s"] == pytest.approx(pred.usd_per_request / (81 / 16))


def test_class_times_add_up_to_the_device_time():
    pred = predict(engine="torch-compile")
    assert sum(pred.step.class_time_s.values()) == pytest.approx(pred.step.device_s)


def test_every_preset_and_dit_engine_prices_a_step():
    for name in hardware.names():
        hw = hardware.load(name)
        for engine in cost.DIT_ENGINES:
            t = predict("pixart-sigma", hw=hw, engine=engine).step.time_s
            assert np.isfinite(t) and t > 0


def test_cli_predict_json_contract(capsys):
    from app.cli import main

    assert main(["predict", "--model", "flux.1-dev", "--resolution", "1024x1024", "--steps", "28", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"params", "step_s", "e2e_s", "memory_bytes", "energy_j"} <= set(out)
    assert out["params"] == 11_901_408_320 and out["image_tokens"] == 4096
    assert main(["predict", "--model", "flux.1-dev", "--frames", "9"]) == 2
    assert "--frames: 9 must be 1 for the image model" in capsys.readouterr().err
    assert main(["predict", "--model", "wan2.1-t2v-1.3b", "--resolution", "480by832"]) == 2
    assert "--resolution: '480by832' must be HEIGHTxWIDTH" in capsys.readouterr().err
    assert main(["predict", "--model", "wan2.1-t2v-1.3b", "--frames", "33", "--resolution", "480x832"]) == 0
    assert "33 frames 480x832" in capsys.readouterr().out


def test_cli_oversize_request_is_a_one_line_error(capsys):
    from app.cli import main

    assert main(["predict", "--model", "hunyuanvideo", "--hardware", "l4"]) == 2
    err = capsys.readouterr().err
    assert "hunyuanvideo needs" in err and "l4 has 24.2 GB" in err and "Traceback" not in err
    assert main(["predict", "--model", "hunyuanvideo", "--hardware", "l4", "--allow-oversize"]) == 0
    assert "fits: NO" in capsys.readouterr().out


def test_reorder_moves_four_tensors_and_an_int64_index_per_element():
    """torch.gather reads one int64 index per element it writes: 4 tensors x (2 B read + 2 B write + 8 B)."""
    tokens, width = 4608.0, 3072.0
    reorder = cost.reorder_op(1, tokens, width, Precision(16, 16, 16), 1)
    assert reorder.bytes == pytest.approx(4 * tokens * width * (2 + 2 + 8))
    assert cost.reorder_op(1, tokens, width, Precision(8, 8, 8), 1).bytes == pytest.approx(reorder.bytes)


def test_vector_ops_stay_16_bit_when_activations_are_quantized_per_gemm():
    """With separate quant kernels the stream between kernels is 16-bit: fp8 changes the GEMMs and adds
    the quant ops, never the norms' traffic; an engine that fuses the quant into the norm (trtllm)
    writes 8-bit activations, so its vector ops move fewer bytes."""
    from perfmodel.engines import load as load_engine

    spec = dit.load("flux.1-dev").dit
    vector = lambda ops: {o.name: o.bytes for o in ops if cost.op_class(o.kind) == "vector"  # noqa: E731
                          and not o.name.startswith("act_")}
    for name in ("torch-compile", "torch-eager"):
        engine = load_engine(name)
        bf16 = vector(cost.single_block_ops(spec, 1, 4608, Precision(16, 16, 16), 1, engine))
        fp8 = vector(cost.single_block_ops(spec, 1, 4608, Precision(8, 8, 8), 1, engine))
        assert fp8 == pytest.approx(bf16)
    fused = load_engine("trtllm")
    bf16 = vector(cost.single_block_ops(spec, 1, 4608, Precision(16, 16, 16), 1, fused))
    fp8 = vector(cost.single_block_ops(spec, 1, 4608, Precision(8, 8, 8), 1, fused))
    assert all(fp8[k] < bf16[k] for k in bf16)


def test_wan_eager_moves_fp32_modulation_and_quantizes_each_of_q_k_v():
    """Wan's reference code: modulation and gated residuals in fp32 (eager: 36 and 38 bytes per element,
    by hand: upcast 2+4, layer_norm 4+4, multiply 4+4, add 4+4, cast 4+2; two upcasts 2x(2+4), multiply
    4+4, add 8+4, cast 4+2); separate q, k, v linears quantize their shared input three times in eager
    fp8 (30 bytes per element before the fp8 write), once when compiled. FLUX keeps 16-bit passes."""
    from perfmodel.engines import load as load_engine

    spec, t, D = dit.load("wan2.1-t2v-14b").dit, 1000.0, dit.load("wan2.1-t2v-14b").dit.d_model
    eager, compiled = load_engine("torch-eager"), load_engine("torch-compile")
    ops = {o.name: o for o in cost.cross_block_ops(spec, 1, t, 512, Precision(16, 16, 16), 1, eager)}
    assert ops["norm1"].bytes == pytest.approx(36 * t * D) and ops["norm1"].kernels == 6
    assert ops["res1"].bytes == pytest.approx(38 * t * D) and ops["res1"].kernels == 5
    assert ops["res2"].bytes == pytest.approx(3 * 2 * t * D)  # the cross-attention residual: x + y
    assert {"q", "k", "v"} <= set(ops) and "qkv" not in ops
    fused = {o.name: o for o in cost.cross_block_ops(spec, 1, t, 512, Precision(16, 16, 16), 1, compiled)}
    assert fused["norm1"].bytes == pytest.approx(2 * 2 * t * D) and fused["res1"].bytes == pytest.approx(3 * 2 * t * D)

    width_eager, width_compiled = 7 * D + spec.d_ff, 5 * D + spec.d_ff  # q, k, v, out, cross q/out, fc1; fc2
    eager_quant = [o for o in cost.cross_block_ops(spec, 1, t, 512, Precision(8, 8, 8), 1, eager)
                   if o.name == "act_quant"]
    compiled_quant = [o for o in cost.cross_block_ops(spec, 1, t, 512, Precision(8, 8, 8), 1, compiled)
                      if o.name == "act_quant"]
    assert eager_quant[0].bytes == pytest.approx((30 + 1) * t * width_eager)
    assert compiled_quant[0].bytes == pytest.approx((2 + 1) * t * width_compiled)
    flux = {o.name: o for o in cost.joint_block_ops(dit.load("flux.1-dev").dit, 1, t, 512, Precision(16, 16, 16), 1,
                                                     eager)}
    assert flux["img_norm1"].bytes == pytest.approx(6 * 2 * t * 3072)
