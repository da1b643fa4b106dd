"""Replicas and disaggregated prefill/decode serving, built from single-instance simulations.

Aggregated serving with r replicas: a load balancer sends requests round-robin (request i to
replica i mod r); each replica is simulated alone and the per-request results are merged.

Disaggregated serving (DistServe, Zhong et al. 2024, arXiv 2401.09670; Splitwise, Patel et al. 2024,
arXiv 2311.18677): x prefill instances run the prompts (chunked, budgeted, as any instance) and emit
the first token; the request's KV cache then moves to one of y decode instances (round-robin),
taking  latency + KV bytes per device / link bandwidth  (each of the tp devices sends its own shard
in parallel, perfmodel.memory.kv_cache_bytes); the decode instance admits it with its cache present
and decodes the rest. The link is the node's device link (NVLink) when all instances fit in one node,
else a network link (default 400 Gb/s per GPU: one NVIDIA ConnectX-7 NDR InfiniBand port per GPU, as
in DGX H100/H200 systems). Approximations: transfers do not contend for the link; the prefill
instance frees the KV at the end of its prefill (the copy overlaps its next iterations).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perfmodel import memory
from serving.simulator import Instance, Result, simulate
from serving.workload import Requests

#: Default network link between nodes: 400 Gb/s per GPU (NVIDIA ConnectX-7 NDR InfiniBand, one per
#: GPU in a DGX H100/H200) and a few microseconds of RDMA latency.
NETWORK_BYTES_PER_S = 400e9 / 8
NETWORK_LATENCY_S = 5e-6


@dataclass(frozen=True)
class Link:
    """A KV-transfer link per device: bandwidth (bytes/s) and latency (s)."""

    bytes_per_s: float
    latency_s: float
    name: str = "network"


def transfer_link(inst: Instance, devices: int) -> Link:
    """The node's device link when `devices` fit in one node and it has one, else the network."""
    hw = inst.hw
    if devices <= hw.devices_per_node and hw.device_link != "none" and hw.device_link_bytes_per_s > 0:
        return Link(hw.device_link_bytes_per_s, hw.device_link_latency_s, hw.device_link)
    return Link(NETWORK_BYTES_PER_S, NETWORK_LATENCY_S, "network")


def kv_transfer_s(inst: Instance, prompt_tokens, link: Link):
    """Seconds to move a prompt's KV cache (per device, shards in parallel) over `link`."""
    per_device = memory.kv_cache_bytes(inst.model, inst.p, np.asarray(prompt_tokens, float), inst.tp)
    return link.latency_s + per_device / link.bytes_per_s


def _subset(req: Requests, index: np.ndarray, arrival=None, output=None) -> Requests:
    return Requests(req.arrival_s[index] if arrival is None else arrival, req.prompt_tokens[index],
                    req.output_tokens[index] if output is None else output, req.prefix_tokens[index])


def _merge(n: int, parts: list[tuple[np.ndarray, Result]], req: Requests) -> Result:
    first, finish = np.full(n, np.nan), np.full(n, np.nan)
    wait, pre = np.zeros(n), np.zeros(n, dtype=np.int64)
    for index, r in parts:
        first[index], finish[index], wait[index], pre[index] = r.first_token_s, r.finish_s, r.wait_s, r.preemptions
    series = [r for _, r in parts]
    cat = lambda name: np.concatenate([getattr(r, name) for r in series])  # noqa: E731
    return Result(req.arrival_s.copy(), first, finish, req.prompt_tokens.copy(), req.output_tokens.copy(), pre, wait,
                  cat("iteration_start_s"), cat("iteration_end_s"), cat("iteration_decodes"), cat("iteration_tokens"),
                  cat("kv_used_blocks"), cat("queue_length"), int(series[0].kv_capacity_blocks))


def simulate_replicas(inst: Instance, req: Requests, replicas: int, *, seed: int = 0) -> Result:
    """Aggregated serving on `replicas` identical instances, requests dealt round-robin. The merged
    result's iteration series are the replicas' concatenated (utilization per instance)."""
    if req.clients:
        raise ValueError("replicas: a closed-loop workload runs on one instance (give --replicas 1)")
    parts = []
    for r in range(replicas):
        index = np.arange(r, len(req), replicas)
        if index.size:
            parts.append((index, simulate(inst, _subset(req, index), seed=seed + r)))
    return _merge(len(req), parts, req)


def simulate_disaggregated(prefill: Instance, decode: Instance, req: Requests, prefill_instances: int,
                           decode_instances: int, *, link: Link | None = None, seed: int = 0) -> Result:
    """x prefill and y decode instances (module doc). TTFT ends when the prefill instance emits the
    first token; TPOT includes the KV transfer and the decode instance's queueing."""
    if req.clients:
        raise ValueError("disaggregated: a closed-loop workload is not supported; give a rate")
    for name, v in (("prefill_instances", prefill_instances), ("decode_instances", decode_instances)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: {v!r} must be a whole number, 1 or more")
    devices = (prefill_instances * prefill.tp + decode_instances * decode.tp)
    link = link or transfer_link(prefill, devices)
    n = len(req)
    first = np.full(n, np.nan)
    pre_parts = []
    for r in range(prefill_instances):
        index = np.arange(r, n, prefill_instances)
        if index.size:
            res = simulate(prefill, _subset(req, index, output=np.ones(index.size, np.int64)), seed=seed + r)
            first[index] = res.first_token_s
            pre_parts.append((index, res))
    ready = first + kv_transfer_s(prefill, req.prompt_tokens, link)
    more = np.flatnonzero(req.output_tokens > 1)
    more = more[np.argsort(ready[more], kind="stable")]  # decode instances see requests by readiness
    dec_parts = []
    for r in range(decode_instances):
        index = more[r::decode_instances]
        if index.size:
            res = simulate(decode, _subset(req, index, arrival=ready[index]), seed=seed + 1000 + r, prefilled=True)
            dec_parts.append((index, res))
    merged = _merge(n, dec_parts or pre_parts, req)
    finish = merged.finish_s.copy()
    single = req.output_tokens == 1
    finish[single] = first[single]
    wait = merged.wait_s.copy()
    pre = merged.preemptions.copy()
    for index, res in pre_parts:
        wait[index] += res.wait_s
        pre[index] += res.preemptions
    import dataclasses

    return dataclasses.replace(merged, first_token_s=first, finish_s=finish, wait_s=wait, preemptions=pre,
                               extra={"kv_link": link.name, "kv_transfer_s": kv_transfer_s(prefill, req.prompt_tokens, link)})
