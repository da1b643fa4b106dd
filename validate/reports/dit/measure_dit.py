"""Time diffusion-transformer blocks and block-sparse attention on the local GPU (issue 17).

    python validate/reports/dit/measure_dit.py --out DIR [--quick] [--limit-s S] [--power-s S]
                                                [--compile static|dynamic] [--only REGEX] [--dry-run]

Our own torch blocks with random weights (no diffusers), at the shapes of the catalog models
(workloads.dit: flux.1-dev and wan2.1-t2v-14b), laid out as the diffusers modules compute them:

  flux-double  FluxTransformerBlock: per stream (image, text) adaLN-Zero modulation (Linear D -> 6D
               of silu(temb)), LayerNorm + shift/scale, fused QKV, q/k RMSNorm, RoPE, one joint
               SDPA over text + image tokens, output projections, gated residual, LayerNorm +
               modulation, GELU(tanh) MLP D -> 4D -> D, gated residual.
  flux-single  FluxSingleTransformerBlock: modulation D -> 3D, LayerNorm + shift/scale, one fused
               linear D -> 3D + 4D (QKV and MLP in, BFL's linear1), q/k RMSNorm, RoPE, SDPA,
               proj_out over [attention, GELU(MLP)] (5D -> D), gated residual.
  wan          WanTransformerBlock: fp32 LayerNorm + modulation, q/k/v (RMSNorm across heads on
               q and k), RoPE, 3D full self-attention SDPA, output, gated residual; affine LayerNorm,
               cross-attention to 512 text tokens (q/k RMSNorm), output, residual; LayerNorm +
               modulation, GELU(tanh) FFN D -> F -> D, gated residual.

Linear layers carry no bias (biases ride in the GEMM epilogue; their bytes are D per layer).

Engines: torch-eager (eager kernels, CUDA events around calls queued back to back: bench.time_callable)
and torch-compile (torch.compile, inductor, timed by CUDA-graph replays: bench.time_graphed). --compile
static (the default) compiles one graph per shape, as a DiT deployment compiles the resolution it serves
(diffusers' torch.compile recipe, TensorRT engines per resolution profile); --compile dynamic marks every
dim symbolic (torch.compile(dynamic=True), widths and head counts included), how the second H200 run was
measured: inductor then cannot specialise its reductions to the model's widths, and the fused norm, RoPE
and fp8 amax kernels ran at 0.14-1.8 TB/s (validate/reports/dit/h200/run2-dynamic/profile) where static
ones stream. dtypes: bf16, and fp8 (every linear with a float8_e4m3fn weight and per-tensor scale,
activations quantized per tensor on the fly, torch._scaled_mm: validate/engine_model.fp8_linear, as
validate/engine_model.py does).

Attention cases (one head group of a layer, batch 1): dense SDPA (FlashAttention), and block-sparse
attention as PAROAttention runs it (arXiv 2506.16054): tokens permuted per head into a block-friendly
order (a gather over Q, K, V along the token dim), flex_attention (torch.compile'd) over a BlockMask of
128 x 128 blocks keeping a `density` fraction of the key blocks of each query block (the diagonal
block always kept, the others chosen at random per head), then the output gathered back; and the
reorder alone. Densities 0.2, 0.5, 0.9 and 1.0 (flex over all blocks).

Power (--power-s > 0, GPU only): after timing, each case runs back to back for power-s seconds; over
the second half (the board at its steady clock) NVML's energy counter gives the power and the energy per
call, and the call count the time per call under sustained load (`sustained_s`, beside the short timing's
`measured_s`); the SM clock is read at the end. Without the counter, the mean of power_draw() samples.

Output: DIR/dit.csv (one row per case, appended and fsynced as each case completes; a rerun skips every
case recorded, repairs a torn last line) and DIR/meta.json (device, versions, compile times). --limit-s
stops starting new cases after S seconds (rerun to continue). --quick: a CPU smoke test with tiny
dims. Splits: "fit" shapes and "heldout" shapes (make_report.py reports errors on held-out ones).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script

INDUCTOR_CACHE = Path("/tmp") / f"perfmodel-inductor-{os.getuid()}"
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(INDUCTOR_CACHE))
os.environ.setdefault("TRITON_CACHE_DIR", str(INDUCTOR_CACHE / "triton"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from validate import bench  # noqa: E402
from validate import engine_model as em  # noqa: E402
from validate.runner import append_record, done_ids, repair  # noqa: E402

COLUMNS = ("case_id", "kind", "block", "model", "engine", "dtype", "split", "height", "width", "frames",
           "image_tokens", "text_tokens", "tokens", "d_model", "heads", "head_dim", "d_ff", "density",
           "status", "measured_s", "repeats", "power_w", "energy_j", "sm_clock_mhz", "error",
           "sustained_s", "power_source",
           "device_name", "torch", "timestamp", "compile")
#: --compile modes: torch.compile's `dynamic` argument for the compiled blocks.
COMPILE_MODES = {"static": False, "dynamic": True}
BLOCK_SIZE = 128
WEIGHT_STD = 0.02

# (height, width, frames, split): FLUX images, Wan 480p videos. Held-out shapes lie between and beyond.
FLUX_SHAPES = ((512, 512, 1, "fit"), (768, 768, 1, "heldout"), (1024, 1024, 1, "fit"), (1536, 1536, 1, "heldout"))
WAN_SHAPES = ((480, 832, 17, "fit"), (480, 832, 33, "heldout"), (480, 832, 49, "fit"), (480, 832, 81, "heldout"))
DENSITIES = (0.2, 0.5, 0.9, 1.0)
# sparse-attention shapes: FLUX 1024^2 (4096 + 512 tokens, 24 heads) and Wan 480p 81 frames
# (32760 tokens padded to 32768 = 256 blocks, 40 heads)
ATTN_SHAPES = (("flux.1-dev", 4608, 24, "heldout"), ("wan2.1-t2v-14b", 32768, 40, "heldout"))
QUICK_DIMS = {"flux.1-dev": (64, 2, 32, 256), "wan2.1-t2v-14b": (64, 2, 32, 128)}   # D, H, d, F


# -- shapes from the catalog ------------------------------------------------------------------------

def dims(model: str, quick: bool) -> tuple[int, int, int, int]:
    """(D, H, d, F) of a catalog model (workloads.dit), or tiny ones for the smoke test."""
    if quick:
        return QUICK_DIMS[model]
    from workloads import dit
    spec = dit.load(model).dit
    return spec.d_model, spec.n_heads, spec.head_dim, spec.d_ff


def tokens_of(model: str, height: int, width: int, frames: int, quick: bool) -> tuple[int, int]:
    """(image tokens, text tokens) of a request, by the pipeline arithmetic (workloads.dit.latent_shape)."""
    from workloads import dit
    pipe = dit.load(model)
    shape = dit.latent_shape(pipe, dit.GenerationRequest(height=height, width=width, frames=frames))
    if quick:
        return max(16, shape.image_tokens // 256), 16
    return shape.image_tokens, shape.context_tokens


# -- cases --------------------------------------------------------------------------------------------

def case_id(case: dict) -> str:
    keys = ("kind", "model", "block", "engine", "dtype", "height", "width", "frames", "tokens", "density")
    return "/".join(str(case.get(k, "")) for k in keys)


def grid(quick: bool) -> list[dict]:
    """Attention cases first (the sparse speedup is one number per density), then compiled bf16
    blocks, eager bf16, compiled fp8, eager fp8: the order their data is worth most."""
    cases = []
    for model, tokens, heads, split in ATTN_SHAPES:
        D, H, d, Fw = dims(model, quick)
        n = 4 * BLOCK_SIZE if quick else tokens
        h = H if quick else heads
        base = dict(kind="attention", model=model, engine="torch-compile", dtype="bf16", split=split, tokens=n,
                    d_model=h * d, heads=h, head_dim=d, d_ff=0, height=0, width=0, frames=0)
        cases.append({**base, "block": "sdpa", "density": 1.0})
        cases.append({**base, "block": "reorder", "density": 1.0})
        cases += [{**base, "block": "flex_sparse", "density": rho} for rho in DENSITIES]
    for engine, dtype in (("torch-compile", "bf16"), ("torch-eager", "bf16"), ("torch-compile", "fp8"),
                          ("torch-eager", "fp8")):
        for model, blocks, shapes in (("flux.1-dev", ("flux-double", "flux-single"), FLUX_SHAPES),
                                      ("wan2.1-t2v-14b", ("wan",), WAN_SHAPES)):
            D, H, d, Fw = dims(model, quick)
            for height, width, frames, split in (shapes[:2] if quick else shapes):
                img, txt = tokens_of(model, height, width, frames, quick)
                for block in blocks:
                    cases.append(dict(kind="block", block=block, model=model, engine=engine, dtype=dtype, split=split,
                                      height=height, width=width, frames=frames, image_tokens=img, text_tokens=txt,
                                      tokens=img + txt if block != "wan" else img, d_model=D, heads=H, head_dim=d,
                                      d_ff=Fw, density=1.0))
    for c in cases:
        c["case_id"] = case_id(c)
    return cases


# -- blocks -------------------------------------------------------------------------------------------

def _w(shape, dev, dtype):
    return (torch.randn(shape, device=dev, dtype=torch.float32) * WEIGHT_STD).to(dtype)


def make_weight(n_out: int, n_in: int, dev, fp8: bool):
    """A linear weight [n_out, n_in]: bf16, or float8_e4m3fn with a per-tensor scale."""
    w = _w((n_out, n_in), dev, torch.bfloat16 if dev.type == "cuda" else torch.float32)
    if not fp8:
        return w
    q, scale = em.quantize_fp8(w)
    return em.Fp8Weight(q, scale)


def linear(x, w):
    """x @ w.T, bf16 or fp8 (validate/engine_model.linear); the output in x's dtype (the CPU smoke
    test runs fp32 activations while the fp8 path returns bf16)."""
    return em.linear(x, w).to(x.dtype)


def modulate(x, shift, scale):
    """adaLN: LayerNorm without affine, then x (1 + scale) + shift (DiT, Peebles & Xie 2023)."""
    return F.layer_norm(x, x.shape[-1:]) * (1 + scale[:, None]) + shift[:, None]


def heads_of(t, H: int, d: int):
    return t.view(t.shape[0], t.shape[1], H, d)


def sdpa(q, k, v):
    """q, k, v [B, T, H, d] -> [B, T, H * d] (FlashAttention via SDPA, no mask)."""
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return o.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)


def flux_double(img, txt, temb, cos, sin, w: dict, H: int, d: int):
    mi = linear(F.silu(temb), w["img_mod"]).chunk(6, dim=-1)
    mt = linear(F.silu(temb), w["txt_mod"]).chunk(6, dim=-1)
    qkv = []
    for x, m, s in ((txt, mt, "txt"), (img, mi, "img")):
        q, k, v = linear(modulate(x, m[0], m[1]), w[f"{s}_qkv"]).chunk(3, dim=-1)
        q = em.rms_norm(heads_of(q, H, d), w[f"{s}_qn"], 1e-6)
        k = em.rms_norm(heads_of(k, H, d), w[f"{s}_kn"], 1e-6)
        qkv.append((q, k, heads_of(v, H, d)))
    q, k, v = (torch.cat([a, b], dim=1) for a, b in zip(*qkv))
    o = sdpa(em.rope(q, cos, sin), em.rope(k, cos, sin), v)
    o_txt, o_img = o[:, :txt.shape[1]], o[:, txt.shape[1]:]
    out = []
    for x, o_s, m, s in ((img, o_img, mi, "img"), (txt, o_txt, mt, "txt")):
        x = x + m[2][:, None] * linear(o_s, w[f"{s}_out"])
        h = F.gelu(linear(modulate(x, m[3], m[4]), w[f"{s}_fc1"]), approximate="tanh")
        out.append(x + m[5][:, None] * linear(h, w[f"{s}_fc2"]))
    return out[0], out[1]


def flux_single(x, temb, cos, sin, w: dict, H: int, d: int):
    shift, scale, gate = linear(F.silu(temb), w["mod"]).chunk(3, dim=-1)
    D = H * d
    h = linear(modulate(x, shift, scale), w["lin1"])
    q, k, v, mlp = h.split([D, D, D, h.shape[-1] - 3 * D], dim=-1)
    q, k = em.rms_norm(heads_of(q, H, d), w["qn"], 1e-6), em.rms_norm(heads_of(k, H, d), w["kn"], 1e-6)
    o = sdpa(em.rope(q, cos, sin), em.rope(k, cos, sin), heads_of(v, H, d))
    return x + gate[:, None] * linear(torch.cat([o, F.gelu(mlp, approximate="tanh")], dim=-1), w["lin2"])


def wan_block(x, ctx, mod, cos, sin, w: dict, H: int, d: int):
    """mod [B, 6, D]: the block's scale_shift_table plus the projected timestep (computed once per step)."""
    shift1, scale1, gate1, shift2, scale2, gate2 = mod.unbind(dim=1)
    h = (F.layer_norm(x.float(), x.shape[-1:]) * (1 + scale1[:, None]) + shift1[:, None]).to(x.dtype)
    q = em.rms_norm(linear(h, w["q"]), w["qn"], 1e-6)
    k = em.rms_norm(linear(h, w["k"]), w["kn"], 1e-6)
    v = linear(h, w["v"])
    o = sdpa(em.rope(heads_of(q, H, d), cos, sin), em.rope(heads_of(k, H, d), cos, sin), heads_of(v, H, d))
    x = (x.float() + linear(o, w["o"]).float() * gate1[:, None]).to(x.dtype)
    h = F.layer_norm(x, x.shape[-1:], w["n2w"], w["n2b"])
    q = em.rms_norm(linear(h, w["cq"]), w["cqn"], 1e-6)
    k = em.rms_norm(linear(ctx, w["ck"]), w["ckn"], 1e-6)
    o = sdpa(heads_of(q, H, d), heads_of(k, H, d), heads_of(linear(ctx, w["cv"]), H, d))
    x = x + linear(o, w["co"])
    h = (F.layer_norm(x.float(), x.shape[-1:]) * (1 + scale2[:, None]) + shift2[:, None]).to(x.dtype)
    h = F.gelu(linear(h, w["ffn1"]), approximate="tanh")
    return (x.float() + linear(h, w["ffn2"]).float() * gate2[:, None]).to(x.dtype)


def block_weights(case: dict, dev, fp8: bool) -> dict:
    D, d, Fw = int(case["d_model"]), int(case["head_dim"]), int(case["d_ff"])
    act = torch.bfloat16 if dev.type == "cuda" else torch.float32
    ones = lambda n: torch.ones(n, device=dev, dtype=act)  # noqa: E731
    lin = lambda o, i: make_weight(o, i, dev, fp8)  # noqa: E731
    if case["block"] == "flux-double":
        w = {}
        for s in ("img", "txt"):
            w.update({f"{s}_mod": lin(6 * D, D), f"{s}_qkv": lin(3 * D, D), f"{s}_out": lin(D, D),
                      f"{s}_fc1": lin(Fw, D), f"{s}_fc2": lin(D, Fw), f"{s}_qn": ones(d), f"{s}_kn": ones(d)})
        return w
    if case["block"] == "flux-single":
        return {"mod": lin(3 * D, D), "lin1": lin(3 * D + Fw, D), "lin2": lin(D, D + Fw), "qn": ones(d), "kn": ones(d)}
    w = {k: lin(D, D) for k in ("q", "k", "v", "o", "cq", "ck", "cv", "co")}
    w.update({"ffn1": lin(Fw, D), "ffn2": lin(D, Fw), "n2w": ones(D), "n2b": torch.zeros(D, device=dev, dtype=act)})
    w.update({k: ones(D) for k in ("qn", "kn", "cqn", "ckn")})
    return w


def rope_tables(tokens: int, d: int, dev):
    pos = torch.arange(tokens, device=dev, dtype=torch.float32)[:, None]
    freq = 10000.0 ** (-torch.arange(d // 2, device=dev, dtype=torch.float32) / (d // 2))
    return torch.cos(pos * freq), torch.sin(pos * freq)


def build_block(case: dict, dev, compiled: dict, compile_mode: str = "static"):
    """fn(i) running one block forward; compiled functions are cached per (block, dtype, mode): in
    mode "static" dynamo then compiles one graph per shape (recompiling on a new one)."""
    fp8 = case["dtype"] == "fp8"
    act = torch.bfloat16 if dev.type == "cuda" else torch.float32
    D, H, d = int(case["d_model"]), int(case["heads"]), int(case["head_dim"])
    img_t, txt_t = int(case["image_tokens"]), int(case["text_tokens"])
    w = block_weights(case, dev, fp8)
    x = lambda n: torch.randn(1, n, D, device=dev, dtype=act)  # noqa: E731
    temb = torch.randn(1, D, device=dev, dtype=act)
    block = case["block"]
    fn = {"flux-double": flux_double, "flux-single": flux_single, "wan": wan_block}[block]
    if case["engine"] == "torch-compile":
        key = (block, case["dtype"], compile_mode)
        if key not in compiled:
            compiled[key] = torch.compile(fn, dynamic=COMPILE_MODES[compile_mode], fullgraph=True)
        fn = compiled[key]
    if block == "flux-double":
        img, txt = x(img_t), x(txt_t)
        cos, sin = rope_tables(img_t + txt_t, d, dev)
        return lambda i: fn(img, txt, temb, cos, sin, w, H, d)
    if block == "flux-single":
        h = x(img_t + txt_t)
        cos, sin = rope_tables(img_t + txt_t, d, dev)
        return lambda i: fn(h, temb, cos, sin, w, H, d)
    h, ctx = x(img_t), x(txt_t)
    mod = torch.randn(1, 6, D, device=dev, dtype=torch.float32) * 0.1
    cos, sin = rope_tables(img_t, d, dev)
    return lambda i: fn(h, ctx, mod, cos, sin, w, H, d)


# -- block-sparse attention ---------------------------------------------------------------------------

def sparse_block_mask(heads: int, tokens: int, density: float, dev):
    """A BlockMask of 128 x 128 blocks keeping round(density x blocks) key blocks per query block
    and head (the diagonal block always, the rest at random), all as full blocks (no per-element
    mask inside a kept block): PAROAttention's block-sparse layout after reordering."""
    from torch.nn.attention.flex_attention import BlockMask

    n = tokens // BLOCK_SIZE
    keep = max(1, min(n, round(density * n)))
    g = torch.Generator(device="cpu").manual_seed(0)
    scores = torch.rand(heads, n, n, generator=g)
    scores[:, torch.arange(n), torch.arange(n)] = 2.0
    idx = scores.argsort(dim=-1, descending=True)[..., :keep].sort(dim=-1).values
    full_idx = torch.zeros(1, heads, n, n, dtype=torch.int32)
    full_idx[0, :, :, :keep] = idx.to(torch.int32)
    full_num = torch.full((1, heads, n), keep, dtype=torch.int32)
    empty_num = torch.zeros(1, heads, n, dtype=torch.int32)
    empty_idx = torch.zeros(1, heads, n, n, dtype=torch.int32)
    return BlockMask.from_kv_blocks(empty_num.to(dev), empty_idx.to(dev), full_num.to(dev), full_idx.to(dev),
                                    BLOCK_SIZE=BLOCK_SIZE), keep / n


def build_attention(case: dict, dev, compiled: dict):
    from torch.nn.attention.flex_attention import flex_attention

    act = torch.bfloat16 if dev.type == "cuda" else torch.float32
    H, N, d = int(case["heads"]), int(case["tokens"]), int(case["head_dim"])
    q, k, v = (torch.randn(1, H, N, d, device=dev, dtype=act) for _ in range(3))
    g = torch.Generator(device="cpu").manual_seed(1)
    perm = torch.stack([torch.randperm(N, generator=g) for _ in range(H)])[None, :, :, None].to(dev)
    perm = perm.expand(1, H, N, d)
    inverse = torch.argsort(perm[..., :1], dim=2).expand(1, H, N, d)

    def reorder(t):
        return torch.gather(t, 2, perm)

    if case["block"] == "sdpa":
        return lambda i: F.scaled_dot_product_attention(q, k, v)
    if case["block"] == "reorder":
        return lambda i: (reorder(q), reorder(k), reorder(v), torch.gather(q, 2, inverse))
    mask, _ = sparse_block_mask(H, N, float(case["density"]), dev)
    if dev.type == "cuda":
        if "flex" not in compiled:
            compiled["flex"] = torch.compile(flex_attention, dynamic=False)
        flex = compiled["flex"]
    else:
        flex = flex_attention

    def run(i):
        o = flex(reorder(q), reorder(k), reorder(v), block_mask=mask)
        return torch.gather(o, 2, inverse)
    return run


# -- measuring ----------------------------------------------------------------------------------------

def measure(case: dict, dev, compiled: dict, power_s: float, compile_mode: str = "static") -> dict:
    cuda = dev.type == "cuda"
    with torch.inference_mode():
        fn = build_attention(case, dev, compiled) if case["kind"] == "attention" else \
            build_block(case, dev, compiled, compile_mode)
        out = fn(0)
        outs = out if isinstance(out, tuple) else (out,)
        if not all(torch.isfinite(t.float()).all() for t in outs):
            raise RuntimeError("non-finite output")
        graphed = cuda and case["engine"] == "torch-compile"
        seconds, repeats = bench.time_graphed(fn) if graphed else \
            bench.time_callable(fn, cuda, min_repeats=5 if cuda else 2, max_repeats=100, target_s=0.2 if cuda else 0.01)
        return {"measured_s": seconds, "repeats": repeats, **bench.sustained_power(fn, power_s)}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for dit.csv and meta.json")
    p.add_argument("--quick", action="store_true", help="CPU smoke test: tiny dims, two shapes per model")
    p.add_argument("--limit-s", type=float, default=330.0, help="start no new case after this many seconds")
    p.add_argument("--power-s", type=float, default=3.0, help="seconds of sustained calls to read power (0: off)")
    p.add_argument("--only", default="", help="regex on case ids")
    p.add_argument("--compile", default="static", choices=sorted(COMPILE_MODES),
                   help="compiled blocks: one graph per shape (static) or every dim symbolic (dynamic)")
    p.add_argument("--dry-run", action="store_true", help="print the cases and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    cases = [c for c in grid(args.quick) if re.search(args.only, c["case_id"])]
    if args.dry_run:
        for c in cases:
            print(c["case_id"], c["split"])
        print(f"{len(cases)} cases")
        return 0
    dev = bench.script_device(args.quick, "measure_dit")
    if dev is None:
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dit.csv"
    repair(path)
    done = done_ids(path)
    env = bench.environment()
    meta = {"env": env, "args": vars(args), "compiles": []}
    compiled: dict = {}
    start = time.perf_counter()
    todo = [c for c in cases if c["case_id"] not in done]
    print(f"{len(todo)} of {len(cases)} cases to run on {env['device_name']}", flush=True)
    for n, case in enumerate(todo, 1):
        if time.perf_counter() - start > args.limit_s:
            print(f"--limit-s {args.limit_s:g} reached: {len(todo) - n + 1} cases left; rerun to continue")
            break
        row = {**case, "device_name": env["device_name"], "torch": env["torch"], "timestamp": time.time(),
               "compile": args.compile if case["engine"] == "torch-compile" and case["kind"] == "block" else ""}
        t0 = time.perf_counter()
        try:
            row.update(measure(case, dev, compiled, args.power_s if not args.quick else 0.0, args.compile), status="ok")
        except Exception as err:  # recorded as failed; the run goes on (OOM, a kernel torch lacks)
            row.update(status="failed", error=f"{type(err).__name__}: {err}".replace("\n", " ")[:300])
            traceback.print_exc(limit=2)
        finally:
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        append_record(path, row, COLUMNS)
        meta["compiles"].append({"case": case["case_id"], "wall_s": round(time.perf_counter() - t0, 2)})
        (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        print(f"[{n}/{len(todo)}] {case['case_id']}: {row['status']} "
              f"{row.get('measured_s', float('nan')) * 1e3:.3f} ms  power {row.get('power_w', float('nan')):.0f} W "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
