"""The worker's cycle collector: collected less often, the long-lived objects left out."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from schemas.settings import Settings
from streams.app import tune_collector


@pytest.fixture
def collector() -> Iterator[None]:
    """The interpreter's collector as it was, restored after the test."""
    before = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_the_worker_collects_every_50000_allocations_by_default() -> None:
    assert Settings().gc_threshold == 50_000


@pytest.mark.usefixtures("collector")
def test_the_threshold_is_set_and_the_living_objects_are_frozen() -> None:
    gc.set_threshold(700, 10, 10)
    tune_collector(12_345)
    assert gc.get_threshold() == (12_345, 10, 10)
    assert gc.get_freeze_count() > 1000


@pytest.mark.usefixtures("collector")
def test_zero_leaves_the_interpreter_as_it_is() -> None:
    gc.set_threshold(700, 10, 10)
    tune_collector(0)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_the_threshold_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDENTWORK_GC_THRESHOLD", "0")
    assert Settings().gc_threshold == 0
    monkeypatch.setenv("STUDENTWORK_GC_THRESHOLD", "-1")
    with pytest.raises(ValueError, match="gc_threshold"):
        Settings()
