"""Benchmark: what the in-graph spectrum diagnostics (RankMe included) cost per train step.

The jitted train step computes its diagnostics (the spectra of z and r, effective rank,
RankMe of z and r, norm, alignment, uniformity) inside a `lax.cond` that is taken only on
logging steps (step % train.log_every == 0). Two compiled steps of the Fashion-MNIST
SimCLR config (experiments/configs/simclr.py, convnet_small, synthetic uint8 batch):

  every   train.log_every = 1: every step computes the diagnostics;
  never   train.log_every = 10**9: no timed step computes them;

are timed interleaved (`_common.interleave`, A = never): each round times one "never"
step and then one "every" step, and one "never" step and then the RankMe calls alone
(jitted `selection.rankme` of z [B, 128] and r [B, 256]), so each pair saw the same
load. The paired ratio t_every / t_never of each adjacent pair, minus 1, is the cost of
a logging step as a share of a step; with their median rho, the amortised cost at
log_every = L is (rho - 1) / L (the issue's bound: <= 5 % at L = 100), and the RankMe
share of a step is the median of t_rankme / t_never. Reported with their spread (min-max
and IQR), the 1-minute load average before, between the rounds and after and the other
processes' CPU per round ("clean": false when both are above their limits; "load_ok":
false above `--load-limit`, default 1.5: not a clean measurement).

    python benchmarks/diagnostics_cost.py [--batch 256] [--repeats 30] [--load-limit 1.5] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

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
  # Placed as the step returns it, so that only the first call compiles.
  state = jax.device_put(state, parallel.replicated(mesh))
  return cfg, setup, state, mesh, step_lib.jit_train_step(setup, mesh)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--repeats", type=int, default=30)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--cpu", action="store_true", help="run on the CPU (the default unless JAX_PLATFORMS is set)")
  ap.add_argument("--load-limit", type=float, default=_common.LOAD_LIMIT,
                  help="1-minute load average above which a ratio is not a clean measurement")
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

  calls = {name: 1 if name == "every" else 0 for name in sides}   # "every" has made one step

  def side_block(name):
    def block() -> None:
      side = sides[name]
      key = jax.random.fold_in(side["root"], calls[name])
      calls[name] += 1
      side["state"], m = side["fn"](side["state"], side["batch"], key)
      jax.block_until_ready((side["state"], m))
    return block

  def rankme_block() -> None:
    jax.block_until_ready(rankme_fn(zs, rs))

  load0 = _common.load_average()
  print(f"in-graph diagnostics cost: SimCLR Fashion-MNIST step, batch {args.batch}, z dim {z_dim}, r dim {r_dim}; "
        f"jax {jax.__version__} ({jax.devices()[0].platform}); {_common.cpu_description()}; "
        f"load average {_common.format_load(load0)}")
  # The fold_in of a block's key is inside its timing on both step sides alike.
  m = _common.interleave(("never", side_block("never")),
                         {"every": side_block("every"), "rankme": rankme_block},
                         rounds=args.repeats, warmup=args.warmup + 1, load_limit=args.load_limit)
  med = {k: statistics.median(v["times_s"]) for k, v in m["sides"].items()}
  every, rankme = m["comparisons"]["every"]["ratio"], m["comparisons"]["rankme"]["ratio"]
  per_log_fraction = every["median"] - 1.0                # a logging step's extra cost, as a share of a step
  amortised = per_log_fraction / LOG_EVERY_CHECKED
  clean = "" if _common.is_clean(m) else "  [loaded machine: NOT a clean measurement]"
  print(f"{args.repeats} interleaved rounds (never, every, never, rankme) after {args.warmup + 1} warm-up rounds; "
        f"paired ratios: median, spread {_common.RATIO_SPREAD}")
  print(f"  step, diagnostics every step  {med['every'] * 1e3:8.2f} ms (median)")
  print(f"  step, no diagnostics          {med['never'] * 1e3:8.2f} ms (median)")
  print(f"  every / never, paired         {_common.format_ratio(m['comparisons']['every'], _common.is_clean(m))}")
  print(f"  all diagnostics, per logging step {per_log_fraction:.1%} of a step "
        f"(≈ {per_log_fraction * med['never'] * 1e3:.2f} ms)")
  print(f"  RankMe of z and r alone, paired share of a step: median {rankme['median']:.1%} "
        f"(min-max {rankme['min']:.1%}-{rankme['max']:.1%}); {med['rankme'] * 1e3:.2f} ms (median)")
  print(f"  amortised at log_every={LOG_EVERY_CHECKED}: all diagnostics {amortised:.3%} of step time "
        f"(bound 5 %: {'holds' if amortised <= 0.05 else 'FAILS'}); RankMe alone "
        f"{rankme['median'] / LOG_EVERY_CHECKED:.4%}{clean}")
  print(f"  {_common.load_text(m)}")
  result = {"batch": args.batch, "repeats": args.repeats, "load_average": list(load0),
            "median_s": med, "per_logging_step_s": per_log_fraction * med["never"],
            "per_logging_step_fraction": per_log_fraction, "amortised_fraction_at_100": amortised,
            "rankme_fraction_of_step": rankme["median"], "load_ok": m["load_ok"], "clean": _common.is_clean(m),
            "load_limit": args.load_limit,
            "usable_cpus": _common.available_cpus(), "spread": _common.RATIO_SPREAD, "measurement": m}
  if args.json:
    _common.write_json(args.json, result)
  return 0 if amortised <= 0.05 else 1


if __name__ == "__main__":
  sys.exit(main())
