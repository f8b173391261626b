"""The training loop: it takes a compiled step function and iterates.

It feeds batches, logs metrics (metrics.jsonl, TensorBoard, the progress bar),
checkpoints, turns SIGTERM / SIGINT into a checkpoint and a clean exit, and applies the
non-finite policy (`config.train.nonfinite_policy`): "stop" raises `NumericalError`
naming the last good checkpoint, "skip" is done inside the step, "rollback" restores an
earlier checkpoint with a lower learning rate. It knows nothing of sweep members or of
evaluation: the caller says how metrics become records (`records_fn`), how a
failure is described (`describe_failure`) and what a periodic monitor records
(`monitor_fn`, e.g. the kNN monitor of `jaxssl.monitor`).
"""
from __future__ import annotations

import dataclasses
import signal
import sys
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxssl import checkpoint as ckpt_lib
from jaxssl import logging_utils
from jaxssl.errors import NumericalError


@dataclasses.dataclass
class LoopResult:
  step: int
  state: Any
  last: Any                       # the last logged record(s)
  interrupted: str | None = None  # the signal's name when stopped by one
  skipped: int = 0                # steps whose update was dropped (nonfinite_policy='skip')


class StopRequested:
  """Turns SIGTERM / SIGINT into a flag: the loop finishes its step, checkpoints, and exits."""

  def __init__(self):
    self.signum = None
    self.saving = False   # while the final checkpoint is written, further signals wait for it
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not in the main thread
        pass
    return self

  def _handle(self, signum, frame):
    if self.signum is not None and not self.saving:  # a second signal: give up now
      raise KeyboardInterrupt
    if self.signum is not None:
      log("a checkpoint is being written; stopping as soon as it is complete")
      return
    self.signum = signum

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)
    return False


def log(msg: str) -> None:
  """Prints on process 0 only."""
  if jax.process_index() == 0:
    print(msg, flush=True)


def scalar_metrics(m: Mapping[str, Any]) -> dict[str, float]:
  return {k: float(v) for k, v in m.items() if np.ndim(v) == 0}


def collapse_alarm(rec: Mapping[str, Any], alarm: ml_collections.ConfigDict) -> str | None:
  """Why a diagnostics record looks collapsed, or None.

  RankMe of z [D] or r [F] below `min_rank_fraction_*` of the dimension (dimensional
  collapse, Jing et al.), or the RMS norm of z below `min_norm_z` (a collapse to zero, which
  the spectrum of normalised rows cannot see; Bao's analysis of the L2 loss).
  """
  reasons = []
  for which in ("z", "r"):
    rank, spec = rec.get(f"rankme_{which}"), rec.get(f"spectrum_{which}")
    if rank is None or spec is None:
      continue
    floor = float(alarm[f"min_rank_fraction_{which}"]) * len(spec)
    if not rank >= floor:
      reasons.append(f"RankMe of {which} {rank:.2f} < {floor:.2f} ({alarm[f'min_rank_fraction_{which}']:g} of "
                     f"{len(spec)} dims)")
  norm = rec.get("norm_z")
  if norm is not None and not norm >= float(alarm.min_norm_z):
    reasons.append(f"norm of z {norm:.3g} < {float(alarm.min_norm_z):g}")
  if not reasons:
    return None
  who = f"member {rec['member']}: " if "member" in rec else ""
  return who + "; ".join(reasons)


def run_loop(step_fn: Callable, state: Any, *, cfg: ml_collections.ConfigDict, workdir: str, start_step: int,
             make_iter: Callable[[int], Iterator], keys_for: Callable[[int], jax.Array],
             ckpt: ckpt_lib.Checkpointer, state_sharding: Any,
             records_fn: Callable[[Any, int, float, bool], list[dict[str, Any]]],
             describe_failure: Callable[[Any], str] = lambda m: "",
             monitor_fn: Callable[[Any, int], list[dict[str, Any]]] | None = None,
             monitor_every: int = 0) -> LoopResult:
  """Runs `step_fn` from `start_step` to `config.train.num_steps`.

  Args:
    make_iter: start step -> batch iterator that continues exactly from there.
    keys_for: step -> the augmentation key(s) of that step.
    records_fn: (host metrics, step, images/s, diagnostics step?) -> metrics.jsonl records.
    describe_failure: host metrics -> text naming where a non-finite value appeared.
    monitor_fn: (state, number of updates done) -> metrics.jsonl records, called whenever that
      number is a positive multiple of `monitor_every` (also at a resumed start, whose earlier
      record the resume dropped). It must only read the state; its time is left out of images/s.
  """
  total = int(cfg.train.num_steps)
  log_every = int(cfg.train.log_every)
  ckpt_every = int(cfg.train.checkpoint_every)
  policy = cfg.train.nonfinite_policy
  batch_size = int(cfg.data.batch_size)
  it = make_iter(start_step)
  logger = logging_utils.MetricLogger(workdir, resume_step=start_step)
  if policy == "rollback" and not ckpt.all_steps():
    # Rollback needs somewhere to go back to, even from the first steps.
    ckpt.save(start_step, state, _meta(state, start_step))
  skipped = 0
  alarm_cfg = cfg.train.collapse_alarm
  last: Any = {}
  t0, n0 = time.time(), start_step
  bar = logging_utils.progress(total, start_step)
  step = start_step
  rollback_attempt, failed_at = 0, -1
  shown_erank = float("nan")

  def monitor(at: int) -> None:
    nonlocal t0
    if monitor_fn is None or monitor_every <= 0 or at <= 0 or at % monitor_every:
      return
    t_start = time.time()
    for rec in monitor_fn(state, at):
      logger.write(rec)
    t0 += time.time() - t_start     # images/s counts training only

  try:
    monitor(start_step)
    with StopRequested() as stop:
      while step < total:
        batch = next(it)
        state, metrics = step_fn(state, batch, keys_for(step))
        step += 1
        # An overflowing gradient can have finite entries and an infinite norm: that is not finite.
        finite = (np.asarray(metrics["loss_finite"]) & np.asarray(metrics["grad_finite"])
                  & np.isfinite(np.asarray(metrics["grad_norm"])))
        if not finite.all():
          bad = "loss" if not np.asarray(metrics["loss_finite"]).all() else "gradient"
          if policy == "skip":
            skipped += 1
          elif policy == "stop":
            good = ckpt.latest_good_step()
            raise NumericalError(
                f"non-finite {bad} at step {step - 1}{describe_failure(metrics)} "
                f"(loss={np.asarray(metrics['loss']).tolist()}, "
                f"grad_norm={np.asarray(metrics['grad_norm']).tolist()}); training stopped. "
                + (f"The last good checkpoint (step {good}, finite parameters) is intact in {workdir}/checkpoints. "
                   if good is not None else f"No checkpoint with finite parameters exists in {workdir}. ")
                + "Lower config.optim.lr, or set config.train.nonfinite_policy='skip' or 'rollback'.")
          else:
            # Consecutive failures (no step completed beyond the failing one) go further back.
            rollback_attempt = rollback_attempt + 1 if step - 1 <= failed_at else 1
            failed_at = max(failed_at, step - 1)
            state, step = rollback(ckpt, state, state_sharding, cfg, bad, step, rollback_attempt)
            logger.truncate_from(step)   # one history: the abandoned records go
            it = make_iter(step)
            continue
        if (step - 1) % log_every == 0 or step == total:
          m = jax.device_get(metrics)
          dt = time.time() - t0
          ips = (step - n0) * batch_size / max(dt, 1e-9)
          t0, n0 = time.time(), step
          diag_step = (step - 1) % log_every == 0
          recs = records_fn(m, step - 1, ips, diag_step)
          alarms = []
          if diag_step and alarm_cfg.policy != "off":
            for rec in recs:
              why = collapse_alarm(rec, alarm_cfg)
              rec["collapse_alarm"] = float(why is not None)
              if why:
                alarms.append(why)
          for rec in recs:
            logger.write(rec)
          last = recs
          shown_erank = recs[0].get("effective_rank_z", shown_erank)   # last diagnostics step's value
          postfix = dict(loss=f"{recs[0]['loss']:.4f}", erank=f"{shown_erank:.1f}", img_s=f"{ips:.0f}")
          if alarms:
            postfix["COLLAPSE"] = alarms[0][:40]
          bar.set_postfix(**postfix)
          if alarms:
            msg = f"collapse alarm at step {step - 1}: " + " | ".join(alarms)
            print(f"\njaxssl: warning: {msg}", file=sys.stderr, flush=True)
            if alarm_cfg.policy == "stop":
              ckpt.save(step, state, _meta(state, step), force=True)
              ckpt.wait()
              raise NumericalError(
                  f"{msg}. Training stopped (config.train.collapse_alarm.policy='stop'); the state after step "
                  f"{step - 1} is checkpointed in {workdir}/checkpoints. Change the recipe (learning rate, weight "
                  "decay, EMA rate), or set config.train.collapse_alarm.policy='warn' to train on.")
        bar.update(1)
        monitor(step)
        if step % ckpt_every == 0 or step == total:
          ckpt.save(step, state, _meta(state, step))
        if stop.signum is not None:
          stop.saving = True
          ckpt.save(step, state, _meta(state, step), force=True)
          ckpt.wait()
          name = signal.Signals(stop.signum).name
          log(f"\n{name} received: stopped after step {step}; checkpoint saved in "
              f"{workdir}/checkpoints. Continue with --resume.")
          return LoopResult(step, state, last, interrupted=name, skipped=skipped)
  finally:
    bar.close()
    ckpt.wait()
    logger.close()
  if skipped:
    log(f"warning: {skipped} of {total - start_step} steps had a non-finite loss or gradient and were "
        "skipped (config.train.nonfinite_policy='skip'); lower config.optim.lr if that is many.")
  return LoopResult(step, state, last, skipped=skipped)


def _meta(state: Any, step: int) -> dict[str, Any]:
  """Checkpoint metadata: the step, the data position, and whether the parameters are finite."""
  finite = jax.tree.reduce(lambda a, x: a & jnp.all(jnp.isfinite(x)), state.params, jnp.bool_(True))
  return {"step": step, "data_position": step, "params_finite": bool(finite)}


def rollback(ckpt: ckpt_lib.Checkpointer, state: Any, state_sharding: Any, cfg: ml_collections.ConfigDict,
             bad: str, step: int, attempt: int) -> tuple[Any, int]:
  """Restores an earlier checkpoint and lowers the learning rate (policy 'rollback').

  A divergence often shows one step late: the checkpoint written just before the
  non-finite loss may already hold exploded (finite) parameters. So the `attempt`-th
  consecutive failure goes back `attempt` checkpoints, and the learning rate is
  multiplied by `rollback_lr_factor` each time. After `max_rollbacks` attempts, or when
  no older checkpoint is left, it stops with a NumericalError.
  """
  factor = float(cfg.train.rollback_lr_factor)
  max_rollbacks = int(cfg.train.max_rollbacks)
  earlier = [s for s in ckpt.all_steps() if s < step]
  if attempt > max_rollbacks or attempt > len(earlier):
    raise NumericalError(
        f"non-finite {bad} at step {step - 1} after {attempt - 1} rollback(s) "
        f"(config.train.max_rollbacks={max_rollbacks}, {len(earlier)} earlier checkpoint(s)); "
        "training stopped. Lower config.optim.lr or raise config.train.max_rollbacks.")
  target = earlier[-attempt]
  old, meta = ckpt.restore(target, state)
  hp = dict(old.hparams)
  # On the host in float64: a tiny factor must not underflow in float32 arithmetic.
  new_lr = float(np.asarray(state.hparams["lr"], np.float64)) * factor
  hp["lr"] = jnp.asarray(new_lr, jnp.float32)
  if not new_lr > 0 or not np.isfinite(np.float32(new_lr)) or np.float32(new_lr) == 0:
    raise NumericalError(f"non-finite {bad} at step {step - 1}: the rolled-back learning rate "
                         f"{new_lr:.3g} is not a positive float32; training stopped.")
  log(f"non-finite {bad} at step {step - 1}: rolled back to step {meta['step']}, "
      f"learning rate x{factor:g} -> {new_lr:.3g}")
  return jax.device_put(old.replace(hparams=hp), state_sharding), int(meta["step"])
