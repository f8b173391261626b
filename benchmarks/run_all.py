"""Runs every benchmark in benchmarks/ in sequence, each in its own process, and collects
their JSON output in benchmarks/results/<name>.json (plus a summary in
benchmarks/results/run_all.json with each benchmark's exit status and wall time).

It then writes benchmarks/results/table.md, the table of every paired ratio in those
JSON files (each `_common.interleave` measurement: train_step, sweep, diagnostics_cost),
for the README: median, spread and load. A ratio whose measurement was not clean (the
1-minute load average went above its limit and other processes took more than
`_common.OTHER_CPU_LIMIT` cores in some round; `_common.is_clean`) is written without the
bold of a clean figure and says it is not a clean measurement. `--table-only` rewrites the table from
the JSON files already there, running nothing.

    python benchmarks/run_all.py [--only losses,train_step] [--skip prepare_data]
        [--out benchmarks/results] [--table-only] [-- extra args passed to every benchmark]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

import _common

HERE = _common.HERE
TABLE = "table.md"


def ratio_table(out: str) -> str:
  """The markdown table of every paired ratio in out/*.json (see the module docstring)."""
  lines = [f"<!-- written by benchmarks/run_all.py from {os.path.basename(out)}/*.json; ratio = t_B / t_A of "
           f"adjacent (A, B) blocks, median and spread ({_common.RATIO_SPREAD}) -->",
           "| Benchmark | Measurement | A | B | Ratio t_B / t_A | 1-minute load average; other processes' CPU |",
           "|---|---|---|---|---|---|"]
  for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    name = os.path.splitext(os.path.basename(path))[0]
    if name == "run_all":
      continue
    with open(path) as f:
      result = json.load(f)
    for where, m in _common.measurements(result):
      load = _common.load_cell(m)
      threads = f" ({m['threads_per_side']} thread(s) per side)" if "threads_per_side" in m else ""
      for b, cmp in m["comparisons"].items():
        cell = _common.format_ratio(cmp, _common.is_clean(m), markdown=True).replace("|", "\\|")
        lines.append(f"| {name} | {where}{threads} | {m['a']} | {b} | {cell} | {load} |")
  return "\n".join(lines) + "\n"


def write_table(out: str) -> str:
  """Writes `ratio_table(out)` to out/table.md; returns its path."""
  path = os.path.join(out, TABLE)
  with open(path, "w") as f:
    f.write(ratio_table(out))
  return path


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  extra = []
  if "--" in argv:
    i = argv.index("--")
    argv, extra = argv[:i], argv[i + 1:]
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--only", type=str, default=None, help="comma-separated benchmark names")
  ap.add_argument("--skip", type=str, default="", help="comma-separated benchmark names")
  ap.add_argument("--out", type=str, default=os.path.join(HERE, "results"))
  ap.add_argument("--table-only", action="store_true", help=f"only rewrite OUT/{TABLE} from OUT/*.json")
  args = ap.parse_args(argv)
  if args.table_only:
    print(f"wrote {write_table(args.out)}")
    return 0

  names = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(HERE, "*.py")))
  names = [n for n in names if n != "run_all" and not n.startswith("_")]
  if args.only:
    want = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(want) - set(names))
    if unknown:
      print(f"unknown benchmark(s) {unknown}; known: {names}")
      return 2
    names = [n for n in names if n in want]
  skip = {n.strip() for n in args.skip.split(",") if n.strip()}
  names = [n for n in names if n not in skip]
  os.makedirs(args.out, exist_ok=True)
  root = os.path.dirname(HERE)
  summary = {}
  for name in names:
    out = os.path.join(args.out, f"{name}.json")
    cmd = [sys.executable, os.path.join(HERE, f"{name}.py"), "--json", out, *extra]
    print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=root)
    summary[name] = dict(returncode=rc, wall_s=time.perf_counter() - t0, json=out if os.path.exists(out) else None)
    print(f"=== {name}: exit {rc} in {summary[name]['wall_s']:.0f} s", flush=True)
  _common.write_json(os.path.join(args.out, "run_all.json"), summary)
  print(f"\nwrote {write_table(args.out)}")
  print("\n" + "\n".join(f"{n:<14} exit {v['returncode']}  {v['wall_s']:.0f} s" for n, v in summary.items()))
  return 0 if all(v["returncode"] == 0 for v in summary.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
