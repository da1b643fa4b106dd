"""The spec schema table (hardware/fields.py) drives the dataclasses, the reader, the writer, the
planner's form and the range checks: each is held to the table row by row, and the writer still
writes the committed calibrated specs byte for byte."""
import dataclasses
from pathlib import Path

import pytest
import yaml

import hardware
from app import views
from hardware import fields
from hardware.spec import Calibration, Hardware, SpecError, to_yaml_dict

ROOT = Path(__file__).resolve().parents[2]
#: Specs written by the writer (validate calibrate, make_presets), committed with a comment header.
WRITTEN = [hardware.PRESETS_DIR / f"{n}.yaml" for n in hardware.names() if n.endswith("-calibrated")] + [
    ROOT / "validate/reports/h200/h200-sxm-calibrated.yaml",
    ROOT / "validate/reports/aiconfigurator/h200_sxm/h200-sxm-aiconfigurator.yaml"]
NUMERIC = [f for f in fields.HARDWARE if not f.keyed and f.unit not in ("text", "choice")]


def test_the_dataclasses_have_exactly_the_tables_fields():
    assert [f.name for f in dataclasses.fields(Hardware)][:-2] == \
        [f.attr for f in fields.HARDWARE if f.required] + [f.attr for f in fields.HARDWARE if not f.required]
    assert {f.name for f in dataclasses.fields(Hardware)} - {f.attr for f in fields.HARDWARE} == {"calibration", "sources"}
    assert {f.name for f in dataclasses.fields(Calibration)} - {f.attr for f in fields.CALIBRATION} == {"source"}
    required = {f.name for f in dataclasses.fields(Calibration) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING}
    assert required == {f.attr for f in fields.CALIBRATION if f.required}


@pytest.mark.parametrize("path", WRITTEN, ids=lambda p: p.name)
def test_the_writer_writes_the_committed_specs_byte_for_byte(path):
    body = "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("#"))
    assert yaml.safe_dump(to_yaml_dict(Hardware.from_yaml(path)), sort_keys=False) == body


def _changed(hw: Hardware, f: fields.Field):
    """hw with f's value moved inside its range (so a writer that skipped the row would be caught)."""
    value = getattr(hw, f.attr)
    # a count moves to another value inside its limits (a 0-1 flag toggles)
    new = next(v for v in (f.limits[0] + 1, f.limits[0] + 2, f.limits[0]) if v != value and v <= f.limits[1]) \
        if f.unit == "count" else (value or f.range[0] * 1e3) * 1.7
    return dataclasses.replace(hw, **{f.attr: new}), new


# 12 significant digits in files (half a unit of the 12th: 5e-12 relative), 6 in the planner (5e-6)
@pytest.mark.parametrize("style, rel", [("file", 5e-12), ("planner", 5e-6)])
@pytest.mark.parametrize("f", NUMERIC, ids=lambda f: f.key)
def test_every_numeric_row_is_written_and_read_back(f, style, rel):
    hw, new = _changed(hardware.load("h200-sxm"), f)
    doc = yaml.safe_load(yaml.safe_dump(to_yaml_dict(hw, style=style), sort_keys=False))
    node = doc
    for key in f.key.split("."):
        node = node[key]
    assert node.endswith("]")  # tagged with a source
    assert getattr(Hardware.from_dict(doc), f.attr) == pytest.approx(new, rel=rel)


@pytest.mark.parametrize("f", [f for f in fields.CALIBRATION if not f.keyed and f.unit not in ("bands", "kernels")],
                         ids=lambda f: f.key)
def test_every_calibration_row_is_written_and_read_back(f):
    hw = hardware.load("h200-sxm-calibrated")
    cal, new = _changed(hw.calibration, f)
    again = Hardware.from_dict(yaml.safe_load(yaml.safe_dump(to_yaml_dict(dataclasses.replace(hw, calibration=cal)))))
    assert getattr(again.calibration, f.attr) == pytest.approx(new, rel=5e-12)


@pytest.mark.parametrize("f", [f for f in NUMERIC if f.is_si], ids=lambda f: f.key)
def test_range_messages_name_the_field_the_value_and_the_range(f):
    with pytest.raises(SpecError, match=rf"^{f.attr}: .*(out of range; allowed|greater than zero)"):
        dataclasses.replace(hardware.load("h200-sxm"), **{f.attr: f.range[1] * 10})
    doc = yaml.safe_load(yaml.safe_dump(to_yaml_dict(hardware.load("h200-sxm"))))
    parent, leaf = doc, f.key.split(".")
    for key in leaf[:-1]:
        parent = parent.setdefault(key, {})
    parent[leaf[-1]] = f"{f.range[1] * 10:g} {fields.SI_SYMBOLS[f.unit]} [s1]"
    with pytest.raises(SpecError, match=rf"{f.key}: .* is out of range; allowed"):
        Hardware.from_dict(doc)


@pytest.mark.parametrize("f", [f for f in NUMERIC if f.unit == "count"], ids=lambda f: f.key)
def test_counts_outside_their_limits_are_refused(f):
    low, high = f.limits
    with pytest.raises(SpecError, match=rf"{f.attr}: {high + 1} must be a whole number from {low} to {high}"):
        dataclasses.replace(hardware.load("h200-sxm"), **{f.attr: high + 1})


def test_the_form_is_the_rows_with_a_label():
    boxes = {b.path: b for b in views.SPEC_FIELDS}
    labelled = [f for f in fields.HARDWARE if f.form]
    assert set(boxes) == {f"{f.key}.{k}" if f.keyed else f.key for f in labelled
                          for k in (f.choices if f.keyed else [None])}
    for f in labelled:
        if not f.keyed:
            assert (boxes[f.key].label, boxes[f.key].dimension, boxes[f.key].required) == \
                (f.form, f.dimension, f.required)
    assert {p for p, b in boxes.items() if p.startswith("compute.") and b.required} == {"compute.fp32", "compute.bf16"}


def test_a_missing_required_row_is_named():
    for f in NUMERIC:
        if not f.required:
            continue
        doc = yaml.safe_load(yaml.safe_dump(to_yaml_dict(hardware.load("l4"))))
        parent, leaf = doc, f.key.split(".")
        for key in leaf[:-1]:
            parent = parent[key]
        del parent[leaf[-1]]
        with pytest.raises(SpecError, match=f"missing field '{f.key}'"):
            Hardware.from_dict(doc)
