"""Benchmark: a K = 8 member vmapped jaxssl sweep (one compiled program) against K
sequential single runs of the same configs for the same number of steps, in one run.

Default: SimCLR on the Fashion-MNIST small ConvNet (experiments/configs/simclr.py, batch
256), `loss.temperature` swept over 8 values, `--steps 30`. `--model resnet18` uses
experiments/configs/simclr.py:cifar10 (ResNet-18 CIFAR stem, LARS as configured) with a
CIFAR-size batch (default 64 on the CPU; keep --steps small there).

Both sides train on synthetic uint8 batches (no dataset needed): the same sequence of
batches for every member and every run. Exactly as `jaxssl.run.train` does:
  sweep       `state.build` -> `sweep.stack_members` -> `sweep.jit_member_step` (members
              mapped inside one program), member i draws its augmentations from stream i;
  sequential  for each member i: `sweep.member_config(cfg, member_i, i)` (its
              hyperparameter and `train.aug_stream = i`) -> `state.build` ->
              `step.jit_train_step` -> steps. Each run is built and compiled anew, as separate jobs would be
              (the Python start-up and imports of separate processes are not counted).
`train.log_every` is set to 10**9 and both sides start their step counter at
`--start-step` (default 1), so the in-graph spectrum diagnostics (which run when
step % log_every == 0) are never computed. The default is 1 rather than 0 because on the
CPU the vmapped member step hangs (deadlock, idle CPU) when it takes the diagnostics
branch at step 0, while the single-run step does not; `--start-step 0` reproduces that.
Starting at 1 shifts the warm-up schedule by one step, identically on both sides.

Reported per side: wall time in all (build + compile + every step), build time,
compile time (`jit(...).lower(...).compile()`, separately from execution), the first
step (step 0, with the diagnostics), and the steady-state median step time over steps
1.. (each step is synchronised with block_until_ready). The wall-time ratio is
sequential / sweep; a "sequential, one compile" estimate (one compile + K times the
single-run steps) is shown as well, since the hyperparameters are traced arrays and one
compiled single-run step could serve all K runs.

Numerical check: after the steps, member i of the sweep should equal sequential run i
(same initial parameters, hyperparameters and augmentation keys); reported is the max
abs difference of all parameters between sweep member 0 and run 0 (and the largest over
all members), and the max loss difference over all steps and members.

    python benchmarks/sweep.py [--model convnet_small|resnet18] [--members 8] [--steps 30]
        [--batch 256] [--field loss.temperature] [--values 0.05,...] [--cpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

if "--cpu" in sys.argv:
  os.environ["JAX_PLATFORMS"] = "cpu"

import _common  # noqa: E402  (benchmarks/ is the script's directory)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from jaxssl import config as config_lib  # noqa: E402
from jaxssl import parallel, state as state_lib, step as step_lib, sweep  # noqa: E402

LOG_EVERY = _common.LOG_EVERY
DEFAULT_VALUES = {"loss.temperature": [0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0]}


def make_config(model: str, batch: int) -> ml_collections.ConfigDict:
  """experiments/configs/simclr.py (":cifar10" for resnet18) at `batch`, diagnostics off."""
  path = _common.SIMCLR_CONFIG + (":cifar10" if model == "resnet18" else "")
  return config_lib.load_config(path, [f"--config.data.batch_size={batch}",
                                       f"--config.train.log_every={LOG_EVERY}"])


def run(step_fn, state, batches, keys):
  """Compiles (timed apart), then runs all steps; returns times, losses and the final state."""
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batches[0], keys[0]).compile()
  compile_s = time.perf_counter() - t0
  times, losses = [], []
  for s in range(len(keys)):
    t0 = time.perf_counter()
    state, m = compiled(state, batches[s % len(batches)], keys[s])
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - t0)
    losses.append(np.asarray(m["loss"]))
  return state, compile_s, times, np.stack(losses)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--model", choices=("convnet_small", "resnet18"), default="convnet_small")
  ap.add_argument("--members", type=int, default=8)
  ap.add_argument("--steps", type=int, default=30)
  ap.add_argument("--batch", type=int, default=None, help="default 256 (convnet_small), 64 (resnet18)")
  ap.add_argument("--field", type=str, default="loss.temperature", help="the swept config field")
  ap.add_argument("--values", type=str, default=None, help="comma-separated; default 8 temperatures")
  ap.add_argument("--distinct-batches", type=int, default=4, help="batches cycled through")
  ap.add_argument("--start-step", type=int, default=1,
                  help="initial step counter of both sides (0 takes the diagnostics branch)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--member-chunk", type=int, default=None,
                  help="config.mesh.member_chunk: members per vmap (K: all vmapped; 1: lax.map one "
                       "member at a time inside the step; default: the backend's default)")
  ap.add_argument("--cpu", action="store_true", help="force the CPU (sets JAX_PLATFORMS=cpu)")
  ap.add_argument("--json", type=str, default=None, help="also write results here")
  args = ap.parse_args(argv)

  batch = args.batch or (256 if args.model == "convnet_small" else 64)
  if args.values:
    values = [float(v) for v in args.values.split(",") if v.strip()]
  else:
    values = DEFAULT_VALUES.get(args.field)
    if values is None:
      raise SystemExit(f"--values is needed for --field {args.field}")
  values = (values * args.members)[:args.members] if len(values) < args.members else values[:args.members]
  k = len(values)
  cfg = make_config(args.model, batch)
  cfg.mesh.member_chunk = args.member_chunk
  members = sweep.members_from_sweep(cfg, [(args.field, values)])
  info_shape = None

  load0 = _common.load_average()
  print(f"member_chunk={sweep.member_chunk(cfg, k)} (members per vmap inside the step)")
  print(f"K={k} vmapped sweep of {args.field} = {values} vs {k} sequential single runs, {args.steps} "
        f"steps each; SimCLR {cfg.model.encoder}, batch {batch}, {jax.devices()[0].platform}")
  print(f"jax {jax.__version__} ({jax.devices()[0].device_kind}, {jax.device_count()} device(s)); "
        f"{_common.cpu_description()}; load average {_common.format_load(load0)} "
        f"(other processes share the CPUs); steps "
        f"{args.start_step}..{args.start_step + args.steps - 1}, diagnostics "
        f"{'at step 0 only' if args.start_step == 0 else 'never'} (train.log_every={LOG_EVERY})")
  print()

  # Untimed warm-up: JAX backend initialisation and first-use costs of model building,
  # which would otherwise be charged to whichever side runs first.
  jax.block_until_ready(state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))[1])

  # ------------------------------------------------------------------ sweep
  t_all = time.perf_counter()
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  info_shape = setup.image_shape
  mesh = sweep.make_member_mesh(cfg)
  state = sweep.stack_members(cfg, state, members)
  state = state.replace(step=jnp.asarray(args.start_step, jnp.int32))
  step_fn, state_sh = sweep.jit_member_step(setup, mesh, state)
  state = jax.device_put(state, state_sh)
  build_s = time.perf_counter() - t_all
  # Batches and keys are made outside the timed region (a data pipeline would prefetch).
  t_data = time.perf_counter()
  host_batches = _common.synthetic_batches(args.distinct_batches, batch, info_shape, setup.num_classes, args.seed)
  batches = [jax.device_put(b, parallel.batch_sharding(mesh)) for b in host_batches]
  roots = [step_lib.augmentation_root_key(cfg, i) for i in range(k)]
  step_ids = range(args.start_step, args.start_step + args.steps)
  keys = [jnp.stack([jax.random.fold_in(r, s) for r in roots]) for s in step_ids]
  jax.block_until_ready((batches, keys))
  data_s = time.perf_counter() - t_data
  t1 = time.perf_counter()
  state, compile_s, times, losses = run(step_fn, state, batches, keys)
  sweep_wall = build_s + (time.perf_counter() - t1)
  sweep_params = jax.device_get(state.params)
  del state
  sw = dict(wall_s=sweep_wall, build_s=build_s, compile_s=compile_s, first_step_s=times[0],
            steady_median_step_s=statistics.median(times[1:]) if len(times) > 1 else float("nan"),
            step_times_s=times)
  print(f"sweep: build {build_s:.1f} s, compile {compile_s:.1f} s, first step {times[0]:.2f} s, steady "
        f"{sw['steady_median_step_s']:.3f} s/step, wall {sweep_wall:.1f} s", flush=True)

  # ------------------------------------------------------------------ sequential
  seq_runs, seq_losses, diffs = [], [], []
  for i, m in enumerate(members):
    t1 = time.perf_counter()
    mcfg = sweep.member_config(cfg, m, i)
    msetup, mstate = state_lib.build(mcfg, jax.random.PRNGKey(mcfg.seed))
    mmesh = parallel.make_mesh(mcfg.get("mesh", {}).get("num_devices"))
    mstep = step_lib.jit_train_step(msetup, mmesh)
    mstate = mstate.replace(step=jnp.asarray(args.start_step, jnp.int32))
    mstate = jax.device_put(mstate, parallel.replicated(mmesh))
    mbuild_s = time.perf_counter() - t1
    root = step_lib.augmentation_root_key(mcfg)
    mkeys = [jax.random.fold_in(root, s) for s in step_ids]
    mbatches = [jax.device_put(b, parallel.batch_sharding(mmesh)) for b in host_batches]
    jax.block_until_ready((mkeys, mbatches))
    t2 = time.perf_counter()
    mstate, mcompile_s, mtimes, mlosses = run(mstep, mstate, mbatches, mkeys)
    wall = mbuild_s + (time.perf_counter() - t2)
    mparams = jax.device_get(mstate.params)
    del mstate
    d = max(float(np.abs(np.asarray(a) - np.asarray(b)[i]).max())
            for a, b in zip(jax.tree.leaves(mparams), jax.tree.leaves(sweep_params)))
    diffs.append(d)
    seq_losses.append(mlosses)
    seq_runs.append(dict(wall_s=wall, build_s=mbuild_s, compile_s=mcompile_s, first_step_s=mtimes[0],
                         steady_median_step_s=statistics.median(mtimes[1:]) if len(mtimes) > 1 else float("nan"),
                         step_times_s=mtimes, max_abs_param_diff_vs_sweep_member=d))
    print(f"run {i} ({args.field}={m[args.field]}): build {mbuild_s:.1f} s, compile {mcompile_s:.1f} s, "
          f"first step {mtimes[0]:.2f} s, steady {seq_runs[-1]['steady_median_step_s']:.3f} s/step, "
          f"wall {wall:.1f} s; max|param - sweep member {i}| {d:.2e}", flush=True)

  load1 = _common.load_average()
  seq_wall = sum(r["wall_s"] for r in seq_runs)
  seq_compile = sum(r["compile_s"] for r in seq_runs)
  seq_build = sum(r["build_s"] for r in seq_runs)
  seq_steps = sum(sum(r["step_times_s"]) for r in seq_runs)
  seq_steady = sum(r["steady_median_step_s"] for r in seq_runs)    # K single steps
  one_compile_est = seq_runs[0]["build_s"] + seq_runs[0]["compile_s"] + seq_steps
  loss_diff = float(np.abs(losses - np.stack(seq_losses, axis=1)).max())
  pmax = max(float(np.abs(np.asarray(a)).max()) for a in jax.tree.leaves(sweep_params))

  print()
  header = f"{'':<36}{'wall [s]':>10}{'build [s]':>11}{'compile [s]':>13}{'steps [s]':>11}{'steady [s/step]':>17}"
  print(header)
  print("-" * len(header))
  print(f"{f'sweep (K={k}, one program)':<36}{sweep_wall:>10.1f}{build_s:>11.1f}{compile_s:>13.1f}"
        f"{sum(times):>11.1f}{sw['steady_median_step_s']:>17.3f}")
  print(f"{f'sequential ({k} runs)':<36}{seq_wall:>10.1f}{seq_build:>11.1f}{seq_compile:>13.1f}"
        f"{seq_steps:>11.1f}{seq_steady:>17.3f}")
  print(f"{'sequential, one compile (estimate)':<36}{one_compile_est:>10.1f}")
  print()
  print(f"wall-time ratio sequential / sweep: {seq_wall / sweep_wall:.2f}x  (one-compile estimate: "
        f"{one_compile_est / sweep_wall:.2f}x; steady state, {k} single steps / 1 sweep step: "
        f"{seq_steady / sw['steady_median_step_s']:.2f}x; compile {seq_compile / compile_s:.2f}x)")
  print(f"sweep member 0 vs sequential run 0 after {args.steps} steps: max |param diff| {diffs[0]:.2e} "
        f"(max |param| {pmax:.2f}); over all members {max(diffs):.2e}; max |loss diff| over all steps and "
        f"members {loss_diff:.2e}")
  print(f"data + keys prepared outside the timings in {data_s:.1f} s; load average after: "
        f"{_common.format_load(load1)}")
  tol = 1e-3 * max(1.0, pmax)
  ok = bool(diffs[0] <= tol)
  print(f"CHECK (sweep member 0 == sequential run 0, max |param diff| <= {tol:.0e}):", "PASS" if ok else "FAIL")

  if args.json:
    _common.write_json(args.json, dict(
        benchmark="sweep", model=args.model, member_chunk=sweep.member_chunk(cfg, k), start_step=args.start_step,
        batch=batch, steps=args.steps, members=members, field=args.field, values=values, log_every=LOG_EVERY,
        device=jax.devices()[0].platform, jax=jax.__version__, cpu_count=os.cpu_count(),
        load_average_before=list(load0), load_average_after=list(load1),
        sweep=sw, sequential=dict(runs=seq_runs, wall_s=seq_wall, build_s=seq_build,
                                  compile_s=seq_compile, steps_s=seq_steps,
                                  steady_step_s_sum_over_runs=seq_steady,
                                  one_compile_estimate_wall_s=one_compile_est),
        ratio_wall_sequential_over_sweep=seq_wall / sweep_wall,
        ratio_one_compile_estimate_over_sweep=one_compile_est / sweep_wall,
        ratio_steady_sequential_over_sweep=seq_steady / sw["steady_median_step_s"],
        member0_max_abs_param_diff=diffs[0], max_abs_param_diff_all_members=max(diffs),
        max_abs_param=pmax, max_abs_loss_diff=loss_diff, check_passed=ok))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
