"""`perfmodel solve offload | flash | attention-offload | moe-hybrid` end to end."""
import json

import pytest

from app.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_offload_evaluates_flexgens_published_policy(capsys):
    code, out, _ = run(capsys, "solve", "offload", "--hardware", "flexgen-t4", "--gbs", "48", "--n-batches", "3",
                       "--percent", "20", "80", "0", "100", "0", "100", "--json")
    assert code == 0
    row = json.loads(out)
    assert row["gbs"] == 48 and row["wg"] == pytest.approx(0.2)
    assert row["throughput_tok_s"] == pytest.approx(7.32, rel=0.10)
    assert set(row["streams_s"]) == {"prefill", "decode"}


def test_offload_solves_and_prints_a_table(capsys):
    code, out, _ = run(capsys, "solve", "offload", "--model", "mixtral-8x7b", "--hardware", "t4", "--prompt", "64",
                       "--gen", "4", "--gbs", "2,4", "--n-batches", "1,2")
    assert code == 0
    for text in ("optimal", "weights", "KV cache", "experts", "throughput", "peak memory per tier", "h2d"):
        assert text in out


def test_offload_reports_what_is_missing(capsys):
    code, _, err = run(capsys, "solve", "offload", "--model", "llama-3.1-405b", "--hardware", "t4", "--disk", "100 GB")
    assert code == 2 and "does not fit even on disk" in err and "missing" in err


def test_offload_percent_needs_one_block(capsys):
    code, _, err = run(capsys, "solve", "offload", "--percent", "20", "80", "0", "100", "0", "100")
    assert code == 2 and "--percent" in err


def test_offload_rejects_bad_units(capsys):
    code, _, err = run(capsys, "solve", "offload", "--gpu-memory", "16 GHz")
    assert code == 2 and "--gpu-memory" in err


def test_flash_command(capsys):
    code, out, _ = run(capsys, "solve", "flash", "--model", "opt-6.7b", "--hardware", "m1-max", "--dram-budget", "14 GB",
                       "--w-bits", "32", "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["dram_bytes"] <= 14e9 and plan["speedup"] > 1
    code, _, err = run(capsys, "solve", "flash", "--dram-budget", "1 GB")
    assert code == 2 and "below the resident minimum" in err


def test_attention_offload_command(capsys):
    code, out, _ = run(capsys, "solve", "attention-offload", "--n-compute", "2", "--n-memory", "4")
    assert code == 0 and "minimum link" in out and "homogeneous h20" in out


def test_moe_hybrid_command(capsys):
    code, out, _ = run(capsys, "solve", "moe-hybrid", "--batch", "1,16", "--json")
    assert code == 0
    rows = json.loads(out)["rows"]
    assert [r["batch"] for r in rows] == [1, 16] and all(r["bound"] in ("gpu", "pcie", "dram", "cpu") for r in rows)
