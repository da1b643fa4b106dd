"""Round-to-nearest quantizer with per-column widths (asymmetric integer grid per output row), and fp8."""
import numpy as np
import pytest
import torch
from torch import nn

from solvers.bits_cost import FORMATS
from validate.quantize import levels_of, quantize_fp8, quantize_model, quantize_rtn


def test_levels_follow_baq_rule():
    np.testing.assert_array_equal(levels_of([0, 1, 2, 3.0, 2.5, 8]), [1, 2, 4, 8, 6, 256])
    with pytest.raises(ValueError, match="bits: widths must be finite"):
        levels_of([-1.0])


def test_integer_grid_per_row_contains_zero_and_bounds_the_error():
    torch.manual_seed(0)
    w = torch.randn(32, 10, dtype=torch.float64)
    w[:, 3] = 0.0
    bits = np.array([1, 2, 3, 4, 5, 6, 7, 8, 2, 3])
    q = quantize_rtn(w, bits)
    lo = torch.clamp(w.min(1, keepdim=True).values, max=0)
    hi = torch.clamp(w.max(1, keepdim=True).values, min=0)
    step = (hi - lo) / torch.as_tensor(2.0 ** bits - 1)[None, :]
    # every value is an integer multiple of its step (a zero point exactly on the grid) ...
    k = q / step
    assert torch.allclose(k, torch.round(k), atol=1e-9)
    assert torch.all(q[:, 3] == 0)
    # ... one of the 2^b levels k = -z .. 2^b - 1 - z, z = round(-lo / step): the grid is the row's
    # range shifted by at most half a step ...
    kmin = -torch.round(-lo / step)
    kmax = kmin + torch.as_tensor(2.0 ** bits - 1)[None, :]
    assert torch.all((k >= kmin - 1e-9) & (k <= kmax + 1e-9))
    assert torch.all((kmin * step >= lo - step / 2 - 1e-12) & (kmax * step <= hi + step / 2 + 1e-12))
    # ... and round to nearest: half a step inside the grid's span, one step at its clipped ends
    err = (w - q).abs()
    inside = (w >= kmin * step) & (w <= kmax * step)
    assert torch.all(err[inside] <= step.expand_as(err)[inside] / 2 + 1e-12)
    assert torch.all(err <= step + 1e-12)


def test_rounding_errors_of_a_row_have_no_common_offset():
    """Weights concentrated near 0 on the grid's scale round to 0 itself, not to a shared nonzero
    grid value: the row's mean error stays near 0 (the bias that made MiniLM's FFN-down losses add
    up coherently over columns; quantize.py's docstring)."""
    torch.manual_seed(4)
    w = 0.02 * torch.randn(64, 1024, dtype=torch.float64)
    w[:, 0], w[:, 1] = 1.0, -0.7                 # outliers set the range: step >> bulk spread at 3 bits
    err = (quantize_rtn(w, 3) - w)[:, 2:]
    assert float(err.mean(1).abs().max()) < 0.1 * float(err.std())


def test_error_falls_4x_per_bit():
    """Uniform rounding noise: MSE = step^2 / 12, step halves per bit, so theta is about 2."""
    torch.manual_seed(1)
    w = torch.rand(256, 512, dtype=torch.float64)
    mse = [float(((w - quantize_rtn(w, b)) ** 2).mean()) for b in (4, 5, 6)]
    ratios = np.log2(np.array(mse[:-1]) / np.array(mse[1:]))
    np.testing.assert_allclose(ratios, 2.0, atol=0.1)
    step = 1.0 / 15
    assert mse[0] == pytest.approx(step ** 2 / 12, rel=0.1)


def test_one_level_prunes_and_constant_rows_are_exact():
    w = torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0], [0.0, 0.0, 0.0]])
    q = quantize_rtn(w, [0, 8, 8])
    assert q[0, 0] == 0.0 and torch.equal(q[1, 1:], w[1, 1:]) and torch.equal(q[2], w[2])


def test_fp8_equivalent_width_matches_format_table():
    """FORMATS['fp8'].loss_bits is the RTN width with the same error as e4m3 on Gaussian rows."""
    torch.manual_seed(2)
    w = torch.randn(256, 4096, dtype=torch.float64)
    mse_fp8 = float(((w - quantize_fp8(w)) ** 2).mean())
    widths = np.arange(4, 9)
    mse = np.array([float(((w - quantize_rtn(w, b)) ** 2).mean()) for b in widths])
    equivalent = np.interp(-np.log2(mse_fp8), -np.log2(mse), widths)
    assert equivalent == pytest.approx(FORMATS["fp8"].loss_bits, abs=0.15)


def test_quantize_model_copies_and_checks_names():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    original = model[0].weight.clone()
    q = quantize_model(model, {"0": 2, "2": np.full(16, 3.0)})
    assert torch.equal(model[0].weight, original)
    assert len(torch.unique(q[0].weight[0])) <= 4 and not torch.equal(q[0].weight, original)
    q8 = quantize_model(model, {"2": "fp8"})
    assert not torch.equal(q8[2].weight, model[2].weight)
    with pytest.raises(ValueError, match="bits: 'missing' is not a Linear layer"):
        quantize_model(model, {"missing": 4})
    with pytest.raises(ValueError, match=r"bits: expected one width per column \(8\), got 3"):
        quantize_rtn(model[0].weight, [1, 2, 3])
