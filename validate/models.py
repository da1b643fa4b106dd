"""Whole-model steps for validation: a transformers model built from a catalog config with random
weights (no download), timed eagerly as users run it: prefill of q_len tokens, or one decode step
over a cache of kv_len tokens."""
from __future__ import annotations

import json

import torch

import workloads


def hf_config(name: str, layers: int):
    """The catalog model's HF config with `layers` decoder layers and sdpa attention."""
    from transformers import AutoConfig

    data = json.loads((workloads.CATALOG_DIR / workloads.catalog_entry(name)["config"]).read_text())
    data = {k: v for k, v in data.items() if not k.startswith("_") and k not in ("architectures", "auto_map")}
    data["num_hidden_layers"] = int(layers)
    data.pop("quantization_config", None)
    model_type = data.pop("model_type")
    return AutoConfig.for_model(model_type, **data)


_LAST: dict = {}


def build_model(name: str, layers: int, dev: torch.device, dtype=torch.bfloat16):
    """The model with random weights; the last one built is kept, since cases share models."""
    from transformers import AutoModelForCausalLM

    key = (name, layers, str(dev), dtype)
    if key not in _LAST:
        _LAST.clear()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        config = hf_config(name, layers)
        config._attn_implementation = "sdpa"
        with torch.device(dev):
            _LAST[key] = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    return _LAST[key]


def random_cache(model, batch: int, kv_len: int, dev: torch.device, dtype=torch.bfloat16):
    """A DynamicCache holding kv_len random tokens per layer (what a prefill would have left)."""
    from transformers import DynamicCache

    cfg = model.config
    kv_heads = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    cache = DynamicCache(config=cfg)
    for layer in range(cfg.num_hidden_layers):
        k = torch.randn(batch, kv_heads, kv_len, head_dim, device=dev, dtype=dtype)
        cache.update(k, torch.randn_like(k), layer)
    # keep the contiguous tensors, so `crop` can restore them instead of slicing (see crop)
    cache._perfmodel_saved = (kv_len, [(layer.keys, layer.values) for layer in cache.layers])
    return cache


def crop(cache, length: int) -> None:
    """Put the cache back to `length` tokens after a timed step.

    A cache made by `random_cache` gets its original contiguous tensors back (pointer swaps, no
    copy): slicing with DynamicCache.crop leaves strided views, and the next step's torch.cat then
    takes a slower strided path that real generation never sees (found in a profile on an H200:
    the concatenation ran at a third of its contiguous speed). Other caches are cropped
    (transformers changed crop's argument across 5.x)."""
    saved = getattr(cache, "_perfmodel_saved", None)
    if saved is not None and saved[0] == length:
        for layer, (keys, values) in zip(cache.layers, saved[1]):
            layer.keys, layer.values = keys, values
        return
    current = cache.get_seq_length()
    if current > length:
        try:
            cache.crop(length)
        except ValueError:
            cache.crop(length - current)


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def build_model_step(case: dict, dev: torch.device):
    dtype = DTYPES[case.get("dtype") or "bf16"]
    model = build_model(case["model"], int(case["layers"]), dev, dtype)
    batch, q_len, kv_len = int(case["batch"]), int(case["q_len"]), int(case["kv_len"])
    vocab = model.config.vocab_size
    if case["phase"] == "prefill":
        ids = torch.randint(0, vocab, (batch, q_len), device=dev)
        return lambda i: model(ids, use_cache=True, logits_to_keep=1)
    cache = random_cache(model, batch, kv_len, dev, dtype)
    ids = torch.randint(0, vocab, (batch, 1), device=dev)

    def decode(i):
        out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        crop(cache, kv_len)  # keep the context fixed across repeats
        return out
    return decode
