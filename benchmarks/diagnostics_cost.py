"""Benchmark: what the in-graph spectrum diagnostics (RankMe included) cost per train step.

The jitted train step computes its diagnostics (the spectra of z and r, effective rank,
RankMe of z and r, norm, alignment, uniformity) inside a `lax.cond` that is taken only on
logging steps (step % train.log_every == 0). Two compiled steps of the Fashion-MNIST
SimCLR config (experiments/configs/simclr.py, convnet_small, synthetic uint8 batch):

  every   train.log_every = 1: every step computes the diagnostics;
  never   train.log_every = 10**9: no timed step computes them;

are timed in interleaved rounds (one step of each per round, so both see the same load),
median over rounds. With d = t_every - t_never the per-logging-step cost, the amortised
cost at log_every = L is d / (L * t_never); the issue's bound is <= 5 % at L = 100. The
RankMe calls alone (jitted `selection.rankme` of z [B, 128] and r [B, 256]) are timed the
same way, as a share of t_never.

    python benchmarks/diagnostics_cost.py [--batch 256] [--repeats 30] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

if "--cpu" in sys.argv or "JAX_PLATFORMS" not in os.environ:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

import _common  # noqa: E402  (benchmarks/ is the script's directory)
import jax  # noqa: E402

from jaxssl import config as config_lib  # noqa: E402
from jaxssl import parallel, selection, state as state_lib, step as step_lib  # noqa: E402

LOG_EVERY_CHECKED = 100


def compiled_step(batch: int, log_every: int, seed: int):
  cfg = config_lib.load_config(_common.SIMCLR_CONFIG, [f"--config.data.batch_size={batch}",
                                                        f"--config.train.log_every={log_every}"])
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(seed))
  mesh = parallel.make_mesh(1)
  return cfg, setup, state, mesh, step_lib.jit_train_step(setup, mesh)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--repeats", type=int, default=30)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--cpu", action="store_true", help="run on the CPU (the default unless JAX_PLATFORMS is set)")
  ap.add_argument("--json", type=str, default=None)
  args = ap.parse_args(argv)

  sides = {}
  for name, log_every in (("every", 1), ("never", _common.LOG_EVERY)):
    cfg, setup, state, mesh, fn = compiled_step(args.batch, log_every, args.seed)
    host = _common.synthetic_batches(1, args.batch, setup.image_shape, setup.num_classes, args.seed)[0]
    batch = jax.device_put(host, parallel.batch_sharding(mesh))
    root = step_lib.augmentation_root_key(cfg)
    sides[name] = {"fn": fn, "state": state, "batch": batch, "root": root}
  # The diagnostics' spectra give the embedding widths: z [B, D], r [B, F].
  every = sides["every"]
  every["state"], m = every["fn"](every["state"], every["batch"], every["root"])   # the state is donated
  z_dim, r_dim = int(m["spectrum_z"].shape[-1]), int(m["spectrum_r"].shape[-1])
  zs = jax.random.normal(jax.random.PRNGKey(1), (args.batch, z_dim))   # [B, D]
  rs = jax.random.normal(jax.random.PRNGKey(2), (args.batch, r_dim))   # [B, F]
  rankme_fn = jax.jit(lambda z, r: (selection.rankme(z), selection.rankme(r)))

  def run_side(side, i):
    key = jax.random.fold_in(side["root"], i)
    t0 = time.perf_counter()
    side["state"], m = side["fn"](side["state"], side["batch"], key)
    jax.block_until_ready((side["state"], m))
    return time.perf_counter() - t0

  def run_rankme():
    t0 = time.perf_counter()
    jax.block_until_ready(rankme_fn(zs, rs))
    return time.perf_counter() - t0

  load0 = _common.load_average()
  print(f"in-graph diagnostics cost: SimCLR Fashion-MNIST step, batch {args.batch}, z dim {z_dim}, r dim {r_dim}; "
        f"jax {jax.__version__} ({jax.devices()[0].platform}); {_common.cpu_description()}; "
        f"load average {_common.format_load(load0)}")
  for i in range(args.warmup + 1):      # the first call compiles
    for side in sides.values():
      run_side(side, i)
    run_rankme()
  times = {"every": [], "never": [], "rankme": []}
  for i in range(args.repeats):
    j = args.warmup + 1 + i
    times["every"].append(run_side(sides["every"], j))
    times["never"].append(run_side(sides["never"], j))
    times["rankme"].append(run_rankme())
  med = {k: statistics.median(v) for k, v in times.items()}
  per_log = med["every"] - med["never"]
  amortised = per_log / (LOG_EVERY_CHECKED * med["never"])
  print(f"median of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds")
  print(f"  step, diagnostics every step  {med['every'] * 1e3:8.2f} ms")
  print(f"  step, no diagnostics          {med['never'] * 1e3:8.2f} ms")
  print(f"  all diagnostics, per logging step {per_log * 1e3:.2f} ms = {per_log / med['never']:.1%} of a step")
  print(f"  RankMe of z and r alone       {med['rankme'] * 1e3:8.2f} ms = {med['rankme'] / med['never']:.1%} of a step")
  print(f"  amortised at log_every={LOG_EVERY_CHECKED}: all diagnostics {amortised:.3%} of step time "
        f"(bound 5 %: {'holds' if amortised <= 0.05 else 'FAILS'}); RankMe alone "
        f"{med['rankme'] / (LOG_EVERY_CHECKED * med['never']):.4%}")
  result = {"batch": args.batch, "repeats": args.repeats, "load_average": list(load0),
            "median_s": med, "per_logging_step_s": per_log, "amortised_fraction_at_100": amortised,
            "rankme_fraction_of_step": med["rankme"] / med["never"]}
  if args.json:
    _common.write_json(args.json, result)
  return 0 if amortised <= 0.05 else 1


if __name__ == "__main__":
  sys.exit(main())
