"""Shared builders for the bit-allocation tests: a hardware spec and a small catalog model built
directly (no preset files needed)."""
from pathlib import Path

import numpy as np

import workloads
from hardware.spec import Calibration, Hardware
from solvers.bits import BitGroups


def gpu(calibrated: bool = False) -> Hardware:
    """An H200-like spec (datasheet numbers: 989 TFLOP/s bf16 dense, 4.8 TB/s HBM3e)."""
    cal = Calibration(matmul_flops_per_s={"bf16": 780e12, "fp8": 1500e12}, memory_bytes_per_s=4.3e12,
                      kernel_overhead_s=4e-6, tile_m=128, tile_n=128) if calibrated else None
    return Hardware(name="test-gpu", title="Test GPU", kind="gpu", flops_per_s={"bf16": 989e12, "fp8": 1979e12,
                    "fp32": 67e12}, hbm_capacity_bytes=141e9, hbm_bytes_per_s=4.8e12, dram_capacity_bytes=2e12,
                    dram_bytes_per_s=300e9, flash_capacity_bytes=4e12, flash_read_bytes_per_s=7e9,
                    flash_latency_s=1e-4, host_link_bytes_per_s=64e9, host_link_latency_s=1e-5,
                    cpu_flops_per_s=5e12, cpu_cores=64, price_per_hour_usd=4.0, power_w=700.0,
                    compute_units=132, calibration=cal)


def small_model():
    path = Path(workloads.__file__).parent / "configs" / "llama-3.2-1b.json"
    return workloads.ModelSpec.from_hf_config(path, name="llama-3.2-1b")


def random_groups(seed, size=40, rmin=1.0, rmax=8.0, theta=2.0, layer=None):
    rng = np.random.default_rng(seed)
    return BitGroups(params=rng.integers(16, 4096, size).astype(float), coef=np.exp(rng.normal(0, 2.5, size)),
                     theta=theta, rmin=rmin, rmax=rmax, layer=layer)
