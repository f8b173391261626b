"""Benchmark: offline Fashion-MNIST preparation (IDX -> .npy cache) and reload, no TensorFlow.

Measures, with the IDX files found as jaxssl finds them (--idx-dir, else $JAXSSL_FMNIST_DIR,
else the data dir, else Debian's /usr/share/datasets/fashion-mnist):

  import      importing jaxssl.data (once per process; must not import TensorFlow)
  parse IDX   reading and checking the four .gz files
  order       computing the tfds record order of train + test (md5 of 70 000 keys)
  prepare     cold `prepare_fashion_mnist` into a fresh, empty temporary data dir
              (IDX parse + checks + order + writing the .npy cache), --prepare-repeats times
  reload      `load_arrays` of train and test from the .npy cache (np.load + shape, count
              and sha256 checks), in-memory cache cleared (median of --repeats)
  reload, new process
              a fresh Python process that imports jaxssl.data and loads train + test
              (what a second `jaxssl train` pays), median of --repeats
  cached      a second `load_arrays` in the same process (in-memory cache)

The load average is printed because other processes may share the CPUs.

    python benchmarks/prepare_data.py [--idx-dir DIR] [--repeats 3] [--prepare-repeats 1] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAXSSL_QUIET", "1")

import _common  # noqa: E402  (benchmarks/ is the script's directory)

CHILD = """
import sys, time
t0 = time.perf_counter()
from jaxssl import data
x, y = data.load_arrays("fashion_mnist", "train", data_dir=sys.argv[1], idx_dir=sys.argv[2])
xt, yt = data.load_arrays("fashion_mnist", "test", data_dir=sys.argv[1], idx_dir=sys.argv[2])
assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
assert not [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets")]
print("SECONDS", time.perf_counter() - t0)
"""


def _tf_modules() -> list[str]:
  return [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets")]


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--idx-dir", default=None, help="directory of the four IDX .gz files")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--prepare-repeats", type=int, default=1)
  ap.add_argument("--json", type=str, default=None, help="also write results here")
  args = ap.parse_args(argv)
  if args.repeats < 1 or args.prepare_repeats < 1:
    ap.error("--repeats and --prepare-repeats must be >= 1")

  load0 = _common.load_average()
  t0 = time.perf_counter()
  from jaxssl import data
  t_import = time.perf_counter() - t0
  idx_dir = data.resolve_idx_dir(args.idx_dir)

  t0 = time.perf_counter()
  arrays = data.read_fashion_mnist_idx(idx_dir)
  t_parse = time.perf_counter() - t0
  t0 = time.perf_counter()
  for split, (_, labels) in arrays.items():
    data.tfds_record_order(len(labels), split)
  t_order = time.perf_counter() - t0
  del arrays

  tmp_root = tempfile.mkdtemp(prefix="jaxssl_bench_data_")
  try:
    prep = []
    for i in range(args.prepare_repeats):
      dd = os.path.join(tmp_root, f"cold{i}")
      t0 = time.perf_counter()
      data.prepare_fashion_mnist(idx_dir, dd)
      prep.append(time.perf_counter() - t0)
    dd = os.path.join(tmp_root, "cold0")
    cache = data.fashion_mnist_cache_dir(dd)
    size_mb = sum(os.path.getsize(os.path.join(cache, f)) for f in os.listdir(cache)) / 2**20

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
  finally:
    shutil.rmtree(tmp_root, ignore_errors=True)
  if _tf_modules():
    raise SystemExit(f"the Fashion-MNIST path imported TensorFlow: {_tf_modules()[:5]}")

  load1 = _common.load_average()
  rows = [
      ("import jaxssl.data (no TF)", [t_import]),
      ("parse + check IDX", [t_parse]),
      ("tfds record order (train+test)", [t_order]),
      ("prepare, cold (IDX -> .npy)", prep),
      ("reload train+test (.npy cache)", reload),
      ("reload, new process (incl. imports)", fresh),
      ("  of which after interpreter start", fresh_inner),
      ("load again (in-memory cache)", [t_cached]),
  ]
  print(f"Fashion-MNIST from {idx_dir}; prepared cache {size_mb:.1f} MiB ({data.CACHE_DIRNAME}/, "
        f"uint8 .npy); {_common.cpu_description()}; TensorFlow not imported")
  print(f"load average before {_common.format_load(load0)}, after {_common.format_load(load1)} "
        "(other processes share the CPUs)")
  print()
  header = f"{'step':<40}{'median [s]':>12}{'min [s]':>10}{'runs':>6}"
  print(header)
  print("-" * len(header))
  for name, ts in rows:
    print(f"{name:<40}{statistics.median(ts):>12.3f}{min(ts):>10.3f}{len(ts):>6}")
  if args.json:
    _common.write_json(args.json, dict(idx_dir=idx_dir, size_mib=size_mb, cpu_count=os.cpu_count(),
                                       load_average_before=list(load0), load_average_after=list(load1),
                                       results={k: v for k, v in rows}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
