"""The simulated fleet's sample agent applications, as data.

Each application is a tenant's workload whose requests walk a call graph of
fragments. A fragment's `key` is exactly what the collectors derive from the
spans the driver emits for it (OTel GenAI semantic conventions):

    chat + gen_ai.request.model=M          -> "llm:M"
    embeddings + gen_ai.request.model=M    -> "embedding:M"
    rerank + gen_ai.request.model=M        -> "rerank:M"
    execute_tool + gen_ai.tool.name=T      -> "tool:T"
    invoke_agent + gen_ai.agent.name=A     -> "agent:A"
    retrieval + gen_ai.data_source.id=D    -> "retrieval:D"
    db.system=S                            -> "db:S"
    anything else                          -> "cpu:<span name>"
"""

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    llm = "llm"
    embedding = "embedding"
    rerank = "rerank"
    tool = "tool"
    agent = "agent"
    retrieval = "retrieval"
    db = "db"
    cpu = "cpu"


MODEL_KINDS = frozenset({Kind.llm, Kind.embedding, Kind.rerank})


@dataclass(frozen=True)
class ModelCost:
    """What a model costs to serve: its size and the KV cache one token holds (bf16)."""

    params_b: float
    kv_bytes_per_token: int = 0  # 0 for encoders (embedding, rerank)

    @property
    def weight_bytes(self) -> float:
        return self.params_b * 1e9 * 2


@dataclass(frozen=True)
class Fragment:
    """A node of an application's graph: what it is and what one visit costs where.

    Model kinds are costed by the roofline in physics from `model`; every other
    kind is a fixed `cpu_ms` of host work, `accelerated_speedup` times faster
    when it is placed on an accelerator (a GPU vector index, say).
    """

    kind: Kind
    name: str
    model: ModelCost | None = None
    cpu_ms: float = 1.0
    accelerated_speedup: float = 1.0
    initial_replicas: int = 1  # the deployment the app had before heteroplane placed it

    def __post_init__(self) -> None:
        if (self.kind in MODEL_KINDS) != (self.model is not None):
            raise ValueError(f"fragment {self.key}: model kinds need a ModelCost, other kinds must not have one")

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class TokenRule:
    """Token counts of one call from its request's trace row: min(cap, fixed + scale * trace tokens)."""

    in_scale: float = 1.0
    in_fixed: int = 0
    in_cap: int = 8192
    out_scale: float = 1.0
    out_fixed: int = 0
    out_cap: int = 1024

    def input_tokens(self, context_tokens: int) -> int:
        return max(1, min(self.in_cap, int(self.in_fixed + self.in_scale * context_tokens)))

    def output_tokens(self, generated_tokens: int) -> int:
        return max(0, min(self.out_cap, int(self.out_fixed + self.out_scale * generated_tokens)))


@dataclass(frozen=True)
class Call:
    """One visit of `fragment`, then its children in order; skipped with probability 1 - `probability`."""

    fragment: Fragment
    children: tuple["Step", ...] = ()
    probability: float = 1.0
    tokens: TokenRule = field(default_factory=TokenRule)
    operation: str = ""  # db.operation.name for db calls
    collection: str = ""  # db.collection.name for db calls


@dataclass(frozen=True)
class Loop:
    """An agent loop: `body` repeated a uniform random number of times in [min, max].

    Each iteration consumes the next trace row for its token counts, and the
    context grows by `context_growth_tokens` per iteration (tool output fed back).
    """

    body: tuple[Call, ...]
    min_iterations: int
    max_iterations: int
    context_growth_tokens: int = 0


Step = Call | Loop


class Trace(StrEnum):
    """Packaged trace samples (see data/ATTRIBUTION.md)."""

    code = "code"
    conv = "conv"


@dataclass(frozen=True)
class App:
    """A tenant's agent application: its graph and what drives its load.

    Arrivals follow `trace`'s timestamps, unless `steady_rps` is set: then they
    come at that fixed rate and the trace only supplies token counts.
    """

    tenant: str
    workload: str
    root: Call
    trace: Trace
    steady_rps: float | None = None

    def fragments(self) -> tuple[Fragment, ...]:
        """Every distinct fragment of the graph, in walk order."""
        seen: dict[str, Fragment] = {}

        def walk(step: Step) -> None:
            if isinstance(step, Loop):
                for call in step.body:
                    walk(call)
                return
            seen.setdefault(step.fragment.key, step.fragment)
            for child in step.children:
                walk(child)

        walk(self.root)
        return tuple(seen.values())


# Models. KV bytes per token = layers * kv_heads * head_dim * 2 (K and V) * 2 bytes.
LLAMA_70B = ModelCost(70.6, 80 * 8 * 128 * 2 * 2)
LLAMA_8B = ModelCost(8.0, 32 * 8 * 128 * 2 * 2)
QWEN_CODER_32B = ModelCost(32.5, 64 * 8 * 128 * 2 * 2)
BGE_LARGE = ModelCost(0.335)
BGE_RERANKER = ModelCost(0.568)

EMBED = Fragment(Kind.embedding, "bge-large-en", BGE_LARGE)
POSTGRES = Fragment(Kind.db, "postgresql", cpu_ms=4.0, initial_replicas=2)

RAG_CHATBOT = App(
    tenant="acme",
    workload="rag-chatbot",
    trace=Trace.conv,
    root=Call(
        Fragment(Kind.cpu, "api", cpu_ms=3.0, initial_replicas=2),
        children=(
            Call(EMBED, tokens=TokenRule(in_cap=512)),
            Call(
                Fragment(Kind.retrieval, "vector-search", cpu_ms=15.0, accelerated_speedup=4.0, initial_replicas=2),
                children=(Call(POSTGRES, operation="SELECT", collection="chunks"),),
            ),
            # 20 retrieved passages of ~320 tokens scored against the query.
            Call(Fragment(Kind.rerank, "bge-reranker-large", BGE_RERANKER), tokens=TokenRule(0.0, 6400)),
            Call(Fragment(Kind.llm, "llama-3.1-70b-instruct", LLAMA_70B, initial_replicas=4)),
        ),
    ),
)

CODING_AGENT = App(
    tenant="acme",
    workload="coding-agent",
    trace=Trace.code,
    root=Call(
        Fragment(Kind.agent, "coder", cpu_ms=5.0),
        children=(
            Loop(
                body=(
                    Call(Fragment(Kind.llm, "qwen2.5-coder-32b", QWEN_CODER_32B, initial_replicas=2)),
                    Call(Fragment(Kind.tool, "read_file", cpu_ms=8.0), probability=0.7),
                    Call(Fragment(Kind.tool, "run_tests", cpu_ms=900.0, initial_replicas=6)),
                ),
                min_iterations=3,
                max_iterations=6,
                context_growth_tokens=400,
            ),
        ),
    ),
)

DOC_PIPELINE = App(
    tenant="globex",
    workload="doc-pipeline",
    trace=Trace.conv,
    steady_rps=0.5,
    root=Call(
        Fragment(Kind.cpu, "ocr-parse", cpu_ms=400.0),
        children=(
            Call(EMBED, tokens=TokenRule(in_scale=4.0)),
            Call(Fragment(Kind.llm, "llama-3.1-8b-instruct", LLAMA_8B), tokens=TokenRule(in_scale=4.0, out_cap=512)),
            Call(POSTGRES, operation="INSERT", collection="documents"),
        ),
    ),
)

APPS: tuple[App, ...] = (RAG_CHATBOT, CODING_AGENT, DOC_PIPELINE)
