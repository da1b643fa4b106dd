"""One record per case kind (validate/kinds.py): every name a record gives resolves, every column
it names is a column of the case schema, and the suite, the checks, the predictions and the timers
all read the same records."""
import inspect

import pytest

import hardware
from validate import bench, case_checks, cases, kinds, predict_cases


@pytest.mark.parametrize("kind", kinds.RECORDS, ids=lambda k: k.name)
def test_each_record_names_existing_functions(kind):
    predictor = getattr(predict_cases, kind.predict)
    first = next(iter(inspect.signature(predictor).parameters))
    assert first == ("cases" if kind.vectorized else "case")
    if kind.build:
        assert inspect.signature(getattr(bench, kind.build)).parameters.keys() == {"case", "dev"}


@pytest.mark.parametrize("kind", kinds.RECORDS, ids=lambda k: k.name)
def test_each_record_names_only_its_own_columns(kind):
    own = set(kind.columns)
    assert set(kind.counts) | set(kind.choices) <= own
    assert set(kind.shape_key) | set(kind.group_by) | {kind.class_by} - {""} <= own
    assert not kind.graph_where or kind.graph_where[0] in own
    assert own <= set(cases.PARAM_COLUMNS)


def test_the_case_schema_is_the_union_of_the_records():
    used = {"kind", "timing"}.union(*(k.columns for k in kinds.RECORDS))
    assert used == set(cases.PARAM_COLUMNS)
    assert kinds.DTYPES == tuple(predict_cases.BITS)


@pytest.mark.parametrize("cuda", [True, False])
def test_suite_cases_use_their_records(cuda):
    suite = cases.suite(quick=False, cuda=cuda)
    for case in suite:
        record = kinds.of(case)
        assert set(case) - {"kind", "timing"} <= set(record.columns), case
        assert record.build, case  # the suite measures only kinds it can time
        assert (case.get("timing") == "graph") <= record.graph_timed(case)
    if cuda:  # graph-timed kinds appear graph-timed; also_eager kinds appear both ways
        for record in kinds.RECORDS:
            mine = [c for c in suite if c["kind"] == record.name]
            if not mine:
                continue
            timings = {c.get("timing", "") for c in mine}
            assert ("graph" in timings) == record.graph, record.name
            assert ("" in timings) == (not record.graph or record.also_eager), record.name


def test_the_records_drive_checks_and_classes():
    assert case_checks.KINDS == cases.KINDS == predict_cases.KINDS == kinds.NAMES
    assert case_checks.COUNTS["attention"]["heads"] == kinds.BY_NAME["attention"].counts["heads"]
    assert cases.kernel_class({"kind": "copy", "direction": "h2d"}) == "copy_h2d"
    assert cases.kernel_class({"kind": "allreduce", "strategy": ""}) == "allreduce_nccl"
    assert cases.kernel_class({"kind": "model_step", "phase": "decode"}) == "model_step_decode"
    assert cases.kernel_class({"kind": "norm"}) == "norm"
    prefill = dict(kind="attention", phase="prefill", heads=32, kv_heads=8, head_dim=128, q_len=512, kv_len=512)
    assert cases.shape_key(prefill) == "attention|prefill|32|8|128|512"
    assert cases.shape_key(dict(prefill, phase="decode", q_len=1, kv_len=4096)) == "attention|decode|32|8|128|4096"


def test_an_unknown_kind_is_one_line_naming_it():
    with pytest.raises(ValueError, match=r"kind: 'conv2d' is not one of matmul, matmul_wo, attention"):
        predict_cases.predict_case({"kind": "conv2d"}, hardware.load("h200-sxm"))
    with pytest.raises(ValueError, match="allreduce.*not measured by this suite"):
        bench.builder({"kind": "allreduce", "bytes": 1024, "tp": 2})


def test_vectorized_and_scalar_predictions_agree_for_every_kind():
    """predict_many groups cases by their record's group_by and calls the vectorized predictors on
    whole groups; one case at a time gives the same numbers."""
    hw = hardware.load("h200-sxm-calibrated")
    suite = [c for c in cases.suite(quick=True, cuda=True)]
    suite += [dict(kind="allreduce", bytes=2**20, tp=8, strategy="nccl"),
              dict(kind="moe", tokens=16, experts=8, top_k=2, hidden=1024, inter=512, dtype="bf16", timing="graph",
                   engine="torch-compile"),
              dict(kind="act_quant", tokens=16, width=4096, timing="graph", engine="torch-compile")]
    assert {c["kind"] for c in suite} >= set(kinds.NAMES) - {"launch"}
    many = predict_cases.predict_many(suite, hw)
    one = [predict_cases.predict_case(c, hw) for c in suite]
    assert many == pytest.approx(one, rel=1e-12)


def test_a_case_set_predicts_as_each_case_does_under_every_spec_it_is_given():
    """predict_cases.CaseSet groups cases once and keeps each attention group's ops (a fit prices
    the same cases under hundreds of calibrations): under a second spec, and again under the first,
    it gives what each case priced alone gives (TensorRT-LLM decodes included, whose kernel the
    device's SM count picks)."""
    import dataclasses

    suite = [c for c in cases.suite(quick=True, cuda=True)]
    suite += [dict(kind="attention", phase="decode", batch=b, heads=32, kv_heads=8, q_len=1, kv_len=s, head_dim=128,
                   dtype="bf16", timing="graph", engine="trtllm") for b in (1, 64) for s in (100, 8192)]
    first = hardware.load("h200-sxm-calibrated")
    cal = first.calibration
    second = dataclasses.replace(first, calibration=dataclasses.replace(
        cal, attention_kernels={k: {**v, "overhead_s": 2 * v.get("overhead_s", 1e-6)}
                                for k, v in cal.attention_kernels.items()}))
    grouped = predict_cases.CaseSet(suite)
    for hw in (first, second, first):
        assert grouped.predict(hw) == pytest.approx([predict_cases.predict_case(c, hw) for c in suite], rel=1e-12)
    assert not (grouped.predict(first) == pytest.approx(grouped.predict(second), rel=1e-6))
