"""Generated-looking parts of fragment names become {id}; checked against a scanner written here."""

import uuid

from hypothesis import given
from hypothesis import strategies as st

from collectors.cardinality import generic_name

HEX = set("0123456789abcdefABCDEF")
DIGITS = set("0123456789")


def _runs(text: str, members: set[str]) -> list[tuple[int, int]]:
    """(start, end) of every maximal run of characters in `members`."""
    runs, start = [], None
    for i, ch in enumerate(text + "\0"):
        if ch in members and start is None:
            start = i
        elif ch not in members and start is not None:
            runs.append((start, i))
            start = None
    return runs


def looks_generated(name: str) -> bool:
    """Independent of the implementation: a character scan, no regular expressions."""
    if any(end - start >= 4 for start, end in _runs(name, DIGITS)):
        return True
    alnum = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") | DIGITS
    for start, end in _runs(name, alnum):  # a whole alphanumeric token of hex with a digit in it
        token = name[start:end]
        if len(token) >= 8 and set(token) <= HEX and set(token) & DIGITS:
            return True
    return False


# Template words: letters that are not hex digits, so no id can be made by accident.
words = st.text(alphabet="ghijklmnopqrstuvwxyz", min_size=1, max_size=8)
separators = st.sampled_from(["_", "-", "/", ":", ".", " "])
ids = st.one_of(
    st.integers(1000, 10**12).map(str),
    st.binary(min_size=4, max_size=16).map(lambda b: b.hex()).filter(lambda h: any(c.isdigit() for c in h)),
    st.builds(lambda: str(uuid.uuid4())),
)


@given(st.lists(st.tuples(words, separators, st.one_of(st.none(), ids)), min_size=1, max_size=5))
def test_ids_in_a_template_become_placeholders(parts):
    name = "".join(w + sep + (i if i is not None else "") + sep for w, sep, i in parts)
    template = "".join(w + sep + ("{id}" if i is not None else "") + sep for w, sep, i in parts)
    assert generic_name(name) == template


@given(st.text(max_size=60))
def test_nothing_generated_survives_and_it_is_idempotent(name):
    out = generic_name(name)
    assert not looks_generated(out)
    assert generic_name(out) == out
    if not looks_generated(name):
        assert out == name


def test_the_issue_examples():
    assert generic_name("fetch_user_12345") == "fetch_user_{id}"
    assert generic_name("job-3f2a9c1e7b") == "job-{id}"
    assert generic_name("req-550e8400-e29b-41d4-a716-446655440000") == "req-{id}"
    for kept in ("run_tests", "gpt-4", "step3", "v1.2.3", "GET /users", "deadbeefcafe"):
        assert generic_name(kept) == kept
