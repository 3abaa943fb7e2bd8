"""Attribute dialects: the attribute sets real instrumentations emit, and the fragment each becomes.

Each table row is what one SDK or instrumentation library puts on a span (trimmed of
attributes the normaliser ignores, keeping a few it must ignore).
"""

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collectors.normalise import COUNT_MAX, classify, normalise_span
from controlplane.models import FragmentKind as K
from tests.collectors.otlp_builders import make_span

CLIENT, SERVER, PRODUCER, CONSUMER = (
    Span.SPAN_KIND_CLIENT,
    Span.SPAN_KIND_SERVER,
    Span.SPAN_KIND_PRODUCER,
    Span.SPAN_KIND_CONSUMER,
)


def record_of(span_name, attrs, span_kind=Span.SPAN_KIND_INTERNAL):
    span = make_span(span_name, span=1, attrs=attrs)
    span.kind = span_kind
    return normalise_span(span, {"service.name": "support-bot"})


def check(record, kind, name, model, tokens_in, tokens_out):
    assert (record.kind, record.name, record.model) == (kind, name, model)
    assert record.key == f"{kind.value}:{name}"
    assert (record.tokens_in, record.tokens_out) == (tokens_in, tokens_out)


# (case, span name, attributes, kind, name, model, tokens in, tokens out)
GENAI = [
    (
        "chat",
        "chat gpt-4o",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 120,
            "gen_ai.usage.output_tokens": 30,
            "gen_ai.response.id": "chatcmpl-9x",
            "server.address": "api.openai.com",
            "server.port": 443,
            "gen_ai.request.temperature": 0.2,
        },
        K.llm,
        "gpt-4o",
        "gpt-4o",
        120,
        30,
    ),
    (
        "chat names the model as the app spells it",
        "chat",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "vllm",
            "gen_ai.request.model": "Llama-3.1-70B-Instruct",
        },
        K.llm,
        "Llama-3.1-70B-Instruct",
        "Llama-3.1-70B-Instruct",
        0,
        0,
    ),
    (
        "text_completion by response model",
        "text_completion",
        {
            "gen_ai.operation.name": "text_completion",
            "gen_ai.provider.name": "vllm",
            "gen_ai.response.model": "mistral-7b",
        },
        K.llm,
        "mistral-7b",
        "mistral-7b",
        0,
        0,
    ),
    (
        "generate_content",
        "generate_content gemini-2.0-flash",
        {
            "gen_ai.operation.name": "generate_content",
            "gen_ai.provider.name": "gcp.gemini",
            "gen_ai.request.model": "gemini-2.0-flash",
            "gen_ai.usage.input_tokens": 9,
            "gen_ai.usage.output_tokens": 4,
        },
        K.llm,
        "gemini-2.0-flash",
        "gemini-2.0-flash",
        9,
        4,
    ),
    (
        "embeddings",
        "embeddings text-embedding-3-small",
        {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.usage.input_tokens": 8,
            "gen_ai.embeddings.dimension.count": 1536,
        },
        K.embedding,
        "text-embedding-3-small",
        "text-embedding-3-small",
        8,
        0,
    ),
    (
        "rerank",
        "rerank bge-reranker-v2-m3",
        {"gen_ai.operation.name": "rerank", "gen_ai.request.model": "bge-reranker-v2-m3"},
        K.rerank,
        "bge-reranker-v2-m3",
        "bge-reranker-v2-m3",
        0,
        0,
    ),
    (
        "execute_tool",
        "execute_tool get_weather",
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "get_weather",
            "gen_ai.tool.type": "function",
            "gen_ai.tool.call.id": "call_mszuSIzqtI65i1wAUOE8w5H4",
        },
        K.tool,
        "get_weather",
        "",
        0,
        0,
    ),
    (
        "invoke_agent",
        "invoke_agent Math Tutor",
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": "openai",
            "gen_ai.agent.name": "Math Tutor",
            "gen_ai.agent.id": "asst_5j66UpCpwteGg4YSxUnt7lPY",
            "gen_ai.request.model": "gpt-4o",
        },
        K.agent,
        "Math Tutor",
        "gpt-4o",
        0,
        0,
    ),
    (
        "create_agent",
        "create_agent Math Tutor",
        {"gen_ai.operation.name": "create_agent", "gen_ai.provider.name": "openai", "gen_ai.agent.name": "Math Tutor"},
        K.agent,
        "Math Tutor",
        "",
        0,
        0,
    ),
    (
        "agent without a name keeps the span name",
        "invoke_agent",
        {"gen_ai.operation.name": "invoke_agent"},
        K.agent,
        "invoke_agent",
        "",
        0,
        0,
    ),
    (
        "model call without a model keeps the span name",
        "generate_content",
        {"gen_ai.operation.name": "generate_content"},
        K.llm,
        "generate_content",
        "",
        0,
        0,
    ),
    (
        "retrieval without a data source keeps the span name",
        "vector lookup",
        {"gen_ai.operation.name": "retrieval"},
        K.retrieval,
        "vector lookup",
        "",
        0,
        0,
    ),
    (
        "retrieval",
        "retrieval kb-docs",
        {"gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": "kb-docs"},
        K.retrieval,
        "kb-docs",
        "",
        0,
        0,
    ),
]

OLDER_GENAI = [
    (
        "gen_ai.system and a model is an LLM call",
        "openai.chat",
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-3.5-turbo",
            "gen_ai.response.model": "gpt-3.5-turbo-0125",
            "gen_ai.usage.prompt_tokens": 7,
            "gen_ai.usage.completion_tokens": 3,
        },
        K.llm,
        "gpt-3.5-turbo",
        "gpt-3.5-turbo",
        7,
        3,
    ),
    (
        "operation with the older token names",
        "chat llama-3-70b",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "vllm",
            "gen_ai.request.model": "llama-3-70b",
            "gen_ai.usage.prompt_tokens": 7,
            "gen_ai.usage.completion_tokens": 3,
        },
        K.llm,
        "llama-3-70b",
        "llama-3-70b",
        7,
        3,
    ),
    (
        "gen_ai.system without a model is not an LLM call",
        "pipeline",
        {"gen_ai.system": "openai"},
        K.cpu,
        "pipeline",
        "",
        0,
        0,
    ),
]

OPENLLMETRY = [
    (
        "chat",
        "openai.chat",
        {
            "llm.request.type": "chat",
            "gen_ai.system": "OpenAI",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "llm.usage.total_tokens": 150,
            "gen_ai.usage.prompt_tokens": 120,
            "gen_ai.usage.completion_tokens": 30,
            "llm.is_streaming": False,
            "gen_ai.openai.api_base": "https://api.openai.com/v1/",
        },
        K.llm,
        "gpt-4o",
        "gpt-4o",
        120,
        30,
    ),
    (
        "completion with the older llm.* model name",
        "anthropic.completion",
        {
            "llm.request.type": "completion",
            "llm.vendor": "Anthropic",
            "llm.request.model": "claude-2.1",
            "llm.usage.prompt_tokens": 11,
            "llm.usage.completion_tokens": 5,
        },
        K.llm,
        "claude-2.1",
        "claude-2.1",
        11,
        5,
    ),
    (
        "only a total counts as input",
        "bedrock.completion",
        {
            "llm.request.type": "completion",
            "gen_ai.system": "AWS",
            "gen_ai.request.model": "titan-text-express-v1",
            "llm.usage.total_tokens": 42,
        },
        K.llm,
        "titan-text-express-v1",
        "titan-text-express-v1",
        42,
        0,
    ),
    (
        "embedding",
        "openai.embeddings",
        {
            "llm.request.type": "embedding",
            "gen_ai.system": "OpenAI",
            "gen_ai.request.model": "text-embedding-3-small",
            "llm.usage.total_tokens": 8,
            "gen_ai.usage.prompt_tokens": 8,
        },
        K.embedding,
        "text-embedding-3-small",
        "text-embedding-3-small",
        8,
        0,
    ),
    (
        "rerank",
        "cohere.rerank",
        {"llm.request.type": "rerank", "gen_ai.system": "Cohere", "gen_ai.request.model": "rerank-english-v3.0"},
        K.rerank,
        "rerank-english-v3.0",
        "rerank-english-v3.0",
        0,
        0,
    ),
    (
        "workflow is CPU glue named by its entity",
        "joke_creation.workflow",
        {
            "traceloop.span.kind": "workflow",
            "traceloop.entity.name": "joke_creation",
            "traceloop.workflow.name": "joke_creation",
            "traceloop.entity.input": '{"args": []}',
        },
        K.cpu,
        "joke_creation",
        "",
        0,
        0,
    ),
    (
        "task",
        "generate_joke.task",
        {
            "traceloop.span.kind": "task",
            "traceloop.entity.name": "generate_joke",
            "traceloop.workflow.name": "joke_creation",
        },
        K.cpu,
        "generate_joke",
        "",
        0,
        0,
    ),
    (
        "agent",
        "joke_agent.agent",
        {"traceloop.span.kind": "agent", "traceloop.entity.name": "joke_agent"},
        K.agent,
        "joke_agent",
        "",
        0,
        0,
    ),
    (
        "tool",
        "web_search.tool",
        {"traceloop.span.kind": "tool", "traceloop.entity.name": "web_search"},
        K.tool,
        "web_search",
        "",
        0,
        0,
    ),
    (
        "tool without an entity name keeps the span name",
        "web_search.tool",
        {"traceloop.span.kind": "tool"},
        K.tool,
        "web_search.tool",
        "",
        0,
        0,
    ),
]

OPENINFERENCE = [
    (
        "LLM",
        "ChatCompletion",
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-2024-08-06",
            "llm.provider": "openai",
            "llm.system": "openai",
            "llm.token_count.prompt": 120,
            "llm.token_count.completion": 30,
            "llm.token_count.total": 150,
            "input.mime_type": "application/json",
            "llm.invocation_parameters": "{}",
        },
        K.llm,
        "gpt-4o-2024-08-06",
        "gpt-4o-2024-08-06",
        120,
        30,
    ),
    (
        "EMBEDDING",
        "CreateEmbeddings",
        {
            "openinference.span.kind": "EMBEDDING",
            "embedding.model_name": "text-embedding-3-small",
            "llm.token_count.prompt": 8,
            "llm.token_count.total": 8,
        },
        K.embedding,
        "text-embedding-3-small",
        "text-embedding-3-small",
        8,
        0,
    ),
    (
        "RERANKER",
        "CohereRerank.postprocess",
        {"openinference.span.kind": "RERANKER", "reranker.model_name": "rerank-english-v3.0", "reranker.top_k": 3},
        K.rerank,
        "rerank-english-v3.0",
        "rerank-english-v3.0",
        0,
        0,
    ),
    (
        "RETRIEVER is named by its span",
        "VectorStoreRetriever",
        {"openinference.span.kind": "RETRIEVER", "input.value": "what is the refund policy?"},
        K.retrieval,
        "VectorStoreRetriever",
        "",
        0,
        0,
    ),
    (
        "TOOL",
        "get_weather",
        {"openinference.span.kind": "TOOL", "tool.name": "get_weather", "tool.description": "Weather by city"},
        K.tool,
        "get_weather",
        "",
        0,
        0,
    ),
    (
        "AGENT by agent.name",
        "AgentExecutor",
        {"openinference.span.kind": "AGENT", "agent.name": "triage"},
        K.agent,
        "triage",
        "",
        0,
        0,
    ),
    ("AGENT by span name", "AgentExecutor", {"openinference.span.kind": "AGENT"}, K.agent, "AgentExecutor", "", 0, 0),
    (
        "CHAIN",
        "RunnableSequence",
        {"openinference.span.kind": "CHAIN", "input.value": "hi"},
        K.cpu,
        "RunnableSequence",
        "",
        0,
        0,
    ),
    ("GUARDRAIL", "Guard.__call__", {"openinference.span.kind": "GUARDRAIL"}, K.cpu, "Guard.__call__", "", 0, 0),
    (
        "EVALUATOR",
        "hallucination_eval",
        {"openinference.span.kind": "EVALUATOR"},
        K.cpu,
        "hallucination_eval",
        "",
        0,
        0,
    ),
    (
        "kind values match whatever their case",
        "ChatCompletion",
        {"openinference.span.kind": "llm", "llm.model_name": "gpt-4o"},
        K.llm,
        "gpt-4o",
        "gpt-4o",
        0,
        0,
    ),
]

# (case, span name, span kind, attributes, kind, name)
PLAIN = [
    (
        "db.system.name, without the namespace",
        "SELECT shop.orders",
        CLIENT,
        {
            "db.system.name": "postgresql",
            "db.namespace": "shop",
            "db.collection.name": "orders",
            "db.query.text": "SELECT * FROM orders WHERE id = $1",
            "server.address": "pg.internal",
        },
        K.db,
        "postgresql",
    ),
    ("older db.system", "GET", CLIENT, {"db.system": "redis", "db.statement": "GET session:42"}, K.db, "redis"),
    (
        "HTTP client by server.address, never the URL",
        "GET",
        CLIENT,
        {
            "http.request.method": "GET",
            "server.address": "api.github.com",
            "server.port": 443,
            "url.full": "https://api.github.com/repos/42/issues/7",
            "http.response.status_code": 200,
        },
        K.cpu,
        "api.github.com",
    ),
    (
        "HTTP client by peer.service first",
        "POST",
        CLIENT,
        {"http.request.method": "POST", "peer.service": "billing", "server.address": "10.0.3.17"},
        K.cpu,
        "billing",
    ),
    (
        "older HTTP client by net.peer.name",
        "HTTP GET",
        CLIENT,
        {"http.method": "GET", "net.peer.name": "example.com", "http.url": "https://example.com/u/42"},
        K.cpu,
        "example.com",
    ),
    ("HTTP span named by raw URL loses the path", "GET /users/42/orders", CLIENT, {"http.method": "GET"}, K.cpu, "GET"),
    (
        "HTTP server by method and route",
        "POST /chat",
        SERVER,
        {
            "http.request.method": "POST",
            "http.route": "/chat",
            "server.address": "support-bot.acme.internal",
            "url.path": "/chat",
        },
        K.cpu,
        "POST /chat",
    ),
    (
        "HTTP server without a route loses the path",
        "GET /users/42",
        SERVER,
        {"http.request.method": "GET", "server.address": "support-bot"},
        K.cpu,
        "GET",
    ),
    (
        "HTTP attribute on an internal span",
        "parse_request",
        Span.SPAN_KIND_INTERNAL,
        {"http.method": "POST"},
        K.cpu,
        "parse_request",
    ),
    (
        "RPC client by server.address",
        "inventory.Stock/Reserve",
        CLIENT,
        {
            "rpc.system": "grpc",
            "rpc.service": "inventory.Stock",
            "rpc.method": "Reserve",
            "server.address": "inventory",
        },
        K.cpu,
        "inventory",
    ),
    (
        "RPC server by span name",
        "inventory.Stock/Reserve",
        SERVER,
        {"rpc.system": "grpc", "rpc.service": "inventory.Stock", "server.address": "inventory"},
        K.cpu,
        "inventory.Stock/Reserve",
    ),
    (
        "messaging producer by broker",
        "publish orders",
        PRODUCER,
        {"messaging.system": "kafka", "messaging.destination.name": "orders", "server.address": "kafka-0"},
        K.cpu,
        "kafka-0",
    ),
    (
        "messaging consumer by span name",
        "process orders",
        CONSUMER,
        {"messaging.system": "kafka", "messaging.destination.name": "orders", "server.address": "kafka-0"},
        K.cpu,
        "process orders",
    ),
    (
        "anything else by span name",
        "parse_request",
        Span.SPAN_KIND_INTERNAL,
        {"app.user": "u-42"},
        K.cpu,
        "parse_request",
    ),
    (
        "unknown GenAI operation",
        "weird",
        Span.SPAN_KIND_INTERNAL,
        {"gen_ai.operation.name": "telepathy"},
        K.cpu,
        "weird",
    ),
]


def _table(rows):
    return pytest.mark.parametrize(
        ("span_name", "attrs", "kind", "name", "model", "tokens_in", "tokens_out"),
        [row[1:] for row in rows],
        ids=[row[0] for row in rows],
    )


@_table(GENAI)
def test_genai_semconv(span_name, attrs, kind, name, model, tokens_in, tokens_out):
    check(record_of(span_name, attrs, CLIENT), kind, name, model, tokens_in, tokens_out)


@_table(OLDER_GENAI)
def test_older_genai_names(span_name, attrs, kind, name, model, tokens_in, tokens_out):
    check(record_of(span_name, attrs, CLIENT), kind, name, model, tokens_in, tokens_out)


@_table(OPENLLMETRY)
def test_openllmetry(span_name, attrs, kind, name, model, tokens_in, tokens_out):
    check(record_of(span_name, attrs), kind, name, model, tokens_in, tokens_out)


@_table(OPENINFERENCE)
def test_openinference(span_name, attrs, kind, name, model, tokens_in, tokens_out):
    check(record_of(span_name, attrs), kind, name, model, tokens_in, tokens_out)


@pytest.mark.parametrize(
    ("span_name", "span_kind", "attrs", "kind", "name"), [row[1:] for row in PLAIN], ids=[row[0] for row in PLAIN]
)
def test_spans_in_no_genai_dialect_still_count(span_name, span_kind, attrs, kind, name):
    check(record_of(span_name, attrs, span_kind), kind, name, "", 0, 0)


def test_one_llm_call_in_every_dialect_is_one_fragment():
    dialects = [
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 120,
            "gen_ai.usage.output_tokens": 30,
        },
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.prompt_tokens": 120,
            "gen_ai.usage.completion_tokens": 30,
        },
        {
            "llm.request.type": "chat",
            "gen_ai.system": "OpenAI",
            "gen_ai.request.model": "gpt-4o",
            "llm.usage.total_tokens": 150,
            "gen_ai.usage.prompt_tokens": 120,
        },
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o",
            "llm.token_count.prompt": 120,
            "llm.token_count.completion": 30,
        },
    ]
    seen = {(r.kind, r.key, r.model, r.tokens_in, r.tokens_out) for r in (record_of("call", a) for a in dialects)}
    assert seen == {(K.llm, "llm:gpt-4o", "gpt-4o", 120, 30)}


# (case, attributes, kind, name): GenAI operation > OpenInference > OpenLLMetry > older GenAI > db > HTTP > plain.
PRECEDENCE = [
    (
        "GenAI operation over OpenInference",
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "search",
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o",
        },
        K.tool,
        "search",
    ),
    (
        "OpenInference over OpenLLMetry",
        {
            "openinference.span.kind": "TOOL",
            "tool.name": "calc",
            "traceloop.span.kind": "task",
            "traceloop.entity.name": "step",
        },
        K.tool,
        "calc",
    ),
    (
        "OpenLLMetry request type over its span kind",
        {
            "llm.request.type": "chat",
            "gen_ai.request.model": "gpt-4o",
            "traceloop.span.kind": "task",
            "traceloop.entity.name": "step",
        },
        K.llm,
        "gpt-4o",
    ),
    (
        "OpenLLMetry over older GenAI",
        {
            "traceloop.span.kind": "workflow",
            "traceloop.entity.name": "triage",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
        },
        K.cpu,
        "triage",
    ),
    (
        "older GenAI over db",
        {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o", "db.system": "redis"},
        K.llm,
        "gpt-4o",
    ),
    (
        "db over HTTP (Elasticsearch clients emit both)",
        {"db.system": "elasticsearch", "http.request.method": "GET", "server.address": "es-0"},
        K.db,
        "elasticsearch",
    ),
    (
        "unknown GenAI operation falls through to OpenInference",
        {"gen_ai.operation.name": "telepathy", "openinference.span.kind": "TOOL", "tool.name": "x"},
        K.tool,
        "x",
    ),
    (
        "unknown OpenInference kind falls through to db",
        {"openinference.span.kind": "UNKNOWN", "db.system": "redis"},
        K.db,
        "redis",
    ),
    (
        "a dialect attribute that is not a string is ignored",
        {"gen_ai.operation.name": 5, "db.system.name": "mongodb"},
        K.db,
        "mongodb",
    ),
]


@pytest.mark.parametrize(("attrs", "kind", "name"), [row[1:] for row in PRECEDENCE], ids=[r[0] for r in PRECEDENCE])
def test_precedence_between_dialects(attrs, kind, name):
    record = record_of("span", attrs, CLIENT)
    assert (record.kind, record.name) == (kind, name)


def test_classify_works_on_a_plain_mapping():
    assert classify("x", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}) == (K.llm, "m", "m")
    assert classify("GET", {"http.request.method": "GET", "server.address": "a"}, Span.SPAN_KIND_SERVER) == (
        K.cpu,
        "GET",
        "",
    )


# (case, attributes, tokens in, tokens out)
TOKENS = [
    ("ints", {"gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 3}, 12, 3),
    ("floats", {"gen_ai.usage.input_tokens": 12.0, "gen_ai.usage.output_tokens": 3.9}, 12, 3),
    ("numeric strings", {"gen_ai.usage.input_tokens": " 12 ", "gen_ai.usage.output_tokens": "1e3"}, 12, 1000),
    ("text", {"gen_ai.usage.input_tokens": "many", "gen_ai.usage.output_tokens": ""}, 0, 0),
    ("NaN and infinity", {"gen_ai.usage.input_tokens": float("nan"), "gen_ai.usage.output_tokens": "-inf"}, 0, 0),
    ("negative", {"gen_ai.usage.input_tokens": -5, "gen_ai.usage.output_tokens": "-1"}, 0, 0),
    ("booleans", {"gen_ai.usage.input_tokens": True, "gen_ai.usage.output_tokens": False}, 0, 0),
    (
        "absurdly large is capped",
        {"gen_ai.usage.input_tokens": 2**62, "gen_ai.usage.output_tokens": "1e300"},
        COUNT_MAX,
        COUNT_MAX,
    ),
    ("junk falls back to the older name", {"gen_ai.usage.input_tokens": "x", "gen_ai.usage.prompt_tokens": 7}, 7, 0),
    ("only a total: all input", {"llm.usage.total_tokens": 150}, 150, 0),
    ("input and total: output is the rest", {"llm.token_count.prompt": 120, "llm.token_count.total": 150}, 120, 30),
    ("output and total: input is the rest", {"gen_ai.usage.output_tokens": 30, "llm.usage.total_tokens": 150}, 120, 30),
    (
        "a total smaller than the input gives no output",
        {"gen_ai.usage.input_tokens": 200, "llm.usage.total_tokens": 150},
        200,
        0,
    ),
    (
        "explicit counts beat the total",
        {"gen_ai.usage.input_tokens": 1, "gen_ai.usage.output_tokens": 2, "llm.usage.total_tokens": 150},
        1,
        2,
    ),
    ("junk total", {"llm.usage.total_tokens": "n/a"}, 0, 0),
]


@pytest.mark.parametrize(("attrs", "tokens_in", "tokens_out"), [row[1:] for row in TOKENS], ids=[r[0] for r in TOKENS])
def test_token_counts(attrs, tokens_in, tokens_out):
    record = record_of("chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", **attrs})
    assert (record.tokens_in, record.tokens_out) == (tokens_in, tokens_out)
