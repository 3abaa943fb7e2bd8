"""Fragment names that look generated lose the generated part before they become fragment keys.

Pure. Instrumentations often put an id into a span name (``fetch_user_12345``,
``job-3f2a9c1e7b``, ``req-550e8400-e29b-41d4-a716-446655440000``): every request would then
make a fragment of its own, and a workload's graph would grow without bound. As OpenTelemetry
SDKs bound attributes and Prometheus bounds series, `generic_name` replaces each generated run
with ``{id}``:

- a UUID (8-4-4-4-12 hex digits);
- a run of at least 8 hex digits with at least one decimal digit in it (a hash, a hex id),
  standing alone (not part of a longer run of letters or digits);
- a run of at least 4 decimal digits (an id, a timestamp, a long number).

Short numbers (``gpt-4``, ``v2``, ``step3``) and words stay. Model names are never passed here
(an llm's name is its model). What still varies is bounded per workload by the store
(`controlplane.collected`: names past the limit fold into one overflow fragment per kind).
"""

import re
from functools import lru_cache

PLACEHOLDER = "{id}"
MIN_HEX = 8
MIN_DIGITS = 4

_GENERATED = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    rf"|(?<![0-9A-Za-z])(?=[a-fA-F]*[0-9])[0-9a-fA-F]{{{MIN_HEX},}}(?![0-9A-Za-z])"
    rf"|(?<![0-9])[0-9]{{{MIN_DIGITS},}}(?![0-9])"
)


@lru_cache(maxsize=8192)
def generic_name(name: str) -> str:
    """`name` with every generated-looking run replaced by ``{id}`` (idempotent)."""
    return _GENERATED.sub(PLACEHOLDER, name)
