"""bench/check_mutants.py cannot go stale: every mutant's pattern applies exactly once to the code as it
is, the mutated file still compiles, and the tests meant to catch it exist. No mutant is run here (the
full mutation run stays in bench/)."""

from __future__ import annotations

import importlib.util
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _checker():
    spec = importlib.util.spec_from_file_location("check_mutants", os.path.join(REPO, "bench", "check_mutants.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


CHECK = _checker()


def read(rel: str) -> str | None:
    return CHECK.source(rel, "worktree")


def defined_tests() -> set[str]:
    names = set()
    for rel in CHECK.TEST_FILES:
        names |= set(re.findall(r"^def (test_\w+)", read(rel), re.M))
    return names


@pytest.mark.parametrize("mutant", CHECK.MUTANTS, ids=lambda m: m.id)
def test_every_mutant_applies_exactly_once_and_its_tests_exist(mutant):
    # raises when no pattern occurs exactly once in its file, or one before it occurs several times
    file, text = CHECK.mutate(mutant, read)
    assert text != read(file)
    compile(text, file, "exec")
    words = [w for w in re.findall(r"\w+", mutant.tests) if w not in ("and", "or", "not")]
    names = defined_tests()
    missing = [w for w in words if not any(w in n for n in names)]
    assert not missing, f"mutant {mutant.id}: no test in {CHECK.TEST_FILES} is named after {missing}"
