"""Run the suite: measure each case, persist it at once (append-only CSV), resume on rerun.

A case that fails (out of memory, an unsupported dtype or kernel) is recorded with status
'failed' and its error, and the run goes on; a rerun skips every case measured ok and retries the
failed ones (their old rows are replaced). A last row torn by a crash, a power loss or a full disk
(no newline, or the wrong number of fields) is dropped before the run appends, so it is measured again
instead of counting as done.
"""
from __future__ import annotations

import csv
import os
import sys
import time
import traceback
from pathlib import Path

from validate.cases import PARAM_COLUMNS, case_id, kernel_class, split

RECORD_COLUMNS = ("case_id", *PARAM_COLUMNS, "class", "split", "status", "measured_s", "repeats", "error",
                  "device_name", "device_type", "torch", "cuda", "driver", "sm_clock_mhz", "mem_clock_mhz",
                  "timestamp")


def done_ids(path: Path, failed: bool = False) -> set[str]:
    """Case ids recorded in `path` with status ok (and failed ones too when `failed`)."""
    if not path.exists():
        return set()
    with path.open(newline="") as f:
        return {row["case_id"] for row in csv.DictReader(f)
                if row.get("status") == "ok" or (failed and row.get("status") == "failed")}


def recorded_ids(path: Path) -> set[str]:
    """Every case id recorded in `path`, whatever its outcome (for tables without a status column,
    such as kernel profiles: a rerun skips what is there)."""
    if not path.exists():
        return set()
    with path.open(newline="") as f:
        return {row["case_id"] for row in csv.DictReader(f)}


def repair(path: Path, drop_failed: bool = False) -> int:
    """Drop a torn last line and any row without the header's field count (and, when asked, the
    failed rows, which are about to be retried); returns the number of rows dropped."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    data = path.read_bytes()
    torn = not data.endswith(b"\n")
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        rows = list(reader)
    if header is None:
        return 0
    if torn and rows:
        rows = rows[:-1]
    keep = [r for r in rows if len(r) == len(header)]
    if drop_failed and "status" in header:
        status = header.index("status")
        keep = [r for r in keep if r[status] != "failed"]
    dropped = len(rows) - len(keep) + int(torn)
    if dropped:
        tmp = path.with_suffix(".repairing")
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(keep)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    return dropped


def migrate(path: Path, columns: tuple = RECORD_COLUMNS) -> None:
    """Rewrite a measurements file written with an older column set in `columns` (no row is lost;
    columns it lacked stay empty)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) == columns:
            return
        rows = list(reader)
    tmp = path.with_suffix(".migrating")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def append_record(path: Path, record: dict, columns: tuple = RECORD_COLUMNS) -> None:
    """Append one row and flush it to disk, writing the header for a new file (keys beyond
    `columns` are left out)."""
    append_records(path, [record], columns, extrasaction="ignore")


def append_records(path: Path, records: list[dict], columns, extrasaction: str = "raise") -> None:
    """Append rows and flush them to disk, writing the header for a new (or empty) file: the one
    incremental CSV writer of the measurement scripts (a run killed later keeps every row written)."""
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction=extrasaction)
        if new:
            writer.writeheader()
        writer.writerows(records)
        f.flush()
        os.fsync(f.fileno())


def run(cases: list[dict], out: str | Path, progress: bool = True, limit_s: float | None = None) -> Path:
    """Measure every case not yet in `out` (CSV), appending each result as it completes."""
    import torch

    from validate import bench

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    repair(out, drop_failed=True)
    migrate(out)
    done = done_ids(out)
    todo = [c for c in cases if case_id(c) not in done]
    dev, env = bench.device(), bench.environment()
    if dev.type == "cpu":
        # one intra-op thread: on small shared machines, spinning worker threads time the scheduler
        torch.set_num_threads(1)
    bar = _progress(len(cases), len(cases) - len(todo), progress)
    start = time.perf_counter()
    for case in todo:
        if limit_s is not None and time.perf_counter() - start > limit_s:
            print(f"validate: time limit of {limit_s:.0f} s reached; rerun to resume", file=sys.stderr)
            break
        record = {**case, **env, "case_id": case_id(case), "class": kernel_class(case), "split": split(case),
                  "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            seconds, repeats = bench.measure(case, dev)
            record.update(status="ok", measured_s=f"{seconds:.9g}", repeats=repeats, **bench.clocks())
        except Exception as err:  # any failure is data: record it and go on
            record.update(status="failed", error=_one_line(err))
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        append_record(out, record)
        bar(record)
    return out


def _one_line(err: Exception) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    if len(text) > 300:
        text = text[:300] + "..."
    return text or traceback.format_exc(limit=1)


def _progress(total: int, already: int, enabled: bool):
    state = {"n": already}

    def update(record: dict) -> None:
        state["n"] += 1
        if enabled:
            status = record["status"] if record["status"] != "ok" else f"{float(record['measured_s']) * 1e3:.3f} ms"
            print(f"[{state['n']:>4}/{total}] {record['class']:<20} {status}", file=sys.stderr, flush=True)
    return update
