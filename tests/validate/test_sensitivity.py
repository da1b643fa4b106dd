"""Hessian proxies from forward hooks, layer and column losses, and solver-ready coefficients."""
import numpy as np
import pytest
import torch
from torch import nn

from solvers.bits import BitGroups
from validate.quantize import quantize_rtn
from validate.sensitivity import (Hessian, collect_hessians, column_losses, layer_loss, output_sensitivity,
                                 sensitivity_table)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(6, 12), nn.Linear(12, 6)

    def forward(self, x, attention_mask=None):
        return self.down(torch.relu(self.up(x)))


def test_hessian_is_mean_outer_product_of_inputs():
    torch.manual_seed(0)
    model = Tiny()
    xs = [torch.randn(3, 5, 6) for _ in range(4)]
    h = collect_hessians(model, [(x,) for x in xs])
    flat = torch.cat([x.reshape(-1, 6) for x in xs]).double()
    torch.testing.assert_close(h["up"].matrix, flat.T @ flat / flat.shape[0])
    assert h["up"].tokens == 60 and h["down"].matrix.shape == (12, 12)
    hidden = torch.relu(model.up(flat.float())).double()
    torch.testing.assert_close(h["down"].matrix, hidden.T @ hidden / 60, rtol=1e-5, atol=1e-6)


def test_padding_tokens_are_left_out():
    torch.manual_seed(1)
    model = Tiny()
    x = torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    padded = collect_hessians(model, [{"x": x, "attention_mask": mask}])
    kept = x[mask.bool()]
    plain = collect_hessians(model, [(kept,)])
    torch.testing.assert_close(padded["up"].matrix, plain["up"].matrix)
    assert padded["up"].tokens == 5


def test_layer_loss_is_mean_squared_output_error():
    torch.manual_seed(2)
    model = Tiny()
    x = torch.randn(50, 6)
    h = collect_hessians(model, [(x,)])["up"]
    q = quantize_rtn(model.up.weight, 3)
    direct = float((((model.up.weight.detach() - q) @ x.T).double() ** 2).sum(0).mean())
    assert layer_loss(model.up.weight, q, h) == pytest.approx(direct, rel=1e-6)


def test_column_losses_sum_to_layer_loss_when_inputs_are_uncorrelated():
    torch.manual_seed(3)
    w = torch.randn(8, 5, dtype=torch.float64)
    h = Hessian("w", torch.diag(torch.tensor([1.0, 2.0, 0.5, 3.0, 0.0], dtype=torch.float64)), 10)
    q = quantize_rtn(w, 2)
    cols = column_losses(w, q, h)
    assert cols.sum() == pytest.approx(layer_loss(w, q, h), rel=1e-12)
    assert cols[4] == 0.0
    gptq = column_losses(w, q, Hessian("w", h.matrix + torch.eye(5, dtype=torch.float64), 10), kind="gptq")
    assert np.all(gptq > 0)
    with pytest.raises(ValueError, match="kind: 'full'"):
        column_losses(w, q, h, kind="full")


@pytest.mark.parametrize("per", ["column", "layer"])
def test_table_coefficients_reproduce_the_measured_loss(per):
    torch.manual_seed(4)
    model = Tiny()
    h = collect_hessians(model, [(torch.randn(40, 6),)])
    table = sensitivity_table(model, h, avg_bits=3, per=per)
    groups = BitGroups.from_frame(table)
    # the loss model at the calibration width gives back the measured loss, group by group
    np.testing.assert_allclose(groups.loss(np.full(groups.size, 3.0)), table["loss_at"], rtol=1e-12)
    assert len(table) == (6 + 12 if per == "column" else 2)
    assert set(table["layer"]) == {"up", "down"} and (table["params"] > 0).all()
    with pytest.raises(ValueError, match="per: 'row'"):
        sensitivity_table(model, h, 3, per="row")


def test_no_linear_layers_is_an_error():
    with pytest.raises(ValueError, match="no nn.Linear layers matched"):
        collect_hessians(nn.ReLU(), [(torch.zeros(1),)])


def test_output_sensitivity_of_the_last_layer_is_its_layer_loss(tmp_path):
    """With the last Linear alone quantized and the mean squared output error as the distance, the
    end-to-end distortion IS tr(dW H dW^T) (H over the same inputs): an exact identity."""
    torch.manual_seed(5)
    model = Tiny().double()
    x = torch.randn(40, 6, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mse = lambda out, ref: float(((out - ref) ** 2).sum(-1).mean())  # noqa: E731
    table = output_sensitivity(model, ["up", "down"], [2, 4, 8], lambda: model(x), mse)
    assert list(table.columns) == [2.0, 4.0, 8.0] and list(table.index) == ["up", "down"]
    h = collect_hessians(model, [(x,)])
    for bits in (2, 4, 8):
        q = quantize_rtn(model.down.weight, bits)
        assert table.loc["down", float(bits)] == pytest.approx(layer_loss(model.down.weight, q, h["down"]), rel=1e-9)
    assert np.all(np.diff(table.to_numpy(), axis=1) < 0)           # wider is better on these weights
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # weights restored


def test_output_sensitivity_persists_and_resumes(tmp_path):
    torch.manual_seed(6)
    model = Tiny()
    x = torch.randn(10, 6)
    calls = [0]

    def run():
        calls[0] += 1
        return model(x)

    dist = lambda out, ref: float((out - ref).abs().mean())  # noqa: E731
    path = tmp_path / "sens.csv"
    first = output_sensitivity(model, ["up"], [2, 3], run, dist, path=path)
    assert calls[0] == 3 and len(path.read_text().splitlines()) == 3      # reference + 2 rows, header + 2 lines
    calls[0] = 0
    again = output_sensitivity(model, ["up", "down"], [2, 3], run, dist, path=path)
    assert calls[0] == 3                                                  # reference + only the 2 new pairs
    assert again.loc["up"].tolist() == first.loc["up"].tolist()
    calls[0] = 0
    resumed = output_sensitivity(model, ["up", "down"], [2, 3], run, dist, path=path)
    assert calls[0] == 0 and resumed.equals(again)                       # fully resumed: no forward pass
    with pytest.raises(ValueError, match="names: 'nope' is not a Linear layer"):
        output_sensitivity(model, ["nope"], [2], run, dist)
    with pytest.raises(ValueError, match="distance: nan for layer 'down' at 2 bits is not finite"):
        output_sensitivity(model, ["down"], [2], run, lambda out, ref: float("nan"))

