"""The core CLI: predict (table, --json, --breakdown), hardware list/show, models list; bad input
exits with code 2 and one line naming the field and value."""
import json

import pytest

from app.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_predict_json_has_the_contract_keys(capsys):
    code, out, _ = run(capsys, "predict", "--model", "llama-3-8b", "--hardware", "h200-sxm", "--batch", "8",
                       "--prompt", "2048", "--gen", "256", "--w-bits", "4", "--kv-bits", "8", "--tp", "2", "--json")
    assert code == 0
    data = json.loads(out)
    for key in ("params", "ttft_s", "tpot_s", "e2e_s", "throughput_tok_s", "memory_bytes", "fits"):
        assert key in data
    assert data["params"] == 8_030_261_248
    assert set(data["memory_bytes"]) >= {"weights", "kv", "activations", "total"}
    assert data["fits"] is True and data["ttft_s"] > 0 and data["tpot_s"] > 0


def test_predict_table_and_breakdown(capsys):
    code, out, _ = run(capsys, "predict", "--model", "qwen3-8b", "--hardware", "h200-sxm-calibrated", "--breakdown")
    assert code == 0
    assert "TTFT" in out and "fits: yes" in out and "prefill step, per op" in out and "attention" in out


def test_list_commands(capsys):
    code, out, _ = run(capsys, "hardware", "list")
    assert code == 0 and "h200-sxm" in out and "m2-ultra" in out
    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and "deepseek-v3" in out and "llama-3.1-405b" in out
    code, out, _ = run(capsys, "hardware", "show", "t4")
    assert code == 0 and "sources:" in out


@pytest.mark.parametrize("argv,message", [
    (["--batch", "-3"], "--batch: '-3' must be a whole number from 1 to 10,000,000"),
    (["--model", "llama-9"], "unknown catalog model 'llama-9'"),
    (["--hardware", "h900"], "unknown preset 'h900'"),
    (["--kv-bits", "0"], "--kv-bits: '0' must be a whole number from 1 to 32"),
    (["--model", "gpt2", "--prompt", "2000"], "maximum context"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, "predict", *argv)
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_custom_spec_and_config_files(capsys, tmp_path):
    import hardware
    import workloads

    spec = tmp_path / "gpu.yaml"
    spec.write_text((hardware.PRESETS_DIR / "l4.yaml").read_text().replace("name: l4", "name: my-l4"))
    config = tmp_path / "config.json"
    config.write_text((workloads.CATALOG_DIR / "configs" / "qwen3-0.6b.json").read_text())
    code, out, _ = run(capsys, "predict", "--model", str(config), "--hardware", str(spec), "--json")
    assert code == 0 and json.loads(out)["hardware"] == "my-l4"
    bad = tmp_path / "bad.yaml"
    bad.write_text((hardware.PRESETS_DIR / "l4.yaml").read_text().replace("bandwidth: 300 GB/s", "bandwidth: 300 GB"))
    code, _, err = run(capsys, "predict", "--hardware", str(bad))
    assert code == 2 and "error" in err


def test_missing_optional_dependency_names_the_extra(capsys, monkeypatch):
    import app.cli as cli

    def handler(args):
        raise ModuleNotFoundError("No module named 'cvxpy'", name="cvxpy")

    parser = cli.build_parser()
    args = parser.parse_args(["models", "list"])
    monkeypatch.setattr(cli, "build_parser", lambda: type("P", (), {"parse_args": lambda self, argv: args})())
    monkeypatch.setattr(args, "handler", handler)
    assert cli.main(["models", "list"]) == 2
    assert "pip install 'perfmodel[solvers]'" in capsys.readouterr().err
