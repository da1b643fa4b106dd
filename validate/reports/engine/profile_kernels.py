"""Device time of every kernel of one compiled engine step, by kernel: where a step's time goes.

    python validate/reports/engine/profile_kernels.py --out DIR

For a few steps of validate/engine_model.py compiled as the torch-compile profile runs them (4
decoder layers; launched without a CUDA graph so torch.profiler sees each kernel; device times are
the kernels' own), writes DIR/kernel_times.csv: case, kernel name, calls, total device time. The
per-op breakdown of `perfmodel.breakdown` is compared against it in the engine report.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from validate import bench  # noqa: E402

import measure_engine as me  # noqa: E402
from validate import engine_model as em  # noqa: E402

LAYERS = 4
CASES = (("llama-3-8b", "bf16", "prefill", 1, 512, 0), ("llama-3-8b", "bf16", "prefill", 1, 2048, 0),
         ("llama-3-8b", "bf16", "prefill", 1, 8192, 0), ("llama-3-8b", "bf16", "decode", 1, 1, 2048),
         ("llama-3-8b", "bf16", "decode", 64, 1, 2048), ("llama-3-8b", "fp8", "decode", 64, 1, 2048),
         ("llama-3-8b", "fp8", "prefill", 1, 2048, 0), ("qwen3-30b-a3b", "bf16", "decode", 16, 1, 2048),
         ("qwen3-30b-a3b", "bf16", "prefill", 1, 2048, 0))


def compiled_step(model: str, dtype: str, layers: int, batch: int, tokens: int, past: int, s_max: int, dev,
                  compiled: bool = True):
    """One step of validate/engine_model.py as a callable: `layers` decoder layers of a catalog
    model, compiled as the torch-compile profile runs them (or eager), warmed up."""
    spec = me.model_spec(model, layers)
    engine = em.build(spec, dtype, max_batch=batch, max_seq=s_max, device=dev)
    layer = me.CompiledLayer("dynamic") if compiled else em.layer_forward
    ids = torch.randint(0, spec.vocab_size, (batch, tokens), device=dev)

    def step():
        return em.step(engine, ids, past, layer_fn=layer, s_max=s_max)
    with torch.inference_mode():
        for _ in range(3):
            step()
    torch.cuda.synchronize()
    return step


def kernel_table(fn, repeats: int = 1) -> dict[str, tuple[float, float]]:
    """{kernel name (120 characters at most): (launches, device seconds)} per call of fn, from
    torch.profiler over `repeats` calls (memcpy and memset nodes included; validate.bench.kernel_times)."""
    table = bench.kernel_times(lambda i: fn(), torch.device("cuda"), repeats, name_chars=120)
    return {name: (calls, us * 1e-6) for name, (calls, us) in table.items()}


def profile(model, dtype, phase, batch, tokens, past, dev) -> dict:
    step = compiled_step(model, dtype, LAYERS, batch, tokens, past, past + tokens + 256, dev)
    with torch.inference_mode():
        return kernel_table(step, repeats=5)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    dev = bench.script_device(False, "profile_kernels", smoke_test=False)
    if dev is None:
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "kernel_times.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "dtype", "phase", "batch", "tokens", "past", "layers", "kernel", "calls_per_step",
                         "device_s_per_step"])
        for case in CASES:
            try:
                rows = profile(*case, dev)
            except Exception as err:  # a failure is data: record it and go on
                writer.writerow([*case, LAYERS, f"FAILED {type(err).__name__}: {err}"[:200], 0, 0])
                continue
            for name, (calls, seconds) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
                writer.writerow([*case, LAYERS, name, f"{calls:g}", f"{seconds:.9g}"])
            f.flush()
            total = sum(s for _, s in rows.values())
            print(f"{case}: {len(rows)} kernels, {total * 1e3:.3f} ms device time per step", flush=True)
            torch._dynamo.reset()
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
