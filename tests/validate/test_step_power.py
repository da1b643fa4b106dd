"""measure_step_power.py: the CPU smoke run records every step (time, no power), resumes, and the scorer
prices steps with perfmodel and says when there is no power to score."""
import csv
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "validate/reports/power/measure_step_power.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


def test_smoke_run_resumes_and_scores(tmp_path):
    assert run("--out", str(tmp_path), "--quick").returncode == 0
    rows = list(csv.DictReader((tmp_path / "steps_power.csv").open()))
    assert [r["phase"] for r in rows] == ["decode", "prefill"] and all(r["status"] == "ok" for r in rows)
    assert run("--out", str(tmp_path), "--quick").returncode == 0  # resume: nothing new
    assert len(list(csv.DictReader((tmp_path / "steps_power.csv").open()))) == 2
    no_power = run("--score", str(tmp_path))
    assert no_power.returncode == 2 and "no step with a power reading" in no_power.stderr
    for r in rows:  # a board drawing 300 W: the scorer's measured energy is power x time
        r["power_w"], r["energy_j"] = "300", str(300 * float(r["step_s"]))
    with (tmp_path / "steps_power.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert run("--score", str(tmp_path)).returncode == 0
    scored = pd.read_csv(tmp_path / "steps_scored.csv")
    # steps_scored.csv keeps 6 significant digits
    assert scored["measured_energy_j"].to_numpy() == pytest.approx(300 * scored["step_s"].to_numpy(), rel=1e-5)
    assert (scored["predicted_s"] > 0).all() and (scored["predicted_energy_j"] > 0).all()


@pytest.mark.parametrize("args,field", [(["--out", "x", "--seconds", "0"], "--seconds"),
                                        (["--out", "x", "--layers", "0"], "--layers"), ([], "--out")])
def test_bad_input_is_one_line(args, field):
    res = run(*args)
    assert res.returncode == 2 and field in res.stderr and len(res.stderr.strip().splitlines()) == 1
