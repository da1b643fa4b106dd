"""Board power and energy of whole compiled LLM steps under sustained load: the energy model's held-out test.

    python validate/reports/power/measure_step_power.py --out DIR            # H200 (about 2 minutes)
    python validate/reports/power/measure_step_power.py --out DIR --quick    # CPU smoke test
    python validate/reports/power/measure_step_power.py --score DIR          # predicted vs measured -> DIR/steps_report.md

Each step is measure_engine.py's gpt-fast-style model (validate/engine_model.py, random weights)
compiled as the torch-compile profile runs it and captured in a CUDA graph: decodes of 1-256
sequences over a 2048-token context and prefills of 512 and 2048 tokens. Each graph is replayed back
to back for --seconds; over the second half (the board at its steady clock) NVML's energy counter
gives the power and energy per step and the replay count the time per step under load
(`validate.bench.sustained_power`). Rows go to DIR/steps_power.csv as each step completes; a rerun
skips the steps recorded.

--score prices every step with perfmodel (step_time on the calibrated spec, engine torch-compile)
and its energy with perfmodel.energy (nothing here is fitted: the power model comes from
validate/reports/power/fit_power.py on single kernels), and writes the comparison.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, when run as a script

COLUMNS = ("case_id", "model", "layers", "dtype", "phase", "batch", "q_len", "kv_len", "status", "step_s",
           "power_w", "energy_j", "sm_clock_mhz", "power_source", "error", "device_name")
#: (phase, batch, new tokens, context before the step)
CASES = (("decode", 1, 1, 2048), ("decode", 16, 1, 2048), ("decode", 64, 1, 2048), ("decode", 256, 1, 2048),
         ("prefill", 1, 512, 0), ("prefill", 1, 2048, 0))
QUICK_CASES = (("decode", 1, 1, 64), ("prefill", 1, 32, 0))


def case_id(model: str, layers: int, dtype: str, phase: str, batch: int, tokens: int, past: int) -> str:
    return f"{model}/{layers}/{dtype}/{phase}/{batch}/{tokens}/{past}"


def measure(args) -> int:
    import torch

    from validate import bench
    from validate import engine_model as em
    from validate.reports.engine import measure_engine as me
    from validate.runner import append_record, done_ids, repair

    dev = bench.script_device(args.quick, "measure_step_power")
    if dev is None:
        return 2
    me.setup_env(dev)
    cuda = dev.type == "cuda"
    model = "llama-3-8b-tiny" if args.quick else args.model
    spec = me.model_spec(model, args.layers or (2 if args.quick else 32))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "steps_power.csv"
    repair(path)
    done = done_ids(path)
    cases = QUICK_CASES if args.quick else CASES
    s_max = max(me.s_max_of(dict(phase=p, kv_len=past + t - (1 if p == "decode" else 0))) for p, _, t, past in cases)
    engine = em.build(spec, "bf16", max_batch=1, max_seq=s_max, device=dev,
                      kv_tokens=max(b for _, b, _, _ in cases) * s_max)
    layer = me.CompiledLayer("dynamic") if cuda else em.layer_forward
    env = bench.environment()
    for phase, batch, tokens, past in cases:
        cid = case_id(model, spec.n_layers, "bf16", phase, batch, tokens, past)
        if cid in done:
            continue
        row = dict(case_id=cid, model=model, layers=spec.n_layers, dtype="bf16", phase=phase, batch=batch,
                   q_len=tokens, kv_len=past + tokens, device_name=env["device_name"])
        ids = torch.randint(0, spec.vocab_size, (batch, tokens), device=dev)

        def step(ids=ids, past=past):
            with torch.inference_mode():
                return em.step(engine, ids, past, layer_fn=layer, s_max=s_max)
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                me._warm(step, cuda)
                fn = me.capture(step)[0].replay if cuda else step
            power = bench.sustained_power(lambda i: fn(), args.seconds) if cuda else {}
            if not power or not math.isfinite(power.get("sustained_s", math.nan)):  # CPU: time only
                start = time.perf_counter()
                fn()
                power = {"sustained_s": time.perf_counter() - start, "power_w": math.nan, "energy_j": math.nan,
                         "sm_clock_mhz": "", "power_source": "none"}
            row.update(status="ok", step_s=f"{power['sustained_s']:.9g}", power_w=f"{power['power_w']:.6g}",
                       energy_j=f"{power['energy_j']:.6g}", sm_clock_mhz=power["sm_clock_mhz"],
                       power_source=power["power_source"])
        except Exception as err:  # a failure is data: record it and go on
            row.update(status="failed", error=f"{type(err).__name__}: {err}".replace("\n", " ")[:300])
        append_record(path, row, COLUMNS)
        print(f"{cid}: {row['status']} {float(row.get('step_s') or 'nan') * 1e3:.3f} ms, "
              f"{float(row.get('power_w') or 'nan'):.0f} W ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


def score(data: Path, hardware_name: str) -> int:
    """Predicted vs measured step time, board power and energy per step (module doc)."""
    import numpy as np
    import pandas as pd

    import hardware
    from perfmodel import energy
    from perfmodel.ops import Precision
    from perfmodel.steps import step_time
    from validate.reports.engine.measure_engine import model_spec

    path = data / "steps_power.csv"
    if not path.is_file():
        print(f"measure_step_power: --score: {path} does not exist", file=sys.stderr)
        return 2
    frame = pd.read_csv(path)
    frame = frame[(frame["status"] == "ok") & np.isfinite(frame["power_w"].astype(float))]
    if frame.empty:
        print(f"measure_step_power: --score: {path} has no step with a power reading", file=sys.stderr)
        return 2
    hw = hardware.load(hardware_name)
    pm = energy.power_model(hw)
    p = Precision(16, 16, 16)
    rows = []
    for _, r in frame.iterrows():
        spec = model_spec(r["model"], int(r["layers"]))  # the spec the run built
        seqs, new, past = float(r["batch"]), float(r["q_len"]), float(r["kv_len"] - r["q_len"])
        args = dict(seqs=seqs, new_tokens=new, past=past, p=p, tp=1, logits_tokens=seqs, engine="torch-compile")
        t = float(step_time(spec, hw, **args)["time_s"])
        dyn = float(energy.step_dynamic_energy_j(spec, hw, pm=pm, **args))
        measured_t, measured_w = float(r["step_s"]), float(r["power_w"])
        rows.append({**r.to_dict(), "predicted_s": t, "predicted_power_w": float(energy.board_power_w(t, dyn, pm)),
                     "model_power_at_measured_time_w": float(energy.board_power_w(measured_t, dyn, pm)),
                     "predicted_energy_j": float(energy.capped_phase(t, dyn, pm)[2]),
                     "measured_energy_j": measured_w * measured_t})
    scored = pd.DataFrame(rows)
    scored.to_csv(data / "steps_scored.csv", index=False, float_format="%.6g")
    ape = lambda a, b: np.abs(np.asarray(a) / np.asarray(b) - 1)  # noqa: E731
    e, w, t = (ape(scored["predicted_energy_j"], scored["measured_energy_j"]),
               ape(scored["model_power_at_measured_time_w"], scored["power_w"]), ape(scored["predicted_s"], scored["step_s"]))
    lines = ["# Energy of whole compiled LLM steps under sustained load: predicted vs measured", "",
             f"Measured by `validate/reports/power/measure_step_power.py` on {scored['device_name'].iloc[0]} "
             f"(graph replays back to back; NVML energy counter over the second half). Predicted by perfmodel "
             f"(`step_time` on `{hardware_name}`, engine torch-compile; `perfmodel.energy` with the power model "
             "fitted on single kernels: no step is fitted).", "",
             f"Energy per step APE: median {100 * np.median(e):.1f}%, max {100 * e.max():.1f}% ({len(scored)} steps). "
             f"Power model alone at the measured time: median {100 * np.median(w):.1f}%. Step time under load: median "
             f"{100 * np.median(t):.1f}%.", "",
             "| model | phase | batch | tokens | context | measured | predicted | measured W | predicted W | "
             "model W at measured time | measured J | predicted J | energy ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in scored.iterrows():
        lines.append(f"| {r['model']} ({int(r['layers'])} layers) | {r['phase']} | {int(r['batch'])} | {int(r['q_len'])} | "
                     f"{int(r['kv_len'])} | {1e3 * r['step_s']:.3f} ms | {1e3 * r['predicted_s']:.3f} ms | "
                     f"{r['power_w']:.0f} | {r['predicted_power_w']:.0f} | {r['model_power_at_measured_time_w']:.0f} | "
                     f"{r['measured_energy_j']:.4g} | {r['predicted_energy_j']:.4g} | "
                     f"{r['predicted_energy_j'] / r['measured_energy_j']:.3f} |")
    text = "\n".join(lines) + "\n"
    (data / "steps_report.md").write_text(text)
    print(text)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="directory for steps_power.csv (measure)")
    p.add_argument("--score", help="directory holding steps_power.csv: write the comparison there")
    p.add_argument("--hardware", default="h200-sxm-calibrated")
    p.add_argument("--model", default="llama-3-8b")
    p.add_argument("--layers", type=int, default=None, help="default: the model's own (2 with --quick)")
    p.add_argument("--seconds", type=float, default=2.0, help="sustained replay per step (the second half is read)")
    p.add_argument("--quick", action="store_true", help="CPU smoke test: tiny model, no power")
    args = p.parse_args(argv)
    if args.seconds <= 0 or not math.isfinite(args.seconds):
        print(f"measure_step_power: --seconds: {args.seconds} must be a positive number", file=sys.stderr)
        return 2
    if args.layers is not None and args.layers < 1:
        print(f"measure_step_power: --layers: {args.layers} must be at least 1", file=sys.stderr)
        return 2
    if bool(args.out) == bool(args.score):
        print("measure_step_power: give --out DIR (measure) or --score DIR (compare), one of them", file=sys.stderr)
        return 2
    return score(Path(args.score), args.hardware) if args.score else measure(args)


if __name__ == "__main__":
    sys.exit(main())
