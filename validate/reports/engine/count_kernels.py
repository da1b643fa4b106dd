"""Count the GPU kernels one engine step launches: the fusion facts the engine profiles state.

    python validate/reports/engine/count_kernels.py --out DIR [--quick]

For each model and dtype, one decode step (batch 4, context 1024) and one prefill step (512
tokens) of validate/engine_model.py, compiled (torch-compile: inductor-fused layers) and eager
(the unfused kernels), runs once under torch.profiler; every device kernel it launched is counted,
per step and per decoder layer (the difference between two depths, so embedding, final norm and
LM head drop out). Writes DIR/kernel_counts.csv and prints a table. The profile files
(perfmodel/engine_profiles/*.yaml) state kernels per op; this is how they are checked.
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

from profile_kernels import compiled_step, kernel_table  # noqa: E402

MODELS = (("llama-3-8b", "bf16"), ("qwen3-8b", "bf16"), ("llama-3-8b", "fp8"), ("qwen3-30b-a3b", "bf16"))
DEPTHS = (2, 4)


def kernels_of(fn) -> tuple[int, dict]:
    """Device kernels launched by one call of fn (memcpy and memset nodes left out), and their
    names with counts."""
    names = {name: int(calls) for name, (calls, _) in kernel_table(fn).items()
             if "memcpy" not in name.lower() and "memset" not in name.lower()}
    return sum(names.values()), names


def count(model: str, dtype: str, layers: int, phase: str, compiled: bool, dev) -> tuple[int, dict]:
    batch, tokens, past = (4, 1, 1024) if phase == "decode" else (1, 512, 0)
    step = compiled_step(model, dtype, layers, batch, tokens, past, 2048, dev, compiled)
    with torch.inference_mode():
        return kernels_of(step)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    dev = bench.script_device(False, "count_kernels", smoke_test=False)
    if dev is None:
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model, dtype in MODELS:
        for phase in ("decode", "prefill"):
            for compiled in (True, False):
                try:
                    (small, _), (big, names) = (count(model, dtype, d, phase, compiled, dev) for d in DEPTHS)
                except Exception as err:  # a failure is data: record it and go on
                    rows.append(dict(model=model, dtype=dtype, phase=phase, compiled=int(compiled),
                                     error=f"{type(err).__name__}: {err}"[:200]))
                    continue
                per_layer = (big - small) / (DEPTHS[1] - DEPTHS[0])
                rows.append(dict(model=model, dtype=dtype, phase=phase, compiled=int(compiled),
                                 step_kernels_at_4_layers=big, kernels_per_layer=per_layer,
                                 outside_layers=big - DEPTHS[1] * per_layer,
                                 top_kernels="; ".join(f"{n[:60]} x{c}" for n, c in
                                                       sorted(names.items(), key=lambda kv: -kv[1])[:12])))
                print(f"{model:<15}{dtype:<5}{phase:<8}{'compiled' if compiled else 'eager':<9}"
                      f"per layer {per_layer:5.1f}  outside {rows[-1]['outside_layers']:4.0f}", flush=True)
                torch._dynamo.reset()
                torch.cuda.empty_cache()
    fields = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with (out / "kernel_counts.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
