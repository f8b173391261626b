"""Benchmark: a K = 8 member jaxssl sweep against K sequential single runs of the same
configs for the same number of steps, in one run.

Default: SimCLR on the Fashion-MNIST small ConvNet (experiments/configs/simclr.py, batch
256), `loss.temperature` swept over 8 values, `--steps 30`. `--model resnet18` uses
experiments/configs/simclr.py:cifar10 (ResNet-18 CIFAR stem, LARS as configured) with a
CIFAR-size batch (default 64 on the CPU; keep --steps small there).

Both sides train on synthetic uint8 batches (no dataset needed): the same sequence of
batches for every member and every run. Exactly as `jaxssl.run.train` does:
  sweep       `state.build` -> `sweep.stack_members` -> `sweep.jit_member_step` in the
              member mode `--member-mode` picks (`sweep.member_mode`; on the CPU by default
              "sequential": the single-run step, compiled once, called for each member on
              the shared batch; "program": the members mapped inside one compiled step);
              member i draws its augmentations from stream i;
  sequential  for each member i: `sweep.member_config(cfg, member_i, i)` (its
              hyperparameter and `train.aug_stream = i`) -> `state.build` ->
              `step.jit_train_step` -> steps. Each run is built and compiled anew, as separate
              jobs without a shared compilation cache would be (the Python start-up and imports of
              separate processes are not counted); the "one compile" estimate below is the
              same runs sharing one compilation, the best a shared cache could do.
`train.log_every` is set to 10**9 and both sides start their step counter at
`--start-step` (default 1), so the in-graph spectrum diagnostics (which run when
step % log_every == 0) are never computed. The default is 1 rather than 0 because on the
CPU the vmapped member step hangs (deadlock, idle CPU) when it takes the diagnostics
branch at step 0, while the single-run step does not; `--start-step 0` reproduces that.
Starting at 1 shifts the warm-up schedule by one step, identically on both sides.

Timing (`_common.interleave`, A = the sweep, B = the K sequential runs):

  wall rounds    `--rounds` rounds (default 3), each one sweep job (build + compile +
                 `--steps` steps) and then the K sequential runs (each built, compiled and
                 stepped in turn), so the sweep and the runs alternate (ABAB...) and each
                 pair saw the same background load. Reported per side and round: wall time
                 in all (build + compile + every step), build time, compile time
                 (`jit(...).lower(...).compile()`, separately from execution), the first
                 step and the median time of the other steps of the job (each step is
                 synchronised with block_until_ready). Paired ratios per round, sequential
                 / sweep: wall time; a "sequential, one compile" estimate (one build and
                 compile + every run's steps, since the hyperparameters are traced arrays
                 and one compiled single-run step could serve all K runs); compile time.
  steady state   then `--steady-rounds` interleaved pairs (default 10) on the last
                 round's compiled programs: one sweep step, then one step of each of the K
                 runs; the paired ratio is the K single steps' time / the sweep step's.

Each ratio is reported as the median of its paired ratios with their spread (min-max and
inter-quartile range), not as one ratio of two totals. The 1-minute load average is read
before, between the rounds of and after each of the two measurements; above
`--load-limit` (default 1.5, `_common.LOAD_LIMIT`) its ratios are marked "not a clean
measurement" in the output and "clean": false in --json unless other processes took at most
`_common.OTHER_CPU_LIMIT` cores in every round (`_common.interleave`). XLA uses the CPUs this process
may run on (len(os.sched_getaffinity(0)), reported) on both sides.

Numerical check: after the last round and the steady-state steps, member i of the sweep
should equal sequential run i (same initial parameters, hyperparameters and augmentation
keys, the same number of steps); reported is the max abs difference of all parameters
between sweep member 0 and run 0 (and the largest over all members), and the max loss
difference over all those steps and members.

    python benchmarks/sweep.py [--model convnet_small|resnet18] [--members 8] [--steps 30]
        [--rounds 3] [--steady-rounds 10] [--batch 256] [--field loss.temperature]
        [--values 0.05,...] [--load-limit 1.5] [--cpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

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


class Steps:
  """A compiled step with its state, batches and keys; `step()` runs the next step."""

  def __init__(self, compiled: Any, state: Any, batches: list[Any], keys: list[Any]):
    self.compiled, self.state, self.batches, self.keys = compiled, state, batches, keys
    self.times: list[float] = []
    self.losses: list[np.ndarray] = []

  def step(self) -> float:
    """Step len(self.times) (batch i % len(batches), key i), synchronised; returns its seconds."""
    s = len(self.times)
    t0 = time.perf_counter()
    self.state, m = self.compiled(self.state, self.batches[s % len(self.batches)], self.keys[s])
    jax.block_until_ready((self.state, m))
    self.times.append(time.perf_counter() - t0)
    self.losses.append(np.asarray(m["loss"]))
    return self.times[-1]


def compile_and_run(step_fn: Any, state: Any, batches: list[Any], keys: list[Any], steps: int) -> tuple[Steps, float]:
  """Compiles (timed apart), then runs `steps` steps; returns (the Steps, compile seconds)."""
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batches[0], keys[0]).compile()
  compile_s = time.perf_counter() - t0
  runner = Steps(compiled, state, batches, keys)
  for _ in range(steps):
    runner.step()
  return runner, compile_s


def job_summary(build_s: float, compile_s: float, times: list[float]) -> dict[str, Any]:
  """{"wall_s", "build_s", "compile_s", "first_step_s", "steady_median_step_s", "step_times_s"} of one job."""
  return dict(wall_s=build_s + compile_s + sum(times), build_s=build_s, compile_s=compile_s, first_step_s=times[0],
              steady_median_step_s=statistics.median(times[1:]) if len(times) > 1 else float("nan"),
              step_times_s=list(times))


def sweep_job(cfg: Any, members: list[dict], k: int, args: Any, host_batches: list, step_ids: range) -> dict[str, Any]:
  """One sweep job: build, stack the members, compile, `--steps` steps. Returns its
  `job_summary` and "runner" (the Steps, for the steady state and the check)."""
  t0 = time.perf_counter()
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  mesh = sweep.make_sweep_mesh(cfg)
  state = sweep.stack_members(cfg, state, members)
  state = state.replace(step=jnp.asarray(args.start_step, jnp.int32))
  step_fn, state_sh = sweep.jit_member_step(setup, mesh, state)
  if sweep.member_mode(cfg) == "sequential":
    state = sweep.split_members(state, state_sh)    # K single-run states, as jaxssl.run.train does
  else:
    state = jax.device_put(state, state_sh)
  build_s = time.perf_counter() - t0
  # Batches and keys are made outside the timed region (a data pipeline would prefetch).
  batches = [jax.device_put(b, parallel.batch_sharding(mesh)) for b in host_batches]
  keys_for = sweep.member_keys_fn(cfg, k)
  keys = [keys_for(s) for s in step_ids]
  jax.block_until_ready((batches, keys))
  runner, compile_s = compile_and_run(step_fn, state, batches, keys, args.steps)
  return dict(job_summary(build_s, compile_s, runner.times), runner=runner)


def run_job(cfg: Any, member: dict, i: int, args: Any, host_batches: list, step_ids: range) -> dict[str, Any]:
  """Sequential run i, as a separate job would do it: its config, build, compile, `--steps`
  steps. Returns its `job_summary` and "runner"."""
  t0 = time.perf_counter()
  mcfg = sweep.member_config(cfg, member, i)
  msetup, mstate = state_lib.build(mcfg, jax.random.PRNGKey(mcfg.seed))
  mmesh = parallel.make_mesh(mcfg.get("mesh", {}).get("num_devices"))
  mstep = step_lib.jit_train_step(msetup, mmesh)
  mstate = mstate.replace(step=jnp.asarray(args.start_step, jnp.int32))
  mstate = jax.device_put(mstate, parallel.replicated(mmesh))
  build_s = time.perf_counter() - t0
  root = step_lib.augmentation_root_key(mcfg)
  keys = [jax.random.fold_in(root, s) for s in step_ids]
  batches = [jax.device_put(b, parallel.batch_sharding(mmesh)) for b in host_batches]
  jax.block_until_ready((keys, batches))
  runner, compile_s = compile_and_run(mstep, mstate, batches, keys, args.steps)
  return dict(job_summary(build_s, compile_s, runner.times), runner=runner)


def sequential_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
  """The K runs of one round as one side: totals, the sum of their steady medians (K single
  steps) and the one-compile estimate (run 0's build and compile + every run's steps)."""
  steps_s = sum(sum(r["step_times_s"]) for r in runs)
  return dict(runs=runs, wall_s=sum(r["wall_s"] for r in runs), build_s=sum(r["build_s"] for r in runs),
              compile_s=sum(r["compile_s"] for r in runs), steps_s=steps_s,
              steady_step_s_sum_over_runs=sum(r["steady_median_step_s"] for r in runs),
              one_compile_estimate_wall_s=runs[0]["build_s"] + runs[0]["compile_s"] + steps_s)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--model", choices=("convnet_small", "resnet18"), default="convnet_small")
  ap.add_argument("--members", type=int, default=8)
  ap.add_argument("--steps", type=int, default=30, help="steps of every job (sweep and each run)")
  ap.add_argument("--rounds", type=int, default=3, help="interleaved wall rounds: sweep job, then the K runs")
  ap.add_argument("--steady-rounds", type=int, default=10,
                  help="interleaved steady-state pairs: one sweep step, then one step of each run")
  ap.add_argument("--batch", type=int, default=None, help="default 256 (convnet_small), 64 (resnet18)")
  ap.add_argument("--field", type=str, default="loss.temperature", help="the swept config field")
  ap.add_argument("--values", type=str, default=None, help="comma-separated; default 8 temperatures")
  ap.add_argument("--distinct-batches", type=int, default=4, help="batches cycled through")
  ap.add_argument("--start-step", type=int, default=1,
                  help="initial step counter of both sides (0 takes the diagnostics branch)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--member-mode", choices=sweep.MEMBER_MODES, default="auto",
                  help="config.mesh.member_mode: 'sequential' (the single-run step per member, compiled "
                       "once), 'program' (members mapped in one compiled step), 'auto' (the backend's default)")
  ap.add_argument("--member-chunk", type=int, default=None,
                  help="config.mesh.member_chunk in the program mode: members per vmap (K: all vmapped; 1: "
                       "one member at a time, unrolled in the step; default: the backend's default)")
  ap.add_argument("--load-limit", type=float, default=_common.LOAD_LIMIT,
                  help="1-minute load average above which a ratio is not a clean measurement")
  ap.add_argument("--cpu", action="store_true", help="force the CPU (sets JAX_PLATFORMS=cpu)")
  ap.add_argument("--json", type=str, default=None, help="also write results here")
  args = ap.parse_args(argv)
  if args.rounds < 1 or args.steps < 1 or args.steady_rounds < 0:
    raise SystemExit("--rounds and --steps must be >= 1, --steady-rounds >= 0")

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
  cfg.mesh.member_mode = args.member_mode
  mode = sweep.member_mode(cfg)
  members = sweep.members_from_sweep(cfg, [(args.field, values)])
  # Every job runs --steps steps; the last round's jobs go on for --steady-rounds more.
  step_ids = range(args.start_step, args.start_step + args.steps + args.steady_rounds)

  load0 = _common.load_average()
  print(f"member_mode={mode}" + (f", member_chunk={sweep.member_chunk(cfg, k)} (members per vmap inside the step)"
                                  if mode == "program" else " (the single-run step, compiled once, per member)"))
  print(f"K={k} sweep of {args.field} = {values} vs {k} sequential single runs, {args.steps} "
        f"steps each, {args.rounds} interleaved rounds + {args.steady_rounds} steady-state pairs; SimCLR "
        f"{cfg.model.encoder}, batch {batch}, {jax.devices()[0].platform}")
  print(f"jax {jax.__version__} ({jax.devices()[0].device_kind}, {jax.device_count()} device(s)); "
        f"{_common.cpu_description()} (XLA's threads: {_common.available_cpus()} CPUs, both sides); load average "
        f"{_common.format_load(load0)} (other processes share the CPUs); steps "
        f"{args.start_step}..{args.start_step + args.steps - 1}, diagnostics "
        f"{'at step 0 only' if args.start_step == 0 else 'never'} (train.log_every={LOG_EVERY})")
  print()

  # Untimed warm-up: JAX backend initialisation and first-use costs of model building,
  # which would otherwise be charged to whichever side runs first.
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  jax.block_until_ready(state)
  t_data = time.perf_counter()
  host_batches = _common.synthetic_batches(args.distinct_batches, batch, setup.image_shape, setup.num_classes,
                                           args.seed)
  data_s = time.perf_counter() - t_data
  del setup, state

  # ------------------------------------------------------------------ wall rounds
  rounds: list[dict[str, Any]] = []
  live: dict[str, Any] = {}      # the latest round's runners (older ones are freed)

  def sweep_block() -> float:
    live.clear()
    job = sweep_job(cfg, members, k, args, host_batches, step_ids)
    live["sweep"] = job.pop("runner")
    rounds.append({"sweep": job})
    print(f"round {len(rounds)} sweep: build {job['build_s']:.1f} s, compile {job['compile_s']:.1f} s, first step "
          f"{job['first_step_s']:.2f} s, steady {job['steady_median_step_s']:.3f} s/step, wall {job['wall_s']:.1f} s",
          flush=True)
    return job["wall_s"]

  def sequential_block() -> float:
    runs, live["runs"] = [], []
    for i, m in enumerate(members):
      job = run_job(cfg, m, i, args, host_batches, step_ids)
      live["runs"].append(job.pop("runner"))
      runs.append(job)
      print(f"round {len(rounds)} run {i} ({args.field}={m[args.field]}): build {job['build_s']:.1f} s, compile "
            f"{job['compile_s']:.1f} s, first step {job['first_step_s']:.2f} s, steady "
            f"{job['steady_median_step_s']:.3f} s/step, wall {job['wall_s']:.1f} s", flush=True)
    rounds[-1]["sequential"] = sequential_summary(runs)
    return rounds[-1]["sequential"]["wall_s"]

  wall = _common.interleave(("sweep", sweep_block), {"sequential": sequential_block}, rounds=args.rounds,
                            load_limit=args.load_limit)
  sweep_walls = [r["sweep"]["wall_s"] for r in rounds]
  wall["comparisons"]["sequential_one_compile_estimate"] = _common.paired(
      sweep_walls, [r["sequential"]["one_compile_estimate_wall_s"] for r in rounds])
  wall["comparisons"]["compile"] = _common.paired(
      [r["sweep"]["compile_s"] for r in rounds], [r["sequential"]["compile_s"] for r in rounds])

  # ------------------------------------------------------------------ steady state
  sweep_steps, run_steps = live["sweep"], live["runs"]
  steady = None
  if args.steady_rounds:
    steady = _common.interleave(("sweep", sweep_steps.step), {"sequential": lambda: sum(r.step() for r in run_steps)},
                                rounds=args.steady_rounds, load_limit=args.load_limit)

  # ------------------------------------------------------------------ check
  sweep_params = jax.device_get(sweep.stacked_state(sweep_steps.state).params)
  diffs = []
  for i, r in enumerate(run_steps):
    mparams = jax.device_get(r.state.params)
    diffs.append(max(float(np.abs(np.asarray(a) - np.asarray(b)[i]).max())
                     for a, b in zip(jax.tree.leaves(mparams), jax.tree.leaves(sweep_params))))
  for run_summary, d in zip(rounds[-1]["sequential"]["runs"], diffs):
    run_summary["max_abs_param_diff_vs_sweep_member"] = d
  n_checked = len(sweep_steps.times)
  loss_diff = float(np.abs(np.stack(sweep_steps.losses) - np.stack([np.stack(r.losses) for r in run_steps],
                                                                   axis=1)).max())
  pmax = max(float(np.abs(np.asarray(a)).max()) for a in jax.tree.leaves(sweep_params))
  load1 = _common.load_average()

  # ------------------------------------------------------------------ report
  print()
  header = (f"{'round':<7}{'':<24}{'wall [s]':>10}{'build [s]':>11}{'compile [s]':>13}{'steps [s]':>11}"
            f"{'steady [s/step]':>17}{'one compile (est.) [s]':>24}")
  print(header)
  print("-" * len(header))
  for n, r in enumerate(rounds, 1):
    sw, sq = r["sweep"], r["sequential"]
    print(f"{n:<7}{f'sweep (K={k}, {mode})':<24}{sw['wall_s']:>10.1f}{sw['build_s']:>11.1f}"
          f"{sw['compile_s']:>13.1f}{sum(sw['step_times_s']):>11.1f}{sw['steady_median_step_s']:>17.3f}")
    print(f"{n:<7}{f'sequential ({k} runs)':<24}{sq['wall_s']:>10.1f}{sq['build_s']:>11.1f}{sq['compile_s']:>13.1f}"
          f"{sq['steps_s']:>11.1f}{sq['steady_step_s_sum_over_runs']:>17.3f}{sq['one_compile_estimate_wall_s']:>24.1f}")
  print()
  print(f"paired ratios sequential / sweep (above 1: the sweep is faster): median, spread "
        f"{_common.RATIO_SPREAD}")
  for label, key in (("wall (build + compile + steps)", "sequential"),
                     ("wall, one compile (estimate)", "sequential_one_compile_estimate"), ("compile", "compile")):
    print(f"  {label:<48}{_common.format_ratio(wall['comparisons'][key], _common.is_clean(wall))}")
  if steady is not None:
    print(f"  {f'steady state ({k} single steps / 1 sweep step)':<48}"
          f"{_common.format_ratio(steady['comparisons']['sequential'], _common.is_clean(steady))}")
  print(f"  wall rounds: {_common.load_text(wall)}" + ("" if steady is None else f"; steady state: {_common.load_text(steady)}"))
  print(f"sweep member 0 vs sequential run 0 after {n_checked} steps: max |param diff| {diffs[0]:.2e} "
        f"(max |param| {pmax:.2f}); over all members {max(diffs):.2e}; max |loss diff| over all steps and "
        f"members {loss_diff:.2e}")
  print(f"data prepared outside the timings in {data_s:.1f} s; load average before {_common.format_load(load0)}, "
        f"after {_common.format_load(load1)}")
  tol = 1e-3 * max(1.0, pmax)
  ok = bool(diffs[0] <= tol)
  print(f"CHECK (sweep member 0 == sequential run 0, max |param diff| <= {tol:.0e}):", "PASS" if ok else "FAIL")

  if args.json:
    def median_ratio(m: dict[str, Any] | None, key: str) -> float | None:
      return None if m is None else m["comparisons"][key]["ratio"]["median"]

    _common.write_json(args.json, dict(
        benchmark="sweep", model=args.model, member_mode=mode,
        member_chunk=sweep.member_chunk(cfg, k) if mode == "program" else None, start_step=args.start_step,
        batch=batch, steps=args.steps, rounds=args.rounds, steady_rounds=args.steady_rounds, members=members,
        field=args.field, values=values, log_every=LOG_EVERY, device=jax.devices()[0].platform, jax=jax.__version__,
        cpu_count=os.cpu_count(), usable_cpus=_common.available_cpus(), load_average_before=list(load0),
        load_average_after=list(load1), load_limit=args.load_limit,
        load_ok=wall["load_ok"] and (steady is None or steady["load_ok"]),
        clean=_common.is_clean(wall) and (steady is None or _common.is_clean(steady)),
        ratio_definition="t_sequential / t_sweep of each adjacent (sweep, sequential) pair (above 1: the sweep is "
                         "faster)", spread=_common.RATIO_SPREAD,
        # The last round (the one checked), under the keys of the earlier one-round output.
        sweep=rounds[-1]["sweep"], sequential=rounds[-1]["sequential"], wall_rounds=rounds,
        measurements=dict(wall=wall, steady=steady),
        ratio_wall_sequential_over_sweep=median_ratio(wall, "sequential"),
        ratio_one_compile_estimate_over_sweep=median_ratio(wall, "sequential_one_compile_estimate"),
        ratio_compile_sequential_over_sweep=median_ratio(wall, "compile"),
        ratio_steady_sequential_over_sweep=median_ratio(steady, "sequential"),
        checked_steps=n_checked, member0_max_abs_param_diff=diffs[0], max_abs_param_diff_all_members=max(diffs),
        max_abs_param=pmax, max_abs_loss_diff=loss_diff, check_passed=ok))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
