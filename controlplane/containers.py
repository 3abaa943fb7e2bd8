"""What a fragment's replicas run, resolved from its runtime templates: the fragment's own, else its
workload's, else the built-in default for its kind, else none.

The built-in default serves an LLM fragment with vLLM's OpenAI-compatible server, loading the
fragment's model. A fragment split for disaggregated serving runs two pools, and a vLLM replica of
each must know its role in the KV-cache hand-over: prefill replicas produce the cache
(`kv_producer`), decode replicas consume it (`kv_consumer`), through vLLM's `--kv-transfer-config`.
Every container is told its pool in `HETEROPLANE_PHASE` (`whole`, `prefill` or `decode`), so an
image of the operator's own can take its role too.
"""

import json

from controlplane.actuators.base import Container
from controlplane.models.runtime_templates import RuntimeTemplateBase
from controlplane.models.workloads import FragmentKind
from optimizer.types import Phase

VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
VLLM_PORT = 8000
KV_CONNECTOR = "P2pNcclConnector"
KV_ROLE = {Phase.prefill: "kv_producer", Phase.decode: "kv_consumer"}


def resolve(
    kind: FragmentKind,
    model: str,
    phase: Phase,
    own: RuntimeTemplateBase | None,
    workload: RuntimeTemplateBase | None,
) -> tuple[str, Container | None]:
    """(source, container) for a replica of a fragment of `kind` serving `model` in pool `phase`;
    source is 'fragment', 'workload', 'default' or 'none'."""
    if own is not None:
        return "fragment", from_template(own, phase)
    if workload is not None:
        return "workload", from_template(workload, phase)
    if kind == FragmentKind.llm and model:  # kind may come from the database as a plain str
        return "default", vllm(model, phase)
    return "none", None


def from_template(template: RuntimeTemplateBase, phase: Phase) -> Container:
    env = {**template.env, "HETEROPLANE_PHASE": phase.value or "whole"}
    return Container(
        image=template.image,
        command=tuple(template.command),
        args=tuple(template.args),
        env=tuple(sorted(env.items())),
        secret_env=tuple(sorted(template.secret_env.items())),
        ports=tuple(template.ports),
        cpu_millicores=template.cpu_millicores,
        memory_mib=template.memory_mib,
        model=template.model,
    )


def vllm(model: str, phase: Phase) -> Container:
    """vLLM serving `model` on VLLM_PORT; in a split pool, with its KV-transfer role."""
    args = ["--model", model, "--port", str(VLLM_PORT)]
    if phase != Phase.whole:
        args += ["--kv-transfer-config", json.dumps({"kv_connector": KV_CONNECTOR, "kv_role": KV_ROLE[phase]},
                                                    separators=(",", ":"))]
    return Container(image=VLLM_IMAGE, args=tuple(args), env=(("HETEROPLANE_PHASE", phase.value or "whole"),),
                     ports=(VLLM_PORT,), model=model)
