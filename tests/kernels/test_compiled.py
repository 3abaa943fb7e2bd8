"""The inductor door: a compiled alternative goes through the same verifier (one op, one dtype, one
shape: a cold compile costs seconds; verify and bench run every compiled candidate on every case)."""

import torch

from kernels import compiled, ops, suite
from kernels.verify import Candidate, verify


def test_compiled_candidates_are_opt_in_and_cover_every_builtin():
    assert not any(c.name.endswith("+inductor") for c in suite.all_candidates())
    names = {c.name for c in suite.all_candidates(compiled=True)}
    assert {c.name + "+inductor" for c in suite.builtin()} <= names


def test_a_compiled_alternative_goes_through_the_verifier():
    c = compiled.compiled(Candidate("softmax", "softmax_alt", ops.softmax_alt, (torch.float32,)))
    v = verify(c, seeds=(0,), shapes=((13, 31),))
    assert v.accepted and v.cases == 2, v.failure


def test_cache_dir_is_outside_the_repository(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compiled.cache_dir() == tmp_path / "heteroplane" / "inductor"
