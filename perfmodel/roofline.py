"""Roofline time of each op: max(compute, memory) + kernel overhead, reporting the bound.

time = max(FLOPs / rate, bytes / bandwidth) + kernels * overhead (Williams, Waterman & Patterson
2009, "Roofline"; the max form is the lower bound of the JAX scaling book's chapter 1, assuming
perfect overlap of compute and memory inside a kernel).

Uncalibrated (datasheet) specs use peak rates and no overhead. A calibrated spec uses the measured
rates, a per-kernel floor, and wave quantization for GEMMs: the GPU runs output tiles of
tile_m x tile_n on `compute_units` SMs in waves, so a GEMM whose tile count is just over a multiple
of the SM count pays for a whole extra wave; skinny GEMMs with fewer tiles than SMs split the
reduction dimension (split-K) across the idle SMs (NVIDIA, "Matrix Multiplication Background
User's Guide", sections on tile and wave quantization).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hardware.spec import Hardware
from perfmodel import collectives
from perfmodel.engines import load as load_engine
from perfmodel.rates import sustained_fraction
from perfmodel.ops import (ATTENTION_TILE_ROWS, CUSTOM_ALLREDUCE, CUTLASS_8BIT, ENGINE_QUANT, MASKED_CACHE_FAMILY,
                           MOE_KERNEL, ROW_NORM_KERNEL, Op, Precision)

BOUNDS = np.array(["compute", "memory", "overhead", "comm"])


@dataclass(frozen=True)
class OpTime:
    """Times of one occurrence of an op (seconds, arrays broadcast over scenarios).

    compute_s, memory_s, overhead_s (device floor) and comm_s are device time; host_s is the CPU
    time an eager framework needs to dispatch the op (zero for fused stacks and datasheet specs)."""

    compute_s: object
    memory_s: object
    overhead_s: object
    comm_s: object
    host_s: object = 0.0

    @property
    def time_s(self):
        """Device time: max(compute, memory) + floor + communication."""
        total = np.maximum(self.compute_s, self.memory_s)
        for extra in (self.overhead_s, self.comm_s):
            if np.ndim(extra) or extra:  # skip adding scalar zeros to big arrays
                total = total + extra
        return total

    @property
    def eager_time_s(self):
        """Time of the op issued alone from an eager framework: the device waits for the host."""
        return np.maximum(self.time_s, self.host_s)


def matmul_dtype_rate(hw: Hardware, w_bits, a_bits, calibrated: bool = True, weight_only_kernel: str = "fused"):
    """FLOP/s of the GEMM path the precisions select: fp4 tensor cores when both weights and
    activations are 4-bit or less and the device lists fp4 (B200: NVFP4; others fall back to their
    fp8/int8 rate, spec.peak_flops_per_s), fp8/int8 tensor cores when both are 8-bit or less, bf16 for 16-bit activations, fp32 above. Weight-only formats
    (w8a16, w4a16) run at the bf16 rate in fused serving kernels; PyTorch's own packed kernels
    (weight_only_kernel="torch") run at the rate a calibrated spec measured for them. Calibrated
    rates win over peaks."""
    table = dict(hw.calibration.matmul_flops_per_s) if (calibrated and hw.calibration) else {}
    # measured (burst) rates of the tensor-core and fp32 paths run at the fraction the board sustains
    # under load (perfmodel.rates.sustained_fraction); PyTorch's weight-only kernels are bound by
    # their unpacking, far below the power limit
    load = {d: sustained_fraction(hw, d) for d in ("bf16", "fp32", "fp8", "fp4")}

    def rate(dtype, fallback=None):
        for name in (dtype, fallback):
            if name and table.get(name):
                return table[name] * load.get(name, 1.0)
        return hw.peak_flops_per_s(fallback or dtype)

    w, a = np.asarray(w_bits), np.asarray(a_bits)
    low = (w <= 8) & (a <= 8)
    act_rate = np.where(a <= 16, rate("bf16"), rate("fp32"))
    if weight_only_kernel == "torch":
        weight_only = np.where(w <= 4, rate("w4a16", "bf16"), np.where(w <= 8, rate("w8a16", "bf16"), act_rate))
    else:
        weight_only = act_rate
    eight = np.where((w <= 4) & (a <= 4), rate("fp4"), rate("fp8"))  # fp4 tensor cores where listed
    return np.where(low, eight, np.where((w < a) & (a <= 16), weight_only, act_rate))


def gemm_parallelism(m, n, k, hw: Hardware, groups=1.0, split_k=True, tiles=None):
    """(compute efficiency, thread blocks) of the tiled GEMM kernel on a calibrated GPU; (1, inf)
    for a datasheet spec.

    tiles = ceil(m / tm) ceil(n / tn), each tile side shrinking to the next power of two of its
    dimension (>= 16) as libraries pick small tiles for small m or n; when the tiles leave SMs idle, the library splits
    the reduction over s = min(floor(SMs / tiles), floor(k / split_k_min)) slices (split-K, as
    cuBLAS's heuristics and CUTLASS's split-K / stream-K kernels do); work units u = tiles s run in
    waves of SMs: efficiency = m n / (tiles tm tn) * u / (ceil(u / SMs) SMs) (NVIDIA, "Matrix
    Multiplication Background User's Guide": tile and wave quantization). Without split-K a
    128-row GEMM of 4096 columns would fill 32 of 132 SMs and run at a quarter of the rate, which
    no library does. `groups` GEMMs of this shape in one grouped kernel (MoE experts; an expected,
    fractional count) multiply the tiles, each group's own count rounded up. `split_k` false (a
    bool or a mask per element) for kernels that never split (`split_k_allowed`): one unit a tile.
    `tiles`: (tile rows, tile columns, mask) of a kernel whose tile its library picks by m
    (`engine_tiles`), used where the mask holds, in place of the calibrated grid.
    """
    cal = hw.calibration
    if cal is None or cal.tile_m <= 1:
        return 1.0, np.inf
    sms = hw.compute_units
    m = np.maximum(np.asarray(m, dtype=float), 1.0)
    n = np.maximum(np.asarray(n, dtype=float), 1.0)
    tm = np.minimum(cal.tile_m, np.maximum(16.0, 2.0 ** np.ceil(np.log2(m))))
    tn = np.minimum(cal.tile_n, np.maximum(16.0, 2.0 ** np.ceil(np.log2(n))))
    if tiles is not None:
        own_m, own_n, mask = tiles
        tm, tn = np.where(mask, own_m, tm), np.where(mask, own_n, tn)
    tiles = np.ceil(m / tm) * np.ceil(n / tn) * groups
    splits = _splits(tiles, k, sms, cal.split_k_min)
    if split_k is not True:
        splits = np.where(split_k, splits, 1.0)
    units = tiles * splits
    efficiency = (m * n * groups) / (tiles * tm * tn) * units / (np.ceil(units / sms) * sms)
    return efficiency, units


def gemv_blocks(n, k, hw: Hardware, groups=1.0):
    """Thread blocks of the skinny-GEMM (GEMV-like) kernel libraries run for m <= SKINNY_ROWS:
    ceil(n / gemv_tile_n) column blocks, the reduction split like the tiled kernel's; how many
    blocks stream weights limits their bandwidth (each at the dtype's gemv_bytes_per_s)."""
    cal = hw.calibration
    columns = np.ceil(np.maximum(np.asarray(n, dtype=float), 1.0) / (cal.gemv_tile_n or cal.tile_n)) * groups
    return columns * _splits(columns, k, hw.compute_units, cal.split_k_min)


def _splits(blocks, k, sms, split_k_min):
    """Split-K slices: enough to fill idle SMs, each slice at least split_k_min deep."""
    return np.clip(np.minimum(np.floor(sms / blocks), np.floor(np.asarray(k, float) / split_k_min)), 1.0, None)


#: Rows up to which libraries also have a skinny (GEMV-like) kernel to choose from.
SKINNY_ROWS = 64


def split_k_allowed(op: Op, p: Precision):
    """Whether a GEMM's kernel may split its reduction (and has a skinny kernel beside its tiles):
    True, but for an engine's CUTLASS 8-bit GEMMs (ops.CUTLASS_8BIT) at 8-bit weights and
    activations, where it is False (per element where the precision is an array). vLLM's sm90 fp8
    dispatch (csrc/quantization/cutlass_w8a8/c3x/scaled_mm_sm90_fp8_dispatch.cuh) and sgl-kernel's
    fp8_scaled_mm pick a CUTLASS 3 tile shape by m and run it as a plain GEMM (GemmUniversalMode
    kGemm): a tile per SM, no split-K, no GEMV path. aiconfigurator's H200 tables show it: vLLM's
    and SGLang's fp8 GEMM of 5 x 64 x 51200 takes 42 and 32 us, one tile streaming 3.3 MB at
    ~80-100 GB/s (validate/reports/aiconfigurator)."""
    if not op.kernel.startswith(CUTLASS_8BIT):
        return True
    eight = (np.asarray(p.w_bits) <= 8) & (np.asarray(p.a_bits) <= 8)
    return bool(~eight) if eight.ndim == 0 else ~eight


def engine_tiles(op: Op, split_k, hw: Hardware) -> tuple | None:
    """(tile rows, tile columns, mask) of an engine's CUTLASS 8-bit GEMM (ops.cutlass_8bit_kernel)
    on a Hopper spec where its profile lists the tile its sm90 dispatch picks by m
    (Engine.fp8_gemm_tiles_hopper; Hardware.architecture), the mask
    where the op runs that kernel (8-bit: split_k false); None elsewhere. vLLM's sm90 fp8 dispatch
    (csrc/quantization/cutlass_w8a8/c3x/scaled_mm_sm90_fp8_dispatch.cuh) takes 64 x 64 tiles up to
    64 rows, 64 x 128 up to 128 and 128 x 128 above; sgl-kernel's (csrc/gemm/fp8_gemm_kernel.cu,
    sm90_fp8_dispatch_shape) 64 x 64 up to 256 rows and 128 x 128 above. A 129-row GEMM then runs
    two 128-row tiles under vLLM where a 64-row grid priced three."""
    engine = _kernel_engine(op, CUTLASS_8BIT) if op.kernel.startswith(CUTLASS_8BIT + "-") else ""
    table = load_engine(engine).fp8_tile_table if engine and hw.architecture == "hopper" else ()
    if not table or split_k is True:
        return None
    m = np.asarray(op.m, dtype=float)
    bounds = [m <= bound for bound, _, _ in table]
    rows = np.select(bounds, [r for _, r, _ in table], default=table[-1][1])
    cols = np.select(bounds, [c for _, _, c in table], default=table[-1][2])
    return rows, cols, ~np.asarray(split_k, dtype=bool)


def _gemm_time(op: Op, hw: Hardware, p: Precision) -> tuple:
    """(compute_s, memory_s) of a GEMM on a calibrated GPU: the tiled kernel, or for skinny GEMMs
    whichever of the tiled and the GEMV-like kernel is faster (a library's heuristic picks among
    its kernels; taking the faster keeps time non-decreasing in m across the switch, which a
    fixed m <= 64 rule did not: DeepSeek-V3's decode step ran faster at batch 96 than at 64)."""
    cal = hw.calibration
    rate = _gemm_rate(hw, p)
    tile_s, power_s, memory_s = tiled_gemm_terms(op, hw, p)
    tiled = (np.maximum(tile_s, power_s), memory_s)
    split_k = split_k_allowed(op, p)
    if split_k is False or not np.any(np.asarray(op.m) <= SKINNY_ROWS):
        return tiled
    per_block = _gemv_cap(cal, p, cal.sm_bytes_per_s or np.inf) if cal.gemv_bytes_per_s else \
        (cal.sm_bytes_per_s or np.inf)
    blocks = gemv_blocks(op.n, op.k, hw, op.groups)
    gemv = (op.flops / rate,
            gemm_latency_s(cal) + gemm_stream_bytes(op, cal) / np.minimum(_gemm_read_bytes_per_s(op, cal),
                                                                         blocks * per_block))
    pick = (np.asarray(op.m) <= SKINNY_ROWS) & (np.maximum(*gemv) < np.maximum(*tiled)) & split_k
    return np.where(pick, gemv[0], tiled[0]), np.where(pick, gemv[1], tiled[1])


def tiled_gemm_terms(op: Op, hw: Hardware, p: Precision) -> tuple:
    """(tile-limited compute_s, power-limited compute_s, memory_s) of the tiled GEMM kernel on a
    calibrated GPU; its compute time is the larger of the first two, FLOPs / min(rate x
    efficiency, sustained rate) (`gemm_parallelism`, `_sustained_rate`). The tile-limited time
    depends on the rows m only through ceil(m / tile_m) once m exceeds tile_m (the rows cancel
    between FLOPs and efficiency), which the fast path (perfmodel.fastpath) tabulates per run of
    tile_m rows; memory time is the kernel's fill latency (`gemm_latency_s`) plus the bytes streamed at
    min(read bandwidth, thread blocks x per-SM rate)."""
    cal = hw.calibration
    split_k = split_k_allowed(op, p)
    efficiency, units = gemm_parallelism(op.m, op.n, op.k, hw, op.groups, split_k, engine_tiles(op, split_k, hw))
    return (op.flops / (_gemm_rate(hw, p) * efficiency), op.flops / _sustained_rate(hw, p),
            gemm_latency_s(cal) + gemm_stream_bytes(op, cal) / np.minimum(_gemm_read_bytes_per_s(op, cal),
                                                                         units * (cal.sm_bytes_per_s or np.inf)))


def gemm_stream_bytes(op: Op, cal):
    """A GEMM's bytes in units of its read stream: what it reads plus its output (Op.out_bytes)
    weighted by read rate / write rate (Calibration.gemm_write_bytes_per_s; 1 where not fitted):
    reads and writes share the HBM, each byte at its own rate. aiconfigurator's H200 tables show
    GEMM epilogues writing slower than operands stream: GEMMs whose output is 90-99% of their
    bytes (k of 32-256) move 2.0-2.8 TB/s in bf16 (TensorRT-LLM) and 1.4-2.4 TB/s in fp8, where
    reads reach 3.8 TB/s (validate/reports/aiconfigurator)."""
    if not cal.gemm_write_bytes_per_s or (np.ndim(op.out_bytes) == 0 and op.out_bytes == 0):
        return op.bytes
    return op.bytes + op.out_bytes * (cal.read_bytes_per_s / cal.gemm_write_bytes_per_s - 1.0)


def gemm_latency_s(cal) -> float:
    """Fill latency of a GEMM kernel's operand stream (0 where not calibrated): a memory-bound GEMM
    takes latency + bytes / bandwidth (Hockney's latency-bandwidth form), the latency being what no
    amount of streaming hides: the prologue's loads of the first K slabs, the epilogue's reduction
    (split-K partial sums) and output write. On an H200 (validate/reports/h200) cuBLAS's bf16 and
    fp8 skinny GEMMs take 2.24 us beyond the launch floor (one fit on both; fitted apart they came
    out 2.33 and 2.20 us); without it 2-21 MB weights at m <= 64 were predicted 0.65-0.8x."""
    return cal.gemm_latency_s


def _gemm_read_bytes_per_s(op: Op, cal):
    """Streaming rate of a GEMM's operands: the read bandwidth, or for a grouped kernel (MoE experts)
    its fused-MoE family's fitted rate (Calibration.moe_kernel_bytes_per_s), else the lower rate
    measured for grouped GEMMs."""
    if op.kind != "moe":
        return cal.read_bytes_per_s
    family = _moe_family(op)
    if family in cal.moe_kernel_bytes_per_s:
        return cal.moe_kernel_bytes_per_s[family]
    return min(cal.read_bytes_per_s, cal.grouped_bytes_per_s or np.inf)


def _moe_family(op: Op) -> str:
    """The fused-MoE kernel family of an op moe_ops tagged ("moe-vllm-triton" -> "vllm-triton"), else ""."""
    return _kernel_engine(op, MOE_KERNEL) if op.kernel.startswith(MOE_KERNEL + "-") else ""


def moe_routing_s(op: Op, cal) -> float:
    """Fixed time of one MoE layer's routing (top-k, sorting the token copies by expert, the
    launches around the grouped GEMMs): the op's fused-MoE family's fitted time where the spec has
    one (fitted to the engine's MoE tables, aiconfigurator), else moe_routing_s (our suite's
    torch.compile'd MoE layer)."""
    return cal.moe_kernel_latency_s.get(_moe_family(op), cal.moe_routing_s)


def is_tiled_gemm(op: Op, hw: Hardware, p: Precision) -> bool:
    """Whether `op_time` prices `op` as a tiled GEMM (`_gemm_time`): a GEMM or grouped GEMM on a
    calibrated GPU with tiles, not one of PyTorch's own weight-only kernels."""
    cal = hw.calibration
    return op.kind in ("matmul", "moe") and cal is not None and cal.tile_m > 1 and \
        _dequant_time_s(cal, p, op.weight_bytes) is None


def op_time(op: Op, hw: Hardware, p: Precision, tp=1) -> OpTime:
    """Compute, memory, floor, communication and host time of one occurrence of `op`."""
    cal = hw.calibration
    overhead = op.kernels * cal.kernel_overhead_s if cal else 0.0
    host = op.kernels * cal.dispatch_s if cal else 0.0
    if op.kind == "comm":
        # NCCL: the faster of ring and tree per message size; the engines' custom all-reduce below
        # its size limit (perfmodel.collectives)
        if op.kernel.startswith(CUSTOM_ALLREDUCE):  # "custom-<engine>": that engine's own kernel
            engine = _kernel_engine(op, CUSTOM_ALLREDUCE)
            return OpTime(0.0, 0.0, 0.0, collectives.custom_allreduce_time_s(op.comm_bytes, tp, hw, engine), host)
        return OpTime(0.0, 0.0, 0.0, collectives.allreduce_time_s(op.comm_bytes, tp, hw), host)
    bandwidth = cal.memory_bytes_per_s if cal else hw.hbm_bytes_per_s
    if op.kind in ("matmul", "moe"):
        # a grouped kernel (MoE experts) runs its groups' output tiles side by side on the SMs
        if cal is None or cal.tile_m <= 1:
            return OpTime(op.flops / _gemm_rate(hw, p), op.bytes / bandwidth, overhead, 0.0, host)
        dequant_s = _dequant_time_s(cal, p, op.weight_bytes)
        if dequant_s is not None:  # not cuBLAS tiles: time is unpack + multiply at the measured rate
            bandwidth = np.minimum(cal.read_bytes_per_s, gemv_blocks(op.n, op.k, hw, op.groups) *
                                   (cal.sm_bytes_per_s or np.inf))
            return OpTime(op.flops / _gemm_rate(hw, p) + dequant_s, op.bytes / bandwidth, overhead, 0.0, host)
        compute_s, memory_s = _gemm_time(op, hw, p)
        return OpTime(compute_s, memory_s, overhead, 0.0, host)
    elif op.kind == "elementwise" and op.kernel.startswith(ENGINE_QUANT + "-") and cal and \
            _kernel_engine(op, ENGINE_QUANT) in cal.act_quant_engine_latency_s:
        # the engine's fitted path replaces its kernels' launch floors (fitted on GEMM tables alone,
        # kernel_overhead_s holds a GEMM's prologue too: 2.7 us, where vLLM's two quant kernels and
        # its fp8 GEMM take 5 us together)
        rate, overhead = hw.peak_flops_per_s("fp32"), engine_quant_time_s(op, cal)
    elif op.kind == "norm" and op.kernel == ROW_NORM_KERNEL and cal and cal.row_norm_bytes_per_s:
        # one block per row: the stream of all rows plus one row's latency, the pipeline's fill
        # (Hockney's latency-bandwidth form; perfmodel.ops.row_norm_op)
        rate, overhead = hw.peak_flops_per_s("fp32"), overhead + row_norm_latency_s(op, cal)
    elif op.kind == "norm" and cal and cal.norm_bytes_per_s and np.max(op.kernels) > 1:
        # an unfused norm chain (fp32 upcast, pow, mean, rsqrt, ...: transformers' RMSNorm) streams
        # at its measured rate; a single fused norm kernel (inductor, vLLM) at the memory rate
        rate, bandwidth = hw.peak_flops_per_s("fp32"), cal.norm_bytes_per_s
    elif op.kind == "concat" and cal and cal.concat_bytes_per_s:
        rate, bandwidth = hw.peak_flops_per_s("fp32"), cal.concat_bytes_per_s
    elif op.kind == "reduction" and cal and cal.reduction_bytes_per_s:
        rate, bandwidth = hw.peak_flops_per_s("fp32"), cal.reduction_bytes_per_s
    elif op.kind == "routing":
        rate, overhead = hw.peak_flops_per_s("fp32"), overhead + (moe_routing_s(op, cal) if cal else 0.0)
    elif op.kind == "attention":
        params = attention_params(hw, op)
        _, floor, read, _, _, _, stream_s, _, _, _, _ = params
        dot_s, work_s = _attention_terms(op, hw, p, params)
        return OpTime(np.maximum(dot_s, work_s), stream_s + op.bytes / attention_read_rate(op, hw, read or bandwidth),
                      overhead + floor, 0.0, host)
    else:
        rate = hw.peak_flops_per_s("fp32")
    return OpTime(op.flops / rate, op.bytes / bandwidth, overhead, 0.0, host)


def attention_read_rate(op: Op, hw: Hardware, dram_rate):
    """The rate an attention op streams its bytes: its family's read bandwidth (`dram_rate`), or
    for an op timed by replaying it on one cache (Op.warm_l2) whose bytes fit the spec's L2
    (Hardware.l2_cache_bytes) its family's L2 rate where fitted (Calibration.attention_l2_bytes_per_s).
    NVIDIA's aiconfigurator times its attention kernels so (collector/<engine>/collect_attn.py:
    benchmark_with_power around one call on one KV cache), where its GEMM collectors cycle weight
    copies past the L2 (collector/trtllm/collect_gemm.py sizes them by cudaDevAttrL2CacheSize): on
    its L40S tables decodes over 16-96 MB of cache stream 0.8-2.8 TB/s where its GDDR6 gives 0.864
    TB/s (validate/reports/aiconfigurator). A model step never finds one layer's cache there: its other
    layers' weights and caches pass through the L2 between two visits."""
    warm = op.warm_l2
    if not hw.l2_cache_bytes or hw.calibration is None or not np.any(warm):
        return dram_rate
    l2_rate = hw.calibration.attention_l2_bytes_per_s(op.kernel)
    if not l2_rate:
        return dram_rate
    return np.where(np.asarray(warm, dtype=bool) & (np.asarray(op.bytes) <= hw.l2_cache_bytes), l2_rate, dram_rate)


def _kernel_engine(op: Op, prefix: str) -> str:
    """The engine an op's kernel names after its prefix ("custom-vllm" -> "vllm"; ops.CUSTOM_ALLREDUCE,
    ops.ENGINE_QUANT)."""
    return op.kernel[len(prefix) + 1:]


def engine_quant_time_s(op: Op, cal):
    """Time an engine's dynamic fp8 activation quantization (ops.engine_quant_op) takes beyond
    streaming its bytes: the engine's fitted latency (its kernels' fixed costs) plus a time per row
    (vLLM's per-tensor scale folds one maximum per token into one global value, one after another:
    about 8.2 ns per row on an H200, 4,353 rows of 32 columns then take 36 us where streaming them
    takes 0.1 us; aiconfigurator's fp8 GEMM tables, validate/reports/aiconfigurator). An engine
    without a fitted path pays its kernels' floors and bytes only."""
    engine = _kernel_engine(op, ENGINE_QUANT)
    return cal.act_quant_engine_latency_s.get(engine, 0.0) + \
        np.asarray(op.m, dtype=float) * cal.act_quant_engine_row_s.get(engine, 0.0)


def row_norm_latency_s(op: Op, cal):
    """Time one thread block takes over one row of a row-per-block norm: a fixed latency (its
    reductions' synchronisations) plus the row's bytes at one block's streaming rate. Fitted on
    the H200's graph-timed LayerNorm cases (validate/calibrate.py): 1 row of 2048 takes 4.1 us,
    of 8192 10.5 us, where the memory rate would give 1.2 us (the launch floor)."""
    row_bytes = op.act_bytes / np.maximum(np.asarray(op.m, dtype=float), 1.0)
    return cal.row_norm_latency_s + row_bytes / cal.row_norm_bytes_per_s


def attention_compute_terms(op: Op, hw: Hardware, p: Precision) -> tuple:
    """(dot-product time, work-unit time) of an attention op: its compute time is the larger. The
    first is its FLOPs at the family's fraction of the bf16 tensor-core rate plus its query-key
    scores at the family's softmax rate (`attention_scores`); the second holds where short contexts
    leave the SMs waiting on per-unit costs: work units run in waves over the SMs, each unit's fixed
    time (and, where a unit streams its sequence's whole cache, key_s per cached key) plus each query
    row's own time (0 for a family without work-unit terms), plus, for a kernel that never splits a
    unit's keys, its longest unit (`longest_unit_s`). Both are affine in the op's context
    (serving.costs tabulates them apart)."""
    return _attention_terms(op, hw, p, attention_params(hw, op))


def attention_params(hw: Hardware, op: Op) -> tuple:
    """The calibrated parameters of `op`'s attention kernel family (Calibration.attention_kernel),
    or a datasheet spec's: the full bf16 rate, no floor, no work-unit or softmax terms; 0 read
    bandwidth stands for the spec's memory bandwidth."""
    cal = hw.calibration
    return cal.attention_kernel(op.kernel, float(op.k)) if cal else (1.0,) + (0.0,) * 10


def _attention_terms(op: Op, hw: Hardware, p: Precision, params: tuple) -> tuple:
    fraction, score_rate = params[0], params[7]
    dot_s = op.flops / (_attention_rate(hw, p, _attention_bits(p, op)) * fraction)
    if score_rate:
        dot_s = dot_s + attention_scores(op) / score_rate
    work_s = attention_work_s(op.m, op.n, op.groups, params, hw.compute_units, kv_split_rule(op.kernel, hw),
                              op.k, op.kv_bytes) if has_work_terms(params) else 0.0
    if has_longest_unit(op.kernel, params):
        work_s = work_s + longest_unit_s(op.m, op.n, op.groups, unit_score_s(op, hw, p, params))
    return dot_s, work_s


def _attention_bits(p: Precision, op: Op):
    """Bits attention's tensor-core math runs at: the op's own where its kernel sets them (fp8
    attention over an 8-bit cache: Op.tensor_bits), else bf16/fp16, or fp32 (from the
    activations' bits)."""
    bits = np.minimum(np.maximum(p.a_bits, 16), 32)
    own = op.tensor_bits
    if isinstance(own, (int, float)):
        return own if own else bits
    return np.where(np.asarray(own) > 0, own, bits)


def has_longest_unit(kernel: str, params: tuple) -> bool:
    """Whether an attention kernel is bounded by its longest work unit (`longest_unit_s`): its units
    stream their keys whole (`streams_unit_keys`) and its family has a fitted unit speedup
    (Calibration.attention_kernel)."""
    return bool(params[8]) and streams_unit_keys(kernel)


def streams_unit_keys(kernel: str) -> bool:
    """Whether an attention kernel's work units each stream all of their keys on one SM, as prefill
    kernels do (FlashAttention-2/3, cuDNN and TensorRT-LLM's FMHA split the queries into tiles, never
    a tile's keys; Dao 2023, arXiv 2307.08691, section 3.2; Shah et al. 2024, arXiv 2407.08608),
    with or without the causal mask (a DiT's bidirectional kernel). Not decode kernels (they split
    the keys: flash-decoding, XQA multi-block) and not a masked static cache's kernel (its units all
    stream the whole cache: the family's key_s)."""
    return kernel.endswith(("-prefill", "-prefill-bidirectional")) and not kernel.startswith(MASKED_CACHE_FAMILY)


def unit_score_s(op: Op, hw: Hardware, p: Precision, params: tuple):
    """Time one query-key score takes inside a lone work unit on its SM: a score's two dot products
    (4 x head dim `op.k` FLOPs, as `attention_scores` counts them) at the family's fraction of the
    tensor-core rate plus its exponential at the family's softmax rate (0: none), both at the unit's
    fair share of them (1 / compute_units) times the family's fitted unit speedup (a lone unit may
    run faster than its fair share: a whole SM, no neighbours)."""
    fraction, score_rate, speedup = params[0], params[7], params[8]
    score_s = 4.0 * np.asarray(op.k, dtype=float) / (_attention_rate(hw, p, _attention_bits(p, op)) * fraction)
    if score_rate:
        score_s = score_s + 1.0 / score_rate
    return score_s * hw.compute_units / speedup


def longest_unit_s(m, n, groups, score_s):
    """The longest work unit of a kernel whose units each stream all their keys on one SM
    (`has_longest_unit`): a tile of min(query rows per (sequence, kv head), 128) rows over the
    whole context n, `score_s` per score (`unit_score_s`). Added to the work-unit term (the op's
    compute time is the larger of that and the dot products'), as list scheduling's makespan is at
    most the mean load plus the longest job (Graham 1969, SIAM J. Appl. Math. 17(2)): a causal
    prefill of few heads and a long prompt runs one wave of tiles whose last tile alone takes as
    long as the kernel (aiconfigurator's H200 tables: vLLM's FA3 over 2 heads x 8192 tokens takes
    124 us, its FLOPs at the kernel's rate 80 us, its last tile at 1/132 of that rate 118 us).
    Affine in n, like the other terms. One function for the per-op and the fast path."""
    if isinstance(m, float) and isinstance(n, float) and isinstance(groups, float):  # one scenario: in floats
        return min(m / max(groups, 1.0), float(ATTENTION_TILE_ROWS)) * n * score_s
    rows = np.minimum(np.asarray(m, dtype=float) / np.maximum(np.asarray(groups, dtype=float), 1.0),
                      float(ATTENTION_TILE_ROWS))
    return rows * np.asarray(n, dtype=float) * score_s


def has_work_terms(params: tuple) -> bool:
    """Whether an attention kernel family's parameters (Calibration.attention_kernel) carry
    work-unit terms (a time per unit or per query row): its compute time is then the larger of two
    terms (`attention_compute_terms`), not the dot products' alone."""
    return bool(params[3] or params[4])


def attention_work_s(m, n, groups, params: tuple, compute_units, split: str = "", head_dim=0.0, kv_bytes=0.0):
    """The work-unit term of `attention_compute_terms` from an attention op's query rows m, context
    n and (sequence, kv head) pairs `groups`: the units' waves over the SMs, each unit's fixed time
    (plus key_s per cached key), plus each query row's time spread over the SMs; for a kernel that
    splits each unit's keys over blocks by a known rule (`split`: KV_SPLIT_RULES), `split_work_s`.
    One function for the per-op path, the fast path and the serving simulator (perfmodel.fastpath
    prices a prefill's per scenario), so they give the same doubles."""
    if split:
        return split_work_s(m, n, groups, params, compute_units, split, head_dim, kv_bytes)
    _, _, _, unit_s, row_s, key_s, _, _, _, _, _ = params
    if isinstance(m, float) and isinstance(n, float) and isinstance(groups, float):  # one scenario: in floats
        pairs = max(groups, 1.0)
        waves = float(math.ceil(pairs * math.ceil(m / pairs / ATTENTION_TILE_ROWS) / compute_units))
        return waves * (unit_s + n * key_s) + m * row_s / compute_units
    waves = np.ceil(_units(m, groups) / compute_units)
    # a family without a time per cached key: the same doubles without the pass over the context
    unit = unit_s + np.asarray(n, dtype=float) * key_s if key_s else unit_s
    return waves * unit + np.asarray(m, dtype=float) * row_s / compute_units


#: Decode kernels whose host code splits each sequence's keys over a number of thread blocks it
#: computes from the shape (`split_blocks`), by kernel name: TensorRT-LLM's XQA and its masked MHA.
KV_SPLIT_RULES = {"trtllm-decode": "xqa", "trtllm-mmha-decode": "mmha"}
#: Architectures those kernels run on: from sm100 (B200, GB200: "blackwell") TensorRT-LLM's
#: generation attention runs its TRTLLM-Gen kernels instead (AttentionOp: mUseTllmGen = sm >= 100
#: and not sm120/121), whose splits these rules do not describe; the family is then priced as
#: any other (on aiconfigurator's B200 table the XQA rule took TensorRT-LLM's decode cell 5.1 -> 7.0%).
KV_SPLIT_ARCHITECTURES = ("turing", "ampere", "ada", "hopper")


def kv_split_rule(kernel: str, hw: Hardware) -> str:
    """The split rule (KV_SPLIT_RULES) of an attention kernel on `hw`, "" where none: another kernel,
    or a spec whose architecture runs other kernels in its place (KV_SPLIT_ARCHITECTURES)."""
    rule = KV_SPLIT_RULES.get(kernel, "")
    return rule if rule and hw.architecture in KV_SPLIT_ARCHITECTURES else ""


#: XQA's rule (TensorRT-LLM cpp/tensorrt_llm/kernels/decoderMaskedMultiheadAttention/decoderXQAConstants.h
#: and decoderXQAImplCommon.h computeMultiBlockCount): one block per 128 cached keys, at most
#: round(sqrt(8 x that)) ("otherwise the final reduction may dominate"), cut so that the grid holds
#: at most 8 waves over the SMs.
XQA_KEYS_PER_BLOCK, XQA_TARGET_WAVES = 128.0, 8.0
#: The masked MHA's rule (TensorRT-LLM decoderMaskedMultiheadAttentionLaunch.h multi_block_grid_setup):
#: one block per (sequence, query head), split into as many blocks as fill every SM's resident
#: blocks once (ceil(SMs x blocks per SM / (batch x heads))), each holding at least one pass of its
#: key loop: 256-thread blocks, 16 bytes of a 16-bit key per thread, 8 keys unrolled, i.e. 16384 /
#: head dim keys. Its resident blocks come from CUDA's occupancy query; the same file's launcher
#: says "the max number of warps we can launch per SM is 32 limited by registers" (mmha_launch_kernel_ex:
#: SMs x 4 blocks of 256 threads fill the device), so 4. The H200 tables do not settle it: on the
#: masked MHA's calibration rows 2 has the lower robust cost (1.157 against 1.274; 8: 1.341), 4 the
#: lower median (7.2% against 8.4%; 8: 8.4%).
MMHA_BLOCKS_PER_SM, MMHA_KEY_LOOP_ELEMENTS = 4.0, 16384.0


def split_blocks(split: str, units, n, head_dim, compute_units):
    """Blocks each of `units` (XQA: (sequence, kv head) pairs; masked MHA: (sequence, query head)
    rows) splits its n cached keys over, by the kernel's own host rule (KV_SPLIT_RULES)."""
    if isinstance(units, float) and isinstance(n, float) and isinstance(head_dim, float):
        return _split_blocks_float(split, max(units, 1.0), n, head_dim, float(compute_units))
    units, n = np.maximum(np.asarray(units, dtype=float), 1.0), np.asarray(n, dtype=float)
    if split == "xqa":
        blocks = np.floor(np.maximum(n - 1.0, 0.0) / XQA_KEYS_PER_BLOCK)
        blocks = np.maximum(np.minimum(blocks, np.round(np.sqrt(8.0 * blocks))), 1.0)
        excess = units * blocks / compute_units / XQA_TARGET_WAVES
        return np.maximum(np.where(excess > 1.0, np.floor(blocks / np.maximum(excess, 1.0)), blocks), 1.0)
    if split == "mmha":
        loop = MMHA_KEY_LOOP_ELEMENTS / np.maximum(np.asarray(head_dim, dtype=float), 1.0)
        return np.clip(np.ceil(compute_units * MMHA_BLOCKS_PER_SM / units), 1.0, np.maximum(np.ceil(n / loop), 1.0))
    raise ValueError(f"split: {split!r} is not one of {sorted(set(KV_SPLIT_RULES.values()))}")


def _split_blocks_float(split: str, units: float, n: float, head_dim: float, compute_units: float) -> float:
    """`split_blocks` of one scenario in Python floats (the serving simulator asks once per
    iteration): the same operations, so the same doubles."""
    if split == "xqa":
        blocks = float(math.floor(max(n - 1.0, 0.0) / XQA_KEYS_PER_BLOCK))
        blocks = max(min(blocks, float(round(math.sqrt(8.0 * blocks)))), 1.0)
        excess = units * blocks / compute_units / XQA_TARGET_WAVES
        return max(float(math.floor(blocks / excess)) if excess > 1.0 else blocks, 1.0)
    if split == "mmha":
        loop = MMHA_KEY_LOOP_ELEMENTS / max(head_dim, 1.0)
        return min(max(float(math.ceil(compute_units * MMHA_BLOCKS_PER_SM / units)), 1.0),
                   max(float(math.ceil(n / loop)), 1.0))
    raise ValueError(f"split: {split!r} is not one of {sorted(set(KV_SPLIT_RULES.values()))}")


def split_work_float(m: float, n: float, groups: float, params: tuple, compute_units: float, split: str,
                     head_dim: float, kv_bytes: float) -> float:
    """`split_work_s` of one scenario in Python floats (the serving simulator asks once per
    iteration): the same operations, so the same doubles."""
    _, _, _, unit_s, row_s, key_s, _, _, _, combine_s, block_bw = params
    pairs = groups if groups > 1.0 else 1.0
    units = (m if m > 1.0 else 1.0) if split == "mmha" else pairs
    blocks = _split_blocks_float(split, units, n, head_dim, compute_units)
    block_s = unit_s + n / blocks * key_s
    if block_bw:
        block_s = block_s + kv_bytes / pairs / blocks / block_bw
    slots = compute_units * MMHA_BLOCKS_PER_SM if split == "mmha" else compute_units
    work = math.ceil(units * blocks / slots) * block_s + m * row_s / compute_units
    return work + blocks * combine_s if blocks > 1.0 else work


def split_work_s(m, n, groups, params: tuple, compute_units, split: str, head_dim, kv_bytes):
    """The work-unit term of a kernel that splits each unit's keys over `split_blocks` blocks: the
    blocks' waves over the SMs (the masked MHA's over its resident blocks), each block's fixed time
    plus its share of its (sequence, kv head)'s cache (`kv_bytes` / pairs / blocks; a masked-MHA
    block reads its kv head's cache for its own query head) at block_bytes_per_s and key_s per key
    of its share, each query row's time spread over the SMs, plus, where a unit is split, combine_s
    per block its final pass combines. XQA's rule makes a block's share and the combine grow as
    sqrt(n), which no line in n holds: on aiconfigurator's H200 tables the per-pair model had priced
    its decode rows of 1-64 pairs over 2-16K keys 7-17% fast, rows past 16K keys 9-38% slow. A
    block's stream is its bytes' (a 256-wide head's keys take twice a 128-wide's): with a time per
    key instead, both TensorRT-LLM families' calibration medians were 6.4 / 8.6% against 3.8 / 7.2%."""
    if isinstance(m, float) and isinstance(n, float) and isinstance(groups, float) and \
            isinstance(head_dim, float) and isinstance(kv_bytes, float):
        return split_work_float(m, n, groups, params, float(compute_units), split, head_dim, kv_bytes)
    _, _, _, unit_s, row_s, key_s, _, _, _, combine_s, block_bw = params
    rows, pairs = np.asarray(m, dtype=float), np.maximum(np.asarray(groups, dtype=float), 1.0)
    units = rows if split == "mmha" else pairs
    slots = compute_units * (MMHA_BLOCKS_PER_SM if split == "mmha" else 1.0)
    blocks = split_blocks(split, units, n, head_dim, compute_units)
    waves = np.ceil(np.maximum(units, 1.0) * blocks / slots)
    block_s = unit_s + np.asarray(n, dtype=float) / blocks * key_s
    if block_bw:
        block_s = block_s + np.asarray(kv_bytes, dtype=float) / pairs / blocks / block_bw
    work = waves * block_s + rows * row_s / compute_units
    work = work + np.where(blocks > 1.0, blocks * combine_s, 0.0)
    return float(work) if not np.ndim(work) else work  # one scenario: a Python float, as the others give


def attention_scores(op: Op):
    """Query-key scores an attention op computes (one exponential each in its softmax): its FLOPs
    over the 4 x head dim FLOPs of a score's two dot products (QK^T and PV; ops.attention_op). Exact
    where value and key head dims are equal; MLA's absorbed form (key 576, value 512) counts 6% fewer,
    MiMo-V2's heads (key 192, value 128) 17% fewer (an Op carries the query-key width alone).
    FlashAttention-3 (Shah et al. 2024, arXiv 2407.08608, section 3.1) gives why it matters: an H100
    does 989 TFLOP/s of bf16 matmul but 3.9 T exponentials/s, so at head dim 64 the exponentials take
    as long as the matmuls; aiconfigurator's H200 prefill tables show it (vLLM's FA3 at long
    prompts: 450-500 TFLOP/s at head dim 64, 550-650 at 128, 700-760 at 256)."""
    return op.flops / (4.0 * np.maximum(np.asarray(op.k, dtype=float), 1.0))


def attention_units(op: Op):
    """Work units of a FlashAttention-style kernel: one per (sequence, kv head) and tile of up to
    128 query rows, the query heads of a GQA group packed into the tile as decode kernels do
    (FlashAttention-3, FlashInfer, TensorRT-LLM's XQA; Shah et al. 2024, arXiv 2407.08608). Each
    unit loads its queries, keeps its softmax state and writes its output however short the
    context, so a decode step over many short sequences is bound by units, not bytes."""
    return _units(op.m, op.groups)


def _units(m, groups):
    """`attention_units` of query rows m over (sequence, kv head) pairs `groups`."""
    pairs = np.maximum(np.asarray(groups, dtype=float), 1.0)
    return pairs * np.ceil(np.asarray(m, dtype=float) / pairs / ATTENTION_TILE_ROWS)


def _gemm_rate(hw: Hardware, p: Precision):
    """matmul_dtype_rate for a precision, computed once per (spec, precision): every GEMM of a
    step shares it, and over a million scenarios the selection is costly."""
    cache = p.__dict__.setdefault("_gemm_rates", {})
    key = id(hw)
    if key not in cache or cache[key][0] is not hw:
        cache[key] = (hw, matmul_dtype_rate(hw, p.w_bits, p.a_bits, weight_only_kernel=p.weight_only_kernel))
    return cache[key][1]


def _attention_rate(hw: Hardware, p: Precision, bits):
    """matmul_dtype_rate at attention's bits (`_attention_bits`), computed once per (spec,
    precision, bits) like `_gemm_rate`: a step prices attention at one to three contexts."""
    if np.ndim(bits):  # bits per scenario (a sweep over KV bits under an fp8 attention kernel)
        return matmul_dtype_rate(hw, bits, bits)
    cache = p.__dict__.setdefault("_attention_rates", {})
    key = (id(hw), float(bits))
    if key not in cache or cache[key][0] is not hw:
        cache[key] = (hw, matmul_dtype_rate(hw, bits, bits))
    return cache[key][1]


def _sustained_rate(hw: Hardware, p: Precision):
    """The power roof: the GEMM rate the board's power limit sustains for the precisions' dtype
    (Calibration.sustained_flops_per_s), infinite where not calibrated."""
    table = hw.calibration.sustained_flops_per_s
    if not table:
        return np.inf
    return _by_gemm_dtype({d: r * sustained_fraction(hw, d) for d, r in table.items()}, p, np.inf)


def _gemv_cap(cal, p: Precision, default):
    """Per-block streaming rate of the library's skinny-GEMM kernel for the precisions' dtype:
    cuBLAS runs different kernels per dtype, and on an H200 its fp8 and fp32 GEMVs stream slower."""
    return _by_gemm_dtype(cal.gemv_bytes_per_s, p, default)


def _by_gemm_dtype(table: dict, p: Precision, default):
    """The entry of a per-dtype calibration table for the GEMM path the precisions select: fp8
    when weights and activations are 8-bit, bf16 for 16-bit activations, fp32 above."""
    w, a = np.asarray(p.w_bits), np.asarray(p.a_bits)
    return np.where((w <= 8) & (a <= 8), table.get("fp8", default),
                    np.where(a <= 16, table.get("bf16", default), table.get("fp32", default)))


def _dequant_time_s(cal, p: Precision, weight_bytes):
    """PyTorch's own weight-only kernels (torch._weight_int8pack_mm, _weight_int4pack_mm) unpack
    the quantized weights at a measured per-format rate, and the unpacking does not overlap their
    arithmetic: on an H200 their time grows as (unpack + multiply), not max (validate/reports/h200,
    matmul_wo). None for every other GEMM (fused serving kernels hide the unpacking)."""
    if p.weight_only_kernel != "torch" or not cal.dequant_bytes_per_s:
        return None
    w, a = np.asarray(p.w_bits), np.asarray(p.a_bits)
    weight_only = (w < a) & (a <= 16) & (w <= 8)
    if not np.any(weight_only):
        return None
    table = cal.dequant_bytes_per_s
    rate = np.where(w <= 4, table.get("w4a16", np.inf), table.get("w8a16", np.inf))
    return np.where(weight_only, weight_bytes / rate, 0.0)


def mean_max_affine(u0, u1, v0, v1):
    """Exact mean over t in [0, 1] of max(u(t), v(t)) for affine u, v with endpoint values u0, u1,
    v0, v1. Decode time is affine in context for each op's compute and memory terms, so the mean
    decode step over a generation is exact without stepping through every token. It is v's mean
    plus the mean of max(u - v, 0) (`mean_positive_affine`)."""
    if isinstance(u0, float) and isinstance(u1, float) and isinstance(v0, float) and isinstance(v1, float):
        # one scenario: the same in floats
        return _mean_max_affine_float(float(u0), float(u1), float(v0), float(v1))
    return (np.add(v0, v1)) / 2 + mean_positive_affine(np.subtract(u0, v0), np.subtract(u1, v1))


def mean_positive_affine(w0, w1):
    """Mean over t in [0, 1] of max(w(t), 0) for affine w from w0 to w1 (arrays or numbers): the
    mean of the endpoints' positive parts where both have one sign (a line's mean, or 0), else
    the triangle above zero, (w0+^2 + w1+^2) / (2 (|w0| + |w1|)). A sweep's chunk takes the first
    for every row and the second only at its rows that cross zero (few: a decode op is mostly
    bound by one term over a whole generation), the same doubles as choosing per row."""
    p0, p1 = np.maximum(w0, 0.0), np.maximum(w1, 0.0)
    mean = p0 + p1
    crossing = np.multiply(w0, w1) < 0
    if not isinstance(mean, np.ndarray) or mean.ndim == 0:  # numbers (0-d arrays): choose by where
        spread = np.where(crossing, np.abs(w0) + np.abs(w1), 1.0)
        return np.where(crossing, (p0 ** 2 + p1 ** 2) / (2 * spread), mean / 2)
    mean /= 2
    rows = np.flatnonzero(crossing)  # flat indices: one pass, then gathers of the few rows
    if rows.size:
        w0, w1 = (np.broadcast_to(w, mean.shape).reshape(-1).take(rows) for w in (w0, w1))
        crossed = (np.maximum(w0, 0.0) ** 2 + np.maximum(w1, 0.0) ** 2) / (2 * (np.abs(w0) + np.abs(w1)))
        np.put(mean, rows, crossed)
    return mean


def _mean_max_affine_float(u0: float, u1: float, v0: float, v1: float) -> float:
    """`mean_max_affine` of Python floats, step for step."""
    w0, w1 = u0 - v0, u1 - v1
    p0, p1 = max(w0, 0.0), max(w1, 0.0)
    if w0 * w1 >= 0:
        return (v0 + v1) / 2 + (p0 + p1) / 2
    return (v0 + v1) / 2 + (p0 ** 2 + p1 ** 2) / (2 * (abs(w0) + abs(w1)))
