"""The on-disk plan cache: a measured plan is reused by the next run, and the file is trusted for
nothing but speed (anything wrong in it costs a measurement, never a wrong result)."""

from __future__ import annotations

import json

import pytest
import torch

from tnncompress.einsum import autotune, contract, plan_cache
from tnncompress.einsum.contract import _cached, contract_expression

EXPR = "bshw,rs,rhw,tr->bthw|hw"  # CP: input, factors; several candidate plans
SHAPES = [(2, 16, 8, 8), (6, 16), (6, 3, 3), (32, 6)]


@pytest.fixture()
def cache_file(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "plans.json"
    monkeypatch.setenv(plan_cache.ENV, str(path))
    monkeypatch.setattr(plan_cache, "_entries", None)
    monkeypatch.setattr(plan_cache, "_enabled", True)  # an in-process run with --no-plan-cache may have left it off
    _cached.cache_clear()
    yield path
    _cached.cache_clear()


def _measure():
    _cached.cache_clear()
    return contract_expression(EXPR, *SHAPES, padding=1, optimize="measure")


def _no_timing(monkeypatch):
    def fail(*args):
        raise AssertionError("timed again")
    monkeypatch.setattr(contract, "fastest_path", fail)


def _operands():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]


def _reference(x, a, k, c):
    kernel = torch.einsum("rs,rhw,tr->tshw", a, k, c)
    return torch.nn.functional.conv2d(x, kernel, padding=1)


def test_a_measured_plan_is_stored_and_reused_without_timing(cache_file, monkeypatch):
    first = _measure()
    assert first.timings and cache_file.is_file()
    stored = json.loads(cache_file.read_text())["plans"]
    assert [list(map(list, first.path))] == list(stored.values())
    monkeypatch.setattr(plan_cache, "_entries", None)  # a new process reads the file
    _no_timing(monkeypatch)
    again = _measure()
    assert again.path == first.path and again.timings == {}
    ops = _operands()
    torch.testing.assert_close(again(*ops), _reference(*ops), rtol=1e-10, atol=1e-10)


def test_the_key_holds_what_the_timing_depended_on(cache_file):
    base = plan_cache.key(EXPR, SHAPES, 1, 1, 1, False, False, "cpu", torch.float32)
    for other in (plan_cache.key(EXPR, [(4, 16, 8, 8), *SHAPES[1:]], 1, 1, 1, False, False, "cpu", torch.float32),
                  plan_cache.key(EXPR, SHAPES, 2, 1, 1, False, False, "cpu", torch.float32),
                  plan_cache.key(EXPR, SHAPES, 1, 1, 1, False, True, "cpu", torch.float32),
                  plan_cache.key(EXPR, SHAPES, 1, 1, 1, False, False, "cpu", torch.float64)):
        assert other != base
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert plan_cache.key(EXPR, SHAPES, 1, 1, 1, False, False, "cpu", torch.float32) != base
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("content", [
    "not json {",
    json.dumps({"plans": "a string"}),
    json.dumps([1, 2, 3]),
    "\udcff",  # undecodable once written as surrogate-escaped bytes
])
def test_an_unreadable_file_is_ignored_and_replaced(cache_file, content):
    cache_file.parent.mkdir(parents=True)
    cache_file.write_bytes(content.encode("utf-8", "surrogateescape"))
    expr = _measure()
    assert expr.timings  # measured
    assert list(json.loads(cache_file.read_text())["plans"].values()) == [list(map(list, expr.path))]


@pytest.mark.parametrize("bad", [
    [[0, 0], [1, 2], [3, 4]],  # joins a node with itself
    [[0, 1]],  # leaves nodes
    [[0, 1], [2, 3], [4, 5], [6, 7]],  # a step too many
    [["a", 1], [2, 3], [4, 5]],
    "rebuild",
])
def test_an_entry_that_is_not_a_path_of_its_expression_is_measured_again(cache_file, monkeypatch, bad):
    _measure()
    entry = next(iter(json.loads(cache_file.read_text())["plans"]))
    cache_file.write_text(json.dumps({"plans": {entry: bad}}))
    monkeypatch.setattr(plan_cache, "_entries", None)
    again = _measure()
    assert again.timings  # measured again (which plan wins may differ: it is a timing)
    ops = _operands()
    torch.testing.assert_close(again(*ops), _reference(*ops), rtol=1e-10, atol=1e-10)


def test_an_entry_that_breaks_the_memory_rule_is_measured_again(cache_file, monkeypatch):
    _measure()
    entry = next(iter(json.loads(cache_file.read_text())["plans"]))
    naive = [[0, 1], [4, 2], [5, 3]]  # valid, but left to right
    cache_file.write_text(json.dumps({"plans": {entry: naive}}))
    monkeypatch.setattr(plan_cache, "_entries", None)
    monkeypatch.setattr(autotune, "path_fits", lambda expr, path: path != [(0, 1), (4, 2), (5, 3)])
    monkeypatch.setattr(contract, "path_fits", autotune.path_fits)
    assert _measure().timings


def test_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(plan_cache.ENV, "off")
    _cached.cache_clear()
    assert plan_cache.location() is None
    assert _measure().timings
    monkeypatch.setenv(plan_cache.ENV, str(tmp_path / "plans.json"))
    plan_cache.set_enabled(False)
    try:
        assert plan_cache.location() is None
        _measure()
        assert not (tmp_path / "plans.json").exists()
    finally:
        plan_cache.set_enabled(True)


def test_the_default_location_and_no_home(monkeypatch, tmp_path):
    monkeypatch.delenv(plan_cache.ENV, raising=False)
    monkeypatch.setattr(plan_cache, "_enabled", True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert plan_cache.location() == tmp_path / "tnncompress" / "plans.json"
    monkeypatch.delenv("XDG_CACHE_HOME")

    def no_home():
        raise RuntimeError("Could not determine home directory.")
    monkeypatch.setattr(plan_cache.Path, "home", staticmethod(no_home))
    assert plan_cache.location() is None and plan_cache.lookup("k") is None
    plan_cache.store("k", [(0, 1)])  # nothing to write to, nothing raised


def test_a_cache_path_that_is_a_link_is_not_written_through(cache_file, tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("keep")
    cache_file.parent.mkdir(parents=True)
    cache_file.symlink_to(target)
    assert _measure().timings
    assert target.read_text() == "keep"
