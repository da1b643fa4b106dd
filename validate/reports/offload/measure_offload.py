"""Time decode steps with part of a Llama model's weights, or its KV cache, streamed from pinned host memory.

    python validate/reports/offload/measure_offload.py OUT_DIR [--quick] [--max-seconds 170]

Model: transformers LlamaForCausalLM with random bf16 weights from the catalog's llama-3-8b config cut
to 8 decoder layers (every layer keeps its real shape: 436 MB of weights); --quick uses a tiny config
on the CPU. Cases (one decode step: one new token per sequence over a cache of kv_len tokens):

  copy      pinned host -> device copies of 1 MB .. one layer's bytes (the link, for calibration)
  weights   the first R layers resident, the other L - R layers' weights kept in pinned host memory
            and copied into one of two device buffers before the layer runs; R / L in
            {0, .25, .5, .75, 1}, batch {1, 16, 64}; `overlap` 0: each copy on the compute stream right
            before its layer; 1: copies on a side stream, one layer ahead (double buffering)
  kv        all weights resident, every layer's K and V (kv_len tokens) kept in pinned host memory and
            copied into the layer's cache before it runs (overlap as above)
  kv_base   the same steps with the KV cache resident (nothing copied)

Timing: validate.bench.time_callable (warm-up, CUDA events back to back, median), so a step costs
max(device time, host dispatch time) as it would in a loop. Rows are appended to OUT_DIR/offload.csv
as each case finishes; OUT_DIR/model_config.json holds the HF config, OUT_DIR/meta.json the device.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script

import torch  # noqa: E402

from validate import bench, models  # noqa: E402

COLUMNS = ("kind", "model", "layers", "batch", "kv_len", "resident_layers", "resident_fraction", "overlap",
           "bytes_per_step", "time_s", "repeats", "device", "dtype")
FULL_LAYERS = 8


def tiny_config():
    """A small Llama config for the CPU smoke test (same architecture, tiny widths)."""
    cfg = models.hf_config("llama-3.2-1b", 4)
    for key, value in dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=64, vocab_size=1024, tie_word_embeddings=False).items():
        setattr(cfg, key, value)
    return cfg


def build(quick: bool, dev: torch.device):
    from transformers import AutoModelForCausalLM

    cfg = tiny_config() if quick else models.hf_config("llama-3-8b", FULL_LAYERS)
    cfg._attn_implementation = "sdpa"
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).eval()
    return model, cfg


def kv_tensors(cache, i: int):
    """(keys, values) of cache layer i (transformers >= 4.56 keeps them on cache.layers)."""
    if hasattr(cache, "layers"):
        return cache.layers[i].keys, cache.layers[i].values
    return cache.key_cache[i], cache.value_cache[i]


def _host(t: torch.Tensor, cuda: bool) -> torch.Tensor:
    out = t.detach().to("cpu", copy=True).contiguous()  # a copy even on the CPU, never an alias
    return out.pin_memory() if cuda else out


class Streamer:
    """Copies per-layer host tensors in before each decoder layer runs.

    sources[k]: host tensors for streamed layer k; targets(k): the device tensors they go to. With
    overlap, copy k + 1 is issued on a side stream when layer k starts (its buffer is then free:
    the previous user finished before layer k began) and layer k waits for copy k's event.
    """

    def __init__(self, layers, sources, targets, overlap: bool, cuda: bool):
        self.layers, self.sources, self.targets, self.cuda = layers, sources, targets, cuda
        self.overlap = overlap and cuda
        self.side = torch.cuda.Stream() if self.overlap else None
        self.ready = [torch.cuda.Event() for _ in layers] if self.overlap else []
        self.hooks = [layer.register_forward_pre_hook(self._hook(k)) for k, layer in enumerate(layers)]

    def _copy(self, k: int) -> None:
        for dst, src in zip(self.targets(k), self.sources[k]):
            dst.copy_(src, non_blocking=self.cuda)

    def _prefetch(self, k: int) -> None:
        if k >= len(self.layers):
            return
        free = torch.cuda.Event()
        free.record()
        self.side.wait_event(free)
        with torch.cuda.stream(self.side):
            self._copy(k)
            self.ready[k].record(self.side)

    def start(self) -> None:
        if self.overlap:
            self._prefetch(0)

    def _hook(self, k: int):
        def before(module, args):
            if self.overlap:
                torch.cuda.current_stream().wait_event(self.ready[k])
                self._prefetch(k + 1)
            else:
                self._copy(k)
        return before

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        if self.cuda:
            torch.cuda.synchronize()


class WeightSlots:
    """Streamed layers' parameters re-pointed into two device buffers, their values kept pinned on the host."""

    def __init__(self, layers, dev, cuda: bool):
        self.params = [list(layer.parameters()) for layer in layers]
        self.saved = [[p.data for p in ps] for ps in self.params]
        numel = sum(p.numel() for p in self.params[0])
        dtype = self.params[0][0].dtype
        self.host = [[_host(torch.cat([p.data.reshape(-1) for p in ps]), cuda)] for ps in self.params]
        self.slots = [torch.empty(numel, dtype=dtype, device=dev) for _ in range(min(2, len(layers)))]
        for k, ps in enumerate(self.params):
            offset, slot = 0, self.slots[k % 2]
            for p in ps:
                p.data = slot[offset:offset + p.numel()].view(p.shape)
                offset += p.numel()
        self.bytes_per_layer = numel * self.slots[0].element_size()

    def targets(self, k: int):
        return [self.slots[k % 2]]

    def restore(self) -> None:
        for ps, saved in zip(self.params, self.saved):
            for p, data in zip(ps, saved):
                p.data = data


class Writer:
    def __init__(self, out: Path, device: str):
        self.path, self.device = out / "offload.csv", device
        new = not self.path.exists()
        self.file = self.path.open("a", newline="")
        self.csv = csv.DictWriter(self.file, fieldnames=COLUMNS)
        if new:
            self.csv.writeheader()

    def row(self, **values) -> None:
        base = dict(model="", layers=0, batch=0, kv_len=0, resident_layers=0, resident_fraction=1.0, overlap=0,
                    bytes_per_step=0, device=self.device, dtype="bf16")
        self.csv.writerow({**base, **values})
        self.file.flush()


def timer(quick: bool):
    def run(fn, cuda):
        return bench.time_callable(fn, cuda, min_repeats=1 if quick else 8, max_repeats=2 if quick else 40,
                                   target_s=0.01 if quick else 0.3)
    return run


def measure_copies(w: Writer, layer_bytes: int, dev, cuda: bool, quick: bool) -> None:
    sizes = [1 << 16, 1 << 22] if quick else [1 << 20, 1 << 24, 1 << 26, 1 << 28, layer_bytes]
    for size in sizes:
        src = _host(torch.empty(size, dtype=torch.uint8).random_(0, 255), cuda)
        dst = torch.empty(size, dtype=torch.uint8, device=dev)
        t, r = timer(quick)(lambda i: dst.copy_(src, non_blocking=cuda), cuda)
        w.row(kind="copy", bytes_per_step=size, time_s=t, repeats=r)
        del src, dst


def decode_step(model, cache, kv_len: int, batch: int, streamer, dev):
    ids = torch.randint(0, model.config.vocab_size, (batch, 1), device=dev)

    def step(i):
        if streamer is not None:
            streamer.start()
        out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        models.crop(cache, kv_len)   # keep the context fixed across repeats
        return out
    return step


def measure_weights(w: Writer, model, name: str, dev, cuda: bool, quick: bool, deadline: float) -> None:
    layers = list(model.model.layers)
    L = len(layers)
    batches = [2] if quick else [1, 16, 64]
    kv_len = 32 if quick else 512
    fractions = [0, L // 2, L] if quick else [0, L // 4, L // 2, 3 * L // 4, L]
    for batch in batches:
        cache = models.random_cache(model, batch, kv_len, dev)
        for resident in fractions:
            for overlap in (0, 1):
                if time.perf_counter() > deadline:
                    return
                if resident == L and overlap:
                    continue                     # nothing streamed: one row is enough
                streamed = layers[resident:]
                slots = WeightSlots(streamed, dev, cuda) if streamed else None
                streamer = Streamer(streamed, slots.host, slots.targets, bool(overlap), cuda) if streamed else None
                t, r = timer(quick)(decode_step(model, cache, kv_len, batch, streamer, dev), cuda)
                if streamer:
                    streamer.remove()
                    slots.restore()
                w.row(kind="weights", model=name, layers=L, batch=batch, kv_len=kv_len, resident_layers=resident,
                      resident_fraction=resident / L, overlap=overlap,
                      bytes_per_step=(slots.bytes_per_layer * len(streamed)) if slots else 0, time_s=t, repeats=r)
                del slots, streamer
        del cache
        if cuda:
            torch.cuda.empty_cache()


def measure_kv(w: Writer, model, name: str, dev, cuda: bool, quick: bool, deadline: float) -> None:
    layers = list(model.model.layers)
    L = len(layers)
    shapes = [(2, 64)] if quick else [(8, 2048), (8, 8192), (32, 2048), (32, 8192)]
    for batch, kv_len in shapes:
        cache = models.random_cache(model, batch, kv_len, dev)
        common = dict(model=name, layers=L, batch=batch, kv_len=kv_len, resident_layers=L)
        if time.perf_counter() > deadline:
            return
        t, r = timer(quick)(decode_step(model, cache, kv_len, batch, None, dev), cuda)
        w.row(kind="kv_base", time_s=t, repeats=r, **common)
        host = [[_host(t_, cuda) for t_ in kv_tensors(cache, i)] for i in range(L)]
        nbytes = sum(t_.numel() * t_.element_size() for pair in host for t_ in pair)

        def targets(k):
            return [t_[..., :kv_len, :] for t_ in kv_tensors(cache, k)]

        for overlap in (0, 1):
            if time.perf_counter() > deadline:
                return
            streamer = Streamer(layers, host, targets, bool(overlap), cuda)
            t, r = timer(quick)(decode_step(model, cache, kv_len, batch, streamer, dev), cuda)
            streamer.remove()
            w.row(kind="kv", overlap=overlap, resident_fraction=1.0, bytes_per_step=nbytes, time_s=t, repeats=r,
                  **common)
        del cache, host
        if cuda:
            torch.cuda.empty_cache()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="output directory (offload.csv, model_config.json, meta.json)")
    ap.add_argument("--quick", action="store_true", help="tiny model on the CPU (or GPU): a smoke test")
    ap.add_argument("--max-seconds", type=float, default=170.0, help="stop starting new cases after this")
    args = ap.parse_args(argv)
    dev = bench.script_device(args.quick, "measure_offload")
    if dev is None:
        return 2
    cuda = dev.type == "cuda"
    deadline = time.perf_counter() + args.max_seconds
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model, cfg = build(args.quick, dev)
    name = "tiny-llama" if args.quick else f"llama-3-8b-{FULL_LAYERS}l"
    (args.out / "model_config.json").write_text(json.dumps({**cfg.to_dict(), "model_type": "llama"}, indent=1,
                                                           default=str))
    meta = {"model": name, "quick": args.quick, "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
            "torch": torch.__version__}
    try:
        meta.update(bench.environment())
    except Exception as err:  # environment details are nice to have, not required
        meta["environment_error"] = str(err)
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    w = Writer(args.out, meta["device"])
    layer_bytes = sum(p.numel() * p.element_size() for p in model.model.layers[0].parameters())
    with torch.inference_mode():
        measure_copies(w, layer_bytes, dev, cuda, args.quick)
        measure_weights(w, model, name, dev, cuda, args.quick, deadline)
        measure_kv(w, model, name, dev, cuda, args.quick, deadline)
    print(f"measure_offload: wrote {w.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
