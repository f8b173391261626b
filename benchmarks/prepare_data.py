"""Benchmark: offline Fashion-MNIST preparation and reload through tfds.

Measures, with the IDX files from --idx-dir (default: Debian's
/usr/share/datasets/fashion-mnist):

  import      importing tensorflow_datasets + TensorFlow (once per process)
  parse IDX   reading and checking the four .gz files (no tfds)
  prepare     cold `prepare_fashion_mnist` into a fresh, empty temporary data dir
              (IDX parse + checks + writing the tfds dataset), --prepare-repeats times
  reload      `load_arrays` of train and test from the prepared tfds files, in-memory
              cache cleared, imports already done (median of --repeats)
  reload, new process
              a fresh Python process that imports jaxssl.data and loads train + test
              (what a second `jaxssl train` pays), median of --repeats
  cached      a second `load_arrays` in the same process (in-memory cache)

The load average is printed because other processes may share the CPUs.

    python benchmarks/prepare_data.py [--idx-dir DIR] [--repeats 3] [--prepare-repeats 1] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAXSSL_QUIET", "1")

CHILD = """
import os, sys, time
t0 = time.perf_counter()
from jaxssl import data
x, y = data.load_arrays("fashion_mnist", "train", data_dir=sys.argv[1], idx_dir=sys.argv[2])
xt, yt = data.load_arrays("fashion_mnist", "test", data_dir=sys.argv[1], idx_dir=sys.argv[2])
assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
print("SECONDS", time.perf_counter() - t0)
"""


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--idx-dir", default=None, help="directory of the four IDX .gz files")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--prepare-repeats", type=int, default=1)
  ap.add_argument("--json", type=str, default=None, help="also write results here")
  args = ap.parse_args(argv)

  load0 = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
  t0 = time.perf_counter()
  from jaxssl import data
  data._tfds()  # pylint: disable=protected-access
  import tensorflow_datasets as tfds
  t_import = time.perf_counter() - t0
  idx_dir = data.resolve_idx_dir(args.idx_dir)

  t0 = time.perf_counter()
  arrays = data.read_fashion_mnist_idx(idx_dir)
  t_parse = time.perf_counter() - t0
  del arrays

  rows = []
  tmp_root = tempfile.mkdtemp(prefix="jaxssl_bench_data_")
  try:
    prep = []
    for i in range(args.prepare_repeats):
      dd = os.path.join(tmp_root, f"cold{i}")
      t0 = time.perf_counter()
      data.prepare_fashion_mnist(idx_dir, dd)
      prep.append(time.perf_counter() - t0)
    dd = os.path.join(tmp_root, "cold0")
    size_mb = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(os.path.join(dd, "fashion_mnist"))
                  for f in fs) / 2**20

    reload = []
    for _ in range(args.repeats):
      data.clear_cache()
      t0 = time.perf_counter()
      data.load_arrays("fashion_mnist", "train", data_dir=dd, idx_dir=idx_dir)
      data.load_arrays("fashion_mnist", "test", data_dir=dd, idx_dir=idx_dir)
      reload.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    data.load_arrays("fashion_mnist", "train", data_dir=dd, idx_dir=idx_dir)
    t_cached = time.perf_counter() - t0

    fresh, fresh_inner = [], []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                         env.get("PYTHONPATH", "")])
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      out = subprocess.run([sys.executable, "-c", CHILD, dd, idx_dir], capture_output=True, text=True, env=env)
      fresh.append(time.perf_counter() - t0)
      if out.returncode:
        print(out.stderr[-2000:], file=sys.stderr)
        raise SystemExit("the child process failed")
      fresh_inner.append(float(out.stdout.split("SECONDS")[-1]))

    # tfds' own builder reads the prepared copy.
    n = tfds.builder("fashion_mnist", data_dir=dd).info.splits["train"].num_examples
    assert n == 60_000, n
  finally:
    shutil.rmtree(tmp_root, ignore_errors=True)

  load1 = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
  rows = [
      ("import tensorflow_datasets + TF", [t_import]),
      ("parse + check IDX (no tfds)", [t_parse]),
      ("prepare, cold (fresh data dir)", prep),
      ("reload train+test (tfds files)", reload),
      ("reload, new process (incl. imports)", fresh),
      ("  of which after interpreter start", fresh_inner),
      ("load again (in-memory cache)", [t_cached]),
  ]
  print(f"Fashion-MNIST from {idx_dir}; prepared dataset {size_mb:.1f} MiB (tfds fashion_mnist/"
        f"{data.FMNIST_VERSION}); {os.cpu_count()} CPUs visible")
  print(f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
        f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} (other processes share the CPUs)")
  print()
  header = f"{'step':<40}{'median [s]':>12}{'min [s]':>10}{'runs':>6}"
  print(header)
  print("-" * len(header))
  for name, ts in rows:
    print(f"{name:<40}{statistics.median(ts):>12.2f}{min(ts):>10.2f}{len(ts):>6}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(idx_dir=idx_dir, size_mib=size_mb, cpu_count=os.cpu_count(), load_average_before=list(load0),
                     load_average_after=list(load1), results={k: v for k, v in rows}), f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
