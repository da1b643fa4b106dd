"""Request workloads for the serving simulator: who arrives when, with how many prompt and output tokens.

A workload is a frozen `Requests` record of arrays (one entry per request, sorted by arrival):
arrival time, prompt tokens, output tokens, and how many of the prompt's leading tokens are a prefix
shared with other requests (a system prompt; the prefix cache skips their prefill once computed).

Arrivals:
- Poisson at rate r: exponential inter-arrival times of mean 1/r (the open-loop load of vLLM's
  benchmark_serving.py with --request-rate and burstiness 1);
- bursty: gamma inter-arrival times with the same mean 1/r and coefficient of variation cv (shape
  1/cv^2, scale cv^2/r; vLLM's benchmark_serving.py draws gamma inter-arrivals with
  shape = burstiness the same way; cv = 1 is Poisson, cv > 1 burstier);
- closed loop (`closed_loop`): a fixed number of clients, each sending its next request when the
  previous one finishes; arrival times are then set by the simulator (arrival_s holds NaN).

Lengths: fixed, lognormal (median and sigma of the log), uniform (low..high), or from a trace file.
Everything is drawn from one numpy Generator seeded by `seed`: the same seed gives the same requests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Most requests one workload may hold (the simulator keeps per-request arrays).
MAX_REQUESTS = 10**7
#: Largest arrival rate accepted (requests per second).
MAX_RATE = 1e7
#: Longest length a distribution draws (tokens); the model's context window refuses far less.
MAX_LENGTH = 1e9


class WorkloadError(ValueError):
    """Bad workload input; the message (one line) names the field, the value and what is allowed."""


@dataclass(frozen=True)
class Requests:
    """Requests sorted by arrival: arrival_s (NaN under a closed loop), prompt_tokens,
    output_tokens (at least 1: the first token comes from the prefill), prefix_tokens (leading
    prompt tokens shared by every request, 0 if none). `clients` > 0 marks a closed loop."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_tokens: np.ndarray
    clients: int = 0

    def __post_init__(self):
        n = len(self.prompt_tokens)
        if n == 0:
            raise WorkloadError("requests: the workload is empty; give at least 1 request")
        for name in ("arrival_s", "output_tokens", "prefix_tokens"):
            if len(getattr(self, name)) != n:
                raise WorkloadError(f"{name}: {len(getattr(self, name))} entries, expected {n} (one per request)")
        _check_counts(self.prompt_tokens, "prompt_tokens", 1)
        _check_counts(self.output_tokens, "output_tokens", 1)
        _check_counts(self.prefix_tokens, "prefix_tokens", 0)
        if np.any(self.prefix_tokens >= self.prompt_tokens):
            raise WorkloadError("prefix_tokens: a shared prefix must be shorter than its prompt (the last "
                                "prompt token is always computed)")
        if not self.clients:
            a = self.arrival_s
            if not np.all(np.isfinite(a)) or np.any(a < 0):
                bad = a[~(np.isfinite(a) & (a >= 0))][0]
                raise WorkloadError(f"arrival_s: {bad!r} must be a finite time of 0 s or more")
            if np.any(np.diff(a) < 0):
                raise WorkloadError("arrival_s: arrival times must be sorted (non-decreasing)")

    def __len__(self) -> int:
        return len(self.prompt_tokens)

    def check_context(self, max_context: int, model_name: str = "the model") -> None:
        """Every request's prompt + output must fit the model's context window."""
        total = self.prompt_tokens + self.output_tokens
        if np.any(total > max_context):
            i = int(np.argmax(total))
            raise WorkloadError(f"prompt_tokens + output_tokens: {int(total[i])} tokens (request {i}) exceeds "
                                f"{model_name}'s context window of {max_context} tokens")

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"arrival_s": self.arrival_s, "prompt_tokens": self.prompt_tokens,
                             "output_tokens": self.output_tokens, "prefix_tokens": self.prefix_tokens})


def _check_counts(values: np.ndarray, field: str, low: int) -> None:
    if values.dtype.kind not in "iu":
        raise WorkloadError(f"{field}: must hold whole numbers, got dtype {values.dtype}")
    if np.any(values < low):
        raise WorkloadError(f"{field}: {int(values.min())} must be {low} or more")


@dataclass(frozen=True)
class Lengths:
    """A length distribution: kind "fixed" (value), "lognormal" (median, sigma of the log),
    or "uniform" (low..high inclusive). Draws are rounded to whole tokens and clipped to >= minimum."""

    kind: str = "fixed"
    value: float = 512
    sigma: float = 0.0
    low: float = 0
    high: float = 0

    def __post_init__(self):
        if self.kind not in ("fixed", "lognormal", "uniform"):
            raise WorkloadError(f"lengths.kind: {self.kind!r} is not one of fixed, lognormal, uniform")
        for name in ("value", "sigma", "low", "high"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise WorkloadError(f"lengths.{name}: {v!r} must be a finite number, 0 or more")
        if self.kind in ("fixed", "lognormal") and self.value < 1:
            raise WorkloadError(f"lengths.value: {self.value!r} must be 1 token or more")
        if self.kind == "uniform" and not 1 <= self.low <= self.high:
            raise WorkloadError(f"lengths.low/high: {self.low!r}..{self.high!r} must satisfy 1 <= low <= high")

    def draw(self, rng: np.random.Generator, n: int, minimum: int = 1) -> np.ndarray:
        if self.kind == "fixed":
            out = np.full(n, round(self.value), dtype=np.int64)
        elif self.kind == "lognormal":
            # clipped before the integer cast: a wide sigma draws values past int64
            out = np.rint(np.minimum(rng.lognormal(math.log(self.value), self.sigma, n), MAX_LENGTH)).astype(np.int64)
        else:
            out = rng.integers(int(self.low), int(self.high) + 1, n, dtype=np.int64)
        return np.maximum(out, minimum)


def parse_lengths(text: str | int | float, field: str) -> Lengths:
    """Lengths from a CLI value: "512" (fixed), "lognormal:512:0.8" (median, sigma),
    "uniform:128:1024" (low, high)."""
    from hardware.inputs import InputError, parse_number

    parts = str(text).split(":")
    try:
        if len(parts) == 1:
            return Lengths("fixed", parse_number(parts[0], field, 1, 1e9, whole=True))
        if parts[0] == "lognormal" and len(parts) == 3:
            return Lengths("lognormal", parse_number(parts[1], field, 1, 1e9), sigma=parse_number(parts[2], field, 0, 10))
        if parts[0] == "uniform" and len(parts) == 3:
            return Lengths("uniform", 1, low=parse_number(parts[1], field, 1, 1e9, whole=True),
                           high=parse_number(parts[2], field, 1, 1e9, whole=True))
    except InputError as err:
        raise WorkloadError(str(err)) from None
    raise WorkloadError(f"{field}: {text!r} is not N, lognormal:MEDIAN:SIGMA or uniform:LOW:HIGH")


def arrivals(rng: np.random.Generator, n: int, rate_per_s: float, cv: float = 1.0) -> np.ndarray:
    """Arrival times of n requests at mean rate `rate_per_s`: Poisson (cv = 1) or gamma
    inter-arrivals of coefficient of variation cv (shape 1/cv^2, scale cv^2/rate; the first
    request arrives after one inter-arrival time)."""
    _check_rate(rate_per_s)
    if not (isinstance(cv, (int, float)) and math.isfinite(cv) and 0 < cv <= 100):
        raise WorkloadError(f"burst_cv: {cv!r} must be a number in (0, 100] (1 = Poisson)")
    if cv == 1.0:
        gaps = rng.exponential(1.0 / rate_per_s, n)
    else:
        gaps = rng.gamma(1.0 / cv ** 2, cv ** 2 / rate_per_s, n)
    return np.cumsum(gaps)


def _check_rate(rate_per_s) -> None:
    if not isinstance(rate_per_s, (int, float)) or not math.isfinite(rate_per_s) or not 0 < rate_per_s <= MAX_RATE:
        raise WorkloadError(f"rate: {rate_per_s!r} requests/s must be a number in (0, {MAX_RATE:g}]")


def _check_n(n) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_REQUESTS:
        raise WorkloadError(f"requests: {n!r} must be a whole number in [1, {MAX_REQUESTS}]")


def _prefix(prompt: np.ndarray, fraction: float) -> np.ndarray:
    if not isinstance(fraction, (int, float)) or not math.isfinite(fraction) or not 0 <= fraction < 1:
        raise WorkloadError(f"prefix_fraction: {fraction!r} must be a number in [0, 1)")
    # the shared prefix is the leading fraction of each prompt; the last prompt token is always computed
    return np.minimum(np.floor(fraction * prompt).astype(np.int64), prompt - 1)


def generate(n: int, rate_per_s: float, prompt: Lengths | int = 512, output: Lengths | int = 128, *,
             seed: int = 0, burst_cv: float = 1.0, prefix_fraction: float = 0.0) -> Requests:
    """n open-loop requests at `rate_per_s` (Poisson, or gamma with `burst_cv`), lengths drawn
    from `prompt` and `output` (an int is a fixed length), a shared prefix of `prefix_fraction`
    of each prompt. Deterministic for a seed."""
    _check_n(n)
    rng = np.random.default_rng(seed)
    times = arrivals(rng, n, rate_per_s, burst_cv)
    prompts, outputs = _as_lengths(prompt).draw(rng, n), _as_lengths(output).draw(rng, n)
    return Requests(times, prompts, outputs, _prefix(prompts, prefix_fraction))


def closed_loop(n: int, clients: int, prompt: Lengths | int = 512, output: Lengths | int = 128, *,
                seed: int = 0, prefix_fraction: float = 0.0) -> Requests:
    """n requests sent by `clients` clients that each wait for their previous answer (fixed
    concurrency); the simulator sets the arrival times."""
    _check_n(n)
    if isinstance(clients, bool) or not isinstance(clients, (int, np.integer)) or not 1 <= clients <= n:
        raise WorkloadError(f"clients: {clients!r} must be a whole number in [1, {n}] (at most the requests)")
    rng = np.random.default_rng(seed)
    prompts, outputs = _as_lengths(prompt).draw(rng, n), _as_lengths(output).draw(rng, n)
    return Requests(np.full(n, np.nan), prompts, outputs, _prefix(prompts, prefix_fraction), clients=int(clients))


def _as_lengths(value) -> Lengths:
    if isinstance(value, Lengths):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise WorkloadError(f"length: {value!r} must be a whole number of tokens, 1 or more, or a Lengths")
    return Lengths("fixed", int(value))


#: Column names a trace may use for each field (ShareGPT-style length traces name them variously).
TRACE_COLUMNS = {"arrival_s": ("arrival_s", "arrival", "timestamp", "time_s"),
                 "prompt_tokens": ("prompt_tokens", "input_tokens", "prompt_len", "input_len"),
                 "output_tokens": ("output_tokens", "output_len", "gen_tokens", "completion_tokens"),
                 "prefix_tokens": ("prefix_tokens",)}


def load_trace(path, field: str = "--trace") -> Requests:
    """Requests from a CSV (header row) or JSONL (one object per line) file with an arrival time
    in seconds, prompt tokens and output tokens per request (optional prefix_tokens); rows are
    sorted by arrival. Missing columns, empty files and bad values are one-line errors."""
    import pandas as pd

    from hardware.inputs import InputError, check_input_path, read_text

    p = check_input_path(path, field)
    text = read_text(p, field)
    try:
        if p.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            frame = pd.read_json(__import__("io").StringIO(text), lines=True)
        else:
            frame = pd.read_csv(__import__("io").StringIO(text))
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise WorkloadError(f"{field}: {str(p)!r} is not a readable CSV or JSONL trace ({str(err).splitlines()[0]})") from None
    if len(frame) == 0:
        raise WorkloadError(f"{field}: trace {str(p)!r} holds no requests")
    columns = {}
    for name, aliases in TRACE_COLUMNS.items():
        found = next((a for a in aliases if a in frame.columns), None)
        if found is None and name != "prefix_tokens":
            raise WorkloadError(f"{field}: trace {str(p)!r} has no {name} column (accepted names: {', '.join(aliases)})")
        columns[name] = found
    try:
        arrival = _trace_column(frame, columns["arrival_s"], f"{field} arrival_s", whole=False)
        prompt = _trace_column(frame, columns["prompt_tokens"], f"{field} prompt_tokens", low=1)
        output = _trace_column(frame, columns["output_tokens"], f"{field} output_tokens", low=1)
        prefix = _trace_column(frame, columns["prefix_tokens"], f"{field} prefix_tokens", low=0) \
            if columns["prefix_tokens"] else np.zeros(len(frame), dtype=np.int64)
    except InputError as err:
        raise WorkloadError(str(err)) from None
    order = np.argsort(arrival, kind="stable")
    return Requests(arrival[order], prompt[order], output[order], prefix[order])


def _trace_column(frame, column: str, field: str, low: float = 0, whole: bool = True) -> np.ndarray:
    from hardware.inputs import numeric_column

    values = numeric_column(frame, column, field, low, 1e12, whole=whole)
    return np.asarray(values, dtype=np.int64 if whole else float)


def write_trace(requests: Requests, path) -> None:
    """Write requests as a CSV trace (the format `load_trace` reads)."""
    from hardware.inputs import write_text

    write_text(path, requests.to_frame().to_csv(index=False), "--write-trace")
