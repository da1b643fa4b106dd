"""Cost models: per-op accounting, roofline, memory footprint, request metrics.

    >>> import hardware, workloads, perfmodel
    >>> pred = perfmodel.predict(workloads.load("llama-3-8b"), hardware.load("h200-sxm"),
    ...                          workloads.Scenario(batch=[1, 8, 64], prompt=2048, gen=256))
    >>> pred.to_frame()[["batch", "ttft_s", "tpot_s", "throughput_tok_s"]]  # doctest: +SKIP
"""
from perfmodel import engines
from perfmodel.engines import DEFAULT_ENGINE, Engine
from perfmodel.ops import Op, Precision, step_ops
from perfmodel.predict import (DoesNotFitError, Prediction, breakdown, evaluate, memory_footprint,
                               predict, step_time)
from perfmodel.roofline import OpTime, op_time

__all__ = ["DEFAULT_ENGINE", "Engine", "engines", "DoesNotFitError", "Op", "OpTime", "Precision", "Prediction", "breakdown", "evaluate",
           "memory_footprint", "op_time", "predict", "step_ops", "step_time"]
