"""Unit tests for migrator.apply.batch's decisions: the next batch's size."""

from __future__ import annotations

from migrator.apply.batch import next_size
from migrator.config import BatchSettings

SETTINGS = BatchSettings(target_duration=0.1, size=100, max_size=1000)
FAST = [(100, 0.001)]  # far below the target: the size would double
SLOW = [(100, 0.2)]  # twice the target: the size halves


def test_the_size_doubles_at_most_and_halves_at_most():
    assert next_size(100, FAST, SETTINGS) == 200
    assert next_size(100, [(100, 10.0)], SETTINGS) == 50
    assert next_size(100, SLOW, SETTINGS) == 50


def test_held_after_a_split_the_size_does_not_grow():
    assert next_size(100, FAST, SETTINGS, hold=True) == 100
    assert next_size(100, [(100, 0.1)], SETTINGS, hold=True) == 100


def test_held_the_size_still_shrinks_toward_the_target():
    assert next_size(100, SLOW, SETTINGS, hold=True) == 50
    assert next_size(1, [(1, 5.0)], SETTINGS, hold=True) == 1
