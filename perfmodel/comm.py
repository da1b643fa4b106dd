"""Collective communication time for tensor parallelism (alpha-beta model).

Ring all-reduce over n devices moves 2 (n - 1) / n of the payload through each device's link and
takes 2 (n - 1) latency steps (Patarasuk & Yuan 2009; Thakur et al. 2005, "Optimization of
Collective Communication Operations in MPICH"). All-gather and reduce-scatter are each half of it.
"""
from __future__ import annotations

import numpy as np

from hardware.spec import Hardware


def link_bytes_per_s(hw: Hardware) -> float:
    """Per-direction bandwidth between devices: the device link (NVLink, Infinity Fabric), or the
    host link (PCIe through the host) when the device has none."""
    return hw.device_link_bytes_per_s or hw.host_link_bytes_per_s


def link_latency_s(hw: Hardware) -> float:
    return hw.device_link_latency_s if hw.device_link_bytes_per_s else hw.host_link_latency_s


def allreduce_time_s(payload_bytes, n_devices, hw: Hardware):
    """Ring all-reduce: 2 (n-1) alpha + 2 (n-1)/n * bytes / beta; zero for one device."""
    n = np.asarray(n_devices, dtype=float)
    steps = 2.0 * (n - 1.0)
    return np.where(n > 1, steps * link_latency_s(hw) + steps / np.maximum(n, 1) * payload_bytes
                    / link_bytes_per_s(hw), 0.0)


def allgather_time_s(payload_bytes, n_devices, hw: Hardware):
    """Ring all-gather of a `payload_bytes` result: (n-1) alpha + (n-1)/n * bytes / beta."""
    n = np.asarray(n_devices, dtype=float)
    return np.where(n > 1, (n - 1.0) * (link_latency_s(hw) + payload_bytes / np.maximum(n, 1)
                                        / link_bytes_per_s(hw)), 0.0)
