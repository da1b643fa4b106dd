"""Board power, SM clock and achieved rate of sustained kernels, for the energy model's calibration.

    python validate/reports/power/measure_power.py --out DIR            # H200 (about 2 minutes)
    python validate/reports/power/measure_power.py --out DIR --quick    # CPU smoke test, tiny sizes

Each case runs one kernel back to back for a few seconds (power settles within about a second on
the H200), in chunks of about 0.1 s timed with a host sync, while a sampler thread reads board power
and SM clock every 20 ms: through NVML (pynvml) if importable, else `nvidia-smi --query-gpu=
power.draw,clocks.sm --format=csv,noheader,nounits -lms 50` in a subprocess, else
torch.cuda.power_draw / torch.cuda.clock_rate. The cases: idle, bf16 and fp8 GEMMs of several
sizes, an fp32 (no TF32, CUDA-core) GEMM, a GEMV loop (decode-like: weights streamed from HBM), a
large device-to-device copy and a burst-vs-sustained pair of the largest bf16 GEMM (the first 0.1 s
chunk after a second of idle vs the median of the last 30% of a 10 s run), which measures how far the
700 W board limit pulls a compute-bound kernel below its short-burst rate; 64-row GEMMs (tensor-core
work below the limit), and SDPA attention: bidirectional prefill at two token counts and a GQA decode.

Per case DIR/power_cases.csv records: FLOPs and HBM bytes per call, calls, duration, achieved FLOP/s
and bytes/s (whole run, first chunk and settled tail), mean board power over the settled tail (the
first 30% of the run is left out), energy over the run (NVML's total-energy counter where it exists,
else mean power x duration), SM clock mean/min/max, the power source and the device. The power
samples go to DIR/power_samples.csv. Rows are appended as each case finishes; a rerun skips the cases
already recorded (resume). Without a power reader (the CPU smoke test) power is NaN and the row's
`power_source` says "none". Fit with validate/reports/power/fit_power.py.
"""
from __future__ import annotations

import argparse
import csv
import math
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script

import torch  # noqa: E402

from validate.runner import append_records  # noqa: E402

CASE_COLUMNS = ("id", "kind", "dtype_class", "m", "n", "k", "bytes_per_call", "flops_per_call", "calls",
                "duration_s", "flops_per_s", "bytes_per_s", "first_chunk_flops_per_s", "tail_flops_per_s",
                "first_chunk_bytes_per_s", "tail_bytes_per_s", "mean_power_w", "tail_power_w", "energy_j",
                "energy_source", "sm_clock_mhz_mean", "sm_clock_mhz_min", "sm_clock_mhz_max",
                "power_samples", "power_source", "device", "holdout", "error")
SAMPLE_COLUMNS = ("id", "t_s", "power_w", "sm_clock_mhz")
L2_BYTES = 60e6  # H200 L2 (torch.cuda.get_device_properties on the device); inputs rotate past it
TAIL_FRACTION = 0.7  # the settled window: the last 70% of a run (power settles within ~1 s)


def cases(quick: bool) -> list[dict]:
    """The measured set. `holdout` marks the cases fit_power.py keeps out of the fit to score it."""
    big, mid, small, gemv_n, copy_bytes, secs = ((8192, 4096, 2048, 8192, 2 << 30, 3.0) if not quick
                                                 else (128, 64, 32, 256, 1 << 20, 0.3))
    out = [dict(id="idle", kind="idle", dtype_class="", m=0, n=0, k=0, seconds=secs, holdout=0),
           # awake but idle: tiny kernels launched back to back from Python keep the board out of its
           # parked state while it does almost no work, as the gaps of a host-bound step do
           dict(id="launch", kind="launch", dtype_class="", m=0, n=0, k=0, seconds=secs, holdout=0)]
    for dtype in ("bf16", "fp8"):
        for size, hold in ((big, 0), (mid, 1), (small, 0)):
            out.append(dict(id=f"gemm_{dtype}_{size}", kind="gemm", dtype_class=dtype, m=size, n=size, k=size,
                            seconds=secs, holdout=hold))
        # A skinny GEMM (256 rows): between compute- and memory-bound, it separates J/FLOP from J/byte.
        out.append(dict(id=f"gemm_{dtype}_m256", kind="gemm", dtype_class=dtype, m=256 if not quick else 8,
                        n=big, k=big, seconds=secs, holdout=0))
    out.append(dict(id=f"gemm_fp32_{mid}", kind="gemm", dtype_class="fp32", m=mid, n=mid, k=mid, seconds=secs,
                    holdout=0))
    out.append(dict(id="gemv_bf16", kind="gemm", dtype_class="bf16", m=1, n=gemv_n, k=gemv_n, seconds=secs,
                    holdout=0))
    out.append(dict(id="gemv_bf16_m16", kind="gemm", dtype_class="bf16", m=16, n=gemv_n, k=gemv_n, seconds=secs,
                    holdout=1))
    out.append(dict(id="copy_d2d", kind="copy", dtype_class="", m=0, n=copy_bytes, k=0, seconds=secs, holdout=0))
    out.append(dict(id="copy_d2d_half", kind="copy", dtype_class="", m=0, n=copy_bytes // 4, k=0, seconds=secs,
                    holdout=1))
    # GEMMs of 64 rows: tensor-core work below the power limit, whose power separates J/FLOP at full
    # clock from J/byte (the big GEMMs all sit at the limit: their power says only that they reach it)
    for dtype, hold in (("bf16", 0), ("fp8", 1)):
        out.append(dict(id=f"gemm_{dtype}_m64", kind="gemm", dtype_class=dtype, m=64 if not quick else 4,
                        n=big, k=big, seconds=secs, holdout=hold))
    # attention (FlashAttention-style SDPA, bf16): bidirectional prefill over a FLUX-1024^2-like and a
    # Wan-480p-like token count, and a GQA decode over a long cache (KV reads: memory-bound)
    attn = ((1, 24, 4608, 4608, 24, 0), (1, 12, 16384, 16384, 12, 1), (64, 32, 1, 8192, 8, 0)) if not quick \
        else ((1, 2, 64, 64, 2, 0), (1, 2, 128, 128, 2, 1), (2, 4, 1, 64, 2, 0))
    for batch, heads, q_len, kv_len, kv_heads, hold in attn:
        phase = "decode" if q_len == 1 else "prefill"
        out.append(dict(id=f"attention_{phase}_{kv_len}", kind="attention", dtype_class="attention", m=q_len,
                        n=kv_len, k=128 if not quick else 16, batch=batch, heads=heads, kv_heads=kv_heads,
                        seconds=secs, holdout=hold))
    out.append(dict(id="idle_cool", kind="idle", dtype_class="", m=0, n=0, k=0, seconds=secs / 3, holdout=0))
    out.append(dict(id=f"gemm_bf16_{big}_sustained", kind="gemm", dtype_class="bf16", m=big, n=big, k=big,
                    seconds=secs * 3.3, holdout=1))
    return out


# -- power readers: each returns (power_w, sm_clock_mhz) or raises ----------------------------------

class _Nvml:
    name = "nvml"

    def __init__(self, index: int):
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.read()

    def read(self) -> tuple[float, float]:
        return (self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1e3,
                float(self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM)))

    def energy_j(self) -> float:
        """NVML's energy counter (mJ since the driver loaded; Volta and newer)."""
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1e3


class _NvidiaSmi:
    """Reads the last line `nvidia-smi -lms 50` streamed (one process for the whole run)."""
    name = "nvidia-smi"

    def __init__(self, index: int):
        if shutil.which("nvidia-smi") is None:
            raise RuntimeError("no nvidia-smi")
        self.proc = subprocess.Popen(["nvidia-smi", "-i", str(index), "--query-gpu=power.draw,clocks.sm",
                                      "--format=csv,noheader,nounits", "-lms", "50"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.last = (math.nan, math.nan)
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.time() + 3
        while math.isnan(self.last[0]) and time.time() < deadline:
            time.sleep(0.05)
        if math.isnan(self.last[0]):
            self.close()
            raise RuntimeError("nvidia-smi gave no reading")

    def _pump(self) -> None:
        for line in self.proc.stdout:
            try:
                power, clock = (float(x) for x in line.split(","))
                self.last = (power, clock)
            except ValueError:  # "[N/A]" or a header: keep the previous reading
                pass

    def read(self) -> tuple[float, float]:
        return self.last

    def close(self) -> None:
        self.proc.terminate()


class _TorchCuda:
    name = "torch.cuda"

    def __init__(self, index: int):
        self.index = index
        self.read()

    def read(self) -> tuple[float, float]:
        return torch.cuda.power_draw(self.index) / 1e3, float(torch.cuda.clock_rate(self.index))


def power_reader(dev: torch.device):
    """The first reader that works on this machine, or None (CPU runs)."""
    if dev.type != "cuda":
        return None
    index = dev.index or 0
    for cls in (_Nvml, _NvidiaSmi, _TorchCuda):
        try:
            return cls(index)
        except Exception as err:  # that reader is missing here: try the next one
            print(f"measure_power: {cls.name} unavailable ({type(err).__name__}: {err})", file=sys.stderr)
    return None


class Sampler:
    """Background thread: (t, power_w, sm_clock_mhz) every `period_s`."""

    def __init__(self, reader, period_s: float = 0.02):
        self.reader, self.period_s, self.samples = reader, period_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                power, clock = self.reader.read()
                self.samples.append((time.perf_counter(), power, clock))
            except Exception:  # one failed read: skip it, the next may work
                pass
            self._stop.wait(self.period_s)

    def __enter__(self):
        if self.reader is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.reader is not None:
            self._thread.join()


# -- kernels: fn(i) -> None, with FLOPs and HBM bytes per call ----------------------------------------

def _sets(bytes_per_set: float, cuda: bool) -> int:
    """Input sets to rotate through so the total is >= 3x L2 (weights come from HBM), at most 16."""
    return 2 if not cuda else int(min(16, max(1, -(-3 * L2_BYTES // max(bytes_per_set, 1)))))


def build(case: dict, dev: torch.device):
    """(fn, flops_per_call, bytes_per_call). GEMM bytes: both operands read once and the output
    written once (the minimum HBM traffic; tiles re-read from L2 are not HBM bytes)."""
    cuda = dev.type == "cuda"
    kind = case["kind"]
    if kind == "idle":
        return None, 0.0, 0.0
    if kind == "launch":  # one 256-element add per call: the host's launch rate bounds it
        x = torch.zeros(256, device=dev)
        return (lambda i: x.add_(1.0)), 0.0, 2.0 * 4 * 256
    if kind == "copy":
        n = int(case["n"])
        sets = _sets(n, cuda)
        src = [torch.randint(0, 255, (n,), device=dev, dtype=torch.uint8) for _ in range(sets)]
        dst = torch.empty(n, device=dev, dtype=torch.uint8)
        return (lambda i: dst.copy_(src[i % sets])), 0.0, 2.0 * n
    if kind == "attention":
        return _attention(case, dev)
    m, n, k, dtype = int(case["m"]), int(case["n"]), int(case["k"]), case["dtype_class"]
    flops = 2.0 * m * n * k
    if dtype == "fp8":
        sets = _sets(n * k + m * k, cuda)
        a = [torch.randn((m, k), device=dev).to(torch.float8_e4m3fn) for _ in range(sets)]
        b = [torch.randn((n, k), device=dev).to(torch.float8_e4m3fn) for _ in range(sets)]
        one = torch.ones((), device=dev, dtype=torch.float32)
        fn = (lambda i: torch._scaled_mm(a[i % sets], b[i % sets].t(), scale_a=one, scale_b=one,
                                         out_dtype=torch.bfloat16))
        return fn, flops, float(m * k + n * k + 2 * m * n)
    t = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    size = torch.finfo(t).bits // 8
    sets = _sets((n * k + m * k) * size, cuda)
    a = [torch.randn((m, k), device=dev).to(t) for _ in range(sets)]
    b = [torch.randn((k, n), device=dev).to(t) for _ in range(sets)]
    return (lambda i: torch.mm(a[i % sets], b[i % sets])), flops, float((m * k + k * n + m * n) * size)


def _attention(case: dict, dev: torch.device):
    """SDPA (bf16) over [batch, heads, q_len, d] queries and [batch, kv_heads, kv_len, d] keys/values,
    bidirectional (no mask: DiT attention; a decode query sees the whole cache). FLOPs 4 B H Tq Tk d
    (QK^T and PV; Dao et al. 2022); HBM bytes: Q, K, V read once and the output written once."""
    b, h, tq, tk, hk, d = (int(case[key]) for key in ("batch", "heads", "m", "n", "kv_heads", "k"))
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    per_set = 2.0 * (2 * b * h * tq * d + 2 * b * hk * tk * d)
    sets = _sets(per_set, dev.type == "cuda")
    q = [torch.randn((b, h, tq, d), device=dev, dtype=dtype) for _ in range(sets)]
    kv = [(torch.randn((b, hk, tk, d), device=dev, dtype=dtype), torch.randn((b, hk, tk, d), device=dev, dtype=dtype))
          for _ in range(sets)]
    gqa = h != hk

    def fn(i):
        k, v = kv[i % sets]
        return torch.nn.functional.scaled_dot_product_attention(q[i % sets], k, v, enable_gqa=gqa)

    return fn, 4.0 * b * h * tq * tk * d, per_set


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run_case(case: dict, dev: torch.device, reader) -> tuple[dict, list]:
    """Runs one case for case['seconds'] and returns its row and its power samples."""
    fn, flops, nbytes = build(case, dev)
    calls_per_chunk = 1
    if fn is not None:
        for i in range(3):
            fn(i)
        _sync(dev)
        t0 = time.perf_counter()
        fn(3)
        _sync(dev)
        once = max(time.perf_counter() - t0, 1e-7)
        calls_per_chunk = max(1, int(0.1 / once))
        time.sleep(1.0 if dev.type == "cuda" else 0.0)  # a second of idle: the first chunk is a burst
    chunks = []  # (seconds, calls)
    energy_start = _energy(reader)
    with Sampler(reader) as sampler:
        start = time.perf_counter()
        if fn is None:
            time.sleep(float(case["seconds"]))
        else:
            i = 0
            while time.perf_counter() - start < float(case["seconds"]):
                c0 = time.perf_counter()
                for _ in range(calls_per_chunk):
                    fn(i)
                    i += 1
                _sync(dev)
                chunks.append((time.perf_counter() - c0, calls_per_chunk))
        end = time.perf_counter()
    energy_end = _energy(reader)
    duration = end - start
    calls = sum(c for _, c in chunks)
    tail = chunks[int(len(chunks) * (1 - TAIL_FRACTION)):] or chunks
    tail_rate = statistics.median(c / s for s, c in tail) if tail else math.nan  # calls per second
    first_rate = chunks[0][1] / chunks[0][0] if chunks else math.nan
    settled_from = start + (1 - TAIL_FRACTION) * duration
    powers = [p for t, p, _ in sampler.samples if start <= t <= end and not math.isnan(p)]
    tail_powers = [p for t, p, _ in sampler.samples if settled_from <= t <= end and not math.isnan(p)]
    clocks = [c for t, _, c in sampler.samples if start <= t <= end and not math.isnan(c)]
    mean_power = statistics.fmean(powers) if powers else math.nan
    if not math.isnan(energy_start) and not math.isnan(energy_end):
        energy, energy_source = energy_end - energy_start, "nvml_counter"
    elif powers:
        energy, energy_source = mean_power * duration, "mean_power_x_duration"
    else:
        energy, energy_source = math.nan, "none"
    row = dict(id=case["id"], kind=case["kind"], dtype_class=case["dtype_class"], m=case["m"], n=case["n"],
               k=case["k"], bytes_per_call=f"{nbytes:.6g}", flops_per_call=f"{flops:.6g}", calls=calls,
               duration_s=f"{duration:.6g}", flops_per_s=f"{flops * calls / duration:.6g}",
               bytes_per_s=f"{nbytes * calls / duration:.6g}",
               first_chunk_flops_per_s=f"{flops * first_rate:.6g}", tail_flops_per_s=f"{flops * tail_rate:.6g}",
               first_chunk_bytes_per_s=f"{nbytes * first_rate:.6g}", tail_bytes_per_s=f"{nbytes * tail_rate:.6g}",
               mean_power_w=f"{mean_power:.6g}",
               tail_power_w=f"{statistics.fmean(tail_powers) if tail_powers else math.nan:.6g}",
               energy_j=f"{energy:.6g}", energy_source=energy_source,
               sm_clock_mhz_mean=f"{statistics.fmean(clocks) if clocks else math.nan:.6g}",
               sm_clock_mhz_min=f"{min(clocks) if clocks else math.nan:.6g}",
               sm_clock_mhz_max=f"{max(clocks) if clocks else math.nan:.6g}",
               power_samples=len(powers), power_source=reader.name if reader is not None else "none",
               device=_device_name(dev), holdout=case["holdout"], error="")
    samples = [dict(id=case["id"], t_s=f"{t - start:.4f}", power_w=f"{p:.5g}", sm_clock_mhz=f"{c:.5g}")
               for t, p, c in sampler.samples]
    return row, samples


def _energy(reader) -> float:
    try:
        return reader.energy_j() if reader is not None and hasattr(reader, "energy_j") else math.nan
    except Exception:  # counter unsupported on this board/driver: fall back to mean power x time
        return math.nan


def _device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def done_ids(path: Path) -> set[str]:
    """Cases already measured without error (a rerun skips them)."""
    if not path.exists():
        return set()
    with path.open(newline="") as f:
        return {r["id"] for r in csv.DictReader(f) if not r.get("error")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory (created; a rerun resumes)")
    p.add_argument("--quick", action="store_true", help="CPU smoke test: tiny sizes, short runs")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("measure_power: no CUDA device; use --quick for the CPU smoke test", file=sys.stderr)
        return 2
    dev = torch.device("cuda" if cuda else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 case measures CUDA-core FP32, not TF32
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    case_path, sample_path = out / "power_cases.csv", out / "power_samples.csv"
    reader = power_reader(dev)
    if reader is None:
        print("measure_power: no power reader (NVML, nvidia-smi, torch.cuda.power_draw): power and energy "
              "are recorded as NaN", file=sys.stderr)
    done = done_ids(case_path)
    try:
        for case in cases(args.quick):
            if case["id"] in done:
                continue
            try:
                with torch.inference_mode():
                    row, samples = run_case(case, dev, reader)
            except Exception as err:  # one failing kernel (e.g. fp8 on a CPU build) must not end the run
                row = {c: "" for c in CASE_COLUMNS} | dict(id=case["id"], kind=case["kind"],
                                                           dtype_class=case["dtype_class"], holdout=case["holdout"],
                                                           error=f"{type(err).__name__}: {err}".splitlines()[0][:200])
                samples = []
            append_records(case_path, [row], CASE_COLUMNS)
            append_records(sample_path, samples, SAMPLE_COLUMNS)
            print({k: row[k] for k in ("id", "flops_per_s", "bytes_per_s", "tail_power_w", "energy_j",
                                       "sm_clock_mhz_mean", "error")}, flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        if reader is not None and hasattr(reader, "close"):
            reader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
