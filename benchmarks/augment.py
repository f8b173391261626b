"""Benchmark: on-device augmentation throughput of `jaxssl.augment` on CPU.

A uint8 batch (default 256 x 32 x 32 x 3, CIFAR-sized) goes through the jitted
`augment_batch` (one view) and `make_views` (the two views a train step makes), for the
simclr preset and, for comparison, byol and the Fashion-MNIST preset (on 28 x 28 x 1).
Each row: compile time of the first call, then the median (and min) wall time of
`--repeats` calls after `--warmup` calls, images/s = batch / median, and the process
CPU time per call (all XLA threads together, which is less sensitive to other load on
the machine than wall time). The load average is printed before and after, because other
processes may share the CPUs.

    python benchmarks/augment.py [--batch 256] [--size 32] [--repeats 20] [--presets simclr,byol,fmnist] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import _common  # noqa: E402  (benchmarks/ is the script's directory)
import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxssl import augment  # noqa: E402


def bench(fn, key, images, warmup, repeats):
  t0 = time.perf_counter()
  jax.block_until_ready(fn(key, images))
  compile_s = time.perf_counter() - t0
  for i in range(warmup):
    jax.block_until_ready(fn(jax.random.fold_in(key, i + 1), images))
  wall, cpu = [], []
  for i in range(repeats):
    k = jax.random.fold_in(key, 1000 + i)
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(k, images))
    wall.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  return compile_s, wall, cpu


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--size", type=int, default=32, help="image side of the RGB presets")
  ap.add_argument("--repeats", type=int, default=20)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--presets", type=str, default="simclr,byol,fmnist")
  ap.add_argument("--json", type=str, default=None, help="also write results here")
  args = ap.parse_args(argv)

  load0 = _common.load_average()
  print(f"jaxssl.augment on {jax.devices()[0].platform}: jax {jax.__version__}, {_common.cpu_description()}; "
        f"load average before {_common.format_load(load0)}")
  print(f"uint8 batch {args.batch}; jitted; median of {args.repeats} calls after {args.warmup} warm-up calls")
  print()
  header = (f"{'preset':<8}{'input':>14}{'call':>12}{'compile [s]':>13}{'median [ms]':>13}{'min [ms]':>10}"
            f"{'images/s':>11}{'cpu [ms]':>10}")
  print(header)
  print("-" * len(header))
  rng = np.random.default_rng(0)
  key = jax.random.PRNGKey(0)
  results = []
  for name in args.presets.split(","):
    if name == "fmnist":
      shape = (args.batch, 28, 28, 1)
    else:
      shape = (args.batch, args.size, args.size, 3)
    images = jax.device_put(rng.integers(0, 256, shape, dtype=np.uint8))
    views = augment.preset(name, shape[1])
    fns = {
        "one view": jax.jit(lambda k, x, c=views[0]: augment.augment_batch(k, x, c)),
        "make_views": jax.jit(lambda k, x, v=views: augment.make_views(k, x, v)),
    }
    for call, fn in fns.items():
      compile_s, wall, cpu = bench(fn, key, images, args.warmup, args.repeats)
      med = statistics.median(wall)
      n_img = args.batch * (2 if call == "make_views" else 1)
      row = dict(preset=name, input=list(shape), call=call, compile_s=compile_s, median_s=med,
                 min_s=min(wall), images_per_s=n_img / med, cpu_median_s=statistics.median(cpu),
                 wall_s=wall, cpu_s=cpu)
      results.append(row)
      print(f"{name:<8}{'x'.join(map(str, shape[1:])):>14}{call:>12}{compile_s:>13.2f}{1e3 * med:>13.1f}"
            f"{1e3 * min(wall):>10.1f}{n_img / med:>11.0f}{1e3 * row['cpu_median_s']:>10.1f}")
  load1 = _common.load_average()
  print()
  print("images/s counts augmented images (2 per input image for make_views). "
        f"Load average after: {_common.format_load(load1)}")
  if args.json:
    _common.write_json(args.json, dict(
        batch=args.batch, size=args.size, repeats=args.repeats, warmup=args.warmup, jax=jax.__version__,
        cpu_count=os.cpu_count(), load_average_before=list(load0), load_average_after=list(load1),
        results=results))
  return 0


if __name__ == "__main__":
  sys.exit(main())
