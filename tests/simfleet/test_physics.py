"""The latency model: load, hardware and memory change latency the way an operator would expect."""

import math

import pytest

from controlplane.simfleet import physics
from controlplane.simfleet.apps import CODING_AGENT, DOC_PIPELINE, LLAMA_70B, RAG_CHATBOT, Fragment, Kind
from controlplane.simfleet.devices import CPU, GAUDI2, H100, L40S

LLAMA_8B = next(f for f in DOC_PIPELINE.fragments() if f.key == "llm:llama-3.1-8b-instruct")
LLAMA_70B_FRAGMENT = next(f for f in RAG_CHATBOT.fragments() if f.kind is Kind.llm)


def latency(fragment, deployments, rate, tokens_in=1000, tokens_out=200, u=0.5, z=0.0):
    load = physics.Load(rate, tokens_in, tokens_out)
    return physics.visit(fragment, deployments, load, tokens_in, tokens_out, u, z).latency_s


def test_more_load_means_higher_latency():
    deployments = [physics.Deployment(H100, 1, 7)]
    latencies = [latency(LLAMA_8B, deployments, rate) for rate in (0.0, 2.0, 8.0, 50.0)]
    assert latencies == sorted(latencies)
    assert latencies[-1] > 2 * latencies[0]


def test_more_replicas_means_lower_latency_under_load():
    one = latency(LLAMA_8B, [physics.Deployment(H100, 1, 7)], rate=8.0)
    four = latency(LLAMA_8B, [physics.Deployment(H100, 4, 7)], rate=8.0)
    assert four < one


def test_faster_class_means_lower_latency():
    h100 = latency(LLAMA_8B, [physics.Deployment(H100, 1, 7)], rate=0.0)
    l40s = latency(LLAMA_8B, [physics.Deployment(L40S, 1, 1)], rate=0.0)
    cpu = latency(LLAMA_8B, [physics.Deployment(CPU, 1, 8)], rate=0.0)
    assert h100 < l40s < cpu


def test_decode_heavy_request_favours_bandwidth_over_flops():
    # Gaudi2 has 2.8x the memory bandwidth of L40S but only 1.2x its FLOP/s: long decodes gain most.
    def ratio(tokens_in, tokens_out):
        return (latency(LLAMA_8B, [physics.Deployment(L40S, 1, 1)], 0.0, tokens_in, tokens_out)
                / latency(LLAMA_8B, [physics.Deployment(GAUDI2, 1, 1)], 0.0, tokens_in, tokens_out))

    assert ratio(100, 800) > ratio(6000, 1) > 1.0


def test_model_that_does_not_fit_is_offloaded_and_slow():
    fits = physics.visit(LLAMA_70B_FRAGMENT, [physics.Deployment(GAUDI2, 1, 2)], physics.Load(0.0), 500, 100, 0.5, 0.0)
    squeezed = physics.visit(LLAMA_70B_FRAGMENT, [physics.Deployment(L40S, 1, 1)], physics.Load(0.0),
                             500, 100, 0.5, 0.0)
    assert not fits.offloaded and squeezed.offloaded
    assert squeezed.latency_s > 10 * fits.latency_s


def test_fixed_cost_kind_queues_like_mm1():
    fragment = Fragment(Kind.tool, "grep", cpu_ms=10.0)
    visit = physics.visit(fragment, [physics.Deployment(CPU, 1)], physics.Load(400.0), 0, 0, 0.5, 0.0)
    # One 8-core slice serves 8 visits at once: occupancy 10 ms / 8 = 1.25 ms, rho = 400/s x 1.25 ms = 0.5;
    # wait = 1.25 ms x 0.5 / (1 - 0.5) = 1.25 ms; latency = (10 + 1.25) ms x exp(-sigma^2 / 2)
    assert visit.rho == pytest.approx(0.5)
    assert visit.latency_s == pytest.approx(0.01125 * math.exp(-physics.JITTER_SIGMA**2 / 2))
    two_slices = physics.visit(fragment, [physics.Deployment(CPU, 1, 2)], physics.Load(400.0), 0, 0, 0.5, 0.0)
    assert two_slices.rho == pytest.approx(0.25)  # 16 cores


def test_saturation_is_capped_not_infinite():
    fragment = Fragment(Kind.tool, "grep", cpu_ms=10.0)
    visit = physics.visit(fragment, [physics.Deployment(CPU, 1)], physics.Load(8000.0), 0, 0, 0.5, 0.0)
    assert visit.rho == pytest.approx(10.0)
    wait = 0.010 / 8 * physics.MAX_RHO / (1 - physics.MAX_RHO)
    assert visit.latency_s == pytest.approx((0.010 + wait) * math.exp(-physics.JITTER_SIGMA**2 / 2))


def test_load_is_routed_in_proportion_to_capacity():
    fragment = Fragment(Kind.tool, "grep", cpu_ms=10.0)
    rho, shares = physics.utilisation(
        fragment, [physics.Deployment(CPU, 1), physics.Deployment(H100, 8)], physics.Load(400.0)
    )
    # capacity: one 8-core CPU replica 8/0.01 = 800/s, 8 H100 replicas (one visit at a time, no speedup)
    # 8/0.01 = 800/s; rho = 400/1600 and shares are 1:1
    assert rho == pytest.approx(0.25)
    assert shares == pytest.approx((0.5, 0.5))
    assert physics.choose(shares, 0.49) == 0 and physics.choose(shares, 0.51) == 1


def test_no_replicas_is_an_error():
    with pytest.raises(ValueError, match="no replicas"):
        physics.visit(LLAMA_8B, [physics.Deployment(H100, 0, 2)], physics.Load(1.0), 10, 10, 0.5, 0.0)


def test_initial_deployment_puts_models_on_h100_and_the_rest_on_cpu():
    deployments = {f.key: physics.initial_deployment(f) for app in (RAG_CHATBOT, CODING_AGENT) for f in app.fragments()}
    assert deployments["llm:llama-3.1-70b-instruct"] == physics.Deployment(H100, 4, 14)  # 141 GB -> 2 whole H100s
    assert deployments["embedding:bge-large-en"].device_class == H100
    assert deployments["tool:run_tests"] == physics.Deployment(CPU, 6, 1)
    assert LLAMA_70B.weight_bytes == pytest.approx(141.2e9)


def test_same_draws_give_the_same_visit():
    args = (LLAMA_8B, [physics.Deployment(H100, 1, 7), physics.Deployment(L40S, 2, 1)], physics.Load(3.0, 900, 150),
            1200, 300, 0.3, -0.7)
    assert physics.visit(*args) == physics.visit(*args)


# --- split fragments: a prefill pool and a decode pool --------------------------------------------------------

PREFILL_H100 = physics.Deployment(H100, 1, 14)
DECODE_GAUDI2 = physics.Deployment(GAUDI2, 1, 2)


def split(prefill, decode, rate=0.0, tokens_in=1000, tokens_out=200, z=0.0):
    load = physics.Load(rate, tokens_in, tokens_out)
    return physics.split_visit(LLAMA_70B_FRAGMENT, prefill, decode, load, tokens_in, tokens_out, 0.5, 0.5, z)


def test_split_visit_across_classes_pays_the_kv_hand_off_and_decodes_on_the_decode_class():
    visit = split([PREFILL_H100], [DECODE_GAUDI2])
    noise = physics.jitter(0.0)
    # 1000 tokens x 327,680 KV bytes (80 layers x 8 heads x 128 x K,V x 2 B) = 327.68 MB over 25 GB/s
    # = 13.1072 ms, plus 50 us to set the transfer up
    assert physics.hand_off_s(LLAMA_70B_FRAGMENT, 1000, H100, GAUDI2) == pytest.approx(0.0131572)
    assert visit.hand_off_s == pytest.approx(0.0131572 * noise)
    prefill = physics.service(LLAMA_70B_FRAGMENT, PREFILL_H100, 1000, 200)
    decode = physics.service(LLAMA_70B_FRAGMENT, DECODE_GAUDI2, 1000, 200)
    # idle: no wait, and the decode batch is one request
    assert visit.ttft_s == pytest.approx((prefill.prefill_s + 0.0131572) * noise)
    assert visit.latency_s - visit.ttft_s == pytest.approx(200 * decode.step_s(1) * noise)
    assert decode.step_s(1) != pytest.approx(prefill.step_s(1))  # it is the decode class's step, not H100's
    assert (visit.prefill_class, visit.device_class) == (H100, GAUDI2)
    assert visit.prefill_occupancy_s == pytest.approx(prefill.prefill_s)
    assert visit.occupancy_s == pytest.approx(decode.decode_occupancy_s)


def test_split_visit_on_one_class_hands_off_for_free():
    visit = split([PREFILL_H100], [physics.Deployment(H100, 2, 14)])
    prefill = physics.service(LLAMA_70B_FRAGMENT, PREFILL_H100, 1000, 200)
    assert visit.hand_off_s == 0.0
    assert visit.ttft_s == pytest.approx(prefill.prefill_s * physics.jitter(0.0))
    assert (visit.prefill_class, visit.device_class) == (H100, H100)


def test_prefill_pool_queues_on_prefill_time_only():
    visit = split([PREFILL_H100], [physics.Deployment(GAUDI2, 4, 2)], rate=2.0)
    prefill_s = physics.service(LLAMA_70B_FRAGMENT, PREFILL_H100, 1000, 200).prefill_s
    # the prefill replica is busy for the prompt only: rho = 2/s x prefill_s (about 0.29), wait = prefill_s r/(1-r)
    r = 2.0 * prefill_s
    assert visit.wait_s == pytest.approx(prefill_s * r / (1 - r) * physics.jitter(0.0))
    whole = physics.visit(LLAMA_70B_FRAGMENT, [PREFILL_H100], physics.Load(2.0, 1000, 200), 1000, 200, 0.5, 0.0)
    assert visit.wait_s < whole.wait_s  # a whole replica is also busy decoding, so it queues longer


def test_a_busier_decode_pool_decodes_in_fuller_batches():
    calm = split([PREFILL_H100], [physics.Deployment(GAUDI2, 4, 2)], rate=1.0)
    busy = split([PREFILL_H100], [physics.Deployment(GAUDI2, 1, 2)], rate=1.0)
    assert busy.itl_s > calm.itl_s
    assert busy.ttft_s == pytest.approx(calm.ttft_s)  # the prefill pool is the same


def test_split_visit_is_only_for_llms():
    with pytest.raises(ValueError, match="not an LLM"):
        physics.split_visit(next(f for f in RAG_CHATBOT.fragments() if f.kind is Kind.embedding),
                            [PREFILL_H100], [DECODE_GAUDI2], physics.Load(1.0, 100), 100, 0, 0.5, 0.5, 0.0)


def test_an_overloaded_decode_pool_makes_visits_wait_after_their_first_token():
    calm = split([PREFILL_H100], [physics.Deployment(GAUDI2, 4, 2)], rate=1.0)
    decode = physics.service(LLAMA_70B_FRAGMENT, DECODE_GAUDI2, 1000, 200)
    rate = 0.9 / decode.decode_occupancy_s  # one decode replica 90% busy at full batches
    busy = split([physics.Deployment(H100, 4, 14)], [DECODE_GAUDI2], rate=rate)
    # wait for a batch slot = decode occupancy x r / (1 - r) at r = 0.9, after the first token
    assert busy.decode_wait_s == pytest.approx(decode.decode_occupancy_s * 9 * physics.jitter(0.0))
    assert busy.latency_s - busy.ttft_s == pytest.approx(busy.decode_wait_s + 200 * busy.itl_s)
    assert calm.decode_wait_s < busy.decode_wait_s / 100
