"""Run logs: `metrics.jsonl` (one JSON record per logged step), TensorBoard events, progress bar."""
from __future__ import annotations

import json
import os
import time
import sys
import warnings
from typing import Any, Mapping

import jax
import numpy as np


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line:
        try:
          out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill -9: ignore it
          pass
  return out


_WARNED_NO_TENSORBOARD = False


def tensorboard_writer_class() -> Any:
  """A TensorBoard `SummaryWriter` class: tensorboardX's, else PyTorch's (both write event
  files with `add_scalar` / `add_histogram`), else None after one warning (metrics.jsonl only).

  Both are optional dependencies (`pip install 'jaxssl[tensorboard]'` or torch), imported here
  lazily so that jaxssl runs where neither is installed.
  """
  global _WARNED_NO_TENSORBOARD
  try:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  except ImportError:
    pass
  try:
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter
  except ImportError:
    pass
  if not _WARNED_NO_TENSORBOARD:
    _WARNED_NO_TENSORBOARD = True
    warnings.warn("neither tensorboardX nor torch.utils.tensorboard is installed: metrics go to "
                  "metrics.jsonl only (pip install tensorboardX for TensorBoard event files).", stacklevel=2)
  return None


class MetricLogger:
  """Appends records to metrics.jsonl and scalars to TensorBoard (process 0 only).

  On resume, records at or after the resume step are dropped first, so that the file
  describes exactly one trajectory.
  """

  def __init__(self, workdir: str, *, resume_step: int = 0, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not self.enabled:
      return
    if resume_step and os.path.exists(self.path):
      keep = [r for r in read_metrics(workdir) if r.get("step", 0) < resume_step]
      with open(self.path + ".tmp", "w") as f:
        for r in keep:
          f.write(json.dumps(r) + "\n")
      os.replace(self.path + ".tmp", self.path)
    elif not resume_step and os.path.exists(self.path):
      os.remove(self.path)
    self._f = open(self.path, "a")
    if tensorboard:
      writer_cls = tensorboard_writer_class()
      self._tb = writer_cls(os.path.join(workdir, "tensorboard")) if writer_cls is not None else None

  def truncate_from(self, step: int) -> None:
    """Drops the records of steps >= `step` (after a rollback, so the file is one history)."""
    if not self.enabled:
      return
    self._f.close()
    keep = [r for r in read_metrics(os.path.dirname(self.path)) if r.get("step", 0) < step]
    with open(self.path + ".tmp", "w") as f:
      for r in keep:
        f.write(json.dumps(r) + "\n")
    os.replace(self.path + ".tmp", self.path)
    self._f = open(self.path, "a")

  def write(self, record: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    # wall_time: seconds since the epoch when the record was written (JSONL only).
    self._f.write(json.dumps({**_jsonable(record), "wall_time": round(time.time(), 3)}) + "\n")
    self._f.flush()
    if self._tb is not None:
      step = int(record["step"])
      for k, v in record.items():
        if k != "step" and np.ndim(v) == 0 and isinstance(v, (int, float, np.number)):
          self._tb.add_scalar(k, float(v), step)
        elif k.startswith("spectrum") and len(v):
          eig = np.asarray(v, np.float64)
          eig = eig[np.isfinite(eig)]   # a diverged step logs NaNs: keep them out of the histogram
          if eig.size:
            self._tb.add_histogram(k + "_log10", np.log10(np.maximum(eig, 1e-12)), step)
      self._tb.flush()

  def close(self) -> None:
    if not self.enabled:
      return
    self._f.close()
    if self._tb is not None:
      self._tb.close()


def _jsonable(x):
  if isinstance(x, Mapping):
    return {k: _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.generic,)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return x


class _NoBar:
  def update(self, n=1): pass
  def set_postfix(self, **kw): pass
  def close(self): pass


def progress(total: int, initial: int = 0):
  """A tqdm bar on process 0 (silent under JAXSSL_QUIET=1 or on other processes)."""
  if jax.process_index() != 0 or os.environ.get("JAXSSL_QUIET") == "1":
    return _NoBar()
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=initial, dynamic_ncols=True, file=sys.stderr, desc="train")
