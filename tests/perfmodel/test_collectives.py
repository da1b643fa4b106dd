"""perfmodel.collectives: hand-derived times, monotonicity, errors, and the link fitter."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.spec import Hardware
from perfmodel import collectives as C

US = 1e-6


def link(**changes) -> C.LinkCalibration:
    """100 GB/s, NCCL's own NVLink step latency (scale 1), no launch cost."""
    base = dict(bytes_per_s=100e9, step_latency_s=3.4 * US, link="nvlink")
    return C.LinkCalibration(**{**base, **changes})


def spec(**changes) -> Hardware:
    base = dict(name="x", title="x", kind="gpu", flops_per_s={"bf16": 1e15}, hbm_capacity_bytes=80e9,
                hbm_bytes_per_s=3e12, dram_capacity_bytes=1e12, dram_bytes_per_s=2e11, flash_capacity_bytes=1e12,
                flash_read_bytes_per_s=5e9, flash_latency_s=1e-4, host_link_bytes_per_s=63e9,
                host_link_latency_s=1e-6, cpu_flops_per_s=1e12, cpu_cores=64, price_per_hour_usd=3.0, power_w=700,
                devices_per_node=8, device_link="nvlink4", device_link_bytes_per_s=450e9, device_link_latency_s=2e-6)
    return Hardware(**{**base, **changes})


# -- hand-derived values --------------------------------------------------------------------------

def test_ring_simple_allreduce_by_hand():
    # n = 4, S = 1e8 B, beta = 100 GB/s: base 8.4 us + 2(n-1) = 6 steps x 3.4 us + 2(3/4) S / beta
    t = C.pair_time_s("all_reduce", "ring", "simple", 1e8, 4, link())
    assert t == pytest.approx(8.4 * US + 6 * 3.4 * US + 1.5 * 1e8 / 100e9, rel=1e-12)


def test_ring_allgather_and_tree_ll_by_hand():
    # all-gather, n = 8: base 8.4 us + 7 steps x 3.4 us + (7/8) S / beta
    assert C.pair_time_s("all_gather", "ring", "simple", 8e6, 8, link()) == pytest.approx(
        8.4 * US + 7 * 3.4 * US + 7 / 8 * 8e6 / 100e9, rel=1e-12)
    # tree LL all-reduce, n = 8: 6.8 us + 2 log2(8) = 6 steps x 0.6 us + 2 S / (beta 0.92 / 3.8)
    assert C.pair_time_s("all_reduce", "tree", "ll", 1e5, 8, link()) == pytest.approx(
        6.8 * US + 6 * 0.6 * US + 2 * 1e5 / (100e9 * 0.92 / 3.8), rel=1e-12)


def test_small_messages_take_the_lowest_latency_pair():
    # empty payload, n = 8: all-gather ring LL = 6.6 + 7 x 0.6 = 10.8 us
    assert C.collective_time_s("all_gather", 0.0, 8, link()) == pytest.approx(10.8 * US)
    # all-reduce: tree LL 6.8 + 6 x 0.6 = 10.4 us beats ring LL 6.6 + 14 x 0.6 = 15.0 us ...
    assert C.collective_time_s("all_reduce", 0.0, 8, link()) == pytest.approx(10.4 * US)
    assert C.chosen_pair("all_reduce", 0.0, 8, link()) == "tree/ll"
    # ... unless the tree is not available
    assert C.collective_time_s("all_reduce", 0.0, 8, link(algorithms=("ring",))) == pytest.approx(15.0 * US)


def test_large_messages_take_ring_simple():
    s = 2.0 ** 30
    expected = 8.4 * US + 14 * 3.4 * US + 2 * 7 / 8 * s / 100e9
    assert C.collective_time_s("all_reduce", s, 8, link()) == pytest.approx(expected, rel=1e-12)
    assert C.chosen_pair("all_reduce", s, 8, link()) == "ring/simple"


def test_one_device_costs_nothing():
    assert np.all(C.collective_time_s("all_reduce", [0, 1e6, 1e9], 1, link(launch_s=5 * US)) == 0)


def test_latency_scale_launch_and_efficiency():
    base = C.pair_time_s("all_gather", "ring", "simple", 0.0, 4, link())
    slower = link(step_latency_s=6.8 * US)
    assert C.pair_time_s("all_gather", "ring", "simple", 0.0, 4, slower) == pytest.approx(2 * base)
    assert C.pair_time_s("all_gather", "ring", "simple", 0.0, 4, link(latency_factor={"all_gather": 3.0})) == \
        pytest.approx(3 * base)
    assert C.pair_time_s("all_reduce", "ring", "simple", 0.0, 4, link(latency_factor={"all_gather": 3.0})) == \
        pytest.approx(C.pair_time_s("all_reduce", "ring", "simple", 0.0, 4, link()))
    assert C.pair_time_s("all_gather", "ring", "simple", 0.0, 4, link(launch_s=5 * US)) == pytest.approx(base + 5 * US)
    s = 1e9
    full = C.pair_time_s("all_gather", "ring", "simple", s, 4, link()) - base
    half = C.pair_time_s("all_gather", "ring", "simple", s, 4, link(efficiency={"all_gather": 0.5})) - base
    assert half == pytest.approx(2 * full)


def test_bus_factor_matches_nccl_tests():
    assert C.bus_factor("all_reduce", 8) == pytest.approx(14 / 8)
    for name in ("all_gather", "reduce_scatter", "all_to_all"):
        assert C.bus_factor(name, 8) == pytest.approx(7 / 8)


def test_achieved_bandwidth_is_hockney_hyperbola():
    """factor S / t of one pair equals rate S / (S + S_half): Hockney's n_1/2 form."""
    cal = link(launch_s=3 * US)
    s = np.array([1e3, 1e5, 1e7, 1e9])
    factor = C.algorithm_factor("ring", "all_reduce", 8)
    measured_bw = factor * s / C.pair_time_s("all_reduce", "ring", "simple", s, 8, cal)
    s_half = C.half_bandwidth_bytes("all_reduce", 8, cal)
    np.testing.assert_allclose(measured_bw, 100e9 * s / (s + s_half), rtol=1e-12)
    # and the modeled bus bandwidth approaches the link's at large sizes
    assert C.achieved_bus_bytes_per_s("all_reduce", 2.0 ** 34, 8, cal) == pytest.approx(100e9, rel=0.01)


def test_measured_bus_bandwidth():
    assert C.measured_bus_bytes_per_s("all_reduce", 1e9, 8, 1e-2) == pytest.approx(1.75e11)


# -- links from hardware specs --------------------------------------------------------------------

def test_nvlink_spec_uses_device_link_and_nccl_step_floor():
    cal = C.LinkCalibration.from_hardware(spec())
    assert (cal.link, cal.bytes_per_s, cal.step_latency_s) == ("nvlink", 450e9, pytest.approx(3.4 * US))
    slow = C.LinkCalibration.from_hardware(spec(device_link_latency_s=10e-6))
    assert slow.step_latency_s == pytest.approx(10e-6)
    assert "ll128" in cal.protocols and cal.algorithms == ("ring",)  # NCCL's intra-node tree is a chain


def test_spec_without_device_link_goes_over_pcie():
    cal = C.LinkCalibration.from_hardware(spec(device_link="none", device_link_bytes_per_s=0.0,
                                               device_link_latency_s=0.0))
    assert (cal.link, cal.bytes_per_s, cal.step_latency_s) == ("pcie", 63e9, pytest.approx(5.7 * US))
    assert cal.protocols == ("ll", "simple")
    # PCIe per-step latencies come from NCCL's PCI row: all-gather n = 4 at zero payload, LL
    assert C.collective_time_s("all_gather", 0.0, 4, cal) == pytest.approx(6.6 * US + 3 * 1.0 * US)


def test_hardware_and_link_give_the_same_times():
    hw = spec()
    np.testing.assert_allclose(C.allreduce_time_s([1e3, 1e8], 8, hw),
                               C.collective_time_s("all_reduce", [1e3, 1e8], 8, C.LinkCalibration.from_hardware(hw)))


def test_tp_step_comm_and_moe_alltoall():
    cal = link(host_s=10 * US)
    one = C.allreduce_time_s(4 * 4096 * 2.0, 4, cal)
    assert C.tp_step_comm_time_s(4, 4096, 32, 4, cal) == pytest.approx(64 * one)
    assert C.tp_step_comm_time_s(4, 4096, 32, 1, cal) == 0
    assert C.tp_step_comm_host_s(32, 4, cal) == pytest.approx(64 * 10 * US)
    assert C.tp_step_comm_host_s(32, 1, cal) == 0
    a2a = C.collective_time_s("all_to_all", 16 * 2 * 4096 * 2.0, 8, cal)
    assert C.moe_alltoall_time_s(16, 4096, 2, 24, 8, cal) == pytest.approx(48 * a2a)


def test_vectorized_over_payload_and_devices():
    t = C.collective_time_s("reduce_scatter", np.array([[1e3], [1e9]]), np.array([2, 4, 8]), link())
    assert t.shape == (2, 3)
    assert t[1, 0] == pytest.approx(float(C.collective_time_s("reduce_scatter", 1e9, 2, link())))


# -- monotonicity -------------------------------------------------------------------------------

sizes = st.floats(min_value=0, max_value=2.0 ** 34)
counts = st.integers(min_value=1, max_value=64)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(C.COLLECTIVES), s1=sizes, s2=sizes, n=counts, tree=st.booleans())
def test_time_grows_with_payload(name, s1, s2, n, tree):
    cal = link(algorithms=("ring", "tree") if tree else ("ring",), launch_s=2 * US)
    lo, hi = sorted((s1, s2))
    assert C.collective_time_s(name, lo, n, cal) <= C.collective_time_s(name, hi, n, cal)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(C.COLLECTIVES), s=sizes, n1=counts, n2=counts)
def test_time_grows_with_devices(name, s, n1, n2):
    lo, hi = sorted((n1, n2))
    assert C.collective_time_s(name, s, lo, link()) <= C.collective_time_s(name, s, hi, link()) * (1 + 1e-12)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(C.COLLECTIVES), s=sizes, n=st.integers(2, 16),
       bw=st.floats(1e9, 1e12), step=st.floats(0.1e-6, 20e-6), faster=st.floats(1.0, 10.0))
def test_faster_links_are_faster(name, s, n, bw, step, faster):
    slow = link(bytes_per_s=bw, step_latency_s=step)
    assert C.collective_time_s(name, s, n, link(bytes_per_s=bw * faster, step_latency_s=step)) <= \
        C.collective_time_s(name, s, n, slow)
    assert C.collective_time_s(name, s, n, link(bytes_per_s=bw, step_latency_s=step / faster)) <= \
        C.collective_time_s(name, s, n, slow)


# -- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda: C.collective_time_s("allreduce", 1e6, 2, link()), "collective: 'allreduce'"),
    (lambda: C.collective_time_s("all_reduce", -1.0, 2, link()), "payload_bytes: -1.0"),
    (lambda: C.collective_time_s("all_reduce", np.nan, 2, link()), "payload_bytes: nan"),
    (lambda: C.collective_time_s("all_reduce", 1e6, 2.5, link()), "n_devices: 2.5"),
    (lambda: C.collective_time_s("all_reduce", 1e6, 0, link()), "n_devices: 0"),
    (lambda: C.collective_time_s("all_reduce", 1e6, 2, "h200"), "link: expected a Hardware"),
    (lambda: link(bytes_per_s=0.0), "bytes_per_s: 0.0"),
    (lambda: link(step_latency_s=-1e-6), "step_latency_s"),
    (lambda: link(launch_s=float("nan")), "launch_s: nan"),
    (lambda: link(efficiency={"all_reduce": 0.0}), "efficiency.all_reduce: 0.0"),
    (lambda: link(efficiency={"broadcast": 1.0}), "efficiency.broadcast"),
    (lambda: link(latency_factor={"all_to_all": -2.0}), "latency_factor.all_to_all: -2.0"),
    (lambda: link(link="infiniband"), "link: 'infiniband'"),
    (lambda: link(algorithms=("tree",)), "algorithms"),
    (lambda: C.LinkCalibration.from_dict({"bytes_per_s": 1e9}), "missing field 'step_latency_s'"),
    (lambda: C.LinkCalibration.from_dict({"bytes_per_s": 1e9, "step_latency_s": 1e-6, "speed": 1}), "speed"),
])
def test_bad_input_names_the_field(call, match):
    with pytest.raises(C.CollectiveError, match=match):
        call()


def test_round_trip_through_json(tmp_path):
    cal = link(launch_s=4 * US, host_s=9 * US, efficiency={"all_to_all": 0.7}, latency_factor={"all_gather": 2.0},
               algorithms=("ring",), link="pcie")
    path = tmp_path / "link.json"
    path.write_text(json.dumps(cal.to_dict()))
    assert C.LinkCalibration.from_json(path) == cal
    with pytest.raises(C.CollectiveError, match="does not exist"):
        C.LinkCalibration.from_json(tmp_path / "missing.json")


# -- the fitter ---------------------------------------------------------------------------------

def synthetic(true: C.LinkCalibration, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = [(c, 2.0 ** k, n) for c in C.COLLECTIVES for n in (2, 3, 4, 8) for k in range(12, 31, 2)]
    c, s, n = (np.array(x) for x in zip(*rows))
    t = np.array([float(C.collective_time_s(ci, si, ni, true)) for ci, si, ni in rows])
    return c, s, n, t * np.exp(rng.normal(0.0, noise, t.shape))


TRUE = C.LinkCalibration(bytes_per_s=370e9, step_latency_s=4.5 * US, launch_s=6 * US, algorithms=("ring",),
                         efficiency={"all_gather": 0.93, "reduce_scatter": 0.88, "all_to_all": 0.7},
                         latency_factor={"all_gather": 0.9, "all_to_all": 1.8})


def test_fitter_recovers_known_parameters():
    fit = C.fit_link_calibration(*synthetic(TRUE))
    assert fit.algorithms == ("ring",)
    assert fit.bytes_per_s == pytest.approx(TRUE.bytes_per_s, rel=1e-4)
    assert fit.step_latency_s == pytest.approx(TRUE.step_latency_s, rel=1e-3)
    assert fit.launch_s == pytest.approx(TRUE.launch_s, rel=1e-3)
    for name in C.COLLECTIVES:
        assert fit.efficiency[name] == pytest.approx(TRUE.efficiency[name], rel=1e-4)
        assert fit.latency_factor[name] == pytest.approx(TRUE.latency_factor[name], rel=1e-3)


def test_fitter_picks_the_tree_and_tolerates_noise():
    true = dataclasses.replace(TRUE, algorithms=("ring", "tree"))
    c, s, n, t = synthetic(true, noise=0.02, seed=3)
    fit = C.fit_link_calibration(c, s, n, t)
    assert fit.algorithms == ("ring", "tree")
    assert fit.bytes_per_s == pytest.approx(true.bytes_per_s, rel=0.03)
    assert fit.step_latency_s == pytest.approx(true.step_latency_s, rel=0.15)
    errors = [abs(float(C.collective_time_s(ci, si, ni, fit)) / float(C.collective_time_s(ci, si, ni, true)) - 1)
              for ci, si, ni in zip(c, s, n)]
    assert np.median(errors) < 0.01


def test_fitter_input_errors():
    with pytest.raises(C.CollectiveError, match="equal lengths"):
        C.fit_link_calibration(["all_reduce"], [1e6, 2e6], [2, 2], [1e-5, 2e-5])
    with pytest.raises(C.CollectiveError, match="2 or more devices"):
        C.fit_link_calibration(["all_reduce"], [1e6], [1], [1e-5])
    with pytest.raises(C.CollectiveError, match="time_s"):
        C.fit_link_calibration(["all_reduce"] * 2, [1e6, 2e6], [2, 2], [1e-5, 0.0])
    with pytest.raises(C.CollectiveError, match="collective: 'bcast'"):
        C.fit_link_calibration(["bcast"], [1e6], [2], [1e-5])


def test_fitted_link_fields_of_a_hardware_calibration_win():
    """Calibration.link_*: a link fitted to nccl-tests times replaces the datasheet's, with NVLink
    SHARP where the fit carries it (link_nvls); no fitted bandwidth keeps the datasheet link."""
    import dataclasses

    from hardware.spec import Calibration

    fitted = Calibration(matmul_flops_per_s={"bf16": 1e15}, memory_bytes_per_s=4e12, kernel_overhead_s=2e-6,
                         link_bytes_per_s=380e9,
                         link_step_latency_s=4e-6, link_launch_s=5e-6, link_nvls=1, source="measured")
    cal = C._with_fitted_fields(C.LinkCalibration.from_hardware(spec()), fitted)
    assert (cal.bytes_per_s, cal.step_latency_s, cal.launch_s) == (380e9, 4e-6, 5e-6)
    assert cal.algorithms == ("ring", "nvls")
    ring = C._with_fitted_fields(C.LinkCalibration.from_hardware(spec()), dataclasses.replace(fitted, link_nvls=0))
    assert ring.algorithms == ("ring",)
    assert C._with_fitted_fields(C.LinkCalibration.from_hardware(spec()), None).bytes_per_s == 450e9
    assert C._with_fitted_fields(C.LinkCalibration.from_hardware(spec()),
                                 dataclasses.replace(fitted, link_bytes_per_s=0.0)).bytes_per_s == 450e9


def test_nvls_moves_n_plus_1_over_n_of_the_payload_in_one_pass():
    """NVLink SHARP all-reduce: (n + 1) / n S through each link direction (the ring: 2 (n - 1) / n S)
    and one latency of NCCL's 25 us (scaled like every step) whatever n; Simple only; slower than the
    ring on 2 GPUs at large sizes, faster on 8; only over NVLink."""
    link = C.LinkCalibration(bytes_per_s=400e9, step_latency_s=3.4e-6, algorithms=("ring", "nvls"))
    s = 2.0 ** 30
    assert C.pair_time_s("all_reduce", "nvls", "simple", s, 8, link) == pytest.approx(25e-6 + 9 / 8 * s / 400e9)
    assert C.chosen_pair("all_reduce", s, 8, link) == "nvls/simple"
    assert C.chosen_pair("all_reduce", s, 2, link) == "ring/simple"
    assert ("nvls", "ll") not in C._pairs("all_reduce", link) and ("nvls", "simple") in C._pairs("all_reduce", link)
    assert ("nvls", "simple") not in C._pairs("all_gather", link)
    with pytest.raises(C.CollectiveError, match="'nvls' needs an NVLink switch"):
        C.LinkCalibration(bytes_per_s=30e9, step_latency_s=5.7e-6, algorithms=("ring", "nvls"), link="pcie")


def test_an_engines_own_custom_allreduce_parameters_win_over_the_shared_ones():
    """custom_allreduce_engine_*: an engine with its own fitted kernel (TensorRT-LLM's) is priced with
    it; an engine without an entry takes the shared default; the step's all-reduce op names its
    engine's kernel ("custom-<engine>")."""
    import dataclasses

    import hardware
    import workloads
    from perfmodel import collectives
    from perfmodel.ops import Precision, step_ops
    from perfmodel.roofline import op_time

    hw = hardware.load("h100-sxm-calibrated")
    cal = dataclasses.replace(hw.calibration, custom_allreduce_latency_s=4e-6, custom_allreduce_bytes_per_s=300e9,
                              custom_allreduce_peer_latency_s=1e-7,
                              custom_allreduce_engine_latency_s={"trtllm": 2e-6},
                              custom_allreduce_engine_bytes_per_s={"trtllm": 500e9},
                              custom_allreduce_engine_peer_latency_s={"trtllm": 3e-7},
                              custom_allreduce_engine_two_shot_peer_latency_s={})
    hw = dataclasses.replace(hw, calibration=cal)
    size = 4096.0  # small: the one-shot kernel, alpha + (n - 1) gamma + (n - 1) S / beta
    for n in (2, 8):
        assert float(collectives.custom_allreduce_time_s(size, n, hw, "trtllm")) == \
            pytest.approx(2e-6 + (n - 1) * (3e-7 + size / 500e9))
        assert float(collectives.custom_allreduce_time_s(size, n, hw, "sglang")) == \
            pytest.approx(4e-6 + (n - 1) * (1e-7 + size / 300e9))
    # large: the two-shot kernel, 2 (alpha + (n - 1) gamma2) + 2 (n - 1) / n S / beta, with the
    # engine's own two-shot barrier where fitted (gamma2), else its one-shot barrier's gamma
    size, n = 4 * 2 ** 20, 8
    two_shot = 2 * (n - 1) / n * size / 500e9
    assert float(collectives.custom_allreduce_time_s(size, n, hw, "trtllm")) == \
        pytest.approx(2 * (2e-6 + (n - 1) * 3e-7) + two_shot)
    hw = dataclasses.replace(hw, calibration=dataclasses.replace(
        cal, custom_allreduce_engine_two_shot_peer_latency_s={"trtllm": 9e-7}))
    assert float(collectives.custom_allreduce_time_s(size, n, hw, "trtllm")) == \
        pytest.approx(2 * (2e-6 + (n - 1) * 9e-7) + two_shot)
    p = Precision(16, 16, 16)
    ops = step_ops(workloads.load("llama-3-8b"), seqs=1, new_tokens=1, past=100, p=p, tp=2, engine="trtllm")
    reduce = next(op for op in ops if op.kind == "comm")
    assert reduce.kernel == "custom-trtllm"
    assert float(op_time(reduce, hw, p, 2).comm_s) == pytest.approx(
        float(collectives.custom_allreduce_time_s(reduce.comm_bytes, 2, hw, "trtllm")))
