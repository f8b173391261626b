"""orbax checkpoints: atomic saves, keep-N, resume with fallback, model fingerprints.

orbax writes each checkpoint into a temporary directory and renames it only once every
file is written (and, multi-host, once every process has finished), so an interrupted
save never looks complete: `all_steps()` lists finalised checkpoints only. On top of
that, `restore_latest` tries checkpoints newest first and falls back to the previous one
(with a warning) when a checkpoint cannot be read; it never silently restarts at step 0.

Each checkpoint stores the train state and a JSON metadata item: the step, the data
position, and a *fingerprint* of the model (parameter paths and shapes), so that a
checkpoint of a different model is refused with a clear message before any restore.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxssl.errors import CheckpointError


def fingerprint(cfg: Any, state: Any) -> str:
  """A hash of the state's tree structure, leaf shapes and dtypes (the model's identity)."""
  items = [(jax.tree_util.keystr(p), tuple(np.shape(x)), str(getattr(x, "dtype", type(x).__name__)))
           for p, x in jax.tree_util.tree_leaves_with_path(state)]
  return hashlib.sha256(repr(items).encode()).hexdigest()[:16]


def _is_disk_full(e: BaseException) -> bool:
  """True when `e`, or an exception it was raised from, is "no space left on device"."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return True
    text = str(e)
    if "No space left on device" in text or ("RESOURCE_EXHAUSTED" in text and "space" in text.lower()):
      return True
    e = e.__cause__ or e.__context__
  return False


def describe(state: Any) -> dict[str, list[int]]:
  return {jax.tree_util.keystr(p): list(np.shape(x)) for p, x in jax.tree_util.tree_leaves_with_path(state)}


class Checkpointer:
  """Thin wrapper over `orbax.checkpoint.CheckpointManager` with jaxssl's guarantees."""

  def __init__(self, directory: str, *, keep: int = 3, fingerprint: str | None = None):
    self.directory = os.path.abspath(directory)
    self.fingerprint = fingerprint
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    self._mngr = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

  def all_steps(self) -> list[int]:
    self._mngr.reload()
    return sorted(self._mngr.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> None:
    if step in self.all_steps():
      return
    meta = {**meta, "fingerprint": self.fingerprint, "shapes": describe(state)}
    try:
      self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), force=True)
      self._mngr.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - orbax wraps OSErrors in several exception types
      if not _is_disk_full(e):
        raise
      self._remove_partial()
      need = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(state)) / 2**20
      free = shutil.disk_usage(self.directory).free / 2**20
      latest = self.latest_step()
      raise CheckpointError(
          f"disk full while writing checkpoint {step} to {self.directory}: {free:.0f} MiB free, a checkpoint "
          f"needs about {need:.0f} MiB. Free space on that disk (or lower config.train.keep_checkpoints), then "
          f"run again with --resume: it continues from "
          + (f"step {latest}." if latest is not None else "the start (no checkpoint was completed).")) from None

  def latest_good_step(self) -> int | None:
    """The newest checkpoint whose parameters were all finite when it was written."""
    for step in reversed(self.all_steps()):
      try:
        if self.read_meta(step).get("params_finite", True):
          return step
      except Exception:  # noqa: BLE001 - an unreadable checkpoint is not good
        continue
    return None

  def _remove_partial(self) -> None:
    """Deletes orbax's temporary directories of an interrupted save (never a finished checkpoint)."""
    if jax.process_index() != 0 or not os.path.isdir(self.directory):
      return
    for name in os.listdir(self.directory):
      if ".orbax-checkpoint-tmp" in name:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def read_meta(self, step: int) -> dict[str, Any]:
    return self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
    """Restores checkpoint `step` into the structure of `target` (a state or its abstract shape)."""
    meta = self.read_meta(step)
    if self.fingerprint and meta.get("fingerprint") not in (None, self.fingerprint):
      ours, theirs = describe(target), meta.get("shapes", {})
      diff = [k for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)][:5]
      raise CheckpointError(
          f"checkpoint {self.directory}/{step} belongs to a different model "
          f"(fingerprint {meta.get('fingerprint')} != {self.fingerprint}). First differences "
          f"(path: checkpoint shape vs model shape): "
          + "; ".join(f"{k}: {theirs.get(k)} vs {ours.get(k)}" for k in diff)
          + ". Use the config the checkpoint was trained with, or a new --workdir.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = self._mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    return restored["state"], meta

  def restore_latest(self, target: Any) -> tuple[Any, dict[str, Any]] | None:
    """Newest readable checkpoint; falls back to older ones with a warning. None if none exist."""
    steps = self.all_steps()
    errors = []
    for step in reversed(steps):
      try:
        return self.restore(step, target)
      except CheckpointError:
        raise
      except Exception as e:  # corrupt or partial files
        errors.append(f"step {step}: {type(e).__name__}: {e}")
        moved = self._quarantine(step)
        warnings.warn(f"checkpoint {self.directory}/{step} is unreadable ({type(e).__name__}: {e}); "
                      f"moved it to {moved} and falling back to the previous checkpoint.",
                      RuntimeWarning, stacklevel=2)
    if steps:
      raise CheckpointError(f"no readable checkpoint in {self.directory}; tried steps {steps}:\n  "
                            + "\n  ".join(errors))
    return None

  def _quarantine(self, step: int) -> str:
    """Renames an unreadable checkpoint out of the way (kept for inspection), so that the
    resumed run can write a good checkpoint at that step again."""
    src = os.path.join(self.directory, str(step))
    dst = f"{src}.corrupt"
    n = 1
    while os.path.exists(dst):
      dst, n = f"{src}.corrupt{n}", n + 1
    if jax.process_index() == 0 and os.path.exists(src):
      os.rename(src, dst)
    self._mngr.reload()
    return dst

  def close(self) -> None:
    self._mngr.close()
