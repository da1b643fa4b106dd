"""The datasheet spec of the device a measurement ran on: a catalog preset for known GPUs, or a
nominal spec for a CPU (clearly marked: its numbers are placeholders the calibration replaces)."""
from __future__ import annotations

import hardware
from hardware.spec import Hardware

#: Substrings of torch.cuda.get_device_name() mapped to presets (longest match first).
DEVICE_PRESETS = (("H200", "h200-sxm"), ("H100", "h100-sxm"), ("B200", "b200"), ("H20", "h20"),
                  ("A100-SXM4-40GB", "a100-40gb"), ("A100", "a100-80gb-sxm"), ("L40S", "l40s"), ("L4", "l4"),
                  ("A40", "a40"), ("T4", "t4"), ("RTX 4090", "rtx-4090"), ("MI300X", "mi300x"))

NOMINAL = "nominal placeholder for an unknown CPU (not a datasheet value); calibration replaces it"


def hardware_for_device(device_name: str, device_type: str = "cuda") -> Hardware:
    """The preset for a GPU name, or a nominal CPU spec for device_type 'cpu'."""
    if device_type == "cpu":
        return nominal_cpu(device_name)
    for key, preset in DEVICE_PRESETS:
        if key in device_name:
            return hardware.load(preset)
    raise ValueError(f"device_name: no preset matches {device_name!r}; pass --hardware SPEC.yaml")


def nominal_cpu(device_name: str = "cpu", cores: int | None = None) -> Hardware:
    """A CPU 'datasheet' with nominal per-core rates: 32 GFLOP/s per core (AVX2 FMA at 2 GHz) and
    10 GB/s of DRAM bandwidth per core. Every field's source says it is nominal."""
    import os

    cores = cores or os.cpu_count() or 1
    flops = 32e9 * cores
    fields = dict(
        name="local-cpu", title=f"{device_name} ({cores} cores, nominal)", kind="cpu",
        flops_per_s={"fp32": flops, "bf16": flops, "fp16": flops, "int8": 2 * flops},
        hbm_capacity_bytes=8e9, hbm_bytes_per_s=10e9 * cores, dram_capacity_bytes=8e9,
        dram_bytes_per_s=10e9 * cores, flash_capacity_bytes=100e9, flash_read_bytes_per_s=1e9,
        flash_latency_s=100e-6, host_link_bytes_per_s=10e9 * cores, host_link_latency_s=1e-6,
        cpu_flops_per_s=flops, cpu_cores=cores, price_per_hour_usd=0.1, power_w=100.0, compute_units=1,
    )
    sources = {f"field.{k}": NOMINAL for k in fields}
    return Hardware(**fields, sources=sources)
