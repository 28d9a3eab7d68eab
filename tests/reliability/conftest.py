"""The reliability suite: what a user's bad rows, files, configs, evaluation inputs and faults
(kills, unwritable paths, truncated or planted files) lead to. Every test asserts one exact
outcome: a named error before any model loads, a counted skip with its reason, or an identical
result after the fault.

Groups: `test_bad_rows.py` (per dataset layout), `test_bad_files.py`, `test_bad_configs.py`,
`test_bad_eval_inputs.py`, `test_faults.py`. Small inputs live in `tests/fixtures/reliability/`.
"""

from __future__ import annotations

import pytest


class Loaded(AssertionError):
    """Raised by `no_model_load` when something loads a model."""


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: the errors under test must come first."""

    def boom(*a, **k):
        raise Loaded("a model was loaded before the error")

    import kdlite.module as module_mod

    monkeypatch.setattr(module_mod, "load_model", boom)
    monkeypatch.setattr("kdlite.models.load_model", boom)
    return boom
