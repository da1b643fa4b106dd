"""Hardware specs: the catalog, units at the edge, round trips and clear errors on bad specs."""
import math

import pytest
import yaml

import hardware
from hardware import Hardware, SpecError
from hardware.spec import to_yaml_dict
from hardware.units import UnitError, parse

REQUIRED = {"h100-sxm", "h200-sxm", "a100-80gb-sxm", "a100-40gb", "b200", "h20", "l4", "l40s", "t4", "a40",
            "rtx-4090", "mi300x", "m1-max", "m2-ultra", "xeon-8480"}


def test_catalog_has_every_required_preset():
    assert REQUIRED <= set(hardware.names())
    frame = hardware.catalog()
    assert len(frame) >= 15 and frame.loc["h200-sxm", "hbm_bytes_per_s"] == 4.8e12


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_number_has_a_source(name):
    hw = hardware.load(name)
    assert hw.sources, name
    assert all(isinstance(s, str) and s.strip() for s in hw.sources.values())
    for field in ("memory.capacity", "memory.bandwidth", "price_per_hour", "power", "host_link.bandwidth"):
        assert field in hw.sources, (name, field)


def test_h200_datasheet_values_in_si():
    hw = hardware.load("h200-sxm")
    assert hw.hbm_capacity_bytes == 141 * 2**30  # the 141GB part as aiconfigurator sizes it
    assert hw.flops_per_s["bf16"] == pytest.approx(989.5e12, rel=0.01)
    assert hw.device_link == "nvlink4" and hw.device_link_bytes_per_s == 450e9
    assert not hw.is_calibrated


def test_calibrated_preset_loads_and_differs_from_datasheet():
    cal = hardware.load("h200-sxm-calibrated")
    assert cal.is_calibrated
    assert cal.calibration.matmul_flops_per_s["bf16"] < cal.flops_per_s["bf16"]
    assert cal.datasheet().calibration is None


@pytest.mark.parametrize("name", sorted(REQUIRED) + ["h200-sxm-calibrated"])
def test_yaml_round_trip(name):
    hw = hardware.load(name)
    again = Hardware.from_dict(yaml.safe_load(yaml.safe_dump(to_yaml_dict(hw))))
    assert again.flops_per_s.keys() == hw.flops_per_s.keys()
    for key, value in hw.flops_per_s.items():
        assert again.flops_per_s[key] == pytest.approx(value, rel=1e-9)
    assert again.hbm_bytes_per_s == pytest.approx(hw.hbm_bytes_per_s, rel=1e-9)
    assert (again.calibration is None) == (hw.calibration is None)


def test_units_parse_decimal_and_binary():
    assert parse("141 GB", "bytes") == 141e9
    assert parse("8 GiB", "bytes") == 8 * 2 ** 30
    assert parse("4.8 TB/s", "bytes_per_s") == 4.8e12
    assert parse("989.5 TFLOP/s", "flops_per_s") == pytest.approx(989.5e12)
    assert parse("1979 TOP/s", "flops_per_s") == pytest.approx(1979e12)
    assert parse("2 us", "seconds") == pytest.approx(2e-6)
    assert parse("3.5 USD/h", "usd_per_hour") == pytest.approx(3.5)


@pytest.mark.parametrize("text,message", [("4.8 TB", "wrong unit"), ("fast", "cannot read"), ("-1 GB/s", "greater than zero"),
                                          ("0 GB/s", "greater than zero"), ("nan GB/s", "not a finite")])
def test_units_errors_name_the_field(text, message):
    with pytest.raises(UnitError, match=f"memory.bandwidth: .*{message}"):
        parse(text, "bytes_per_s", "memory.bandwidth")


def _preset_dict(name="h200-sxm"):
    return yaml.safe_load((hardware.PRESETS_DIR / f"{name}.yaml").read_text())


def _write(tmp_path, data):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_negative_l2_cache_is_named(tmp_path):
    """The L2 size (memory.l2_cache, optional) is read through the field table: a negative one is a
    one-line SpecError naming the field and the value; left out, the spec has none (0)."""
    data = _preset_dict()
    data["memory"]["l2_cache"] = "-60 MiB [ds]"
    with pytest.raises(SpecError, match=r"memory\.l2_cache: '-60 MiB' must be greater than zero"):
        Hardware.from_yaml(_write(tmp_path, data))
    del data["memory"]["l2_cache"]
    assert Hardware.from_yaml(_write(tmp_path, data)).l2_cache_bytes == 0.0


def test_missing_field_is_named(tmp_path):
    data = _preset_dict()
    del data["memory"]["bandwidth"]
    with pytest.raises(SpecError, match="missing field 'memory.bandwidth'"):
        Hardware.from_yaml(_write(tmp_path, data))


@pytest.mark.parametrize("value,message", [("-4.8 TB/s [ds]", "greater than zero"), ("0 TB/s [ds]", "greater than zero"),
                                           ("nan TB/s [ds]", "finite"), ("4.8 TB [ds]", "wrong unit"),
                                           ("4.8 TB/s", "needs a source tag"), ("4.8 TB/s [nope]", "not listed")])
def test_bad_value_is_named(tmp_path, value, message):
    data = _preset_dict()
    data["memory"]["bandwidth"] = value
    with pytest.raises(SpecError, match=f"memory.bandwidth.*{message}"):
        Hardware.from_yaml(_write(tmp_path, data))


def test_an_unknown_architecture_is_named(tmp_path):
    """The architecture picks per-architecture kernel tables (Engine.fp8_gemm_tiles_hopper): an
    unknown one is a one-line SpecError naming the field, the value and the allowed ones; the
    presets that name one read back with it."""
    data = _preset_dict()
    data["architecture"] = "hoper"
    with pytest.raises(SpecError, match=r"architecture: 'hoper' is not one of \('volta'"):
        Hardware.from_yaml(_write(tmp_path, data))
    assert hardware.load("h100-sxm").architecture == "hopper" and hardware.load("xeon-8480").architecture == ""


def test_a_bad_attention_kernel_parameter_is_named(tmp_path):
    data = _preset_dict("h200-sxm-calibrated")
    data["calibration"]["attention_kernels"]["vllm-prefill"]["unit_speedup"] = "-2 [s21]"
    with pytest.raises(SpecError, match=r"attention_kernels\.vllm-prefill\.unit_speedup: '-2' must be a number"):
        Hardware.from_yaml(_write(tmp_path, data))


@pytest.mark.parametrize("path, value, message", [
    (("attention_kernels", "vllm-decode", "unit_head_dim"), "-1 ns [s24]",
     r"attention_kernels\.vllm-decode\.unit_head_dim: '-1 ns' must be greater than zero"),
    (("custom_allreduce_engine_two_shot_peer_latency", "trtllm"), "-0.5 us [s16]",
     r"custom_allreduce_engine_two_shot_peer_latency\.trtllm: '-0.5 us' must be greater than zero"),
    (("attention_kernels", "trtllm-decode", "split_combine"), "-0.2 us [s29]",
     r"attention_kernels\.trtllm-decode\.split_combine: '-0.2 us' must be greater than zero"),
    (("attention_kernels", "trtllm-decode", "split_block_bandwidth"), "-45 GB/s [s29]",
     r"attention_kernels\.trtllm-decode\.split_block_bandwidth: '-45 GB/s' must be greater than zero"),
    (("attention_kernels", "trtllm-decode", "l2_bandwidth"), "-4 TB/s [s29]",
     r"attention_kernels\.trtllm-decode\.l2_bandwidth: '-4 TB/s' must be greater than zero"),
])
def test_a_negative_head_dim_or_two_shot_term_is_named(tmp_path, path, value, message):
    """Fitted terms added to the calibration (a decode unit's time per head-dim element, an
    engine's two-shot barrier per peer, a split kernel's combine time per block and block stream
    rate) are read through the field table: a negative one is a one-line SpecError naming the
    field and the value."""
    data = _preset_dict("h200-sxm-calibrated")
    table = data["calibration"]
    for key in path[:-1]:
        table = table[key]
    table[path[-1]] = value
    with pytest.raises(SpecError, match=message):
        Hardware.from_yaml(_write(tmp_path, data))


def test_a_work_units_time_grows_with_the_head_dim_by_its_fitted_term():
    """attention_kernel(family, head_dim): unit_s plus unit_head_dim_s per head-dim element; a family
    without the term (or a call without a head dim) keeps unit_s alone."""
    from hardware.spec import Calibration

    kernels = {"vllm-decode": {"unit_s": 2e-6, "unit_head_dim_s": 1e-8}, "sglang-decode": {"unit_s": 2e-6}}
    cal = Calibration(matmul_flops_per_s={"bf16": 1e15}, memory_bytes_per_s=3e12, kernel_overhead_s=2e-6,
                      attention_kernels=kernels)
    assert cal.attention_kernel("vllm-decode", 128.0)[3] == pytest.approx(2e-6 + 128 * 1e-8)
    assert cal.attention_kernel("vllm-decode", 256.0)[3] == pytest.approx(2e-6 + 256 * 1e-8)
    assert cal.attention_kernel("vllm-decode")[3] == 2e-6
    assert cal.attention_kernel("sglang-decode", 256.0)[3] == 2e-6


def test_a_calibration_count_past_its_range_is_named(tmp_path):
    """A count above its table limit (link_nvls is 0 or 1) is a one-line SpecError, as one below it is."""
    data = _preset_dict("h200-sxm-calibrated")
    data["calibration"]["link_nvls"] = "2 [s21]"
    with pytest.raises(SpecError, match=r"calibration.link_nvls: 2 must be a whole number from 0 to 1"):
        Hardware.from_yaml(_write(tmp_path, data))


def test_unknown_kind_and_dtype(tmp_path):
    data = _preset_dict()
    data["kind"] = "fpga"
    with pytest.raises(SpecError, match="kind: 'fpga'"):
        Hardware.from_yaml(_write(tmp_path, data))
    data = _preset_dict()
    data["compute"]["fp7"] = "1 TFLOP/s [ds]"
    with pytest.raises(SpecError, match="compute.fp7: unknown dtype"):
        Hardware.from_yaml(_write(tmp_path, data))


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="unknown preset 'h900'"):
        hardware.load("h900")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        hardware.load(str(bad))


def test_frozen_and_fallback_rates():
    hw = hardware.load("a100-80gb-sxm")
    with pytest.raises(Exception):
        hw.hbm_bytes_per_s = 1.0
    # A100 has no fp8 tensor cores: fp8 runs at the int8 rate, per the fallback order
    assert hw.peak_flops_per_s("fp8") == hw.flops_per_s["int8"]
    assert math.isfinite(hw.peak_flops_per_s("int4"))
