"""The interleaved A/B timing of the benchmarks (`benchmarks/_common.py`): paired ratios,
their median and spread, the load check that marks a ratio as not clean, the order in
which `interleave` runs its blocks, and the README table cell of a ratio.

Every number comes from hand-made timings or from blocks that report their own time, so
nothing here depends on how fast the machine is.
"""
from __future__ import annotations

import itertools
import math
import os
import sys

import pytest

# benchmarks/ holds _common; appended (not prepended) so that its script names never
# shadow anything else.
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import _common  # noqa: E402


def test_paired_ratios_are_b_over_a_of_each_pair():
  p = _common.paired([1.0, 2.0, 4.0, 0.5], [2.0, 3.0, 4.0, 2.0])
  assert p["ratios"] == [2.0, 1.5, 1.0, 4.0]
  # The ratio of the totals (11 / 7.5) or of the medians (2.5 / 1.5) is not what is reported.
  assert p["ratio"]["median"] == pytest.approx(1.75)
  assert p["a_s"] == [1.0, 2.0, 4.0, 0.5] and p["b_s"] == [2.0, 3.0, 4.0, 2.0]
  with pytest.raises(ValueError):
    _common.paired([1.0], [1.0, 2.0])


def test_ratio_stats_median_min_max_and_quartiles():
  s = _common.ratio_stats([3.0, 1.0, 2.0, 5.0, 4.0])
  assert s == dict(n=5, median=3.0, min=1.0, max=5.0, q1=2.0, q3=4.0)
  s = _common.ratio_stats([1.0, 2.0, 3.0, 4.0])   # linear interpolation between order statistics
  assert (s["median"], s["q1"], s["q3"]) == (2.5, 1.75, 3.25)
  assert _common.ratio_stats([0.7]) == dict(n=1, median=0.7, min=0.7, max=0.7, q1=0.7, q3=0.7)
  empty = _common.ratio_stats([])
  assert empty["n"] == 0 and math.isnan(empty["median"])


def test_load_ok_needs_every_reading_known_and_at_most_the_limit():
  assert _common.LOAD_LIMIT == 1.5
  assert _common.load_ok([0.2, 1.5, 0.9])
  assert not _common.load_ok([0.2, 1.51])        # after
  assert not _common.load_ok([1.6, 0.1])         # before
  assert not _common.load_ok([0.1, 2.0, 0.1])    # between rounds
  assert not _common.load_ok([0.1, float("nan")])
  assert not _common.load_ok([])
  assert _common.load_ok([2.5, 2.9], limit=3.0)


def fake_load(monkeypatch, readings):
  """The 1-minute load averages `_common.load_average` returns, in order (then the last one)."""
  it = itertools.chain(readings, itertools.repeat(readings[-1]))
  monkeypatch.setattr(_common, "load_average", lambda: (next(it), 0.0, 0.0))


def test_interleave_order_pairs_and_own_times(monkeypatch):
  fake_load(monkeypatch, [0.5, 0.6, 0.7, 0.8])   # before, after round 1, after round 2, after
  log, times = [], {"A": iter([1.0, 10.0, 2.0, 20.0, 4.0, 40.0]), "B1": iter([5.0, 3.0, 8.0]),
                    "B2": iter([6.0, 30.0, 80.0])}

  def block(name):
    def run():
      log.append(name)
      return next(times[name])   # the block's own time replaces the measured one
    return run

  m = _common.interleave(("A", block("A")), {"B1": block("B1"), "B2": block("B2")}, rounds=2, warmup=1)
  assert log == ["A", "B1", "B2", "A", "B1", "A", "B2", "A", "B1", "A", "B2"]
  assert m["warmup_s"] == {"A": [1.0], "B1": [5.0], "B2": [6.0]}
  assert m["comparisons"]["B1"]["ratios"] == [3.0 / 10.0, 8.0 / 20.0]
  assert m["comparisons"]["B2"]["ratios"] == [30.0 / 2.0, 80.0 / 4.0]
  assert m["sides"]["A"]["times_s"] == [10.0, 2.0, 20.0, 4.0]
  assert m["load_1min"] == [0.5, 0.6, 0.7, 0.8] and m["load_ok"] is True
  assert m["load_average_before"] == [0.5, 0.0, 0.0] and m["load_average_after"] == [0.8, 0.0, 0.0]


def fake_cpu(monkeypatch, other_cores_per_round):
  """Fake /proc/stat and own CPU time: in round i, other processes keep other_cores_per_round[i]
  cores busy for the round's (fake) wall time of 1 s, on top of this process's 2 cores."""
  clock = {"t": 0.0, "busy": 0.0, "own": 0.0, "round": 0}

  def perf_counter():
    return clock["t"]

  def busy():
    return clock["busy"]

  def own():
    return clock["own"]

  def block():   # one block: 0.5 s of wall time, this process busy on 2 cores
    others = other_cores_per_round[min(clock["round"] // 2, len(other_cores_per_round) - 1)]
    clock["round"] += 1
    clock["t"] += 0.5
    clock["own"] += 1.0
    clock["busy"] += 1.0 + 0.5 * others
    return 0.5
  monkeypatch.setattr(_common.time, "perf_counter", perf_counter)
  monkeypatch.setattr(_common, "busy_cpu_seconds", busy)
  monkeypatch.setattr(_common, "own_cpu_seconds", own)
  return block


def test_interleave_marks_a_measurement_under_load_from_other_processes(monkeypatch):
  fake_load(monkeypatch, [0.5, 1.7, 1.9])
  block = fake_cpu(monkeypatch, [0.05, 0.9])      # round 2: another process took 0.9 cores
  m = _common.interleave(("A", block), {"B": block}, rounds=2)
  assert m["load_ok"] is False
  assert m["other_cpu_cores"] == pytest.approx([0.05, 0.9])
  assert m["clean"] is False and not _common.is_clean(m)
  assert "not clean" in _common.load_cell(m)


def test_a_high_load_average_from_the_benchmark_itself_is_still_clean(monkeypatch):
  """The load average counts the benchmark's own 2 threads; other processes took 0.02 cores."""
  fake_load(monkeypatch, [0.5, 1.8, 1.9])
  block = fake_cpu(monkeypatch, [0.02, 0.02])
  m = _common.interleave(("A", block), {"B": block}, rounds=2)
  assert m["load_ok"] is False and m["clean"] is True and _common.is_clean(m)
  assert ": clean" in _common.load_cell(m)
  assert _common.is_clean({"load_ok": True}) and not _common.is_clean({"load_ok": False})   # older JSON


def test_interleave_catches_only_the_named_sides(monkeypatch):
  fake_load(monkeypatch, [0.1])

  def broken():
    raise RuntimeError("No working C++ compiler found\n  (details)")

  m = _common.interleave(("A", lambda: 1.0), {"B": lambda: 2.0, "C": broken}, rounds=2, catch=["C"])
  assert m["comparisons"]["C"] == {"unavailable": "RuntimeError: No working C++ compiler found (details)"}
  assert m["comparisons"]["B"]["ratios"] == [2.0, 2.0]
  assert m["sides"]["A"]["times_s"] == [1.0, 1.0, 1.0]   # the A block before C's one failed block counts
  with pytest.raises(RuntimeError):
    _common.interleave(("A", lambda: 1.0), {"C": broken}, rounds=1)


def test_format_ratio_never_presents_a_loaded_ratio_as_clean():
  cmp = _common.paired([1.0, 1.0, 1.0], [0.7, 0.76, 0.73])
  clean = _common.format_ratio(cmp, True, markdown=True)
  assert clean.startswith("**0.73×**") and "min–max 0.70–0.76" in clean and "not a clean" not in clean
  loaded = _common.format_ratio(cmp, False, markdown=True)
  assert loaded.startswith("0.73×") and "**" not in loaded and "not a clean measurement" in loaded
  unknown = _common.format_ratio(cmp, None, markdown=True)
  assert "**" not in unknown and "not a clean" not in unknown
  assert "not a clean measurement" in _common.format_ratio(cmp, False)
  assert _common.format_ratio({"unavailable": "why"}) == "unavailable: why"


def test_measurements_finds_every_interleaved_result():
  m1 = {"comparisons": {"B": {}}, "load_ok": True}
  m2 = {"comparisons": {"B": {}}, "load_ok": False}
  result = {"rows": {"full_threads": m1, "one_thread": {"unavailable": "x"}}, "measurements": {"steady": m2},
            "other": [1, 2]}
  assert list(_common.measurements(result)) == [("rows/full_threads", m1), ("measurements/steady", m2)]


def test_available_cpus_is_the_affinity_mask():
  if hasattr(os, "sched_getaffinity"):
    assert _common.available_cpus() == len(os.sched_getaffinity(0))
  assert 1 <= _common.available_cpus() <= (os.cpu_count() or 1)
