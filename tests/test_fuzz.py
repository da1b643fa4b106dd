"""A schema-driven fuzz test of every entry point (issue 16): each CLI command and the public Python API
get seeded mutations of one input at a time, drawn from that input's schema (its documented range,
unit, choices or file kind). It fails on

- a traceback (an exception escaping `perfmodel`'s main, or an API error that is not a ValueError),
- NaN or inf in what a command prints or a function returns,
- a hang (any single input running past HANG_S seconds),
- a silent accept: a value outside the documented range that does not give exit code 2 (CLI) or a
  ValueError (API); and every CLI error must be one line.

Seeded and bounded: FUZZ_INPUTS inputs (at least 500) in well under two minutes on two cores;
FUZZ_SEED / FUZZ_INPUTS in the environment replay or widen a run.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

SEED = int(os.environ.get("FUZZ_SEED", "16"))
INPUTS = int(os.environ.get("FUZZ_INPUTS", "2000"))
HANG_S = 20.0
NONFINITE = re.compile(r"(?<![A-Za-z_])(nan|[-+]?inf(inity)?)(?![A-Za-z_])", re.IGNORECASE)


# -- the schema: kinds of input and their mutations ---------------------------------------------
@dataclass
class Whole:
    low: int
    high: int


@dataclass
class Real:
    low: float
    high: float
    low_open: bool = False


@dataclass
class Quantity:
    dimension: str
    valid: str


@dataclass
class Choice:
    options: tuple


@dataclass
class NumList:
    low: float
    high: float
    whole: bool = True
    valid: str = "1,2"


@dataclass
class Text:
    """An API argument given as text (a form field): mutated like a CLI value of `spec`; a blank
    optional field means "not given" (the default), which is valid."""
    spec: object
    optional: bool = False


@dataclass
class InFile:
    kind: str  # model | hardware | sweep | csv-bits | csv-cases | csv-curves | csv-importance
    valid: str


@dataclass
class OutFile:
    suffix: str = ".csv"


GARBAGE = ["nan", "inf", "-inf", "1e400", "٣", "1,5", "", " ", "abc", "10**10**10", "0x10", "1_0", "--", "1e",
           "١٢", "9" * 400]


def whole_mutations(s: Whole, rng) -> tuple[str, bool]:
    bad = [str(s.low - 1), str(s.high + 1), str(s.low) + ".5", str(-abs(s.high)), str(10**30)] + GARBAGE
    good = [str(s.low), str(min(s.high, s.low + rng.randint(0, 7)))]
    return _pick(rng, bad, good)


def real_mutations(s: Real, rng) -> tuple[str, bool]:
    bad = [repr(s.high * 1.5 + 1), "-1e-9" if s.low >= 0 else repr(s.low * 2 - 1)] + GARBAGE
    if s.low_open:
        bad.append(repr(float(s.low)))
    mid = s.low + (s.high - s.low) * rng.uniform(0.01, 0.2) if math.isfinite(s.high) else s.low + rng.uniform(0.1, 10)
    return _pick(rng, bad, [repr(mid)])


def quantity_mutations(s: Quantity, rng) -> tuple[str, bool]:
    number = s.valid.split()[0]
    bad = [number, number.replace(".", ",") + " " + s.valid.split()[1] if "." in number else f"4,8 {s.valid.split()[1]}",
           f"10**10**10 {s.valid.split()[1]}", f"1e400 {s.valid.split()[1]}", f"nan {s.valid.split()[1]}",
           f"-1 {s.valid.split()[1]}", f"0 {s.valid.split()[1]}", "5 kg", "", "1e30 EB"]
    return _pick(rng, bad, [s.valid])


def _pick(rng, bad, good, p_bad=0.75):
    return (rng.choice(bad), False) if rng.random() < p_bad else (rng.choice(good), True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Input documents: valid ones and every malformed kind the issue lists."""
    import hardware

    d = tmp_path_factory.mktemp("fuzz")
    (d / "dir").mkdir()
    preset = (hardware.PRESETS_DIR / "l4.yaml").read_text()
    config = json.loads((Path(__file__).parents[1] / "workloads" / "configs" / "deepseek-v3.json").read_text()) \
        if (Path(__file__).parents[1] / "workloads" / "configs" / "deepseek-v3.json").exists() else None
    out = {"dir": d / "dir", "missing": d / "missing.txt", "missing_dir": d / "no" / "x.csv",
           "long": d / ("a" * 300 + ".csv"), "binary": d / "bin.dat", "empty": d / "empty.csv"}
    out["binary"].write_bytes(b"\x00\x01\x02\xff" * 100)
    out["empty"].write_text("")
    docs = {
        "list.json": "[1, 2]", "null.json": "null", "number.json": "3", "string.json": '"llama"',
        "mt_list.json": '{"model_type": ["llama"]}', "deep.json": "[" * 5000 + "]" * 5000,
        "bigint.json": '{"model_type":"llama","hidden_size":%s,"num_attention_heads":32,"num_hidden_layers":2,'
                       '"intermediate_size":10,"vocab_size":10}' % ("9" * 400),
        "nest.yaml": "a: " + "[" * 3000 + "]" * 3000,
        "laughs.yaml": "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
            f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
        "bare.yaml": preset.replace(re.search(r"capacity: ([^\[]*)", preset).group(1), "24000000000 ", 1),
        "comma.yaml": re.sub(r"bandwidth: (\d+)\.?(\d*) ", r"bandwidth: \1,5 ", preset, count=1),
        "tower.yaml": re.sub(r"bandwidth: [^\[]*", "bandwidth: 10**10**10 B/s ", preset, count=1),
        "half_devices.yaml": preset.replace("devices: 1 [", "devices: 0.5 [", 1),
        "ok_spec.yaml": preset,
        "bad_cases.csv": "kind,m,n,k,w_bits,group\nmatmul_wo,1,64,64,64,0\n",
        "short_kv.csv": "kind,phase,batch,heads,kv_heads,q_len,kv_len,head_dim,dtype\n"
                        "attention,prefill,1,32,8,128,64,128,bf16\n",
        "half_layers.csv": "kind,model,layers,phase,batch,q_len,kv_len,dtype\nmodel_step,llama-3-8b,2.5,decode,1,1,64,bf16\n",
        "ok_cases.csv": "kind,m,n,k,dtype,measured_s\nmatmul,16,256,256,bf16,1e-5\n",
        "nan_sens.csv": "params,coef\n100,nan\n100,1\n", "neg_sens.csv": "params,coef,rmin\n100,1,-5\n",
        "huge_sens.csv": "params,coef\n100,1e300\n100,1\n", "ok_sens.csv": "params,coef\n1000,1\n2000,3\n500,0.5\n",
        "zero_imp.csv": "importance\n0\n0\n", "ok_imp.csv": "importance\n1\n2\n3\n",
        "grid_spec.yaml": yaml.safe_dump({"axes": {"model": ["qwen3-0.6b"], "hardware": ["l4"], "batch": [1, 4]}}),
    }
    if config is not None:
        docs["dense_over.json"] = json.dumps({**config, "first_k_dense_replace": config["num_hidden_layers"] + 5})
    for name, text in docs.items():
        (d / name).write_text(text)
        out[name] = d / name
    return out


BAD_PATHS = ("dir", "missing", "missing_dir", "long", "binary", "empty")
BAD_DOCS = {
    "model": ("list.json", "null.json", "number.json", "string.json", "mt_list.json", "deep.json", "bigint.json",
              "dense_over.json"),
    "hardware": ("nest.yaml", "laughs.yaml", "bare.yaml", "comma.yaml", "tower.yaml", "half_devices.yaml"),
    "sweep": ("nest.yaml", "laughs.yaml", "list.json"),
    "csv-cases": ("bad_cases.csv", "short_kv.csv", "half_layers.csv"),
    "csv-bits": ("nan_sens.csv", "neg_sens.csv", "huge_sens.csv"),
    "csv-importance": ("zero_imp.csv", "nan_sens.csv"),
}


def in_file_mutations(s: InFile, rng, files) -> tuple[str, bool]:
    bad = [str(files[k]) for k in BAD_PATHS] + [str(files[k]) for k in BAD_DOCS.get(s.kind, ()) if k in files]
    good = [s.valid if s.valid in ("h200-sxm", "l4", "qwen3-0.6b", "llama-3-8b", "t4") else str(files[s.valid])]
    return _pick(rng, bad, good)


def out_file_mutations(s: OutFile, rng, files, tmp: Path) -> tuple[str, bool]:
    bad = [str(files["dir"]), str(files["missing_dir"]), "/dev/full", "", str(files["long"]), "/proc/fuzz" + s.suffix]
    return _pick(rng, bad, [str(tmp / f"out{rng.randint(0, 10**6)}{s.suffix}")])


# -- the CLI, command by command: a cheap valid base and a schema per flag ----------------------
SC = {"--batch": Whole(1, 10**7), "--prompt": Whole(1, 10**9), "--gen": Whole(1, 10**9), "--w-bits": Whole(1, 32),
      "--a-bits": Whole(1, 32), "--kv-bits": Whole(1, 32), "--tp": Whole(1, 4096), "--samples": Whole(1, 10**6),
      "--sparse-budget": Whole(0, 10**9)}


@dataclass
class Command:
    base: list
    flags: dict = field(default_factory=dict)
    weight: int = 2


def commands() -> dict[str, Command]:
    plan = {"--prompt": Whole(1, 10**9), "--gen": Whole(1, 10**9), "--samples": Whole(1, 10**6),
            "--max-ttft": Real(0, 86400, True), "--max-tpot": Real(0, 86400, True), "--a-bits": Whole(1, 32),
            "--max-batch": Whole(1, 100_000), "--tp": NumList(1, 4096, valid="1"), "--w-bits": NumList(1, 32, valid="16"),
            "--kv-bits": NumList(1, 32, valid="16"), "--price-basis": Choice(("cloud", "purchase-3y")),
            "--model": InFile("model", "qwen3-0.6b")}
    small_plan = ["--model", "qwen3-0.6b", "--hardware", "l4", "--max-batch", "8", "--tp", "1", "--w-bits", "16",
                  "--kv-bits", "16", "--no-progress"]
    return {
        "predict": Command(["predict", "--model", "llama-3-8b", "--hardware", "h200-sxm"],
                           {**SC, "--model": InFile("model", "llama-3-8b"), "--hardware": InFile("hardware", "ok_spec.yaml")},
                           weight=6),
        "predict-json": Command(["predict", "--json", "--model", "qwen3-0.6b", "--hardware", "l4"], SC, weight=2),
        "hardware-show": Command(["hardware", "show", "t4"], {0: InFile("hardware", "t4")}, weight=1),
        "sweep": Command(["sweep", "--grid", "model=qwen3-0.6b", "--grid", "hardware=l4", "--grid", "batch=1,8",
                          "--grid", "prompt=512", "--grid", "w_bits=16", "--grid", "kv_bits=16", "--grid", "tp=1",
                          "--no-progress"],
                         {"--random": Whole(1, 10**9), "--seed": Whole(0, 2**63 - 1), "--max-ttft": Real(0, 86400, True),
                          "--max-tpot": Real(0, 86400, True), "--max-usd-per-hour": Real(0, 1e9, True),
                          "--top": Whole(1, 10**6), "--chunk-rows": Whole(1, 10**7), "-o": OutFile(".csv"),
                          "--plot": OutFile(".png")}, weight=4),
        "sweep-spec": Command(["sweep", "SPEC", "--no-progress"], {1: InFile("sweep", "grid_spec.yaml")}, weight=2),
        "recommend": Command(["recommend", "--rate", "1000"] + small_plan,
                             {**plan, "--rate": Real(0, 1e12, True), "--top": Whole(1, 10_000)}, weight=3),
        "best-batch": Command(["best-batch"] + small_plan, plan, weight=3),
        "kv-capacity": Command(["solve", "kv", "capacity", "--context", "4096", "--model", "llama-3-8b"],
                               {"--context": Whole(1, 10**9), "--kv-bits": Whole(1, 32), "--w-bits": Whole(1, 32),
                                "--tp": Whole(1, 4096), "--hbm-budget": Quantity("bytes", "40 GB")}, weight=3),
        "kv-serve": Command(["solve", "kv", "serve"],
                            {"--w-bits": Whole(1, 32), "--kv-bits": Whole(1, 32), "--batch": Whole(1, 10**7),
                             "--context": NumList(1, 10**9, valid="4096"), "--tp": NumList(1, 4096, valid="1,2")}, weight=3),
        "kv-setting": Command(["solve", "kv", "setting", "--context", "4096", "--latency", "20 ms"],
                              {"--context": Whole(1, 10**9), "--users": Whole(1, 10**7), "--latency": Quantity("seconds", "20 ms"),
                               "--memory": Quantity("bytes", "40 GB"), "--top": Whole(1, 10**6), "--w-bits": Whole(1, 32),
                               "--weights": Choice(("kv_bits=0.5", "evict=2"))}, weight=3),
        "kv-split": Command(["solve", "kv", "split", "--importance", "1,2,3", "--total", "100"],
                            {"--total": Real(0, 1e15, True), "--alpha": Real(0, 100, True), "--lower": Real(0, 1e15),
                             "--step": Whole(1, 10**9), "--importance": InFile("csv-importance", "ok_imp.csv")}, weight=3),
        "tts": Command(["solve", "tts", "--budget", "1e15"],
                       {"--budget": Real(0, 1e30, True), "--prompt": Whole(1, 10**9), "--block-size": Whole(1, 10**6),
                        "--frontier": Whole(1, 10**6), "--samples": NumList(1, 10**6, valid="1,4"),
                        "--plot": OutFile(".png"), "--curves": InFile("csv-curves", "missing")}, weight=3),
        "offload": Command(["solve", "offload", "--model", "opt-6.7b", "--gbs", "8", "--n-batches", "2"],
                           {"--prompt": Whole(1, 10**9), "--gen": Whole(1, 10**9), "--w-bits": Whole(1, 32),
                            "--memory-fraction": Real(0, 1, True), "--gpu-memory": Quantity("bytes", "16 GB"),
                            "--cpu-memory": Quantity("bytes", "200 GB")}, weight=2),
        "flash": Command(["solve", "flash", "--dram-budget", "7 GB"],
                         {"--dram-budget": Quantity("bytes", "7 GB"), "--w-bits": Whole(1, 32),
                          "--active": Real(0, 1, True), "--persistence": Real(0, 1), "--parallel-reads": Real(1, 4096),
                          "--model": InFile("model", "llama-3-8b")}, weight=2),
        "attention-offload": Command(["solve", "attention-offload"],
                                     {"--n-compute": Whole(1, 1024), "--n-memory": Whole(1, 1024), "--alpha": Real(0, 1, True),
                                      "--prompt": Whole(1, 10**9), "--link": Quantity("bytes_per_s", "50 GB/s")}, weight=2),
        "moe-hybrid": Command(["solve", "moe-hybrid"],
                              {"--gpu-weight-fraction": Real(0, 1), "--prompt": Whole(1, 10**9),
                               "--dram": Quantity("bytes", "512 GB"), "--batch": NumList(1, 10**6, valid="1,2")}, weight=2),
        "bits": Command(["solve", "bits", "--sensitivities", "SENS", "--avg-bits", "4"],
                        {"--avg-bits": Real(0, 32, True), "--theta": Real(0, 10, True), "--rmin": Real(0, 32),
                         "--sensitivities": InFile("csv-bits", "ok_sens.csv"), "--out": OutFile(".csv")}, weight=3),
        "serve": Command(["serve", "--model", "qwen3-0.6b", "--hardware", "l4", "--rate", "5", "--requests", "20",
                          "--prompt", "64", "--gen", "8"],
                         {"--rate": Real(0, 1e7, True), "--requests": Whole(1, 10**7), "--prompt": Whole(1, 10**9),
                          "--gen": Whole(1, 10**9), "--seed": Whole(0, 2**32 - 1), "--burst-cv": Real(0, 100, True),
                          "--prefix-fraction": Real(0, 0.999), "--slo-ttft": Quantity("seconds", "500 ms"),
                          "--slo-tpot": Quantity("seconds", "40 ms"), "--tp": Whole(1, 4096),
                          "--max-num-seqs": Whole(1, 65536), "--kv-bits": Whole(1, 32), "--spec-alpha": Real(0, 0.999),
                          "--output": OutFile(".csv"), "--model": InFile("model", "qwen3-0.6b")}, weight=3),
        "plan": Command(["plan", "--model", "qwen3-0.6b", "--hardware", "l4", "--rate", "2", "--slo-ttft", "1 s",
                         "--gpus", "1", "--tps", "1", "--engines", "vllm", "--bits", "16", "--requests", "10",
                         "--prompt", "64", "--gen", "8"],
                        {"--rate": Real(0, 1e7, True), "--gpus": NumList(1, 4096, valid="1"),
                         "--tps": NumList(1, 4096, valid="1"), "--bits": NumList(1, 32, valid="16"),
                         "--requests": Whole(1, 10**7), "--slo-tpot": Quantity("seconds", "1 s"),
                         "--percentile": Choice(("50", "90", "99")), "--output": OutFile(".csv")}, weight=2),
        "validate-predict": Command(["validate", "predict", "CASES", "-o", "OUT"],
                                    {2: InFile("csv-cases", "ok_cases.csv"), "-o": OutFile(".csv")}, weight=3),
    }


def _argv(cmd: Command, key, value: str, files, tmp: Path) -> list[str]:
    argv = [str(files["grid_spec.yaml"]) if a == "SPEC" else str(files["ok_sens.csv"]) if a == "SENS"
            else str(files["ok_cases.csv"]) if a == "CASES" else str(tmp / "cases_out.csv") if a == "OUT" else a
            for a in cmd.base]
    if isinstance(key, int):
        argv[key] = value
    elif key in argv:
        argv[argv.index(key) + 1] = value
    else:
        argv += [key, value]
    return argv


@contextlib.contextmanager
def deadline(seconds: float, what: str):
    def expire(signum, frame):
        raise TimeoutError(f"hang: {what} ran past {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def mutate(spec, rng, files, tmp) -> tuple[str, bool]:
    if isinstance(spec, Whole):
        return whole_mutations(spec, rng)
    if isinstance(spec, Real):
        return real_mutations(spec, rng)
    if isinstance(spec, Quantity):
        return quantity_mutations(spec, rng)
    if isinstance(spec, Choice):
        return _pick(rng, ["bogus", "", "kv_bits=nan", "kv_bits=-1", "x=1"], list(spec.options))
    if isinstance(spec, NumList):
        bad = ["", ",", f"{spec.high * 2 + 1:g}", f"{spec.low - 1:g}", "nan", "1,x", "٣", "1.5" if spec.whole else "inf"]
        return _pick(rng, bad, [spec.valid])
    if isinstance(spec, InFile):
        return in_file_mutations(spec, rng, files)
    return out_file_mutations(spec, rng, files, tmp)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    from app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), deadline(HANG_S, " ".join(argv)[:200]):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


# -- the public API: functions with a schema per argument ----------------------------------------
def api_cases():
    """(name, call(value) -> result, argument schema, documented range) for the Python API."""
    import hardware
    import perfmodel
    import workloads
    from hardware import units
    from perfmodel import longctx
    from planning import recommend, sweep
    from solvers import attention_offload, flash, kv, moe_hybrid

    h200, l4, h100, h20 = (hardware.load(n) for n in ("h200-sxm", "l4", "h100-sxm", "h20"))
    llama, small, mixtral = (workloads.load(n) for n in ("llama-3-8b", "qwen3-0.6b", "mixtral-8x7b"))
    sc_fields = workloads.scenario.RANGES

    def scenario_call(name):
        return lambda v: perfmodel.predict(small, l4, workloads.Scenario(**{name: v}))

    cases = [(f"predict Scenario.{k}", scenario_call(k), Whole(*r) if k not in workloads.scenario.BIT_FIELDS
              else Real(*r)) for k, r in sc_fields.items() if k not in ("prompt", "gen")]
    cases += [
        ("units.parse bytes", lambda v: units.parse(v, "bytes"), Quantity("bytes", "141 GB")),
        ("units.parse bandwidth", lambda v: units.parse(v, "bytes_per_s"), Quantity("bytes_per_s", "4.8 TB/s")),
        ("units.parse seconds", lambda v: units.parse(v, "seconds"), Quantity("seconds", "2 us")),
        ("kv.max_concurrency context", lambda v: kv.max_concurrency(llama, h200, v), Whole(1, 8192)),
        ("kv.max_concurrency kv_bits", lambda v: kv.max_concurrency(llama, h200, 4096, kv_bits=v), Real(1, 32)),
        ("kv.max_context users", lambda v: kv.max_context(llama, h200, v), Whole(1, 10**7)),
        ("kv.split total", lambda v: kv.split_kv_budget([1, 2, 3], v), Real(0, 1e15, True)),
        ("kv.split alpha", lambda v: kv.split_kv_budget([1, 2, 3], 100, alpha=v), Real(0, 100, True)),
        ("kv.split cvxpy total", lambda v: kv.split_kv_budget([1, 2, 3], v, method="cvxpy"), Real(0, 1e15, True)),
        ("kv.setting weight", lambda v: kv.cheapest_kv_setting(llama, h200, 4096, latency_target_s=0.02,
                                                               weights={"kv_bits": v}), Real(0, 1e6)),
        ("longctx.analyze w_bits", lambda v: longctx.analyze(llama, h200, 4096, w_bits=v).to_frame(), Real(1, 32)),
        ("longctx.analyze tp", lambda v: longctx.analyze(llama, h200, 4096, tp=v).to_frame(), Choice((1, 2, 4, 8))),
        ("flash.plan_flash dram", lambda v: flash.plan_flash(workloads.load("opt-6.7b"), hardware.load("m1-max"), v),
         Real(0, 1e18, True)),
        ("attention_offload alpha", lambda v: attention_offload.attention_offload(
            workloads.load("llama-3.1-70b"), h100, h20, alpha=v).to_frame(), Real(0, 1, True)),
        ("attention_offload n_memory", lambda v: attention_offload.attention_offload(
            workloads.load("llama-3.1-70b"), h100, h20, n_memory=v).to_frame(), Whole(1, 10**7)),
        ("moe_hybrid fraction", lambda v: moe_hybrid.moe_hybrid_bound(mixtral, h100, gpu_weight_fraction=v).to_frame(),
         Real(0, 1)),
        ("recommend.cheapest top", lambda v: recommend.cheapest(small, 1000, ["l4"], top=v, tp=(1,), w_bits=(16,),
                                                                kv_bits=(16,), batch={"start": 1, "stop": 8, "step": 1}
                                                                ).to_frame(), Whole(1, 10_000)),
        ("sweep.random n", lambda v: sweep.random(v, model=["qwen3-0.6b"], hardware=["l4"], batch=[1, 2, 4]),
         Whole(1, 3)),
        ("sweep.grid batch stop", lambda v: sweep.grid(model=["qwen3-0.6b"], hardware=["l4"],
                                                       batch={"start": 1, "stop": v, "num": 4}), Real(1, 10**7)),
        ("perfmodel.predict breakdown i", lambda v: perfmodel.predict(small, l4, workloads.Scenario(batch=[1, 2])
                                                                      ).breakdown("decode", v), Whole(0, 1)),
        ("app spec form node.devices", lambda v: _form_spec("node.devices", v), Text(Whole(1, 1024), optional=True)),
        ("app spec form cpu.cores", lambda v: _form_spec("cpu.cores", v), Text(Whole(1, 10**6))),
        ("app spec form memory.capacity", lambda v: _form_spec("memory.capacity", v), Text(Quantity("bytes", "141 GB"))),
        ("app spec form memory.bandwidth", lambda v: _form_spec("memory.bandwidth", v),
         Text(Quantity("bytes_per_s", "4.8 TB/s"))),
        ("app config upload", _upload, Choice(("ok",))),
    ]
    return cases


def _form_spec(path: str, text: str):
    """The planner's custom-spec form with one field typed in; its errors become a ValueError."""
    import hardware
    from app import views

    values = {**views.form_defaults(hardware.load("h200-sxm")), path: text}
    hw, errors = views.build_spec(views.spec_from_form(values), origin="custom spec")
    if hw is None:
        raise ValueError("; ".join(errors.values()))
    return hw.summary()["hbm_capacity_bytes"]


def _upload(kind: str):
    """An uploaded config.json: a valid one ("ok") or one of the malformed documents of the issue."""
    from app import views

    base = '{"model_type":"llama","hidden_size":64,"num_attention_heads":4,"num_hidden_layers":2,' \
           '"intermediate_size":128,"vocab_size":100}'
    text = {"ok": base, "list": "[1, 2]", "null": "null", "deep": "[" * 5000 + "]" * 5000,
            "big": base.replace('"hidden_size":64', '"hidden_size":' + "9" * 400),
            "type": base.replace('"llama"', '["llama"]'), "dense": base[:-1] + ',"first_k_dense_replace":9}'.replace(
                "llama", "llama")}[kind]
    return views.model_from_config_text(text, "upload").param_count()


def api_value(spec, rng) -> tuple[object, bool]:
    if isinstance(spec, Whole):
        bad = [spec.low - 1, spec.high + 1, spec.low + 0.5, math.nan, math.inf, -math.inf, 10**400, True, "3"]
        return _pick(rng, bad, [spec.low, min(spec.high, spec.low + rng.randint(0, 5))])
    if isinstance(spec, Real):
        bad = [spec.high * 1.5 + 1, -1.0 if spec.low >= 0 else spec.low - 1, math.nan, math.inf, -math.inf, 10**400,
               "3"] + ([spec.low] if spec.low_open else [])
        return _pick(rng, bad, [spec.low + (spec.high - spec.low) * rng.uniform(0.001, 0.3) if spec.low_open
                                else spec.low + (spec.high - spec.low) * rng.uniform(0, 0.3)])
    if isinstance(spec, Choice) and spec.options == ("ok",):
        return _pick(rng, ["list", "null", "deep", "big", "type"], ["ok"])
    if isinstance(spec, Choice):
        return _pick(rng, [3, 16, 0, -1, math.nan, 1.5], list(spec.options))
    if isinstance(spec, Text):
        value, valid = mutate(spec.spec, rng, None, None)
        return value, valid or (spec.optional and not value.strip())
    return quantity_mutations(spec, rng)


def finite_result(result) -> str | None:
    """Where a result holds NaN or inf (None when it holds none)."""
    import pandas as pd

    frame = result if isinstance(result, pd.DataFrame) else getattr(result, "to_frame", lambda: None)()
    if isinstance(result, (int, float, np.floating)):
        return None if math.isfinite(result) else repr(result)
    if frame is None:
        values = getattr(result, "columns", None)
        if isinstance(values, dict):
            frame = pd.DataFrame({k: np.ravel(v) for k, v in values.items() if np.ndim(v)})
    if frame is None:
        return None
    numeric = frame.select_dtypes("number")
    bad = ~np.isfinite(numeric.to_numpy(dtype=float))
    # +inf by definition (cost per correct answer at accuracy 0, an unbounded upper limit)
    allowed = [c for c in numeric.columns if c in ("cost_of_pass", "upper")]
    bad[:, [numeric.columns.get_loc(c) for c in allowed]] = False
    if bad.any():
        return f"column {numeric.columns[np.flatnonzero(bad.any(axis=0))[0]]}"
    return None


# -- the test ----------------------------------------------------------------------------------
def test_fuzz_every_entry_point(files, tmp_path):
    rng = random.Random(SEED)
    cli = commands()
    api = api_cases()
    names = [n for n, c in cli.items() for _ in range(c.weight)]
    failures, counts, started = [], {"cli": 0, "api": 0, "invalid": 0}, time.monotonic()
    for i in range(INPUTS):
        if i % 4 == 3:  # a quarter of the inputs go to the Python API
            name, call, spec = rng.choice(api)
            value, valid = api_value(spec, rng)
            counts["api"] += 1
            counts["invalid"] += not valid
            what = f"API {name}({value!r:.60})"
            try:
                with deadline(HANG_S, what):
                    result = call(value)
            except TimeoutError as err:
                failures.append(str(err))
                continue
            except ValueError as err:
                if "\n" in str(err):
                    failures.append(f"{what}: a multi-line error {str(err)[:200]!r}")
                continue
            except Exception as err:  # noqa: BLE001 (any other exception is a traceback for the caller)
                failures.append(f"traceback: {what} raised {type(err).__name__}: {str(err)[:200]}")
                continue
            if not valid:
                failures.append(f"silent accept: {what} returned instead of raising ValueError")
            elif (where := finite_result(result)) is not None:
                failures.append(f"NaN/inf: {what} returned a non-finite value in {where}")
            continue
        cmd_name = rng.choice(names)
        cmd = cli[cmd_name]
        key = rng.choice(list(cmd.flags))
        value, valid = mutate(cmd.flags[key], rng, files, tmp_path)
        argv = _argv(cmd, key, value, files, tmp_path)
        counts["cli"] += 1
        counts["invalid"] += not valid
        what = f"perfmodel {' '.join(argv)[:300]}"
        try:
            code, out, err = run_cli(argv)
        except TimeoutError as err:
            failures.append(str(err))
            continue
        except BaseException as err:  # noqa: BLE001
            failures.append(f"traceback: {what}: {type(err).__name__}: {str(err)[:200]}")
            continue
        if code not in (0, 2):
            failures.append(f"exit {code}: {what}: {err.strip()[:200]}")
        elif code == 2 and (len(err.strip().splitlines()) != 1 or not err.startswith("perfmodel")):
            failures.append(f"not one line: {what}: {err[:300]!r}")
        elif code == 0 and not valid:
            failures.append(f"silent accept: {what} exited 0")
        elif code == 0 and NONFINITE.search(out):
            failures.append(f"NaN/inf: {what} printed {NONFINITE.search(out).group(0)!r}")
    elapsed = time.monotonic() - started
    print(f"fuzz: {INPUTS} inputs ({counts['cli']} CLI, {counts['api']} API, {counts['invalid']} invalid) "
          f"in {elapsed:.1f} s, seed {SEED}")
    assert INPUTS >= 500 or "FUZZ_INPUTS" in os.environ
    assert not failures, f"{len(failures)} of {INPUTS} inputs failed:\n" + "\n".join(failures[:40])
    assert elapsed < 120, f"the fuzz test took {elapsed:.0f} s; it must stay under two minutes"
