"""What the benchmark scripts share: the machine description, usable CPUs and load average
they print, the interleaved A/B timing with its paired ratios and their statistics (and
the load check that marks a ratio as not clean), synthetic uint8 batches, the
straightforward PyTorch NT-Xent loss, the learning-rate multiplier of a config as Python
floats, and the JSON writer.

The scripts are run as `python benchmarks/NAME.py`, so this directory is on `sys.path`
and they import this module as `import _common`. It imports neither jax nor torch at
module level: a benchmark chooses its JAX platform (JAX_PLATFORMS) before importing jax,
and torch is optional (`TORCH_MISSING` is what a benchmark prints without it).
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIMCLR_CONFIG = os.path.join(ROOT, "experiments", "configs", "simclr.py")
# train.log_every of every benchmarked step: the in-graph spectrum diagnostics run only
# when step % log_every == 0, so the timed steps (after step 0) never compute them.
LOG_EVERY = 10**9
TORCH_MISSING = "PyTorch is not installed: `pip install torch==2.13.0` (or `make bench`)."

# A ratio is a clean measurement if the 1-minute load average stayed at or below this
# before, between the rounds of, and after its measurement, or if other processes used at
# most OTHER_CPU_LIMIT cores in every round (see `interleave` and `is_clean`).
LOAD_LIMIT = 1.5
OTHER_CPU_LIMIT = 0.2

LoadAverage = tuple[float, float, float]


def load_average() -> LoadAverage:
  """The 1, 5 and 15 minute load averages (NaN where the OS has none)."""
  return os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3


def format_load(load: LoadAverage) -> str:
  """'1.23 4.56 7.89': a load average as the benchmarks print it."""
  return " ".join(f"{v:.2f}" for v in load)


def available_cpus() -> int:
  """The CPUs this process may run on: len(os.sched_getaffinity(0)), else os.cpu_count().

  Under `taskset` or a container's CPU set this is fewer than os.cpu_count(). XLA:CPU sizes
  its intra-op thread pool by it, and the benchmarks give torch as many threads
  (torch.set_num_threads), so that both sides of a comparison use the same cores.
  """
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def pin_to_one_cpu() -> int:
  """Restricts every thread of this process to its first usable CPU, as `taskset -c N`
  would; returns N.

  Threads started afterwards inherit the restriction. XLA:CPU sizes its thread pool by
  the usable CPUs when its backend starts, so this must run before jax is imported. It is how the benchmarks give JAX one thread's worth of CPU: XLA_FLAGS
  `--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1` does not restrict
  XLA:CPU's thunk runtime in jaxlib 0.10 (measured: with it, a train step's work still
  splits evenly over two threads running at once on two cores; pinned, the process never
  uses more CPU time than wall time).
  """
  cpu = min(os.sched_getaffinity(0))
  tids = [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]
  for tid in tids:   # threads that already exist (e.g. OpenBLAS's, started when numpy loads)
    try:
      os.sched_setaffinity(tid, {cpu})
    except ProcessLookupError:   # the thread has ended meanwhile
      pass
  return cpu


def cpu_description() -> str:
  """'N of M CPUs usable, <processor>': the CPU part of every benchmark's header line."""
  return (f"{available_cpus()} of {os.cpu_count()} CPUs usable, "
          f"{platform.processor() or platform.machine()}")


# ----------------------------------------------------------------------------- A/B timing

Block = Callable[[], "float | None"]
RATIO_SPREAD = "min-max and IQR (25th-75th percentile, linearly interpolated)"


def ratio_stats(ratios: Sequence[float]) -> dict[str, float]:
  """{"n", "median", "min", "max", "q1", "q3"} of paired ratios (NaN statistics when n = 0).

  q1 and q3 are the 25th and 75th percentiles, linearly interpolated (numpy's default,
  the same as `statistics.quantiles(method="inclusive")`); with one ratio all five equal it.
  """
  r = np.asarray(list(ratios), np.float64)
  if r.size == 0:
    nan = float("nan")
    return dict(n=0, median=nan, min=nan, max=nan, q1=nan, q3=nan)
  q1, med, q3 = (float(v) for v in np.percentile(r, [25, 50, 75]))
  return dict(n=int(r.size), median=med, min=float(r.min()), max=float(r.max()), q1=q1, q3=q3)


def paired(a_s: Sequence[float], b_s: Sequence[float]) -> dict[str, Any]:
  """The paired comparison of A and B from their times in adjacent pairs (A then B).

  Returns {"a_s", "b_s", "ratios", "ratio"}: ratios[i] = b_s[i] / a_s[i] (above 1: A is
  faster), and "ratio" their `ratio_stats`. Not one ratio of two totals or medians: each
  ratio compares two blocks that ran back to back, under the same background load.
  """
  if len(a_s) != len(b_s):
    raise ValueError(f"{len(a_s)} A times but {len(b_s)} B times")
  ratios = [b / a for a, b in zip(a_s, b_s)]
  return dict(a_s=list(a_s), b_s=list(b_s), ratios=ratios, ratio=ratio_stats(ratios))


def load_ok(loads_1min: Sequence[float], limit: float = LOAD_LIMIT) -> bool:
  """True iff every 1-minute load average in `loads_1min` is known and at most `limit`.

  The load average counts the benchmark's own running threads too: on a machine with few
  cores a long full-thread measurement raises it by itself.
  """
  return bool(loads_1min) and all(math.isfinite(v) and v <= limit for v in loads_1min)


def busy_cpu_seconds() -> float:
  """CPU seconds that all processes of the machine have spent busy since boot (/proc/stat:
  user, nice, system, irq, softirq and steal time of all CPUs; NaN where there is no /proc)."""
  try:
    with open("/proc/stat") as f:
      fields = [int(v) for v in f.readline().split()[1:]]
  except (OSError, ValueError):
    return float("nan")
  user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
  return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
  """CPU seconds of this process (all its threads) and of its waited-for children."""
  t = os.times()
  return t.user + t.system + t.children_user + t.children_system


def other_cpu_cores(busy0: float, own0: float, wall0: float) -> float:
  """Cores that other processes (and the kernel) kept busy on average since the readings
  (busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()) were taken."""
  wall = time.perf_counter() - wall0
  other = (busy_cpu_seconds() - busy0) - (own_cpu_seconds() - own0)
  return max(other, 0.0) / wall if wall > 0 else float("nan")


def is_clean(m: Mapping[str, Any]) -> bool:
  """Whether an `interleave` measurement is clean: its "clean" (the load average within its
  limit, or other processes within OTHER_CPU_LIMIT cores in every round), or for older JSON
  without it, its "load_ok"."""
  return bool(m.get("clean", m.get("load_ok")))


def load_text(m: Mapping[str, Any], *, markdown: bool = False) -> str:
  """'1-minute load average 0.80..1.90, other processes 0.03 cores at most (clean)' of one
  `interleave` measurement (older JSON without other_cpu_cores: the load average only)."""
  loads = m["load_1min"]
  dots = "–" if markdown else ".."
  text = f"1-minute load average {min(loads):.2f}{dots}{max(loads):.2f} (limit {m['load_limit']})"
  others = m.get("other_cpu_cores")
  if others:
    text += f", other processes {max(others):.2f} cores at most (limit {m.get('other_cpu_limit', OTHER_CPU_LIMIT)})"
  if is_clean(m):
    return text + (": clean" if markdown else " (clean)")
  return text + (": **not clean**" if markdown else " (NOT a clean measurement)")


def load_cell(m: Mapping[str, Any]) -> str:
  """`load_text` for a markdown table cell."""
  return load_text(m, markdown=True).replace("1-minute load average ", "")


def one_line_error(e: BaseException, limit: int = 400) -> str:
  """'<ExceptionType>: <message>' on one line (whitespace collapsed), at most `limit` characters."""
  text = " ".join(f"{type(e).__name__}: {e}".split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _timed(block: Block) -> tuple[float, float]:
  """(seconds, process CPU seconds) of one call of `block`; a float it returns replaces
  the wall time (a block that times itself, e.g. leaving out its data preparation)."""
  t0, c0 = time.perf_counter(), time.process_time()
  own = block()
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0
  return (wall if own is None else float(own)), cpu


def interleave(a: tuple[str, Block], bs: Mapping[str, Block], *, rounds: int, warmup: int = 0,
               catch: Collection[str] = (), load_limit: float = LOAD_LIMIT) -> dict[str, Any]:
  """Times side A against each B side in interleaved blocks; returns the measurement as JSON.

  a is (name, block) and bs maps names to blocks; a block runs one synchronised unit of
  work (one step, one job) and returns None (it is timed here) or its own time in seconds.
  First `warmup` warm-up rounds, each one block of every side in turn (A, B1, B2, ...);
  their times are kept apart (the first block of a side usually compiles) and enter no
  ratio. Then `rounds` rounds, each of which runs, for every B side in turn, one A block
  and then one B block: A B1 A B2 ... for several B sides, ABAB... for one. Every B block
  is paired with the A block just before it.

  A B side named in `catch` that raises (e.g. torch.compile without a C++ compiler) is
  recorded as {"unavailable": "<Exception>: <message>"} and not run again; any other
  exception propagates.

  The 1-minute load average is read before the first block, after every round and after
  the last block: "load_ok" is `load_ok` of all of them at `load_limit`. The load average
  counts this benchmark's own threads, so a long measurement that keeps every core busy
  raises it by itself (a 2-thread benchmark on 2 cores drives it towards 2); what other
  processes took is measured directly too: "other_cpu_cores" per round, the cores that the
  rest of the machine kept busy (/proc/stat's busy time minus this process's CPU time, over
  the round's wall time). "clean" is load_ok, or every round's other_cpu_cores at most
  OTHER_CPU_LIMIT.

  Returns {"a", "order", "rounds", "warmup_blocks", "warmup_s" {side: [s]},
  "sides" {side: {"times_s", "cpu_s"}} (every timed block; cpu_s is the process CPU time,
  so cpu_s / times_s is how many cores the side kept busy), "comparisons" {B: `paired`
  or {"unavailable"}}, "load_average_before", "load_average_after", "load_1min",
  "load_limit", "load_ok", "other_cpu_cores", "other_cpu_limit", "clean"}.
  """
  a_name, a_block = a
  blocks = {a_name: a_block, **bs}
  sides: dict[str, dict[str, list[float]]] = {n: {"times_s": [], "cpu_s": []} for n in blocks}
  warm: dict[str, list[float]] = {n: [] for n in blocks}
  pairs: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in bs}
  failed: dict[str, str] = {}

  def run(name: str, into: list[float], cpu: list[float] | None = None) -> bool:
    try:
      t, c = _timed(blocks[name])
    except Exception as e:   # only the sides in `catch` may fail
      if name not in catch:
        raise
      failed[name] = one_line_error(e)
      return False
    into.append(t)
    if cpu is not None:
      cpu.append(c)
    return True

  load0 = load_average()
  loads = [load0[0]]
  for _ in range(warmup):
    for name in blocks:
      if name not in failed:
        run(name, warm[name])
  others: list[float] = []
  for _ in range(rounds):
    readings = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    for name in bs:
      if name in failed:
        continue
      ta, ca, tb, cb = [], [], [], []
      run(a_name, ta, ca)
      if run(name, tb, cb):
        pairs[name][0].extend(ta)
        pairs[name][1].extend(tb)
        sides[name]["times_s"].extend(tb)
        sides[name]["cpu_s"].extend(cb)
      sides[a_name]["times_s"].extend(ta)
      sides[a_name]["cpu_s"].extend(ca)
    others.append(other_cpu_cores(*readings))
    loads.append(load_average()[0])
  load1 = load_average()
  loads.append(load1[0])
  comparisons = {n: ({"unavailable": failed[n]} if n in failed else paired(*pairs[n])) for n in bs}
  return dict(a=a_name, order="per round, for each B side in turn: one A block, then one B block",
              rounds=rounds, warmup_blocks=warmup, warmup_s=warm, sides=sides, comparisons=comparisons,
              load_average_before=list(load0), load_average_after=list(load1), load_1min=loads,
              load_limit=load_limit, load_ok=load_ok(loads, load_limit), other_cpu_cores=others,
              other_cpu_limit=OTHER_CPU_LIMIT,
              clean=load_ok(loads, load_limit) or (bool(others) and all(
                  math.isfinite(v) and v <= OTHER_CPU_LIMIT for v in others)))


def format_ratio(comparison: Mapping[str, Any], clean: bool | None = None, *, markdown: bool = False) -> str:
  """'0.73x (median of 20 paired ratios, min-max 0.70-0.76, IQR 0.72-0.74)' for one
  `paired` comparison; {"unavailable": why} gives 'unavailable: why'.

  clean is the measurement's `is_clean`. Only clean=True gets the bold of a clean figure in
  markdown; clean=False also appends that other processes loaded the machine, so that a
  table never presents such a ratio as a clean measurement (None: no load information,
  neither bold nor that remark).
  """
  if "unavailable" in comparison:
    return f"unavailable: {comparison['unavailable']}"
  r = comparison["ratio"]
  x = "×" if markdown else "x"
  dash = "–" if markdown else "-"
  head = f"{r['median']:.2f}{x}"
  if markdown and clean is True:
    head = f"**{head}**"
  text = (f"{head} (median of {r['n']} paired ratios, min{dash}max {r['min']:.2f}{dash}{r['max']:.2f}, "
          f"IQR {r['q1']:.2f}{dash}{r['q3']:.2f})")
  if clean is False:
    text += (" — *other processes loaded the machine: not a clean measurement*" if markdown
             else "  [LOADED machine: not a clean measurement]")
  return text


def measurements(result: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
  """(path, measurement) of every `interleave` result (a dict with "comparisons" and
  "load_ok") inside a benchmark's JSON, depth first; path is like 'rows/full_threads'."""
  if isinstance(result, dict):
    if "comparisons" in result and "load_ok" in result:
      yield path, result
    for k, v in result.items():
      if k != "comparisons":
        yield from measurements(v, f"{path}/{k}" if path else str(k))
  elif isinstance(result, list):
    for i, v in enumerate(result):
      yield from measurements(v, f"{path}/{i}")


def synthetic_batches(n: int, batch: int, shape: tuple[int, int, int], num_classes: int,
                      seed: int) -> list[dict[str, np.ndarray]]:
  """`n` batches {"image": uint8 [batch, H, W, C], "label": int32 [batch]} from one seed.

  The images are smooth random images (uniform noise at a quarter of the resolution,
  upsampled 4x by repetition, plus N(0, 20) pixel noise, clipped to [0, 255]), so that
  crops, blur and colour jitter see structure; labels are uniform in [0, num_classes).
  Batch i depends only on (seed, i): the first batch of any `n` is the same.
  """
  rng = np.random.default_rng(seed)
  h, w, c = shape
  out = []
  for _ in range(n):
    low = rng.uniform(0, 255, (batch, h // 4 + 1, w // 4 + 1, c))
    img = np.repeat(np.repeat(low, 4, axis=1), 4, axis=2)[:, :h, :w]
    img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    out.append({"image": img, "label": rng.integers(0, num_classes, batch).astype(np.int32)})
  return out


def torch_nt_xent(z1: Any, z2: Any, temperature: float) -> Any:
  """NT-Xent (SimCLR) over the 2M views of z1, z2 [M, D], written as by hand in PyTorch.

  F.normalize, one [2M, 2M] logits matrix with its diagonal masked to -inf, and
  F.cross_entropy with the other view of each example as the target; on z1's device.
  """
  import torch
  import torch.nn.functional as F

  m = z1.shape[0]
  z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
  logits = z @ z.T / temperature
  eye = torch.eye(2 * m, dtype=torch.bool, device=z.device)
  logits = logits.masked_fill(eye, float("-inf"))
  targets = torch.cat([torch.arange(m, 2 * m), torch.arange(0, m)]).to(z.device)
  return F.cross_entropy(logits, targets)


def unit_schedule_values(cfg: Any) -> Callable[[int], float]:
  """step -> `unit_schedule(cfg)(step)` of jaxssl (warm-up + cosine or constant) as a float.

  The library's schedule is evaluated once, vectorised, for steps 0..train.num_steps;
  it is constant after num_steps, so later steps get its last value. A PyTorch loop can
  then set its learning rate without a JAX call inside the timed step.
  """
  from jaxssl import optim

  total = int(cfg.train.num_steps)
  table = np.asarray(optim.unit_schedule(cfg)(np.arange(total + 1)), np.float64)
  table = np.broadcast_to(table, (total + 1,))   # the constant schedule returns a scalar
  return lambda step: float(table[min(max(int(step), 0), total)])


def write_json(path: str, result: dict[str, Any]) -> None:
  """Writes `result` to `path` as indented JSON, creating the parent directory."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
