"""The simulated fleet's latency model: what one visit of a fragment costs, given where it runs and how loaded.

Pure functions of values; the fleet supplies placement, load and random draws.

Service time of one visit on one replica (model kinds), a roofline:

    D       = slices / slices_per_device              devices one replica spans
    F       = D * bf16_tflops * compute_eff * tp       achieved FLOP/s (tp = 0.9 when D > 1)
    B       = D * memory_gbps * bandwidth_eff * tp     achieved bytes/s
    W       = 2 * params                               bf16 weight bytes; streamed from host
                                                       at OFFLOAD_GBPS when W > 0.9 * D * memory
    prefill = max(2 * params * tokens_in / F, W / B)   compute-bound, floored by one weight read
    step(b) = W / B + b * kv_per_token * (tokens_in + tokens_out / 2) / B
                                                       one decode step for a batch of b
    b_max   = KV cache that fits beside the weights, in requests (1..64)

A visit occupies a replica for `occupancy = prefill + tokens_out * step(b_max) / b_max`
(decode is shared with the rest of a full batch), which is what capacity means.
Other kinds are `cpu_ms`, `accelerated_speedup` times faster on an accelerator.

Queueing, per fragment over all its replica sets, with load routed in proportion
to capacity (replicas / mean occupancy on each class), so every set sees

    rho   = arrival_rate / sum_c(replicas_c / occupancy_c)
    wait  = occupancy * r / (1 - r),  r = min(rho, 0.95)     M/M/1-ish
    batch = 1 + (b_max - 1) * min(rho, 1)                     decode slows as batches fill
    latency = (wait + prefill + tokens_out * step(batch)) * lognormal jitter

For a fixed-cost kind that is `cpu_ms / (1 - r)` times jitter.

A split LLM fragment (disaggregated serving) runs a prefill pool and a decode
pool instead, each routed and loaded on its own: a prefill replica is occupied
for `prefill`, a decode replica for `tokens_out * step(b_max) / b_max`, and rho
of each pool is computed as above with that occupancy. A visit is prefilled on
a set of the prefill pool, its KV cache handed to a set of the decode pool, and
decoded there:

    hand_off = 0 on the same device class, otherwise
               kv_per_token * tokens_in / KV_LINK_GBPS + KV_LINK_LATENCY_S
    ttft     = (wait + prefill + hand_off) * jitter              wait from the prefill pool's rho
    latency  = ttft + tokens_out * step(batch) * jitter          step on the decode class,
                                                                 batch from the decode pool's rho
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from controlplane.simfleet.apps import MODEL_KINDS, Fragment, Kind
from controlplane.simfleet.devices import CPU, CPU_CORES_PER_SLICE, H100, OFFLOAD_GBPS, SimDeviceClass, device_class
from optimizer.types import Phase

MAX_RHO = 0.95
MAX_BATCH = 64
MEMORY_HEADROOM = 0.9  # fraction of device memory usable for weights and KV
JITTER_SIGMA = 0.25
_GIB = 2**30
# The link a KV cache crosses from a prefill replica to a decode replica on another class: RDMA over
# 200-400 Gb/s NICs achieves about 25 GB/s, plus a fixed cost to set up each transfer. The sim's own
# figures, independent of the optimizer's transfer model, so the control plane has something to learn.
KV_LINK_GBPS = 25.0
KV_LINK_LATENCY_S = 50e-6


@dataclass(frozen=True)
class Deployment:
    """Replicas of one fragment on one device class, `slices` each."""

    device_class: str
    replicas: int
    slices: int = 1


@dataclass(frozen=True)
class Load:
    """A fragment's recent load: arrival rate and typical token counts."""

    rate_rps: float
    mean_input_tokens: float = 0.0
    mean_output_tokens: float = 0.0


@dataclass(frozen=True)
class Service:
    """Unloaded cost of one visit on one replica."""

    prefill_s: float  # whole visit for fixed-cost kinds
    max_batch: int
    weights_s: float  # weight-streaming part of one decode step
    kv_s_per_request: float  # KV-streaming part of one decode step, per request in the batch
    output_tokens: int
    offloaded: bool
    parallel: int = 1  # visits one replica serves at once outside decode batches (a CPU replica: its cores)
    kv_share: float = 0.0  # LLM: one request's KV cache over the replica's memory for KV (vLLM's kv_cache_usage)

    def step_s(self, batch: float) -> float:
        return self.weights_s + batch * self.kv_s_per_request

    @property
    def decode_occupancy_s(self) -> float:
        """Replica-seconds one visit's decode takes, sharing a full batch."""
        return self.output_tokens * self.step_s(self.max_batch) / self.max_batch

    @property
    def occupancy_s(self) -> float:
        return self.prefill_s / self.parallel + self.decode_occupancy_s

    def occupancy_in(self, phase: Phase) -> float:
        """Replica-seconds one visit takes on a replica serving `phase`."""
        if phase is Phase.prefill:
            return self.prefill_s / self.parallel
        if phase is Phase.decode:
            return self.decode_occupancy_s
        return self.occupancy_s


@dataclass(frozen=True)
class Visit:
    """One visit as the fleet served it.

    A split visit was prefilled on `prefill_class` and decoded on `device_class`;
    a whole one ran on `device_class` alone (`prefill_class` empty).
    """

    device_class: str
    latency_s: float
    ttft_s: float  # queueing + prefill (+ KV hand-off when split)
    itl_s: float  # one decode step (0 when nothing is generated)
    wait_s: float  # queueing part of ttft_s
    occupancy_s: float  # replica-seconds of capacity it used on `device_class` (the decode part when split)
    max_batch: int  # requests one replica of `device_class` batches at most
    rho: float  # the busier pool's when split
    offloaded: bool
    prefill_class: str = ""
    prefill_occupancy_s: float = 0.0  # replica-seconds it used on `prefill_class`
    hand_off_s: float = 0.0  # KV cache transfer part of ttft_s
    decode_wait_s: float = 0.0  # split: waiting for a decode batch slot after the first token
    kv_share: float = 0.0  # LLM: its KV cache's share of a `device_class` replica's KV memory while it runs


def replica_memory_bytes(spec: SimDeviceClass, slices: int) -> float:
    return slices / spec.slices_per_device * spec.memory_gib * _GIB * MEMORY_HEADROOM


def min_slices(fragment: Fragment, spec: SimDeviceClass) -> int:
    """Fewest slices whose memory holds the fragment's weights (1 for fixed-cost kinds)."""
    if fragment.model is None:
        return 1
    per_slice = replica_memory_bytes(spec, 1)
    # Leave 5% of the weights' size again for KV cache and activations.
    slices = max(1, math.ceil(fragment.model.weight_bytes * 1.05 / per_slice))
    if slices > spec.slices_per_device:  # tensor parallel over whole devices
        slices = math.ceil(slices / spec.slices_per_device) * spec.slices_per_device
    return slices


def initial_deployment(fragment: Fragment) -> Deployment:
    """Where a fragment runs before heteroplane places it: models on H100, the rest on CPU."""
    spec = device_class(H100 if fragment.kind in MODEL_KINDS else CPU)
    return Deployment(spec.name, fragment.initial_replicas, min_slices(fragment, spec))


def service(fragment: Fragment, deployment: Deployment, input_tokens: int, output_tokens: int) -> Service:
    """Unloaded cost of one visit of `fragment` on one replica of `deployment`."""
    spec = device_class(deployment.device_class)
    if fragment.model is None:
        seconds = fragment.cpu_ms / 1000.0
        if spec.accelerator:
            return Service(seconds / fragment.accelerated_speedup, 1, 0.0, 0.0, 0, False)
        # One core serves one visit: a replica of s slices serves s x CPU_CORES_PER_SLICE at once.
        return Service(seconds, 1, 0.0, 0.0, 0, False, parallel=deployment.slices * CPU_CORES_PER_SLICE)

    devices = deployment.slices / spec.slices_per_device
    tp = 0.9 if devices > 1 else 1.0
    flops = devices * spec.bf16_tflops * 1e12 * spec.compute_efficiency * tp
    bandwidth = devices * spec.memory_gbps * 1e9 * spec.bandwidth_efficiency * tp
    memory = replica_memory_bytes(spec, deployment.slices)
    weights = fragment.model.weight_bytes
    offloaded = weights > memory
    weights_s = weights / (OFFLOAD_GBPS * 1e9 if offloaded else bandwidth)
    prefill = max(2 * fragment.model.params_b * 1e9 * input_tokens / flops, weights_s)
    if fragment.kind is not Kind.llm or output_tokens == 0:
        return Service(prefill, 1, 0.0, 0.0, 0, offloaded)

    kv_per_request = fragment.model.kv_bytes_per_token * (input_tokens + output_tokens / 2)
    free = max(memory - weights, 0.0) if not offloaded else memory * 0.5
    max_batch = max(1, min(MAX_BATCH, int(free // max(kv_per_request, 1.0))))
    return Service(prefill, max_batch, weights_s, kv_per_request / bandwidth, output_tokens, offloaded,
                   kv_share=min(1.0, kv_per_request / free) if free > 0 else 1.0)


def utilisation(
    fragment: Fragment, deployments: Sequence[Deployment], load: Load, phase: Phase = Phase.whole
) -> tuple[float, tuple[float, ...]]:
    """rho of the fragment's replica sets (of one pool: `phase`), and each set's share of its arrivals.

    Shares are proportional to capacity: replicas over the occupancy of one visit in `phase`.
    """
    tokens_in = max(1, round(load.mean_input_tokens))
    tokens_out = round(load.mean_output_tokens)
    if phase is Phase.decode:  # a decode pool's capacity is in generated tokens: at least one per visit
        tokens_out = max(1, tokens_out)
    capacities = tuple(
        d.replicas / service(fragment, d, tokens_in, tokens_out).occupancy_in(phase) if d.replicas > 0 else 0.0
        for d in deployments
    )
    total = sum(capacities)
    if total <= 0:
        raise ValueError(f"fragment {fragment.key} has no replicas to serve it")
    return load.rate_rps / total, tuple(c / total for c in capacities)


def choose(shares: Sequence[float], u: float) -> int:
    """Index picked by a uniform draw `u` in [0, 1) over `shares` (which sum to 1)."""
    acc = 0.0
    for i, share in enumerate(shares):
        acc += share
        if u < acc:
            return i
    return max(i for i, share in enumerate(shares) if share > 0)


def jitter(z: float) -> float:
    """A mean-one lognormal multiplier from a standard normal draw."""
    return math.exp(JITTER_SIGMA * z - JITTER_SIGMA**2 / 2)


def visit(
    fragment: Fragment,
    deployments: Sequence[Deployment],
    load: Load,
    input_tokens: int,
    output_tokens: int,
    u: float,
    z: float,
) -> Visit:
    """One visit: routed to a replica set by `u`, queued by the load, jittered by `z`."""
    rho, shares = utilisation(fragment, deployments, load)
    chosen = deployments[choose(shares, u)]
    svc = service(fragment, chosen, input_tokens, output_tokens)
    r = min(rho, MAX_RHO)
    wait = svc.occupancy_s * r / (1 - r)
    batch = 1 + (svc.max_batch - 1) * min(rho, 1.0)
    step = svc.step_s(batch) if output_tokens and fragment.kind is Kind.llm else 0.0
    noise = jitter(z)
    ttft = (wait + svc.prefill_s) * noise
    return Visit(
        device_class=chosen.device_class,
        latency_s=ttft + svc.output_tokens * step * noise,
        ttft_s=ttft,
        itl_s=step * noise,
        wait_s=wait * noise,
        occupancy_s=svc.occupancy_s,
        max_batch=svc.max_batch,
        rho=rho,
        offloaded=svc.offloaded,
        kv_share=svc.kv_share,
    )


def hand_off_s(fragment: Fragment, input_tokens: int, prefill_class: str, decode_class: str) -> float:
    """Time to move one visit's KV cache from a prefill replica to a decode replica (0 on the same class)."""
    if prefill_class == decode_class or fragment.model is None:
        return 0.0
    return fragment.model.kv_bytes_per_token * input_tokens / (KV_LINK_GBPS * 1e9) + KV_LINK_LATENCY_S


def split_visit(
    fragment: Fragment,
    prefill: Sequence[Deployment],
    decode: Sequence[Deployment],
    load: Load,
    input_tokens: int,
    output_tokens: int,
    u_prefill: float,
    u_decode: float,
    z: float,
) -> Visit:
    """One visit of an LLM fragment split into pools: prefilled on a `prefill` set, decoded on a `decode` set.

    Each pool is routed by its own draw and loaded by its own rho; `z` jitters the whole visit.
    """
    if fragment.kind is not Kind.llm:
        raise ValueError(f"fragment {fragment.key} is not an LLM; only LLM fragments run prefill and decode pools")
    prefill_rho, prefill_shares = utilisation(fragment, prefill, load, Phase.prefill)
    decode_rho, decode_shares = utilisation(fragment, decode, load, Phase.decode)
    prefiller = prefill[choose(prefill_shares, u_prefill)]
    decoder = decode[choose(decode_shares, u_decode)]
    first = service(fragment, prefiller, input_tokens, output_tokens)
    rest = service(fragment, decoder, input_tokens, output_tokens)
    r = min(prefill_rho, MAX_RHO)
    wait = first.prefill_s * r / (1 - r)
    batch = 1 + (rest.max_batch - 1) * min(decode_rho, 1.0)
    step = rest.step_s(batch) if output_tokens else 0.0
    # The first token comes from prefill; a decode pool past its batch capacity makes the rest wait.
    rd = min(decode_rho, MAX_RHO)
    decode_wait = rest.decode_occupancy_s * rd / (1 - rd)
    hand_off = hand_off_s(fragment, input_tokens, prefiller.device_class, decoder.device_class)
    noise = jitter(z)
    ttft = (wait + first.prefill_s + hand_off) * noise
    return Visit(
        device_class=decoder.device_class,
        latency_s=ttft + (decode_wait + rest.output_tokens * step) * noise,
        ttft_s=ttft,
        itl_s=step * noise,
        wait_s=wait * noise,
        occupancy_s=rest.decode_occupancy_s,
        max_batch=rest.max_batch,
        rho=max(prefill_rho, decode_rho),
        offloaded=first.offloaded or rest.offloaded,
        prefill_class=prefiller.device_class,
        prefill_occupancy_s=first.prefill_s,
        hand_off_s=hand_off * noise,
        decode_wait_s=decode_wait * noise,
        kv_share=rest.kv_share,
    )
