"""Collective communication cost: all-reduce, all-gather, reduce-scatter, all-to-all (alpha-beta).

Size convention (the one nccl-tests uses, so measured and modeled sizes mean the same thing):
`payload_bytes` S is the per-device buffer: all-reduce in = out = S; all-gather out = S (each
device contributes S / n); reduce-scatter in = S (each device keeps S / n); all-to-all in = out = S
(S / n to each peer).

Each algorithm a on n devices takes `steps` latency steps and moves `factor * S` bytes through each
device's link (Thakur, Rabenseifner & Gropp 2005, "Optimization of Collective Communication
Operations in MPICH"; Patarasuk & Yuan 2009 for the bandwidth-optimal ring):

    ring all-reduce               steps 2 (n-1)        factor 2 (n-1) / n
    ring all-gather / red.-scat.  steps n - 1          factor (n-1) / n
    double binary tree all-reduce steps 2 ceil(log2 n) factor 2   (half the data on each of two trees,
                                                        up then down; Sanders, Speck & Traeff 2009)
    pairwise all-to-all           steps n - 1          factor (n-1) / n

NCCL runs each algorithm with one of three protocols and picks the pair its own model predicts
fastest (NCCL src/graph/tuning.cc, ncclTopoTuneModel, v2.18): LL (8-byte stores with an inline flag:
lowest latency, a quarter of the bus bandwidth for all-reduce, a third otherwise), LL128 (128-byte
lines with an 8-byte flag: 0.92 of the bandwidth, NVLink only) and Simple (full bandwidth, highest
latency). The time of one (algorithm, protocol) pair is

    t = launch + k * lat[c] * (base[a, p] + steps * step[a, p]) + factor * S / (beta * eff[c] * bw[a, p])

with NCCL's latency table (base and per-step latencies, microseconds) scaled by k so that one Simple
ring step takes `step_latency_s`, lat[c] a per-collective latency factor (all-to-all runs as grouped
point-to-point sends, whose steps cost differently from a ring's), beta the per-direction link
bandwidth, eff[c] a per-collective bandwidth efficiency and bw[a, p] the protocol's bandwidth
fraction; the collective takes the minimum over the pairs. NVLink SHARP (NVLS: NVSwitch 3 reduces
in the switch, Hopper and later) is an all-reduce algorithm a fitted link may carry (`algorithms`):
a device sends its S bytes into the switch and reads its reduced S / n back (multimem load-reduce),
then writes that share out for the switch to multicast and receives the other n - 1 shares, so
(n + 1) / n S cross each direction of its link against the ring's 2 (n - 1) / n S: slower on 2 GPUs,
faster from 4 (NVLS support: NCCL 2.17 release notes; NVLink SHARP in third-generation NVSwitch:
NVIDIA H100 Tensor Core GPU Architecture whitepaper, 2022), with NCCL's latency of 25 us for it
(tuning.cc hwLat, NVLink row, Simple: the only protocol it runs).
Our own multi-GPU measurements run with NCCL_NVLS_ENABLE=0 and fit ring and tree only.

Message-size dependent bandwidth. For one pair, the achieved bus bandwidth factor * S / t equals
beta_eff * S / (S + S_half) with S_half = latency * beta_eff / factor: Hockney's (r_inf, n_1/2)
model (Hockney 1991, "The communication challenge for MPP"), the alpha-beta model written as a
rate. The minimum over protocols makes the curve a sequence of such hyperbolas, which is how
measured NCCL bandwidth climbs with size. `achieved_bus_bytes_per_s` and `half_bandwidth_bytes`
return these derived quantities.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np

from hardware.spec import Hardware

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
ALGORITHMS = ("ring", "tree", "nvls")
PROTOCOLS = ("ll", "ll128", "simple")

# NCCL's latency model, microseconds (src/graph/tuning.cc: baseLat and hwLat, v2.18). "pcie" is
# NCCL's PCI row; NVLink, NVSwitch and Infinity Fabric use the NVLink row.
_US = 1e-6
BASE_LATENCY_S = {
    ("ring", "ll"): 6.6 * _US, ("ring", "ll128"): 14.0 * _US, ("ring", "simple"): 8.4 * _US,
    ("tree", "ll"): 6.8 * _US, ("tree", "ll128"): 14.0 * _US, ("tree", "simple"): 0.0,
    ("nvls", "simple"): 0.0,
}
STEP_LATENCY_S = {
    "nvlink": {("ring", "ll"): 0.6 * _US, ("ring", "ll128"): 1.9 * _US, ("ring", "simple"): 3.4 * _US,
               ("tree", "ll"): 0.6 * _US, ("tree", "ll128"): 1.25 * _US, ("tree", "simple"): 28.0 * _US,
               ("nvls", "simple"): 25.0 * _US},
    "pcie": {("ring", "ll"): 1.0 * _US, ("ring", "ll128"): 2.5 * _US, ("ring", "simple"): 5.7 * _US,
             ("tree", "ll"): 1.0 * _US, ("tree", "ll128"): 1.9 * _US, ("tree", "simple"): 28.0 * _US},
}
#: NCCL's tree runs at 0.92 of the bus bandwidth; LL and LL128 on a tree at 1/3.8 and 7/9 of that
#: (single node). Ring LL: 1/4 for all-reduce, 1/3 for the others; ring LL128 0.92 (tuning.cc).
TREE_BANDWIDTH_FRACTION = 0.92
#: Device links whose switch reduces in the network (NVLink SHARP: third-generation NVSwitch with
#: NVLink 4, Hopper HGX; NVLink 5, Blackwell HGX), where NCCL runs NVLS all-reduce by default (NCCL
#: 2.17+); NVLink 3 (A100) has no NVLS.
NVLS_LINKS = ("nvlink4", "nvlink5")
LINK_KINDS = ("nvlink", "pcie")


class CollectiveError(ValueError):
    """A bad collective request or link calibration; the message names the field and the value."""


def protocol_bandwidth_fraction(algorithm: str, protocol: str, collective: str) -> float:
    """Fraction of the link bandwidth a protocol delivers (NCCL tuning.cc model refinements)."""
    if algorithm == "tree":
        return TREE_BANDWIDTH_FRACTION * {"ll": 1 / 3.8, "ll128": 7 / 9, "simple": 1.0}[protocol]
    if protocol == "ll":
        return 0.25 if collective == "all_reduce" else 1 / 3
    return 0.92 if protocol == "ll128" else 1.0


def algorithm_steps(algorithm: str, collective: str, n):
    """Latency steps: ring all-reduce 2 (n-1); ring all-gather / reduce-scatter and pairwise
    all-to-all n - 1; double binary tree all-reduce 2 ceil(log2 n) (up, then down); NVLS one pass
    through the switch whatever n."""
    n = np.asarray(n, dtype=float)
    if algorithm == "nvls":
        return np.ones_like(n)
    if algorithm == "tree":
        return 2.0 * np.ceil(np.log2(np.maximum(n, 1.0)))
    return (2.0 if collective == "all_reduce" else 1.0) * (n - 1.0)


def algorithm_factor(algorithm: str, collective: str, n):
    """Bytes through each device's link per payload byte: ring all-reduce 2 (n-1) / n, ring
    all-gather / reduce-scatter and pairwise all-to-all (n-1) / n, tree all-reduce 2, NVLS
    all-reduce (n + 1) / n (module docstring)."""
    n = np.maximum(np.asarray(n, dtype=float), 1.0)
    if algorithm == "nvls":
        return (n + 1.0) / n
    if algorithm == "tree":
        return 2.0 * np.ones_like(n)
    return (2.0 if collective == "all_reduce" else 1.0) * (n - 1.0) / n


def bus_factor(collective: str, n):
    """nccl-tests' bus-bandwidth factor: bus bandwidth = factor * S / t (ring factor; it makes the
    bus bandwidth comparable with the link bandwidth whatever n is)."""
    _check_collective(collective)
    return algorithm_factor("ring", collective, n)


@dataclass(frozen=True)
class LinkCalibration:
    """The device-to-device link as collectives see it; fitted by `fit_link_calibration`.

    bytes_per_s: per-direction bandwidth beta of the best collective with the Simple protocol;
    step_latency_s: time of one Simple ring step (NCCL's latency table is scaled to it);
    launch_s: fixed device-side cost per call outside NCCL's model (kernel launch, stream sync);
    host_s: CPU time an eager framework spends issuing one call; host time, not device time (an
        eager step takes the larger of the two; CUDA-graph replay does not pay it);
    efficiency: per-collective multiplier on bytes_per_s (missing entries are 1.0);
    latency_factor: per-collective multiplier on the latency terms (missing entries are 1.0);
    algorithms: algorithms the library may pick for all-reduce ("ring", "tree", and "nvls" over an
        NVSwitch that reduces in the switch);
    link: "nvlink" or "pcie", which row of NCCL's latency table and which protocols apply.
    """

    bytes_per_s: float
    step_latency_s: float
    launch_s: float = 0.0
    host_s: float = 0.0
    efficiency: Mapping[str, float] = field(default_factory=dict)
    latency_factor: Mapping[str, float] = field(default_factory=dict)
    algorithms: tuple = ("ring", "tree")  # NVLS only where a fit over a switch that has it says so
    link: str = "nvlink"
    source: str = ""

    def __post_init__(self):
        for table in ("efficiency", "latency_factor"):
            values = {c: 1.0 for c in COLLECTIVES}
            for name, value in dict(getattr(self, table)).items():
                _check_collective(name, f"{table}.{name}")
                values[name] = _positive(value, f"{table}.{name}")
            object.__setattr__(self, table, MappingProxyType(values))
        object.__setattr__(self, "algorithms", tuple(self.algorithms))
        _positive(self.bytes_per_s, "bytes_per_s")
        _positive(self.step_latency_s, "step_latency_s")
        _non_negative(self.launch_s, "launch_s")
        _non_negative(self.host_s, "host_s")
        if self.link not in LINK_KINDS:
            raise CollectiveError(f"link: {self.link!r} is not one of {LINK_KINDS}")
        if "ring" not in self.algorithms or not set(self.algorithms) <= set(ALGORITHMS):
            raise CollectiveError(f"algorithms: {self.algorithms!r} must include 'ring' and come from {ALGORITHMS}")
        if "nvls" in self.algorithms and self.link != "nvlink":
            raise CollectiveError(f"algorithms: 'nvls' needs an NVLink switch, not a {self.link!r} link")

    @property
    def protocols(self) -> tuple:
        """NCCL enables LL128 only over NVLink (tuning.cc); PCIe runs LL and Simple."""
        return PROTOCOLS if self.link == "nvlink" else ("ll", "simple")

    @property
    def latency_scale(self) -> float:
        """Scale on NCCL's latency table: measured Simple ring step / NCCL's."""
        return self.step_latency_s / STEP_LATENCY_S[self.link][("ring", "simple")]

    @classmethod
    def from_hardware(cls, hw: Hardware) -> "LinkCalibration":
        """The datasheet link of a spec: NVLink-class device links at their per-direction bandwidth,
        otherwise PCIe through the host. A step takes the larger of the spec's link latency and
        NCCL's own per-step latency for that link (a step synchronises through memory flags, which
        costs more than the wire). All-reduce runs as a ring only: a spec describes one node, and
        NCCL's tree inside a node is a chain of 2 (n-1) steps (tuning.cc), never faster than the
        ring; the log2 n tree stays available to fitted links (multi-node data can pick it). A spec
        whose calibration carries a link fitted to nccl-tests times (Calibration.link_*) uses it."""
        nvlink = hw.device_link not in ("none", "pcie") and hw.device_link_bytes_per_s > 0
        kind = "nvlink" if nvlink else "pcie"
        beta = hw.device_link_bytes_per_s if hw.device_link_bytes_per_s > 0 else hw.host_link_bytes_per_s
        spec_latency = hw.device_link_latency_s if hw.device_link_bytes_per_s > 0 else hw.host_link_latency_s
        step = max(spec_latency, STEP_LATENCY_S[kind][("ring", "simple")])
        link = cls(bytes_per_s=beta, step_latency_s=step, link=kind, algorithms=("ring",),
                   source=f"datasheet {hw.name}")
        return _with_fitted_fields(link, hw.calibration)

    def to_dict(self) -> dict:
        return {"bytes_per_s": self.bytes_per_s, "step_latency_s": self.step_latency_s,
                "launch_s": self.launch_s, "host_s": self.host_s, "efficiency": dict(self.efficiency),
                "latency_factor": dict(self.latency_factor),
                "algorithms": list(self.algorithms), "link": self.link, "source": self.source}

    @classmethod
    def from_dict(cls, data: Mapping) -> "LinkCalibration":
        if not isinstance(data, Mapping):
            raise CollectiveError(f"link calibration: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CollectiveError(f"link calibration: unknown field(s) {unknown}; known: {sorted(known)}")
        for name in ("bytes_per_s", "step_latency_s"):
            if name not in data:
                raise CollectiveError(f"link calibration: missing field {name!r}")
        return cls(**{k: (tuple(v) if k == "algorithms" else v) for k, v in data.items()})

    @classmethod
    def from_json(cls, path: str | Path) -> "LinkCalibration":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise CollectiveError(f"link calibration: file {str(path)!r} does not exist") from None
        except json.JSONDecodeError as err:
            raise CollectiveError(f"link calibration {path.name}: not valid JSON ({err.msg})") from None


def _with_fitted_fields(link: LinkCalibration, calibration) -> LinkCalibration:
    """The link a hardware Calibration fitted to nccl-tests times (Calibration.link_*: bandwidth,
    ring step, launch, NVLS), where it has one (LinkCalibration.from_hardware)."""
    if calibration is None or calibration.link_bytes_per_s <= 0:
        return link
    algorithms = ("ring", "nvls") if calibration.link_nvls else link.algorithms
    return dataclasses.replace(link, bytes_per_s=calibration.link_bytes_per_s,
                               step_latency_s=calibration.link_step_latency_s or link.step_latency_s,
                               launch_s=calibration.link_launch_s, algorithms=algorithms,
                               source=calibration.source or "calibrated")


def link_for(hw_or_link) -> LinkCalibration:
    """A LinkCalibration as given, or the one a Hardware spec implies."""
    if isinstance(hw_or_link, LinkCalibration):
        return hw_or_link
    if isinstance(hw_or_link, Hardware):
        return LinkCalibration.from_hardware(hw_or_link)
    raise CollectiveError(f"link: expected a Hardware or LinkCalibration, got {type(hw_or_link).__name__}")


# -- the cost formulas --------------------------------------------------------------------------

def pair_time_s(collective: str, algorithm: str, protocol: str, payload_bytes, n_devices,
                link: LinkCalibration):
    """Time of one (algorithm, protocol) pair, launch included (module docstring equation)."""
    steps = algorithm_steps(algorithm, collective, n_devices)
    latency = link.latency_scale * link.latency_factor[collective] * (
        BASE_LATENCY_S[(algorithm, protocol)] + steps * STEP_LATENCY_S[link.link][(algorithm, protocol)])
    rate = link.bytes_per_s * link.efficiency[collective] * protocol_bandwidth_fraction(algorithm, protocol,
                                                                                        collective)
    return link.launch_s + latency + algorithm_factor(algorithm, collective, n_devices) * payload_bytes / rate


def _pairs(collective: str, link: LinkCalibration) -> list[tuple[str, str]]:
    """(algorithm, protocol) pairs the library may pick: trees and NVLS only for all-reduce, NVLS with
    Simple only; all-to-all is point-to-point sends, modeled with the ring's latency and LL / Simple
    protocols."""
    algorithms = link.algorithms if collective == "all_reduce" else ("ring",)
    protocols = link.protocols if collective != "all_to_all" else ("ll", "simple")
    return [(a, p) for a in algorithms for p in protocols if a != "nvls" or p == "simple"]


def _pair_times(collective, payload_bytes, n_devices, link):
    _check_collective(collective)
    s, n = _check_payload(payload_bytes), _check_devices(n_devices)
    pairs = _pairs(collective, link)
    return pairs, np.stack(np.broadcast_arrays(*(pair_time_s(collective, a, p, s, n, link) for a, p in pairs))), n


def collective_time_s(collective: str, payload_bytes, n_devices, link):
    """Time of one collective on n devices: the fastest (algorithm, protocol) pair, as NCCL picks
    it; zero for one device. `link` is a LinkCalibration or a Hardware spec (datasheet link)."""
    pairs, times, n = _pair_times(collective, payload_bytes, n_devices, link_for(link))
    return np.where(n > 1, times.min(axis=0), 0.0)


def chosen_pair(collective: str, payload_bytes, n_devices, link):
    """Name ("ring/simple", ...) of the pair `collective_time_s` picks, per element."""
    pairs, times, _ = _pair_times(collective, payload_bytes, n_devices, link_for(link))
    names = np.array([f"{a}/{p}" for a, p in pairs])
    return names[np.argmin(times, axis=0)]


def achieved_bus_bytes_per_s(collective: str, payload_bytes, n_devices, link):
    """Modeled bus bandwidth bus_factor * S / t (compare with nccl-tests' busbw column)."""
    t = collective_time_s(collective, payload_bytes, n_devices, link)
    return bus_factor(collective, n_devices) * np.asarray(payload_bytes, float) / np.where(t > 0, t, np.inf)


def measured_bus_bytes_per_s(collective: str, payload_bytes, n_devices, time_s):
    """nccl-tests' bus bandwidth of a measured time: bus_factor * S / t."""
    return bus_factor(collective, n_devices) * np.asarray(payload_bytes, float) / np.asarray(time_s, float)


def half_bandwidth_bytes(collective: str, n_devices, link, algorithm: str = "ring", protocol: str = "simple"):
    """Hockney's n_1/2 of one pair: the payload at which it reaches half its asymptotic bus bandwidth,
    S_half = (launch + latency) * rate / factor."""
    link = link_for(link)
    latency = pair_time_s(collective, algorithm, protocol, 0.0, n_devices, link)
    rate = link.bytes_per_s * link.efficiency[collective] * protocol_bandwidth_fraction(algorithm, protocol,
                                                                                        collective)
    return latency * rate / algorithm_factor(algorithm, collective, n_devices)


# -- what the step models call --------------------------------------------------------------------

def allreduce_time_s(payload_bytes, n_devices, hw_or_link):
    """All-reduce of `payload_bytes` on n devices (the tensor-parallel op of perfmodel.roofline)."""
    return collective_time_s("all_reduce", payload_bytes, n_devices, hw_or_link)


#: Largest message the engines' custom all-reduce takes; above it they call NCCL (vLLM's
#: CustomAllreduce max_size default, 8 MiB: vllm/distributed/device_communicators/custom_all_reduce.py).
CUSTOM_ALLREDUCE_MAX_BYTES = 8 * 2 ** 20


def custom_allreduce_time_s(payload_bytes, n_devices, hw: Hardware, engine: str = ""):
    """The serving engines' custom all-reduce inside one NVLink node (vLLM, TensorRT-LLM, SGLang):

        one-shot  t = a + (n - 1) S / beta           each device reads every peer's buffer
        two-shot  t = 2 a2 + 2 (n - 1) / n S / beta  reduce-scatter, then all-gather, over peer memory
        a = alpha + (n - 1) gamma                    a barrier: a flag written to and read from each peer
        a2 = alpha + (n - 1) gamma2                  the two-shot's barrier (gamma2 = gamma where not fitted)

    taking the faster, and NCCL's time above CUSTOM_ALLREDUCE_MAX_BYTES (or where it is faster).
    alpha is a kernel and its synchronisation through peer memory flags: Calibration's
    custom_allreduce_latency_s where fitted (aiconfigurator's measured tables), else twice the
    spec's device-link latency; gamma (custom_allreduce_peer_latency_s, 0 where not fitted) the
    time each further peer adds to the barrier, whose flags the kernel polls one per peer
    (aiconfigurator's H200 tables: SGLang's at 256 B-64 KiB takes 2.3-2.9 us on 2 GPUs and 3.0-5.0
    on 8); beta the per-direction link bandwidth (calibrated where fitted).
    Each engine runs its own kernel: where the calibration has `engine`'s own alpha, beta and gamma
    (custom_allreduce_engine_*; on aiconfigurator's H200 tables TensorRT-LLM's takes 2.6 us at 256
    bytes and vLLM's 4.4 us) they win over the shared ones, and its own gamma2
    (custom_allreduce_engine_two_shot_peer_latency_s) where its two-shot kernel was fitted apart:
    TensorRT-LLM's two-shot on 8 H200s takes 17.8 us at 512 KiB where its one-shot takes 10.1 us at
    256 KiB (aiconfigurator 0.12.0's h200_sxm trtllm 1.3.0rc20 table; its AUTO strategy switches to
    two-shot from 64 tokens of 4096 at tp 8: tensorrt_llm/common/customAllReduceUtils.h,
    AllReduceBestStrategyTableSM90), a fixed cost one gamma for both kernels cannot give.
    Below about 1 MiB this is several times faster than NCCL's ring, whose latency grows with n
    (Aminabadi et al. 2022 and vLLM's custom all-reduce both motivate the one-shot kernel this way).
    Without an NVLink-class device link the engines use NCCL."""
    link = LinkCalibration.from_hardware(hw)
    nccl = allreduce_time_s(payload_bytes, n_devices, link)
    if link.link != "nvlink":
        return nccl
    cal = hw.calibration
    own_alpha = cal.custom_allreduce_engine_latency_s.get(engine, 0.0) if cal else 0.0
    own_beta = cal.custom_allreduce_engine_bytes_per_s.get(engine, 0.0) if cal else 0.0
    alpha = own_alpha or getattr(cal, "custom_allreduce_latency_s", 0.0) or 2.0 * hw.device_link_latency_s
    beta = own_beta or getattr(cal, "custom_allreduce_bytes_per_s", 0.0) or link.bytes_per_s
    # an engine fitted on its own table has its own gamma (0 where that fit found none)
    gamma = (cal.custom_allreduce_engine_peer_latency_s.get(engine, 0.0) if own_alpha
             else cal.custom_allreduce_peer_latency_s) if cal else 0.0
    gamma2 = cal.custom_allreduce_engine_two_shot_peer_latency_s.get(engine, gamma) if cal and own_alpha else gamma
    size, n = np.asarray(payload_bytes, dtype=float), np.asarray(n_devices, dtype=float)
    one_shot = alpha + (n - 1) * gamma + (n - 1) * size / beta
    two_shot = 2 * (alpha + (n - 1) * gamma2) + 2 * (n - 1) / n * size / beta
    custom = np.where(size <= CUSTOM_ALLREDUCE_MAX_BYTES, np.minimum(one_shot, two_shot), np.inf)
    return np.where(n > 1, np.minimum(custom, nccl), 0.0)


def tp_step_comm_time_s(tokens, d_model, n_layers, tp, hw_or_link, act_bytes=2.0, allreduces_per_layer=2):
    """Device time of one tensor-parallel forward step's communication: Megatron-LM's two
    all-reduces per layer (after the attention output and the FFN down projection) of the
    tokens x D activations (Shoeybi et al. 2019, arXiv 1909.08053): L * 2 * t_allreduce(tokens D bytes)."""
    payload = np.asarray(tokens, float) * d_model * act_bytes
    return n_layers * allreduces_per_layer * allreduce_time_s(payload, tp, hw_or_link)


def tp_step_comm_host_s(n_layers, tp, hw_or_link, allreduces_per_layer=2):
    """Host time an eager framework spends issuing those all-reduces: L * 2 * host_s. It belongs
    with the step's other host dispatch: an eager step takes max(device time, host time)."""
    return np.where(np.asarray(tp) > 1, n_layers * allreduces_per_layer * link_for(hw_or_link).host_s, 0.0)


def moe_alltoall_time_s(tokens, d_model, top_k, n_moe_layers, ep, hw_or_link, act_bytes=2.0):
    """Expert-parallel dispatch and combine: two all-to-alls per MoE layer, each of the tokens a
    device holds times top_k routed copies of D activations (GShard, Lepikhin et al. 2020,
    arXiv 2006.16668): n_moe_layers * 2 * t_alltoall(tokens * top_k * D * bytes)."""
    payload = np.asarray(tokens, float) * top_k * d_model * act_bytes
    return n_moe_layers * 2 * collective_time_s("all_to_all", payload, ep, hw_or_link)


# -- fitting --------------------------------------------------------------------------------------

def fit_link_calibration(collective, payload_bytes, n_devices, time_s, link: str = "nvlink",
                         algorithms_options=(("ring",), ("ring", "tree")), source: str = "fitted"):
    """Least-squares fit of a LinkCalibration to measured collective times (arrays, one per case).

    Minimises the squared log error sum (log t_model - log t_measured)^2, so every size counts
    equally, over launch_s, step_latency_s, one bandwidth per collective and a latency factor per
    collective but the first present (all-reduce when measured; it anchors step_latency_s);
    bytes_per_s is the largest bandwidth and efficiency[c] = bandwidth_c / bytes_per_s. The model is piecewise smooth
    (a minimum over protocols), so for each all-reduce algorithm set the best of several starting
    points is refined; the better refined fit is returned.
    """
    c, s, n, t = _fit_inputs(collective, payload_bytes, n_devices, time_s)
    problem = _FitProblem(c, s, n, t, [name for name in COLLECTIVES if np.any(c == name)], link)
    fits = []
    for algorithms in (tuple(a) for a in algorithms_options):
        x0 = min(problem.starts(), key=lambda x: problem.loss(algorithms, x))
        fits.append(problem.refine(algorithms, x0))
    best = min(fits, key=lambda fit: fit[0])
    return dataclasses.replace(best[1], source=source)


def _fit_inputs(collective, payload_bytes, n_devices, time_s):
    c = np.asarray(collective).astype(str).reshape(-1)
    s, n, t = (np.asarray(x, dtype=float).reshape(-1) for x in (payload_bytes, n_devices, time_s))
    if not len(c) == len(s) == len(n) == len(t):
        raise CollectiveError(f"fit: collective, payload_bytes, n_devices and time_s need equal lengths, "
                              f"got {len(c)}, {len(s)}, {len(n)}, {len(t)}")
    for name in set(c.tolist()):
        _check_collective(name)
    keep = n > 1
    if not np.any(keep):
        raise CollectiveError("fit: needs measurements on 2 or more devices (n_devices > 1)")
    if not np.all(np.isfinite(t[keep]) & (t[keep] > 0)):
        raise CollectiveError("fit: time_s must be finite and greater than zero")
    return c[keep], _check_payload(s[keep]), n[keep], t[keep]


class _FitProblem:
    """The data of one fit and the map from the parameter vector to a LinkCalibration.

    Parameters x: launch and step latency in microseconds (so every entry is of order one), the log
    of each present collective's bandwidth, then the log latency factor of each present collective
    after the first."""

    def __init__(self, c, s, n, t, present, link_kind):
        self.c, self.s, self.n, self.t, self.present, self.link_kind = c, s, n, t, present, link_kind
        self.rows = {name: c == name for name in present}
        self.k = len(present)

    def starts(self):
        """Step latency 0.5 / 3 / 15 us, launch 0 / 10 us, per collective the bus bandwidth of its
        largest measured message, latency factors 1."""
        bw = []
        for name, sel in self.rows.items():
            i = np.argmax(self.s[sel])
            bw.append(np.log(bus_factor(name, self.n[sel][i]) * self.s[sel][i] / self.t[sel][i]))
        return [np.array([launch, step, *bw] + [0.0] * (self.k - 1))
                for step in (0.5, 3.0, 15.0) for launch in (0.0, 10.0)]

    def build(self, x, algorithms) -> LinkCalibration:
        x = np.asarray(x, dtype=float)
        bw, lat = np.exp(x[2:2 + self.k]), np.exp(x[2 + self.k:])
        beta = float(bw.max())
        return LinkCalibration(bytes_per_s=beta, step_latency_s=max(float(x[1]), 1e-6) * 1e-6,
                               launch_s=max(float(x[0]), 0.0) * 1e-6,
                               efficiency={name: float(b / beta) for name, b in zip(self.present, bw)},
                               latency_factor={name: float(f) for name, f in zip(self.present[1:], lat)},
                               algorithms=algorithms, link=self.link_kind)

    def residuals(self, x, algorithms):
        cal = self.build(x, algorithms)
        out = np.empty_like(self.t)
        for name, sel in self.rows.items():
            out[sel] = np.log(collective_time_s(name, self.s[sel], self.n[sel], cal) / self.t[sel])
        return out

    def loss(self, algorithms, x) -> float:
        return float(np.sum(self.residuals(x, algorithms) ** 2))

    def refine(self, algorithms, x0):
        from scipy.optimize import least_squares

        # bandwidths between 1 MB/s and 100 TB/s (latency-bound data must not send them to
        # infinity), latency factors between 0.1 and 10
        lower = np.array([0.0, 1e-6] + [np.log(1e6)] * self.k + [np.log(0.1)] * (self.k - 1))
        upper = np.array([np.inf, np.inf] + [np.log(1e14)] * self.k + [np.log(10.0)] * (self.k - 1))
        fit = least_squares(self.residuals, np.clip(x0, lower, upper), bounds=(lower, upper), args=(algorithms,),
                            method="trf", x_scale="jac", max_nfev=200)
        return float(np.sum(fit.fun ** 2)), self.build(fit.x, algorithms)


# -- input checks -------------------------------------------------------------------------------

def _check_collective(name, field_name: str = "collective"):
    if name not in COLLECTIVES:
        raise CollectiveError(f"{field_name}: {name!r} is not one of {COLLECTIVES}")
    return name


def _check_payload(payload_bytes):
    s = np.asarray(payload_bytes, dtype=float)
    if not np.all(np.isfinite(s) & (s >= 0)):
        bad = float(s[~(np.isfinite(s) & (s >= 0))].reshape(-1)[0])
        raise CollectiveError(f"payload_bytes: {bad!r} must be a finite number of bytes, zero or more")
    return s


def _check_devices(n_devices):
    n = np.asarray(n_devices, dtype=float)
    ok = np.isfinite(n) & (n >= 1) & (n == np.floor(n))
    if not np.all(ok):
        raise CollectiveError(f"n_devices: {float(n[~ok].reshape(-1)[0])!r} must be a whole number >= 1")
    return n


def _positive(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise CollectiveError(f"{name}: {value!r} must be a finite number greater than zero")
    return float(value)


def _non_negative(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise CollectiveError(f"{name}: {value!r} must be a finite number, zero or more")
    return float(value)
