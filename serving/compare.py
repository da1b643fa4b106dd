"""Simulated vs measured serving on the same requests (issue 14's acceptance: p50 and p90 TTFT and
TPOT and throughput within 15% at each load level).

A measured run is a per-request CSV or JSONL with arrival_s, prompt_tokens, output_tokens,
first_token_s and finish_s (seconds on one clock, e.g. from a reference engine loop); the simulator
replays the same arrivals and lengths, and each metric is set beside its measurement as
predicted / measured / ratio (DESIGN.md, convention 7)."""
from __future__ import annotations

import numpy as np

from serving import workload

#: Relative error the issue accepts per metric.
TOLERANCE = 0.15
MEASURED_COLUMNS = ("first_token_s", "finish_s")


def load_measured(path, field: str = "--compare"):
    """(Requests, measured per-request frame) from a measured run's file; one-line errors."""
    import io

    import pandas as pd

    from hardware.inputs import InputError, check_input_path, numeric_column, read_text

    requests = workload.load_trace(path, field)
    p = check_input_path(path, field)
    text = read_text(p, field)
    frame = pd.read_json(io.StringIO(text), lines=True) if p.suffix.lower() in (".jsonl", ".ndjson", ".json") \
        else pd.read_csv(io.StringIO(text))
    for column in MEASURED_COLUMNS:
        if column not in frame.columns:
            raise workload.WorkloadError(f"{field}: {str(p)!r} has no {column} column (a measured run needs "
                                         f"{', '.join(MEASURED_COLUMNS)})")
    try:
        for column in MEASURED_COLUMNS + ("arrival_s",):
            frame[column] = numeric_column(frame, column, f"{field} {column}", 0, 1e12)
    except InputError as err:
        raise workload.WorkloadError(str(err)) from None
    frame = frame.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    if np.any(frame["first_token_s"] < frame["arrival_s"]) or np.any(frame["finish_s"] < frame["first_token_s"]):
        raise workload.WorkloadError(f"{field}: every row needs arrival_s <= first_token_s <= finish_s")
    return requests, frame


def _metrics(arrival, first, finish, output) -> dict:
    multi = output > 1
    tpot = (finish - first)[multi] / (output[multi] - 1)
    ttft = first - arrival
    out = {f"ttft_{q}_s": float(np.percentile(ttft, int(q[1:]))) for q in ("p50", "p90")}
    out |= {f"tpot_{q}_s": float(np.percentile(tpot, int(q[1:]))) if tpot.size else 0.0 for q in ("p50", "p90")}
    out["throughput_tok_s"] = float(output.sum() / (finish.max() - arrival.min()))
    return out


def compare(measured, result):
    """A DataFrame: metric, measured, predicted, ratio (predicted / measured), within TOLERANCE."""
    import pandas as pd

    out_tokens = measured["output_tokens"].to_numpy() if "output_tokens" in measured else result.output_tokens
    got = _metrics(measured["arrival_s"].to_numpy(), measured["first_token_s"].to_numpy(),
                   measured["finish_s"].to_numpy(), np.asarray(out_tokens))
    sim = _metrics(result.arrival_s, result.first_token_s, result.finish_s, result.output_tokens)
    rows = []
    for key, value in got.items():
        ratio = sim[key] / value if value > 0 else float("nan")
        rows.append({"metric": key, "measured": value, "predicted": sim[key], "ratio": ratio,
                     "within": bool(abs(ratio - 1) <= TOLERANCE) if np.isfinite(ratio) else False})
    return pd.DataFrame(rows)
