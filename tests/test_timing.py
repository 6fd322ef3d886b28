"""timing.py: how many times each candidate runs, and that the medians are the candidates' own."""

from __future__ import annotations

import time

from tnncompress.timing import Stopwatch, interleaved_medians


def _counting(delay: float, calls: list):
    def run():
        calls.append(time.perf_counter())
        time.sleep(delay)
    return run


def test_interleaved_medians_warm_up_once_unless_told_not_to_and_keep_each_candidates_time():
    for warm_up, extra in ((True, 1), (False, 0)):
        fast, slow = [], []
        ms = interleaved_medians({"fast": _counting(0.001, fast), "slow": _counting(0.02, slow)}, min_time=0.0,
                                 min_rounds=3, max_rounds=3, warm_up=warm_up)
        assert len(fast) == len(slow) == 3 + extra
        assert 0.001 <= ms["fast"] < 0.02 <= ms["slow"]  # sleep never returns early
        # round-robin: the calls alternate between the candidates
        order = sorted([(t, "f") for t in fast] + [(t, "s") for t in slow])
        assert [name for _, name in order] == ["f", "s"] * (3 + extra)


def test_stopwatch_adds_up_repeated_stages():
    clock = Stopwatch()
    for _ in range(2):
        with clock.stage("a"):
            time.sleep(0.01)
    assert clock.seconds["a"] >= 0.02 and clock.total() >= clock.seconds["a"]


def test_a_candidate_far_slower_than_the_fastest_in_the_first_round_is_not_run_again():
    fast, slow = [], []
    ms = interleaved_medians({"fast": _counting(0.001, fast), "slow": _counting(0.03, slow)}, min_time=0.0,
                             min_rounds=3, max_rounds=3, drop_above=3.0)
    assert len(fast) == 1 + 3 and len(slow) == 1 + 1  # warm-up, then one timed run: its time stands
    assert ms["slow"] >= 0.03 > ms["fast"]
    both = []
    interleaved_medians({"a": _counting(0.002, both), "b": _counting(0.003, both)}, min_time=0.0, min_rounds=3,
                        max_rounds=3, drop_above=3.0)
    assert len(both) == 2 * 4  # within 3x of each other: both timed to the end
