"""Heuristics pick the replica their rule says, ties to the lowest index."""

import numpy as np
import pytest

from vidur_ppo.heuristics import HEURISTICS, make_heuristic

# columns: waiting, running, prefill_left, decode_left, kv_usage, oldest_wait
STATE = np.array(
    [
        [2, 0, 100, 100, 0.1, 1.0],  # fewest outstanding requests? no: 2
        [0, 5, 50, 900, 0.5, 0.0],  # fewest waiting (LOR), 5 outstanding
        [1, 0, 10, 10, 0.1, 0.5],  # fewest outstanding (JSQ: 1) and least work (20 tokens)
        [1, 3, 300, 300, 0.2, 0.1],
    ],
    dtype=np.float32,
)
OBS = {"replicas": STATE, "request": np.array([100, 10], dtype=np.float32)}


@pytest.mark.parametrize("name,expected", [("lor", 1), ("jsq", 2), ("least_work_left", 2)])
def test_argmin_rules(name, expected):
    h = make_heuristic(name)
    h.reset(0)
    assert h(OBS) == expected


def test_ties_go_to_lowest_index():
    h = make_heuristic("jsq")
    assert h({"replicas": np.zeros((4, 6), np.float32)}) == 0


def test_round_robin_cycles_and_resets():
    h = make_heuristic("round_robin")
    h.reset()
    assert [h(OBS) for _ in range(6)] == [0, 1, 2, 3, 0, 1]
    h.reset()
    assert h(OBS) == 0


@pytest.mark.parametrize("name", ["random", "power_of_two"])
def test_random_heuristics_are_seeded(name):
    a, b = make_heuristic(name), make_heuristic(name)
    a.reset(11), b.reset(11)
    seq_a, seq_b = [a(OBS) for _ in range(30)], [b(OBS) for _ in range(30)]
    assert seq_a == seq_b and len(set(seq_a)) > 1


def test_power_of_two_never_picks_the_worse_of_its_pair():
    h = make_heuristic("power_of_two")
    h.reset(0)
    picks = [h(OBS) for _ in range(200)]
    assert 1 not in picks and set(picks) == {0, 2, 3}  # replica 1 (5 outstanding) always loses


def test_unknown_heuristic():
    with pytest.raises(ValueError, match="unknown heuristic"):
        make_heuristic("fastest")
    assert len(HEURISTICS) == 6
