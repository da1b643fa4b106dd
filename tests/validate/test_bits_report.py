"""validate/reports/bits/make_report.py: the study's allocation plans, bootstrap interval and verdict
(the real-weight run itself takes minutes and is committed as the report)."""
import numpy as np
import pandas as pd
import pytest

from tests.report_scripts import load_report_script


@pytest.fixture(scope="module")
def report():
    return load_report_script("bits", "make_report")


def _columns(seed=0, layers=3, cols=16, rows=8):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"name": [f"l{l}:{j}" for l in range(layers) for j in range(cols)],
                         "layer": np.repeat([f"l{l}" for l in range(layers)], cols),
                         "column": np.tile(np.arange(cols), layers), "params": float(rows),
                         "coef": np.exp(rng.normal(0, 2, layers * cols)) * np.repeat([1.0, 50.0, 0.02], cols)})


def test_column_plan_within_layers_keeps_every_layer_average(report):
    table = _columns()
    within = report.column_plan(table, 3.0, within_layers=True)
    shared = report.column_plan(table, 3.0, within_layers=False)
    widths = table.assign(w=within["result"].widths).groupby("layer")["w"].mean()
    assert np.allclose(widths, 3.0)
    # one shared budget moves bits to the layer with large coefficients; it can only predict less loss
    assert table.assign(w=shared["result"].widths).groupby("layer")["w"].mean()["l1"] > 3.5
    assert shared["pred_gain"] <= within["pred_gain"] < 1.0
    two_level = report.column_plan(table, np.array([2.0, 4.0, 3.0]), within_layers=True, base_width=3.0)
    assert np.allclose(table.assign(w=two_level["result"].widths).groupby("layer")["w"].mean(), [2.0, 4.0, 3.0])


def test_layer_plan_with_a_cap_never_exceeds_it(report):
    rng = np.random.default_rng(1)
    table = pd.DataFrame({"name": [f"l{i}" for i in range(6)], "layer": [f"l{i}" for i in range(6)],
                          "params": 1000.0, "coef": np.exp(rng.normal(0, 1, 6))})
    widths = np.array(report.LAYER_WIDTHS, dtype=float)
    primary = rng.uniform(0.5, 1.5, (6, 1)) * np.exp2(-2 * widths)[None, :]
    other = rng.uniform(0.5, 1.5, (6, 1)) * np.exp2(-2 * widths)[None, :] * np.arange(1, 7)[:, None]
    cap = float(other[:, report.LAYER_WIDTHS.index(3)].sum())
    plan = report.layer_plan(table, 3.0, primary, [(other, cap)])
    chosen = [report.LAYER_WIDTHS.index(w) for w in plan["result"].widths]
    assert other[np.arange(6), chosen].sum() <= cap * (1 + 1e-9)
    assert plan["pred_gain"] <= 1.0 + 1e-12          # uniform widths meet the cap, so never worse


def test_paired_bootstrap_interval_covers_the_mean_and_shrinks(report):
    rng = np.random.default_rng(2)
    small, large = rng.normal(0.01, 0.05, 50), rng.normal(0.01, 0.05, 5000)
    lo_s, hi_s = report.paired_ci(small)
    lo_l, hi_l = report.paired_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < 0.2 * (hi_s - lo_s)       # about 1/sqrt(100) of the width
    assert lo_l > 0                                   # 5000 draws resolve a +0.01 shift


def test_verdict_separates_clear_noisy_and_lost(report):
    frame = pd.DataFrame([
        {"avg_bits": 3.0, "granularity": "uniform", "variant": "-", "real_gain": np.nan, "cos_gap_ratio": np.nan,
         "cos_gain_ci_low": np.nan},
        {"avg_bits": 3.0, "granularity": "column", "variant": "a", "real_gain": 0.7, "cos_gap_ratio": 0.8,
         "cos_gain_ci_low": 0.01},
        {"avg_bits": 3.0, "granularity": "layer", "variant": "b", "real_gain": 0.99, "cos_gap_ratio": 0.99,
         "cos_gain_ci_low": -0.002},
        {"avg_bits": 3.0, "granularity": "layer", "variant": "c", "real_gain": 0.7, "cos_gap_ratio": 1.5,
         "cos_gain_ci_low": -0.2}])
    text = "\n".join(report._verdict(frame))
    assert "**Beat uniform on both measures:** 3 bits per column (a)." in text
    assert "includes 0):** 3 bits per layer (b)." in text
    assert "**Did not:** 3 bits per layer (c)." in text
