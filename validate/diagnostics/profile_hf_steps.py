"""Where does an eager transformers step spend its time? Profile a few whole-model steps.

For each case: wall time per step (host clock around a synchronized step), the number of CUDA
kernels launched per step, total GPU kernel time per step (sum of kernel durations from the torch
profiler), and the top kernels. If wall >> GPU busy time the step is host (dispatch) bound.

    python validate/diagnostics/profile_hf_steps.py OUT_DIR
"""
from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from validate.models import build_model, crop, random_cache

CASES = [("llama-3-8b", 32, "decode", 1, 512), ("llama-3-8b", 32, "decode", 64, 1024),
         ("llama-3-8b", 32, "decode", 64, 4096), ("llama-3-8b", 32, "prefill", 1, 128),
         ("llama-3-8b", 32, "prefill", 8, 2048), ("qwen3-8b", 36, "decode", 1, 512),
         ("qwen3-8b", 36, "prefill", 1, 128), ("llama-3.2-1b", 16, "decode", 1, 512)]


def step_fn(model, phase, batch, length, dev):
    vocab = model.config.vocab_size
    if phase == "prefill":
        ids = torch.randint(0, vocab, (batch, length), device=dev)
        return lambda: model(ids, use_cache=True, logits_to_keep=1)
    cache = random_cache(model, batch, length, dev)
    ids = torch.randint(0, vocab, (batch, 1), device=dev)

    def decode():
        model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        crop(cache, length)
    return decode


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    rows = []
    for name, layers, phase, batch, length in CASES:
        model = build_model(name, layers, dev)
        fn = step_fn(model, phase, batch, length, dev)
        with torch.inference_mode():
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            walls = []
            for _ in range(5):
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                walls.append(time.perf_counter() - t0)
            # host-only time: how long the Python call takes to return (kernels queue asynchronously)
            t0 = time.perf_counter()
            fn()
            host = time.perf_counter() - t0
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(3):
                    fn()
                torch.cuda.synchronize()
        events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
        kernels = sum(e.count for e in events) / 3
        gpu = sum(e.self_device_time_total for e in events) / 3 / 1e6
        walls.sort()
        row = dict(model=name, layers=layers, phase=phase, batch=batch, length=length, wall_s=walls[2],
                   host_call_s=host, gpu_kernel_s=gpu, kernels_per_step=kernels)
        rows.append(row)
        print(row, flush=True)
        top = sorted(events, key=lambda e: -e.self_device_time_total)[:12]
        with (out / "hf_profile_top_kernels.txt").open("a") as f:
            f.write(f"\n## {row}\n")
            for e in top:
                f.write(f"{e.count / 3:8.1f}/step {e.self_device_time_total / 3 / 1e3:10.3f} ms  {e.key[:110]}\n")
    with (out / "hf_profile.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main(sys.argv[1])
