"""Runs every benchmark in benchmarks/ in sequence, each in its own process, and collects
their JSON output in benchmarks/results/<name>.json (plus a summary in
benchmarks/results/run_all.json with each benchmark's exit status and wall time).

    python benchmarks/run_all.py [--only losses,train_step] [--skip prepare_data]
        [--out benchmarks/results] [-- extra args passed to every benchmark]
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time

import _common

HERE = _common.HERE


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
  args = ap.parse_args(argv)

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
  print("\n" + "\n".join(f"{n:<14} exit {v['returncode']}  {v['wall_s']:.0f} s" for n, v in summary.items()))
  return 0 if all(v["returncode"] == 0 for v in summary.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
