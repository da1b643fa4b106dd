"""Pure helpers behind the planner's "Visual generation" page (no streamlit): a DiT request from the
page's inputs, its prediction as metric texts and tables, the same request on every preset, and the
CLI line that reproduces it."""
from __future__ import annotations

import pandas as pd

import hardware
from hardware.units import format_seconds, format_si
from perfmodel import dit as cost
from workloads import dit


def predict(inputs: dict, hw_name: str) -> cost.DiTPrediction:
    """The page's inputs (model, height, width, frames, steps, cfg, batch, engine, devices, w_bits,
    a_bits, density, cached_fraction) priced on one preset."""
    pipe = dit.load(inputs["model"])
    req = pipe.request(height=int(inputs["height"]), width=int(inputs["width"]),
                       frames=int(inputs["frames"]) if pipe.is_video else 1, steps=int(inputs["steps"]),
                       cfg=bool(inputs["cfg"]), batch=int(inputs["batch"]),
                       cached_fraction=float(inputs["cached_fraction"]))
    density = float(inputs["density"])
    sparse = cost.DENSE if density >= 1 else cost.SparseAttention(density)
    return cost.predict_dit(pipe, hardware.load(hw_name), req, engine=inputs["engine"], w_bits=int(inputs["w_bits"]),
                            a_bits=int(inputs["a_bits"]), devices=int(inputs["devices"]), sparse=sparse)


def metric_texts(pred: cost.DiTPrediction) -> dict[str, str]:
    out = pred.to_dict()
    video = out["frames"] > 1
    return {"End to end": format_seconds(out["e2e_s"]), "Denoising step": format_seconds(out["step_s"]),
            ("Cost per video-second" if video else "Cost per image"):
                f"${out['usd_per_video_s']:.4f}" if video else f"${out['usd_per_image']:.5f}",
            "Memory": format_si(out["memory_bytes"]["total"], "B"), "Energy": f"{out['energy_j'] / 1e3:,.2f} kJ"}


def stage_frame(pred: cost.DiTPrediction) -> pd.DataFrame:
    """Where a request's time goes: text encoders, steps x step, VAE decode."""
    rows = [("text encoders", 1, pred.text_encode.time_s), ("denoising steps", pred.steps_run, pred.step.time_s),
            ("VAE decode", 1, pred.vae_decode.time_s)]
    frame = pd.DataFrame(rows, columns=["stage", "times", "each_s"])
    frame["total_s"] = frame["times"] * frame["each_s"]
    frame["share"] = frame["total_s"] / frame["total_s"].sum()
    return frame


def class_frame(pred: cost.DiTPrediction) -> pd.DataFrame:
    """One step's FLOPs, bytes and device time per op class (what an energy model prices)."""
    s = pred.step
    return pd.DataFrame({"class": list(s.flops), "flops": list(s.flops.values()), "bytes": list(s.bytes.values()),
                         "time_s": [s.class_time_s[c] for c in s.flops]})


def every_preset(inputs: dict) -> pd.DataFrame:
    """The same request on every hardware preset whose node has enough devices (skipping, with the
    reason, the ones that cannot run it)."""
    rows = []
    for name in hardware.names():
        try:
            out = predict(inputs, name).to_dict()
        except ValueError as err:
            rows.append({"hardware": name, "note": str(err)})
            continue
        cost_key = "usd_per_video_s" if out["frames"] > 1 else "usd_per_image"
        rows.append({"hardware": name, "e2e_s": out["e2e_s"], "step_s": out["step_s"], cost_key: out[cost_key],
                     "memory_gb": out["memory_bytes"]["total"] / 1e9, "fits": out["fits"], "note": ""})
    frame = pd.DataFrame(rows)
    return frame.sort_values("e2e_s", na_position="last") if "e2e_s" in frame else frame


def cli_command(inputs: dict, hw_name: str) -> str:
    pipe = dit.load(inputs["model"])
    parts = [f"perfmodel predict --model {inputs['model']} --hardware {hw_name}",
             f"--resolution {int(inputs['height'])}x{int(inputs['width'])}", f"--steps {int(inputs['steps'])}",
             f"--cfg {'on' if inputs['cfg'] else 'off'}", f"--batch {int(inputs['batch'])}",
             f"--engine {inputs['engine']}"]
    if pipe.is_video:
        parts.append(f"--frames {int(inputs['frames'])}")
    for flag, key, default in (("--devices", "devices", 1), ("--w-bits", "w_bits", 16), ("--a-bits", "a_bits", 16),
                               ("--density", "density", 1.0), ("--cached-fraction", "cached_fraction", 0.0)):
        if float(inputs[key]) != default:
            parts.append(f"{flag} {inputs[key]:g}")
    return " ".join(parts)
