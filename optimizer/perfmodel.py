"""Roofline estimates of how a fragment performs on a device class it has never run on.

Notation (per replica of one fragment on one class):

    P       parameters (count; ``params_b * 1e9``)
    W       weight bytes = 2 * P (bf16)
    s       slices the replica occupies; its share of a device is  u = s / slices_per_device
    F       its peak compute  = u * bf16_tflops * 1e12   FLOP/s
    B       its peak bandwidth = u * memory_gbps * 1e9   byte/s
    t_in    mean input tokens per visit, t_out mean output tokens per visit
    MFU     PREFILL_MFU (0.5): FLOP utilisation a compute-bound phase reaches
    MBU     DECODE_MBU (0.6): fraction of peak bandwidth a memory-bound phase reaches

Replica size. Memory needed is ``W * MEMORY_OVERHEAD`` (KV cache and activations at moderate
batch). On a MIG-capable class a model that fits in part of a device takes the smallest MIG
profile (1, 2, 3, 4 or 7 slices) that holds it; otherwise the replica spans whole devices,
rounded up to a power of two (tensor parallelism), at most ``MAX_DEVICES_PER_REPLICA``, so
``s = devices * slices_per_device``. Interconnect cost of tensor parallelism is not modelled.
Given a latency bound, ``estimate_profiles`` takes a bigger MIG profile when the smallest one
is too slow.

Memory is scheduled (LLM): the KV cache of the requests a replica holds in flight must fit
beside its weights. With M the memory of the replica's slices (u * memory_gib * 2^30)::

    K       = GPU_MEMORY_UTILISATION * M - W        KV budget (vLLM's gpu_memory_utilization; the
                                                   rest is activations and the runtime)
    kv      = KV_BYTES_PER_TOKEN * (t_in + t_out)   one request's KV cache at its longest
    C_max   = floor(K / kv)                         requests the replica can hold in flight

A replica size with C_max < 1 cannot serve one request, and where no size up to
MAX_DEVICES_PER_REPLICA holds one the class gets no profile. Of the sizes that do (the smallest
that holds the weights, then larger MIG profiles, then twice the devices), an LLM replica takes
the one that serves the most visits per slice (rps / s): the smallest, unless a larger one serves
SIZE_GAIN more per slice because its larger KV budget batches more. The decode batch is ``b = min(DECODE_BATCH, C_max)`` (step
and busy below use b), and by Little's law the requests in flight at the operating point,
``rps * latency``, may not exceed C_max (the ``C_max / latency`` term of rps below).

LLM (prefill is compute-bound, decode memory-bandwidth-bound)::

    prefill   = max(2 * P * t_in / (MFU * F),  W / (MBU * B))  +  sync
    step(b)   = max(W / (MBU * B),  2 * P * b / (MFU * F))  +  sync     one decode step, batch b
    sync      = TP_SYNC_MS_PER_PEER * (tp - 1)                   tp: devices the replica spans
    latency   = prefill + t_out * step(b)              b = min(DECODE_BATCH, C_max), see above
    busy      = prefill + t_out * step(b) / b          device-seconds per visit
    rps       = min(TARGET_UTILISATION / busy,  C_max / latency)

Disaggregated serving (Splitwise, DistServe) runs the two phases in separate pools, so each
can sit on the class cheapest for its bottleneck. Per replica of a pool::

    prefill pool   latency = prefill (its TTFT)        rps = TARGET_UTILISATION / prefill
    decode pool    latency = t_out * step(b)            rps = TARGET_UTILISATION * b / (t_out * step(b))
    KV hand-off    kv_bytes = t_in * KV_BYTES_PER_TOKEN, moved prefill -> decode once per visit

with the KV cache per token from the model's shape: a transformer of P parameters with
d = (128 P / 12)^(1/3) (layers ~ d / 128, P ~ 12 layers d^2) keeps 2 (K, V) x 2 bytes x layers x d
= d^2 / 32 bytes per token, an eighth of that from GQA_MIN_PARAMS_B up (grouped-query attention:
8 KV heads of 64). That gives 0.55 MB for a 7B model and 0.32 MB for a 70B one (Llama 2: 0.5 and
0.31). The hand-off is counted in full, not overlapped with prefill as Splitwise does layer by layer.

Decode reads only the weights per step; KV-cache reads, which grow with context, are not
modelled yet. ``sync`` is the tensor-parallel all-reduce latency of one forward pass (two
all-reduces per layer, each a ring of tp - 1 hops): it is why a 70B model decodes no faster on
8 GPUs than on 4 in the Splitwise measurements. ``phase_times`` gives prefill and decode-step
times of whole-device replicas at any batch and tensor-parallel degree, and ``splitwise_errors``
checks them against those measurements.

Embedding and rerank (small encoders, compute-bound; a visit's tokens are t_in + t_out)::

    busy      = max(2 * P * (t_in + t_out) / (MFU * F),  W / (MBU * B) / ENCODER_BATCH)
    latency   = ENCODER_BATCH * busy                              the visit waits for its batch
    rps       = TARGET_UTILISATION / busy

Retrieval, tool, agent, db and cpu fragments are CPU-bound with a fixed cost per visit::

    core_ms   = CPU_MS_PER_VISIT[kind] + CPU_MS_PER_TOKEN * (t_in + t_out)
    latency   = core_ms                                           one core serves one visit
    rps       = TARGET_UTILISATION * cores_per_slice * 1000 / core_ms     one slice per replica

They run only on CPU classes; accelerator-bound kinds run on a CPU class only for models below
``CPU_MAX_PARAMS_B``. Where a fragment cannot run, ``estimate`` returns None. Every latency
gets ``FRAMEWORK_OVERHEAD_MS`` for request handling.

Calibration. A class's measured efficiency and its verified kernels' speedups reach these formulas
as an effective spec (optimizer.calibration.effective_spec scales F and B); uncalibrated, the spec
is the catalog's and nothing here changes.

Measured capacity. Where a model server reports how long visits queued for a replica (vLLM's
``gen_ai.latency.time_in_queue``), ``capacity_from_queueing`` reads the replica's capacity from
that wait, taking each replica as an M/M/1 queue: with λ the visits/s one replica receives and W
their mean wait, W = λ / (μ (μ - λ)), so

    μ = (λ + sqrt(λ² + 4 λ / W)) / 2      visits/s one replica completes at most
    ρ = λ / μ                            its utilisation

A short wait says little (μ grows without bound as W → 0), so planning trusts μ only from
``MIN_QUEUE_UTILISATION`` up. An overloaded server whose queue grows through the window reports
ρ near 1 and μ near what it served, which is what it can serve.
"""

import csv
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from optimizer.catalog import CATALOG, DeviceClassSpec, by_name
from optimizer.types import Phase, ServiceProfile

ACCELERATED_KINDS = frozenset({"llm", "embedding", "rerank"})
CPU_KINDS = frozenset({"retrieval", "tool", "agent", "db", "cpu"})
KINDS = ACCELERATED_KINDS | CPU_KINDS

BYTES_PER_PARAM = 2  # bf16 weights
MEMORY_OVERHEAD = 1.1  # KV cache and activations beside the weights
GPU_MEMORY_UTILISATION = 0.9  # share of a replica's memory for weights and KV cache (vLLM's default)
SIZE_GAIN = 0.1  # a larger LLM replica is chosen only when it serves this much more per slice
PREFILL_MFU = 0.5
DECODE_MBU = 0.6
DECODE_BATCH = 16  # "moderate batch" of concurrent sequences in decode
ENCODER_BATCH = 8
TARGET_UTILISATION = 0.7  # SLA-safe operating point: queues stay short below it
MIN_QUEUE_UTILISATION = 0.3  # below this, a measured queue says too little about capacity
MAX_DEVICES_PER_REPLICA = 8  # one node
CPU_MAX_PARAMS_B = 3.0
FRAMEWORK_OVERHEAD_MS = 1.0
MIG_PROFILE_SLICES = (1, 2, 3, 4, 7)
GQA_MIN_PARAMS_B = 30.0  # from here up, models use grouped-query attention (8 KV heads of 64)
# Calibrated on the Splitwise A100/H100 measurements (grid 0..8 ms, MFU and MBU left at their
# textbook values): 5 ms per peer is ~30 us per all-reduce hop over 160 all-reduces of a 70B
# model's forward pass, in line with NCCL's small-message latency on NVLink.
TP_SYNC_MS_PER_PEER = 5.0  # compute slices of the MIG profiles of a 7-slice part

# Core-milliseconds of one visit, before per-token (de)serialisation; tool and db calls that wait
# on something external are measured by telemetry, these are only the CPU the fleet spends.
CPU_MS_PER_VISIT = {"retrieval": 8.0, "tool": 20.0, "agent": 10.0, "db": 5.0, "cpu": 10.0}
CPU_MS_PER_TOKEN = 0.002

DEFAULT_PARAMS_B = {"llm": 8.0, "embedding": 0.335, "rerank": 0.568}  # llama-3.1-8b, bge-large, bge-reranker-large

_PARAMS_TOKEN = re.compile(r"(?<![A-Za-z0-9.])(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?![A-Za-z0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class Estimate:
    """Estimated performance of one replica of a fragment on one device class."""

    device_class: str
    latency_ms: float  # one visit at moderate batch
    throughput_rps: float  # per replica at TARGET_UTILISATION
    slices: int  # per replica
    prefill_ms: float = 0.0  # LLM only
    decode_step_ms: float = 0.0  # LLM only: one decode step at decode_batch
    decode_batch: int = DECODE_BATCH  # LLM only: sequences decoded together, as many as the KV cache holds


@dataclass(frozen=True)
class PhaseTimes:
    """Roofline prefill and decode-step times of one LLM replica."""

    prefill_ms: float  # the whole batch's prompts
    decode_step_ms: float  # one token for every sequence of the batch


def params_from_model_name(model: str | None, kind: str = "llm") -> float:
    """Parameters in billions read from a model name's "<n>b" token ("llama-3.1-70b" -> 70.0).

    "<n>m" counts millions, "<k>x<n>b" (mixture of experts) counts k*n; with no such token the
    kind's default applies (an 8B LLM, a bge-large-sized encoder, 0 for CPU-only kinds).
    """
    _check_kind(kind)
    match = _PARAMS_TOKEN.search(model or "")
    if match is None:
        return DEFAULT_PARAMS_B.get(kind, 0.0)
    experts, size, unit = match.groups()
    value = float(size) * (int(experts) if experts else 1)
    return value / 1000.0 if unit.lower() == "m" else value


def estimate(
    kind: str,
    params_b: float,
    tokens_in: float,
    tokens_out: float,
    spec: DeviceClassSpec,
    slices: int | None = None,
) -> Estimate | None:
    """Roofline estimate for one replica on `spec`, or None where the fragment cannot run there.

    `slices` asks for a bigger replica than the smallest that holds the model (None: the smallest, or for
    an LLM the size the module docstring picks for its KV cache).
    """
    _check_kind(kind)
    if tokens_in < 0 or tokens_out < 0:
        raise ValueError(f"tokens_in and tokens_out must be >= 0, got {tokens_in} and {tokens_out}")
    if kind in CPU_KINDS:
        return _cpu_estimate(kind, tokens_in, tokens_out, spec) if spec.is_cpu else None
    if params_b <= 0:
        raise ValueError(f"a {kind} fragment needs params_b > 0, got {params_b}")
    if spec.is_cpu and params_b >= CPU_MAX_PARAMS_B:
        return None
    weight_bytes = BYTES_PER_PARAM * params_b * 1e9
    smallest = replica_slices(weight_bytes * MEMORY_OVERHEAD, spec)
    if smallest is None:
        return None
    if slices is not None and slices < smallest:
        raise ValueError(f"{slices} slices of {spec.name} cannot hold this model; it needs at least {smallest}")
    if kind == "llm":
        return _llm_estimate(params_b, tokens_in, tokens_out, spec, smallest, slices)
    slices = slices or smallest
    share = slices / spec.slices_per_device
    overhead_s = FRAMEWORK_OVERHEAD_MS / 1000.0
    flops = share * spec.bf16_tflops * 1e12
    weight_read_s = weight_bytes / (DECODE_MBU * share * spec.memory_gbps * 1e9)
    flop_per_token = 2 * params_b * 1e9
    encode_s = flop_per_token * (tokens_in + tokens_out) / (PREFILL_MFU * flops)
    busy_s = max(encode_s, weight_read_s / ENCODER_BATCH)
    latency_s = ENCODER_BATCH * busy_s + overhead_s
    return Estimate(spec.name, latency_s * 1000, TARGET_UTILISATION / busy_s, slices)


def phase_times(
    params_b: float, prompt_tokens: float, spec: DeviceClassSpec, *, batch: int = 1, tensor_parallel: int = 1
) -> PhaseTimes:
    """Prefill of `batch` prompts and one decode step of `batch` sequences on `tensor_parallel` whole devices."""
    if params_b <= 0 or prompt_tokens < 0 or batch < 1 or tensor_parallel < 1:
        raise ValueError(f"need params_b > 0, prompt_tokens >= 0, batch >= 1, tensor_parallel >= 1; got "
                         f"{params_b}, {prompt_tokens}, {batch}, {tensor_parallel}")
    return _llm_times(params_b, prompt_tokens * batch, batch, spec, float(tensor_parallel))


def _llm_times(params_b: float, prefill_tokens: float, batch: int, spec: DeviceClassSpec, share: float) -> PhaseTimes:
    """Roofline times for a replica holding `share` devices' worth of compute and bandwidth."""
    flops = share * spec.bf16_tflops * 1e12
    bandwidth = share * spec.memory_gbps * 1e9
    weight_read_s = BYTES_PER_PARAM * params_b * 1e9 / (DECODE_MBU * bandwidth)
    flop_per_token = 2 * params_b * 1e9
    sync_s = TP_SYNC_MS_PER_PEER * max(0, math.ceil(share) - 1) / 1000
    prefill_s = max(flop_per_token * prefill_tokens / (PREFILL_MFU * flops), weight_read_s) + sync_s
    step_s = max(weight_read_s, flop_per_token * batch / (PREFILL_MFU * flops)) + sync_s
    return PhaseTimes(prefill_s * 1000, step_s * 1000)


@dataclass(frozen=True)
class ErrorStats:
    """Absolute relative error |estimate / measured - 1| of one phase on one hardware, over groups."""

    hardware: str  # catalog class name
    phase: str  # "prefill" or "decode"
    groups: int
    median: float
    p90: float


# Splitwise hardware names -> catalog classes; the power-capped H100 is left out on purpose.
SPLITWISE_HARDWARE = {"a100-80gb": "A100-80GB", "h100-80gb": "H100-SXM"}


def splitwise_errors(path: str | Path) -> tuple[ErrorStats, ...]:
    """How far `phase_times` is from the Splitwise measurements (splitwise/perf_model.csv).

    Repeated runs of one (model, hardware, tensor_parallel, prompt_size, batch_size) group are
    reduced to their median; each group then contributes one relative error for prefill
    (``prompt_time``) and one for a decode step (``token_time``).
    """
    groups: dict[tuple[str, str, int, int, int], list[tuple[float, float]]] = defaultdict(list)
    with Path(path).open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["hardware"] in SPLITWISE_HARDWARE:
                key = (row["model"], row["hardware"], int(row["tensor_parallel"]), int(row["prompt_size"]),
                       int(row["batch_size"]))
                groups[key].append((float(row["prompt_time"]), float(row["token_time"])))
    errors: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (model, hardware, tp, prompt, batch), runs in groups.items():
        name = SPLITWISE_HARDWARE[hardware]
        est = phase_times(params_from_model_name(model), prompt, by_name(name), batch=batch, tensor_parallel=tp)
        errors[name, "prefill"].append(abs(est.prefill_ms / statistics.median(r[0] for r in runs) - 1))
        errors[name, "decode"].append(abs(est.decode_step_ms / statistics.median(r[1] for r in runs) - 1))
    return tuple(
        ErrorStats(name, phase, len(errs), statistics.median(errs), statistics.quantiles(errs, n=10)[-1])
        for (name, phase), errs in sorted(errors.items())
    )


def replica_slices(memory_bytes: float, spec: DeviceClassSpec) -> int | None:
    """Slices one replica needing `memory_bytes` occupies on `spec`, or None if it cannot fit."""
    device_bytes = spec.memory_gib * 2**30
    if spec.slices_per_device > 1:
        needed = max(1, math.ceil(memory_bytes / (device_bytes / spec.slices_per_device)))
        if needed <= spec.slices_per_device:
            sizes = MIG_PROFILE_SLICES if _is_mig(spec) else ()
            return next((size for size in sizes if size >= needed), needed)
    devices = max(1, math.ceil(memory_bytes / device_bytes))
    devices = 1 << (devices - 1).bit_length()  # tensor-parallel degree: a power of two
    if devices > MAX_DEVICES_PER_REPLICA:
        return None
    return devices * spec.slices_per_device


def _llm_estimate(params_b: float, tokens_in: float, tokens_out: float, spec: DeviceClassSpec, smallest: int,
                  slices: int | None) -> Estimate | None:
    """An LLM replica of `slices` (None: the size that serves most visits per slice among those that
    hold one request's KV cache beside the weights, the smallest unless a larger one serves
    SIZE_GAIN more per slice), with its KV cache scheduled (module docstring)."""
    if slices is not None:
        return _llm_at(params_b, tokens_in, tokens_out, spec, slices, explicit=True)
    best, size = None, smallest
    while size is not None:
        est = _llm_at(params_b, tokens_in, tokens_out, spec, size, explicit=False)
        if est is not None and (best is None or
                                est.throughput_rps / size > (1 + SIZE_GAIN) * best.throughput_rps / best.slices):
            best = est
        size = _next_size(size, spec)
    return best


def _llm_at(params_b: float, tokens_in: float, tokens_out: float, spec: DeviceClassSpec, slices: int,
            explicit: bool) -> Estimate | None:
    """One LLM replica of `slices`; None where it cannot hold one request, unless `explicit` (the
    caller sized it: it then serves one at a time, its memory overcommitted, for a latency estimate)."""
    weight_bytes = BYTES_PER_PARAM * params_b * 1e9
    in_flight = _in_flight(weight_bytes, kv_bytes_per_token(params_b) * (tokens_in + tokens_out), spec, slices)
    if in_flight < 1 and not explicit:
        return None
    in_flight = max(1, in_flight)
    batch = min(DECODE_BATCH, in_flight)
    times = _llm_times(params_b, tokens_in, batch, spec, slices / spec.slices_per_device)
    prefill_s, step_s = times.prefill_ms / 1000, times.decode_step_ms / 1000
    latency_s = prefill_s + tokens_out * step_s + FRAMEWORK_OVERHEAD_MS / 1000.0
    busy_s = prefill_s + tokens_out * step_s / batch
    rps = min(TARGET_UTILISATION / busy_s, in_flight / latency_s)  # Little: rps * latency are in flight
    return Estimate(spec.name, latency_s * 1000, rps, slices, prefill_ms=times.prefill_ms,
                    decode_step_ms=times.decode_step_ms, decode_batch=batch)


def _in_flight(weight_bytes: float, kv_request: float, spec: DeviceClassSpec, slices: int) -> int:
    """C_max: requests whose KV cache fits beside the weights in `slices` of `spec` (module docstring)."""
    budget = GPU_MEMORY_UTILISATION * slices / spec.slices_per_device * spec.memory_gib * 2**30 - weight_bytes
    if budget <= 0:
        return 0
    return DECODE_BATCH * 1024 if kv_request <= 0 else int(budget // kv_request)


def _next_size(slices: int, spec: DeviceClassSpec) -> int | None:
    """The next larger replica size on `spec` (a MIG profile, a whole device, twice the devices), or
    None past MAX_DEVICES_PER_REPLICA."""
    per = spec.slices_per_device
    if slices < per:
        return next((size for size in (MIG_PROFILE_SLICES if _is_mig(spec) else ()) if size > slices), per)
    devices = 2 * (slices // per)
    return devices * per if devices <= MAX_DEVICES_PER_REPLICA else None


def capacity_from_queueing(rate_rps: float, wait_s: float) -> tuple[float, float]:
    """(μ, ρ): the visits/s one replica completes at most, and its utilisation, from the visits/s it
    receives and their mean wait for it (module docstring). A wait of 0 gives (inf, 0)."""
    if not (math.isfinite(rate_rps) and rate_rps > 0):
        raise ValueError(f"rate_rps must be a finite number > 0, got {rate_rps}")
    if not (math.isfinite(wait_s) and wait_s >= 0):
        raise ValueError(f"wait_s must be a finite number >= 0, got {wait_s}")
    if wait_s == 0:
        return math.inf, 0.0
    mu = (rate_rps + math.sqrt(rate_rps * rate_rps + 4 * rate_rps / wait_s)) / 2
    return mu, rate_rps / mu


def kv_bytes_per_token(params_b: float) -> float:
    """KV-cache bytes one token of context keeps, from the model's size (module docstring)."""
    if params_b <= 0:
        raise ValueError(f"params_b must be > 0, got {params_b}")
    d = (128 * params_b * 1e9 / 12) ** (1 / 3)
    return d * d / 32 / (8 if params_b >= GQA_MIN_PARAMS_B else 1)


def phase_profiles(est: Estimate, tokens_out: float, tail: Estimate | None = None,
                   tail_out: float | None = None) -> tuple[ServiceProfile, ServiceProfile] | None:
    """The prefill-pool and decode-pool replicas of an LLM `estimate` (module docstring); None when
    there is nothing to split (not an LLM, or no output tokens). Latencies come from `tail`, the
    estimate at `tail_out` output tokens, when given; throughputs from `est` (mean tokens)."""
    if est.prefill_ms <= 0 or est.decode_step_ms <= 0 or tokens_out <= 0:
        return None
    tail, tail_out = tail or est, tail_out or tokens_out
    prefill_ms = tail.prefill_ms + FRAMEWORK_OVERHEAD_MS
    decode_ms = tail_out * tail.decode_step_ms
    prefill = ServiceProfile(est.device_class, TARGET_UTILISATION * 1000 / est.prefill_ms, prefill_ms, est.slices,
                             phase=Phase.prefill, ttft_ms=prefill_ms)
    decode = ServiceProfile(est.device_class,
                            TARGET_UTILISATION * est.decode_batch * 1000 / (tokens_out * est.decode_step_ms),
                            decode_ms + FRAMEWORK_OVERHEAD_MS, est.slices, phase=Phase.decode,
                            tpot_ms=est.decode_step_ms)
    return prefill, decode


def estimate_profiles(
    kind: str,
    model: str | None,
    tokens_in: float,
    tokens_out: float,
    specs: tuple[DeviceClassSpec, ...] = CATALOG,
    latency_bound_ms: float | None = None,
    phases: bool = False,
    tail_tokens: tuple[float, float] | None = None,
) -> tuple[ServiceProfile, ...]:
    """Estimated `ServiceProfile`s of a fragment, one per class in `specs` that can run it (an
    LLM's with its TTFT and TPOT), and with `phases` an LLM's prefill- and decode-pool profiles too.

    Throughput is estimated at the mean tokens; latency (and TTFT) at `tail_tokens`, the (input,
    output) tokens of a visit at the 99th percentile, when given: a workload's SLA is a p99, and its
    paths count each fragment's tail visit (optimizer.graph), which a long answer makes.

    A replica gets the smallest size that holds the model; with `latency_bound_ms`, on a
    MIG-capable class, the smallest MIG profile that also meets the bound (a bigger share of
    the device is faster), falling back to the smallest when none does.
    """
    params_b = params_from_model_name(model, kind)
    tail_in, tail_out = (max(tokens_in, tail_tokens[0]), max(tokens_out, tail_tokens[1])) if tail_tokens else \
        (tokens_in, tokens_out)
    profiles = []
    for spec in specs:
        est = estimate(kind, params_b, tokens_in, tokens_out, spec)
        if est is None:
            continue
        tail = estimate(kind, params_b, tail_in, tail_out, spec, slices=est.slices)
        if latency_bound_ms is not None and tail.latency_ms > latency_bound_ms:
            for size in _larger_mig_profiles(est.slices, spec):
                bigger = estimate(kind, params_b, tail_in, tail_out, spec, slices=size)
                if bigger is not None and bigger.latency_ms <= latency_bound_ms:
                    est, tail = estimate(kind, params_b, tokens_in, tokens_out, spec, slices=size), bigger
                    break
        llm = est.prefill_ms > 0
        profiles.append(ServiceProfile(
            spec.name, est.throughput_rps, tail.latency_ms, est.slices, measured=False,
            ttft_ms=tail.prefill_ms + FRAMEWORK_OVERHEAD_MS if llm else None,
            tpot_ms=est.decode_step_ms if llm else None))
        if phases and (pools := phase_profiles(est, tokens_out, tail, tail_out)) is not None:
            profiles.extend(pools)
    return tuple(profiles)


def _larger_mig_profiles(slices: int, spec: DeviceClassSpec) -> tuple[int, ...]:
    return tuple(size for size in MIG_PROFILE_SLICES if size > slices) if _is_mig(spec) else ()


def _is_mig(spec: DeviceClassSpec) -> bool:
    return not spec.is_cpu and spec.slices_per_device == max(MIG_PROFILE_SLICES)


def _cpu_estimate(kind: str, tokens_in: float, tokens_out: float, spec: DeviceClassSpec) -> Estimate:
    core_ms = CPU_MS_PER_VISIT[kind] + CPU_MS_PER_TOKEN * (tokens_in + tokens_out)
    cores_per_slice = spec.cores / spec.slices_per_device
    rps = TARGET_UTILISATION * cores_per_slice * 1000.0 / core_ms
    return Estimate(spec.name, core_ms + FRAMEWORK_OVERHEAD_MS, rps, slices=1)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown fragment kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
