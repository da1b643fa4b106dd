"""Each fitter recovers known parameters from synthetic measurements made by the model itself."""
import dataclasses

import numpy as np
import pytest

import hardware
from hardware.spec import Calibration
from validate.calibrate import calibrate, fit
from validate.cases import kernel_class, split, suite
from validate.predict_cases import predict_many

TRUE = Calibration(
    matmul_flops_per_s={"bf16": 700e12, "fp32": 50e12, "fp8": 1300e12, "w8a16": 5e12, "w4a16": 90e12},
    dequant_bytes_per_s={"w8a16": 80e9, "w4a16": 2e12},
    memory_bytes_per_s=4.1e12, memory_read_bytes_per_s=4.6e12, norm_bytes_per_s=2.5e12, concat_bytes_per_s=1.9e12,
    sm_bytes_per_s=60e9, split_k_min=4096, gemv_tile_n=128, kernel_overhead_s=2.5e-6, dispatch_s=11e-6,
    layer_overhead_s=80e-6, step_overhead_s=3e-3, attention_flops_fraction=0.7, attention_overhead_s=20e-6,
    tile_m=128, tile_n=128, host_to_device_bytes_per_s=55e9, device_to_host_bytes_per_s=52e9,
    host_to_device_pageable_bytes_per_s=17e9, device_to_host_pageable_bytes_per_s=12e9, transfer_latency_s=6e-6,
    gemm_latency_s=2.5e-6,
    sustained_flops_per_s={"bf16": 640e12, "fp8": 1200e12}, row_norm_bytes_per_s=6e9, row_norm_latency_s=1.5e-6)


def synthetic_cases(truth: hardware.Hardware, kinds=None):
    cases = [dict(c, **{"class": kernel_class(c), "split": split(c), "status": "ok"})
             for c in suite(cuda=True) if kinds is None or c["kind"] in kinds]
    for case, seconds in zip(cases, predict_many(cases, truth)):
        case["measured_s"] = seconds
    return cases


@pytest.fixture(scope="module")
def base():
    return hardware.load("h200-sxm")


def test_streaming_bandwidth_and_dispatch_are_recovered(base):
    truth = dataclasses.replace(base, calibration=TRUE)
    cases = [c for c in synthetic_cases(truth, {"copy", "elementwise"}) if c["class"] in ("copy_d2d", "elementwise")]
    start = dataclasses.replace(TRUE, memory_bytes_per_s=1e12, dispatch_s=1e-6)
    got, cost = fit(cases, base, start, {"memory_bytes_per_s": (1e12, 1e10, 1e13), "dispatch_s": (1e-6, 1e-8, 1e-3)})
    assert got.memory_bytes_per_s == pytest.approx(TRUE.memory_bytes_per_s, rel=1e-3)
    assert got.dispatch_s == pytest.approx(TRUE.dispatch_s, rel=1e-3)
    assert cost < 1e-8


def test_full_calibration_recovers_the_truth(base):
    truth = dataclasses.replace(base, calibration=TRUE)
    cases = synthetic_cases(truth)
    got = calibrate(cases, base).calibration
    # the compute tile is identified by wave quantization of large GEMMs; the GEMV tile, split-K
    # threshold and per-block bandwidth trade off against each other on the suite's shapes (only
    # blocks x bandwidth is seen), so they are checked through the predictions below instead
    assert (got.tile_m, got.tile_n) == (128, 128)
    for dtype in ("bf16", "fp32", "fp8"):  # fp16 GEMMs run on the bf16 path of the model
        assert got.matmul_flops_per_s[dtype] == pytest.approx(TRUE.matmul_flops_per_s[dtype], rel=0.02)
    for field in ("memory_bytes_per_s", "memory_read_bytes_per_s", "norm_bytes_per_s", "concat_bytes_per_s",
                  "host_to_device_bytes_per_s", "device_to_host_pageable_bytes_per_s"):
        assert getattr(got, field) == pytest.approx(getattr(TRUE, field), rel=0.02), field
    assert got.attention_flops_fraction == pytest.approx(0.7, rel=0.02)
    for field in ("row_norm_bytes_per_s", "row_norm_latency_s", "gemm_latency_s"):
        assert getattr(got, field) == pytest.approx(getattr(TRUE, field), rel=0.02), field
    # evaluation cases, never seen by the fit, are predicted as the truth predicts them
    held_out = [c for c in cases if c["split"] == "evaluation"]
    ratio = predict_many(held_out, dataclasses.replace(base, calibration=got)) / np.array(
        [c["measured_s"] for c in held_out])
    assert np.median(np.abs(ratio - 1)) < 0.01


def test_calibration_needs_calibration_cases(base):
    with pytest.raises(ValueError, match="no successful calibration-split cases"):
        calibrate([], base)
