"""Runs: a training run, a sweep run and the evaluation of a run directory.

This is the one module that composes the pieces (state, step, loop, sweep, evaluate,
checkpoints, plots) around a workdir; `jaxssl.cli` calls it, and so may scripts:

    from jaxssl import config, run
    cfg = config.load_config("experiments/configs/simclr.py", ["--config.train.num_steps=300"])
    summary = run.train(cfg, "workdirs/simclr")            # {"step", "last", "state", "eval"}
    summary = run.sweep(cfg, ["loss.temperature=0.1,0.5"], "workdirs/sweep")

A workdir holds config.json, checkpoints/, metrics.jsonl, tensorboard/, PNG plots and
eval.json; a sweep's also members.json, members/<i>/ (with member i's TensorBoard run in
members/<i>/tensorboard, in place of tensorboard/) and summary.{csv,md}. The evaluation at the
end of training is also appended to metrics.jsonl and TensorBoard (`log_evaluation`).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from typing import Any, Iterator, Sequence

import jax
import ml_collections

from jaxssl import checkpoint as ckpt_lib
from jaxssl import compilation_cache
from jaxssl import config as config_lib
from jaxssl import data as data_lib
from jaxssl import evaluate as eval_lib
from jaxssl import export as export_lib
from jaxssl import logging_utils
from jaxssl import loop as loop_lib
from jaxssl import monitor as monitor_lib
from jaxssl import parallel
from jaxssl import plots
from jaxssl import state as state_lib
from jaxssl import step as step_lib
from jaxssl import sweep as sweep_lib
from jaxssl.errors import ConfigError


# Fields that may differ when a run is resumed: the run's length (the cosine schedule is
# recomputed from the new num_steps), logging, checkpointing, evaluation, data paths and the
# device count. Anything else would silently not be honoured (the restored state carries the
# old hyperparameters) or would change the trajectory, so it is refused.
RESUME_MUTABLE = ("train.num_steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                  "train.collapse_alarm.",
                  "train.nonfinite_policy", "train.max_rollbacks", "train.rollback_lr_factor", "eval.",
                  "data.data_dir", "data.idx_dir", "mesh.num_devices")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(d, dict):
    return {prefix[:-1]: d}
  out: dict[str, Any] = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}{k}."))
  return out


def check_resume_config(workdir: str, cfg: ml_collections.ConfigDict) -> None:
  """ConfigError when `cfg` changes a field of the saved run that a resume cannot honour."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = _flat(json.load(f))
  new = _flat(json.loads(config_lib.to_json(cfg)))
  # Extending a run (--resume --config.train.num_steps=N) rescales the recipe's derived fields;
  # the warm-up already happened, so the run keeps its own value of those it cannot change.
  for field in config_lib.DERIVED_FROM_NUM_STEPS:
    mutable = any(field == m or (m.endswith(".") and field.startswith(m)) for m in RESUME_MUTABLE)
    if not mutable and field in old and old[field] != new.get(field):
      config_lib.set_field(cfg, field, old[field])
      loop_lib.log(f"--resume: keeping the run's config.{field}={old[field]!r} (not {new.get(field)!r}); "
                   "it cannot change mid-run.")
  new = _flat(json.loads(config_lib.to_json(cfg)))
  changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
             and not any(k == m or (m.endswith(".") and k.startswith(m)) for m in RESUME_MUTABLE)]
  if changed:
    shown = "; ".join(f"config.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
    raise ConfigError(f"--resume would change {len(changed)} field(s) of the run in {workdir} that a resumed "
                      f"run cannot honour ({shown}). Drop those overrides to resume, or start a new "
                      f"--workdir. Fields that may change on resume: {', '.join(RESUME_MUTABLE)}.")


def check_workdir(workdir: str, *, write: bool) -> None:
  """ConfigError for a workdir that is a file, a sweep directory used as a run, or not writable."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir {workdir!r} is an existing file, not a directory; pass a directory.")
  if write:
    try:
      os.makedirs(workdir, exist_ok=True)
      probe = os.path.join(workdir, f".jaxssl-write-test-{os.getpid()}")
      with open(probe, "w"):
        pass
      os.remove(probe)
    except OSError as e:
      raise ConfigError(f"--workdir {workdir!r} is not writable ({e.strerror}); pass a directory you can "
                        "write to.") from None


def encode_fn(setup: state_lib.Setup, state: state_lib.TrainState) -> eval_lib.EncodeFn:
  """float images -> {"r", "z"} of a trained state (eval mode), for `jaxssl.evaluate`."""
  def fn(x):
    out, _ = state_lib.apply(setup, state.params, state.batch_stats, x, train=False)
    return out
  return fn


def evaluate_state(cfg: ml_collections.ConfigDict, setup: state_lib.Setup, state: state_lib.TrainState,
                   workdir: str, *, baselines: bool | None = None) -> dict[str, Any]:
  """Evaluates a state (and the random-init baseline of the same network); writes eval.json."""
  random_fn = None
  if cfg.eval.baselines if baselines is None else baselines:
    _, random_state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed + 10_000))
    random_fn = encode_fn(setup, random_state)
  res = eval_lib.evaluate_encoder(cfg, encode_fn(setup, state), random_encode_fn=random_fn, baselines=baselines,
                                  view_cfgs=setup.view_cfgs)
  results = {"step": int(jax.device_get(state.step)), **res}
  try:
    with open(os.path.join(workdir, "eval.json"), "w") as f:
      json.dump(results, f, indent=2)
  except OSError as e:   # a read-only finished run: the results are still returned and printed
    print(f"jaxssl: warning: could not write {os.path.join(workdir, 'eval.json')} ({e.strerror}); "
          "the results are printed only.", file=sys.stderr, flush=True)
  return results


def eval_record(results: dict[str, Any], step: int, member: int | None = None) -> dict[str, Any]:
  """The metrics.jsonl record of an evaluation (`evaluate_state`'s results, or a sweep member's
  results.json): {"step", "event": "eval", "member"?, "eval/<metric>" of the model,
  "eval/<baseline>/<metric>" of the baselines, "eval_error"? (a failed member)}."""
  rec: dict[str, Any] = {"step": int(step), "event": "eval", **({} if member is None else {"member": member})}
  for name, metrics in results.items():
    if isinstance(metrics, dict) and name != "hparams":
      prefix = "eval/" if name == "model" else f"eval/{name}/"
      rec.update({prefix + k: float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)})
  if "eval_error" in results:
    rec["eval_error"] = str(results["eval_error"])
  return rec


def log_evaluation(workdir: str, summary: dict[str, Any], members: list[dict[str, float]] | None) -> None:
  """Appends the end-of-training evaluation to metrics.jsonl and TensorBoard ("eval/..." tags),
  one record per evaluated model, and gives each sweep member an hparams summary (its swept
  values and final metrics, `sweep.member_hparams`) for TensorBoard's HParams tab."""
  if not members and "eval" not in summary:
    return
  logger = logging_utils.MetricLogger(workdir, append=True)
  try:
    if not members:
      logger.write(eval_record(summary["eval"], summary["step"]))
      return
    last = summary["last"] if isinstance(summary["last"], list) else []
    for i, (member, res) in enumerate(zip(members, summary.get("member_results", []))):
      if "model" in res or "eval_error" in res:
        logger.write(eval_record(res, summary["step"], member=i))
      hparams, metrics = sweep_lib.member_hparams(member, last[i] if i < len(last) else {}, res)
      logger.write_hparams(hparams, metrics, member=i, step=summary["step"])
  finally:
    logger.close()


def evaluate_workdir(workdir: str, *, baselines: bool | None = None) -> dict[str, Any]:
  """`jaxssl eval`: evaluates the latest checkpoint of a run directory."""
  cfg, setup, state = export_lib.load_run(workdir)
  return evaluate_state(cfg, setup, state, workdir, baselines=baselines)


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
  """An advisory lock (flock on <workdir>/.lock) held while a run writes the workdir.

  A second writer is refused with the PID of the first. The kernel releases the lock when
  the holder exits, so a killed run leaves no stale lock and `--resume` always works.
  """
  if jax.process_index() != 0:   # one writer per run: process 0 holds the lock for all
    yield
    return
  path = os.path.join(workdir, ".lock")
  f = open(path, "a+")
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or "unknown"
    f.close()
    raise ConfigError(f"workdir {workdir!r} is in use by another jaxssl run (PID {holder}); wait for it to "
                      "finish, stop it, or use another --workdir.") from None
  try:
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    yield
  finally:
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


def train(cfg: ml_collections.ConfigDict, workdir: str, *, resume: bool = False,
          evaluate_at_end: bool | None = None, members: list[dict[str, float]] | None = None) -> dict[str, Any]:
  """Trains `cfg` in `workdir`: checkpoints, metrics.jsonl, TensorBoard, plots, evaluation.

  With `members` (a list of {config field: value}, see `jaxssl.sweep`), trains all of
  them at once in one program. Returns a summary dict: "step", "last" (the last logged
  record; a list of per-member records in a sweep), "state" (the final `TrainState`,
  stacked over members in a sweep), and "eval" / "member_results" when evaluating, or
  "interrupted" (the signal's name).
  """
  config_lib.validate_config(cfg)
  if members:
    sweep_lib.check_sweep_config(cfg)
  compilation_cache.enable()     # before this process compiles anything, or it has no effect
  if resume and not os.path.isdir(workdir):
    raise ConfigError(f"--resume given but workdir {workdir!r} does not exist; "
                      "start a new run without --resume, or point --workdir at an existing run.")
  check_workdir(workdir, write=True)
  with workdir_lock(workdir):
    return _train_locked(cfg, workdir, resume=resume, evaluate_at_end=evaluate_at_end, members=members)


def _train_locked(cfg, workdir, *, resume, evaluate_at_end, members):
  if resume:
    check_resume_config(workdir, cfg)
    sweep_lib.check_resume_members(workdir, members)
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  if members:
    mesh = sweep_lib.make_sweep_mesh(cfg)
    state = sweep_lib.stack_members(cfg, state, members)
    step_fn, state_sharding = sweep_lib.jit_member_step(setup, mesh, state)
    keys_for = sweep_lib.member_keys_fn(cfg, len(members))
    records_fn = sweep_lib.member_records_fn(members)
    describe_failure = sweep_lib.describe_member_failure
  else:
    mesh = parallel.make_mesh(cfg.mesh.num_devices)
    step_fn = step_lib.jit_train_step(setup, mesh)
    state_sharding = parallel.replicated(mesh)
    root = step_lib.augmentation_root_key(cfg)
    keys_for = lambda step: jax.random.fold_in(root, step)
    records_fn = lambda m, step, ips, diag: [sweep_lib.run_records(m, step, ips, diag)]
    describe_failure = lambda m: ""
  parallel.check_batch_divisible(cfg.data.batch_size, mesh)
  state = jax.device_put(state, state_sharding)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.train.keep_checkpoints,
                               fingerprint=ckpt_lib.fingerprint(cfg, state))
  start_step = 0
  loop_lib.log(f"train.num_steps={cfg.train.num_steps}: train.log_every={cfg.train.log_every}, "
               f"train.checkpoint_every={cfg.train.checkpoint_every}, "
               f"optim.warmup_steps={cfg.optim.warmup_steps} (scaled with num_steps unless set)")
  if resume:
    restored = ckpt.restore_latest(state)
    if restored is None:
      raise ConfigError(f"--resume: no complete checkpoint in {workdir}/checkpoints; "
                        "start without --resume to train from scratch.")
    state, meta = restored
    state = jax.device_put(state, state_sharding)
    start_step = int(meta["step"])
    loop_lib.log(f"resumed from step {start_step} ({workdir})")
  elif ckpt.all_steps():
    raise ConfigError(f"workdir {workdir!r} already has checkpoints (steps {ckpt.all_steps()}); "
                      "pass --resume to continue it, or use a new --workdir.")
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config_lib.to_json(cfg))
  if members:
    with open(os.path.join(workdir, "members.json"), "w") as f:
      json.dump(members, f, indent=2)

  monitor_fn = None
  if cfg.eval.monitor_every:
    knn_monitor = monitor_lib.KnnMonitor(cfg)     # loads its images once
    if members:
      monitor_fn = lambda st, at: monitor_lib.monitor_records(
          knn_monitor, ((i, encode_fn(setup, sweep_lib.unstack_member(st, i))) for i in range(len(members))), at)
    else:
      monitor_fn = lambda st, at: monitor_lib.monitor_records(knn_monitor, [(None, encode_fn(setup, st))], at)

  def make_iter(start: int):
    return data_lib.make_train_iterator(cfg.data.name, global_batch_size=cfg.data.batch_size, mesh=mesh,
                                        seed=cfg.seed, start_step=start, data_dir=cfg.data.data_dir,
                                        idx_dir=cfg.data.idx_dir)

  loop_ckpt = ckpt
  if members and sweep_lib.member_mode(cfg) == "sequential":
    # K single-run states stepped in turn; checkpoints keep the stacked layout.
    state, loop_ckpt = sweep_lib.split_members(state, state_sharding), sweep_lib.StackedCheckpoints(ckpt)
  try:
    result = loop_lib.run_loop(step_fn, state, cfg=cfg, workdir=workdir, start_step=start_step,
                               make_iter=make_iter, keys_for=keys_for, ckpt=loop_ckpt, state_sharding=state_sharding,
                               records_fn=records_fn, describe_failure=describe_failure,
                               monitor_fn=monitor_fn, monitor_every=int(cfg.eval.monitor_every))
  finally:
    ckpt.close()
  last = result.last if members else (result.last[0] if result.last else {})
  summary: dict[str, Any] = {"step": result.step, "last": last, "state": sweep_lib.stacked_state(result.state),
                             "skipped": result.skipped}
  if result.interrupted:
    summary["interrupted"] = result.interrupted
    return summary
  try:
    plots.plot_workdir(workdir)
  except Exception as e:  # noqa: BLE001 - plotting must never lose a finished run
    loop_lib.log(f"warning: plotting failed: {e}")
  do_eval = cfg.eval.at_end if evaluate_at_end is None else evaluate_at_end
  if members:
    def evaluate_member(mdir, mcfg, mstate):
      return evaluate_state(mcfg, setup, mstate, mdir, baselines=False)
    summary["member_results"] = sweep_lib.finish_members(cfg, summary["state"], members, workdir,
                                                         evaluate_member if do_eval else None)
  elif do_eval:
    summary["eval"] = evaluate_state(cfg, setup, result.state, workdir)
    plots.plot_eval_workdir(workdir, on_error=loop_lib.log)   # eval_vs_baselines.png
  log_evaluation(workdir, summary, members)
  return summary


def sweep(cfg: ml_collections.ConfigDict, specs_or_members: Sequence[str] | list[dict[str, float]],
          workdir: str, *, resume: bool = False, evaluate_at_end: bool = True,
          select: str | None = None) -> dict[str, Any]:
  """`jaxssl sweep`: trains the members (from --sweep specs, or given), then writes the summary.

  With `select` (a key of `sweep.SELECTION_CRITERIA`: rankme, lidar, alpha_req or
  linear_probe), also selection.json / selection.png, and summary.md ranked by it.
  """
  if select is not None and select not in sweep_lib.SELECTION_CRITERIA:
    raise ConfigError(f"--select {select!r}; use one of {', '.join(sweep_lib.SELECTION_CRITERIA)}")
  if select is not None and not evaluate_at_end:
    raise ConfigError("--select needs the members' evaluation; drop --no-eval.")
  if specs_or_members and isinstance(specs_or_members[0], str):
    members = sweep_lib.members_from_sweep(cfg, sweep_lib.parse_sweep(list(specs_or_members)))
  else:
    members = list(specs_or_members)
  summary = train(cfg, workdir, resume=resume, evaluate_at_end=evaluate_at_end, members=members)
  summary["members"] = members
  if "interrupted" not in summary:
    results = summary.get("member_results", [])
    order = None
    if select is not None and results:
      summary["selection"] = sweep_lib.write_selection(workdir, results, select)
      order = summary["selection"]["ranking"]
    summary["summary_files"] = sweep_lib.write_summary(workdir, members, results, order=order)
  return summary
