"""Time decode attention on the local GPU (or CPU with --quick): dense, and block top-k sparse.

    python validate/reports/attention/measure_attention.py OUT_DIR [--quick] [--max-seconds 170]

Shapes: one decoder layer of a GQA model with 32 query heads, 8 kv heads, head dim 128, bf16 (the
attention of qwen3-8b / llama-3-8b), one new token per sequence, KV lengths 1K..128K, batch 1..64
(the largest KV, 64 x 128K, is 34 GB). For each (batch, KV length):

  dense:  torch.nn.functional.scaled_dot_product_attention(q, K, V, enable_gqa=True) with q of
          (batch, 32 heads, 1, 128), as a decode step calls it. (An earlier version folded the 4
          query heads of a group into 4 query rows per kv head; on torch 2.11 / H200 that picks a
          kernel with one thread block per (batch, kv head) and no split over the KV, which
          streams at ~44 GB/s per block: batch 1 reached 0.35 TB/s. The GQA path splits the KV
          and reached 4.5 TB/s in validate/reports/h200; it did not fall back to repeating K/V.)
  sparse: block top-k (Kinetics / Quest): the KV is split into blocks of `block` tokens, each with a
          representative key (the mean of its keys, kept up to date at insertion time, so not timed);
          score  = (sum of the group's query heads) . representative key   -> (B, 8, blocks)
          topk   = the budget / block best blocks per kv head               (torch.topk, unsorted)
          gather = the selected K and V blocks copied contiguous            (torch.gather, K and V)
          attention over the gathered budget tokens                         (SDPA)
          timed as a whole ("total") and part by part, each part on the previous part's outputs.
Ceilings measured in the same run for the report's calibration: device-copy bandwidth, a large
standalone block gather's bandwidth, and each part's floor (its time at a tiny size).

Timing: validate.bench.time_callable (warm-up, CUDA events back to back, median; inputs rotate over
enough copies to exceed the L2 cache). Rows are appended to OUT_DIR/attention.csv as each case
finishes; OUT_DIR/meta.json records the device and versions.
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
import torch.nn.functional as F  # noqa: E402

from validate import bench  # noqa: E402

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
GROUP = HEADS // KV_HEADS
COLUMNS = ("kind", "part", "batch", "kv_len", "heads", "kv_heads", "head_dim", "budget", "block", "bytes",
           "time_s", "repeats", "device")


def grid(quick: bool) -> tuple[list, list, list]:
    """(kv lengths, batches, sparse (budget, block) pairs)."""
    if quick:
        return [256, 512], [1], [(128, 16)]
    return ([1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072], [1, 4, 16, 64],
            [(1024, 16), (4096, 16), (4096, 64)])


def kv_bytes(batch: int, kv_len: int) -> int:
    return 2 * batch * KV_HEADS * kv_len * HEAD_DIM * 2


class Writer:
    """Appends rows to attention.csv (header once), flushing each so a killed run keeps its data."""

    def __init__(self, out: Path, device_name: str):
        self.path, self.device = out / "attention.csv", device_name
        new = not self.path.exists()
        self.file = self.path.open("a", newline="")
        self.csv = csv.DictWriter(self.file, fieldnames=COLUMNS)
        if new:
            self.csv.writeheader()

    def row(self, **values) -> None:
        base = dict(heads=HEADS, kv_heads=KV_HEADS, head_dim=HEAD_DIM, budget=0, block=0, bytes=0, batch=0,
                    kv_len=0, device=self.device)
        self.csv.writerow({**base, **values})
        self.file.flush()


def make_sets(batch: int, kv_len: int, block: int, dev, cuda: bool) -> list[dict]:
    """Input sets (q, K, V, representative keys) to rotate through; enough to defeat the L2."""
    sets = bench.copies_to_defeat_cache(kv_bytes(batch, kv_len), cuda)
    out = []
    for _ in range(sets):
        k = torch.randn(batch, KV_HEADS, kv_len, HEAD_DIM, device=dev, dtype=torch.bfloat16)
        v = torch.randn(batch, KV_HEADS, kv_len, HEAD_DIM, device=dev, dtype=torch.bfloat16)
        q = torch.randn(batch, HEADS, 1, HEAD_DIM, device=dev, dtype=torch.bfloat16)
        rep = k.view(batch, KV_HEADS, kv_len // block, block, HEAD_DIM).mean(dim=3) if block else None
        out.append({"q": q, "k": k, "v": v, "rep": rep})
    return out


def dense(s: dict):
    return F.scaled_dot_product_attention(s["q"], s["k"], s["v"], enable_gqa=True)


def score(s: dict):
    """(B, 8, blocks): the group's summed query against each block's representative key."""
    b = s["q"].shape[0]
    q_sum = s["q"].view(b, KV_HEADS, GROUP, HEAD_DIM).sum(dim=2, keepdim=True)    # (B, 8, 1, d)
    return torch.matmul(q_sum, s["rep"].transpose(-1, -2)).squeeze(2)            # (B, 8, blocks)


def select(scores, topk: int):
    return torch.topk(scores, topk, dim=-1, sorted=False).indices                 # (B, 8, topk)


def gather(s: dict, idx, block: int):
    """Selected blocks of K and V, contiguous: (B, 8, topk * block, d) each."""
    b, _, kv_len, _ = s["k"].shape
    index = idx.unsqueeze(-1).expand(-1, -1, -1, block * HEAD_DIM)
    out = []
    for t in (s["k"], s["v"]):
        blocks = t.view(b, KV_HEADS, kv_len // block, block * HEAD_DIM)
        out.append(torch.gather(blocks, 2, index).view(b, KV_HEADS, -1, HEAD_DIM))
    return out


def sparse_total(s: dict, budget: int, block: int):
    idx = select(score(s), budget // block)
    k, v = gather(s, idx, block)
    return F.scaled_dot_product_attention(s["q"], k, v, enable_gqa=True)


def time_it(fn, sets: list, cuda: bool, quick: bool) -> tuple[float, int]:
    n = len(sets)
    return bench.time_callable(lambda i: fn(sets[i % n]), cuda, min_repeats=2 if quick else 10,
                               max_repeats=10 if quick else 200, target_s=0.005 if quick else 0.06)


def measure_case(w: Writer, batch: int, kv_len: int, sparse_cfgs, dev, cuda: bool, quick: bool) -> None:
    cfgs = [(budget, blk) for budget, blk in sparse_cfgs if budget < kv_len]
    current = cfgs[0][1] if cfgs else 0  # block size the representative keys are built for
    sets = make_sets(batch, kv_len, current, dev, cuda)
    t, r = time_it(dense, sets, cuda, quick)
    w.row(kind="dense", part="total", batch=batch, kv_len=kv_len, bytes=kv_bytes(batch, kv_len), time_s=t, repeats=r)
    for budget, blk in cfgs:
        if blk != current:
            for s in sets:
                s["rep"] = s["k"].view(batch, KV_HEADS, kv_len // blk, blk, HEAD_DIM).mean(dim=3)
            current = blk
        common = dict(kind="sparse", batch=batch, kv_len=kv_len, budget=budget, block=blk)
        t, r = time_it(lambda s: sparse_total(s, budget, blk), sets, cuda, quick)
        w.row(part="total", time_s=t, repeats=r, **common)
        for s in sets:  # each part's inputs: the previous part's outputs
            s["scores"] = score(s)
            s["idx"] = select(s["scores"], budget // blk)
            s["kg"], s["vg"] = gather(s, s["idx"], blk)
        parts = {"score": score, "topk": lambda s: select(s["scores"], budget // blk),
                 "gather": lambda s: gather(s, s["idx"], blk),
                 "attention": lambda s: F.scaled_dot_product_attention(s["q"], s["kg"], s["vg"], enable_gqa=True)}
        for part, fn in parts.items():
            t, r = time_it(fn, sets, cuda, quick)
            w.row(part=part, time_s=t, repeats=r, **common)
    del sets
    if cuda:
        torch.cuda.empty_cache()


def measure_ceilings(w: Writer, dev, cuda: bool, quick: bool) -> None:
    """Copy and gather bandwidth on large buffers; per-part floors at a tiny size."""
    n = (1 << 20) if quick else (1 << 30)
    src = torch.empty(n, device=dev, dtype=torch.uint8).random_(0, 255)
    dst = torch.empty_like(src)
    t, r = time_it(lambda _: dst.copy_(src), [None], cuda, quick)
    w.row(kind="ceiling", part="copy", bytes=2 * n, time_s=t, repeats=r)
    del src, dst
    # a standalone block gather of 1/8 of a 4 GB cache (512 MB read + 512 MB written), block 16
    kv_len, blk, batch = (1024, 16, 1) if quick else (131072, 16, 8)
    sets = make_sets(batch, kv_len, blk, dev, cuda)[:1]
    topk = kv_len // blk // 8
    sets[0]["idx"] = select(score(sets[0]), topk)
    t, r = time_it(lambda s: gather(s, s["idx"], blk), sets, cuda, quick)
    w.row(kind="ceiling", part="gather", batch=batch, kv_len=kv_len, budget=topk * blk, block=blk,
          bytes=2 * kv_bytes(batch, topk * blk), time_s=t, repeats=r)
    del sets
    # floors: every part at a tiny size (bytes negligible next to the launch cost)
    tiny = make_sets(1, 256, 16, dev, cuda)
    for s in tiny:
        s["scores"] = score(s)
        s["idx"] = select(s["scores"], 4)
        s["kg"], s["vg"] = gather(s, s["idx"], 16)
    floors = {"dense": dense, "score": score, "topk": lambda s: select(s["scores"], 4),
              "gather": lambda s: gather(s, s["idx"], 16),
              "attention": lambda s: F.scaled_dot_product_attention(s["q"], s["kg"], s["vg"], enable_gqa=True)}
    for part, fn in floors.items():
        t, r = time_it(fn, tiny, cuda, quick)
        w.row(kind="floor", part=part, batch=1, kv_len=256, block=16, time_s=t, repeats=r)
    if cuda:
        torch.cuda.empty_cache()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="output directory (attention.csv and meta.json are written there)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes on CPU (or GPU): a smoke test")
    ap.add_argument("--max-seconds", type=float, default=170.0, help="stop starting new cases after this")
    args = ap.parse_args(argv)
    dev = bench.script_device(args.quick, "measure_attention")
    if dev is None:
        return 2
    cuda = dev.type == "cuda"
    args.out.mkdir(parents=True, exist_ok=True)
    env = bench.environment() if cuda else {"device_type": "cpu", "torch": torch.__version__}
    (args.out / "meta.json").write_text(json.dumps({**env, "quick": args.quick, "heads": HEADS,
                                                    "kv_heads": KV_HEADS, "head_dim": HEAD_DIM}, indent=2))
    w = Writer(args.out, env.get("device_name", dev.type))
    start = time.perf_counter()
    skipped = []
    with torch.inference_mode():
        measure_ceilings(w, dev, cuda, args.quick)
        lengths, batches, sparse_cfgs = grid(args.quick)
        for kv_len in lengths:
            for batch in batches:
                if time.perf_counter() - start > args.max_seconds:
                    skipped.append((batch, kv_len))
                    continue
                measure_case(w, batch, kv_len, sparse_cfgs, dev, cuda, args.quick)
                print(f"batch {batch:>3} kv {kv_len:>6}: done at {time.perf_counter() - start:6.1f} s", flush=True)
    if skipped:
        print(f"measure_attention: time limit reached, skipped {len(skipped)} cases: {skipped}", file=sys.stderr)
    print(f"wrote {w.path} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
