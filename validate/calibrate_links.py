"""Fit the link model (perfmodel.collectives.LinkCalibration) to a measured collective sweep.

    python -m validate.calibrate_links validate/reports/multigpu/h200x8 --hardware h200-sxm

reads collectives.csv written by validate.multigpu, fits on every other message size (4 KiB,
16 KiB, 64 KiB, ...) and reports the error on the sizes in between (8 KiB, 32 KiB, ...), which the
fit never saw. Writes link_calibration.json (loadable with LinkCalibration.from_json) and
link_fit.csv (held-out error per collective and device count) next to the data.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from perfmodel import collectives as coll


@dataclass(frozen=True)
class LinkFit:
    """A fitted link, the datasheet link it replaces, and every measurement with both predictions."""

    link: coll.LinkCalibration
    datasheet: coll.LinkCalibration
    frame: pd.DataFrame       # one row per measurement; split = "calibration" | "held-out"

    def held_out_median_error(self) -> float:
        """Median |predicted / measured - 1| over held-out sizes (fitted link)."""
        return float(self.frame.loc[self.frame.split == "held-out", "abs_error"].median())

    def summary(self) -> pd.DataFrame:
        return error_summary(self.frame)


def load_collectives(results_dir: str | Path) -> pd.DataFrame:
    """collectives.csv, keeping only cases whose result was checked correct and whose time is positive."""
    path = Path(results_dir) / "collectives.csv"
    if not path.exists():
        raise FileNotFoundError(f"results: {str(path)!r} does not exist (run python -m validate.multigpu first)")
    frame = pd.read_csv(path)
    missing = {"collective", "n_devices", "nominal_bytes", "size_bytes", "time_s"} - set(frame.columns)
    if missing:
        raise ValueError(f"results: {path.name} lacks column(s) {sorted(missing)}")
    ok = frame["time_s"].gt(0)
    if "correct" in frame:
        ok &= frame["correct"].astype(str).str.lower().eq("true")
    if not ok.any():
        raise ValueError(f"results: {path.name} has no correct, positive timings")
    return frame[ok].reset_index(drop=True)


def split_sizes(nominal_bytes) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint calibration and held-out sizes: the sorted distinct sizes alternate, starting with
    calibration, so both sets span the whole range."""
    sizes = np.unique(np.asarray(nominal_bytes))
    if len(sizes) < 2:
        raise ValueError(f"sizes: need at least 2 distinct message sizes to hold some out, got {len(sizes)}")
    return sizes[0::2], sizes[1::2]


def predict(frame: pd.DataFrame, link: coll.LinkCalibration) -> np.ndarray:
    """Modeled time of every row (collective, size_bytes, n_devices)."""
    out = np.empty(len(frame))
    for name, rows in frame.groupby("collective").groups.items():
        sel = frame.index.get_indexer(rows)
        out[sel] = coll.collective_time_s(name, frame["size_bytes"].to_numpy()[sel],
                                          frame["n_devices"].to_numpy()[sel], link)
    return out


def fit_links(frame: pd.DataFrame, link_kind: str = "nvlink") -> coll.LinkCalibration:
    """LinkCalibration fitted to the rows given (all of them: split before calling), plus the median
    host-side issue time per call where the sweep recorded it."""
    link = coll.fit_link_calibration(frame["collective"], frame["size_bytes"], frame["n_devices"],
                                     frame["time_s"], link=link_kind, source="validate.calibrate_links")
    if "host_s" in frame and frame["host_s"].gt(0).any():
        link = dataclasses.replace(link, host_s=float(frame.loc[frame["host_s"] > 0, "host_s"].median()))
    return link


def calibrate(results_dir: str | Path, hw=None) -> LinkFit:
    """Fit on the calibration sizes, predict every row with the fitted and the datasheet link."""
    frame = load_collectives(results_dir)
    datasheet = coll.LinkCalibration.from_hardware(hw) if hw is not None else _generic_nvlink()
    cal_sizes, _ = split_sizes(frame["nominal_bytes"])
    frame["split"] = np.where(frame["nominal_bytes"].isin(cal_sizes), "calibration", "held-out")
    link = fit_links(frame[frame.split == "calibration"], datasheet.link)
    return LinkFit(link, datasheet, with_predictions(frame, link, datasheet))


def with_predictions(frame: pd.DataFrame, link, datasheet) -> pd.DataFrame:
    out = frame.copy()
    out["predicted_s"] = predict(out, link)
    out["datasheet_s"] = predict(out, datasheet)
    out["ratio"] = out["predicted_s"] / out["time_s"]
    out["abs_error"] = (out["ratio"] - 1).abs()
    out["datasheet_abs_error"] = (out["datasheet_s"] / out["time_s"] - 1).abs()
    out["pair"] = [str(coll.chosen_pair(c, s, n, link)) for c, s, n in
                   zip(out["collective"], out["size_bytes"], out["n_devices"])]
    return out


def error_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Median absolute error per collective (held-out sizes for the fit; all sizes for the datasheet)."""
    held = frame[frame.split == "held-out"]
    rows = []
    for name, group in list(held.groupby("collective")) + [("all", held)]:
        rows.append({"collective": name, "held_out_cases": len(group),
                     "held_out_median_abs_error": group["abs_error"].median(),
                     "held_out_max_abs_error": group["abs_error"].max(),
                     "datasheet_median_abs_error": frame.loc[frame.collective.eq(name) | (name == "all"),
                                                             "datasheet_abs_error"].median()})
    return pd.DataFrame(rows)


def fit_per_device_count(frame: pd.DataFrame, link_kind: str) -> dict:
    """One LinkCalibration per device count (calibration sizes only), to show how much a single
    link model loses against separate fits."""
    cal = frame[frame.split == "calibration"]
    return {int(n): fit_links(group, link_kind) for n, group in cal.groupby("n_devices")}


def _generic_nvlink() -> coll.LinkCalibration:
    """No spec given: NCCL's NVLink step latency and a nominal 450 GB/s NVLink4 direction."""
    return coll.LinkCalibration(bytes_per_s=450e9, step_latency_s=3.4e-6, link="nvlink", algorithms=("ring",),
                                source="generic NVLink4")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m validate.calibrate_links", description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="directory holding collectives.csv")
    p.add_argument("--hardware", default="", help="preset or spec YAML for the datasheet link (e.g. h200-sxm)")
    p.add_argument("--out", default="", help="where to write link_calibration.json (default: results dir)")
    args = p.parse_args(argv)
    hw = None
    if args.hardware:
        import hardware

        hw = hardware.load(args.hardware)
    fit = calibrate(args.results, hw)
    out = Path(args.out or args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "link_calibration.json").write_text(json.dumps(fit.link.to_dict(), indent=2))
    fit.summary().to_csv(out / "link_fit.csv", index=False)
    print(format_link(fit.link))
    print(fit.summary().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"held-out median |error|: {100 * fit.held_out_median_error():.1f}%  -> {out / 'link_calibration.json'}")
    return 0


def format_link(link: coll.LinkCalibration) -> str:
    eff = ", ".join(f"{k} {v:.2f}" for k, v in link.efficiency.items())
    lat = ", ".join(f"{k} {v:.2f}" for k, v in link.latency_factor.items())
    return (f"link {link.link}: {link.bytes_per_s / 1e9:.1f} GB/s per direction, Simple ring step "
            f"{link.step_latency_s * 1e6:.2f} us, launch {link.launch_s * 1e6:.2f} us, host issue "
            f"{link.host_s * 1e6:.2f} us, algorithms {'+'.join(link.algorithms)}; bandwidth efficiency: {eff}; "
            f"latency factor: {lat}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as err:
        print(f"calibrate_links: error: {err}", file=sys.stderr)
        sys.exit(2)
