"""`perfmodel solve bits`: output, CSV export, budgets, and user errors (exit code 2)."""
import json

import pandas as pd
import pytest

import hardware
from app.cli import main

SENS = pd.DataFrame({"name": ["q", "k", "up", "down"], "layer": ["q", "k", "up", "down"],
                     "params": [16777216, 4194304, 58720256, 58720256], "coef": [1.0, 3.0, 0.2, 0.8],
                     "rows": [4096, 1024, 14336, 4096], "cols": [4096, 4096, 4096, 14336]})


@pytest.fixture
def sens(tmp_path):
    path = tmp_path / "sens.csv"
    SENS.to_csv(path, index=False)
    return path


def test_closed_form_table_and_csv(sens, tmp_path, capsys):
    out = tmp_path / "widths.csv"
    assert main(["solve", "bits", "--sensitivities", str(sens), "--avg-bits", "4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "closed_form: optimal, 4 groups, average 4 bits" in text
    widths = pd.read_csv(out)
    assert list(widths["name"]) == ["q", "k", "up", "down"]
    assert (widths["params"] * widths["width"]).sum() / widths["params"].sum() == pytest.approx(4.0)


def test_json_and_candidates(sens, capsys):
    assert main(["solve", "bits", "--sensitivities", str(sens), "--avg-bits", "4", "--candidates", "2,3,4,8",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "milp" and summary["avg_bits"] <= 4.0 + 1e-9 and summary["bytes"] > 0


def test_greedy_method(sens, capsys):
    assert main(["solve", "bits", "--sensitivities", str(sens), "--avg-bits", "4", "--candidates", "2,3,4,8",
                 "--method", "greedy"]) == 0
    assert capsys.readouterr().out.startswith("greedy: feasible")


def test_infeasible_budget_exits_2(sens, capsys):
    assert main(["solve", "bits", "--sensitivities", str(sens), "--avg-bits", "1", "--rmin", "2"]) == 2
    assert "the smallest feasible avg_bits is 2 bits" in capsys.readouterr().err


def test_latency_needs_hardware_and_missing_file(sens, tmp_path, capsys):
    assert main(["solve", "bits", "--sensitivities", str(sens), "--avg-bits", "4", "--latency-budget", "1 ms"]) == 2
    assert "--latency-budget: needs --hardware" in capsys.readouterr().err
    assert main(["solve", "bits", "--sensitivities", str(tmp_path / "none.csv"), "--avg-bits", "4"]) == 2


@pytest.mark.skipif("h200-sxm" not in hardware.names(), reason="hardware presets not present")
def test_latency_budget_with_formats(sens, capsys):
    assert main(["solve", "bits", "--sensitivities", str(sens), "--hardware", "h200-sxm", "--latency-budget",
                 "40 us", "--candidates", "int4-g128,int8,fp8,bf16", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["latency_s"] <= 40e-6 * (1 + 1e-9)
    assert main(["solve", "bits", "--sensitivities", str(sens), "--hardware", "h200-sxm", "--latency-budget",
                 "1 us", "--rmin", "2"]) == 2
    assert "the smallest feasible latency_s is" in capsys.readouterr().err


def test_layer_scope_keeps_each_layer_average(tmp_path, capsys):
    frame = pd.DataFrame({"name": [f"{l}:{j}" for l in ("q", "down") for j in range(4)],
                          "layer": ["q"] * 4 + ["down"] * 4, "params": 4096.0,
                          "coef": [1.0, 4.0, 16.0, 64.0, 0.5, 0.5, 8.0, 2.0]})
    path, out = tmp_path / "cols.csv", tmp_path / "w.csv"
    frame.to_csv(path, index=False)
    for method in ("milp", "greedy"):
        assert main(["solve", "bits", "--sensitivities", str(path), "--avg-bits", "3", "--scope", "layer",
                     "--candidates", "1,2,3,4,5,6", "--method", method, "--out", str(out)]) == 0
        assert f"within_layers:{method}" in capsys.readouterr().out
        widths = pd.read_csv(out)
        assert widths.groupby("layer")["width"].mean().tolist() == [3.0, 3.0]
    assert main(["solve", "bits", "--sensitivities", str(path), "--memory-budget", "1 MB", "--scope", "layer",
                 "--candidates", "2,4", "--method", "greedy"]) == 2
    assert "--scope: 'layer' takes --avg-bits only" in capsys.readouterr().err
