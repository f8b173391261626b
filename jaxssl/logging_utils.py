"""Run logs: `metrics.jsonl` (one JSON record per logged step), TensorBoard events, progress bar.

metrics.jsonl is one file for a run or a whole sweep (sweep records carry "member"). Besides
the training records (one per logged step) it holds records with an "event" field: "monitor"
(the kNN monitor during training, `monitor/knn_<k>`) and "eval" (the evaluation at the end,
`eval/<metric>`). TensorBoard gets one run per model: `<workdir>/tensorboard` for a single
run, `<workdir>/members/<i>/tensorboard` for sweep member i (the same tags in each run).
"""
from __future__ import annotations

import inspect
import itertools
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


def tensorboard_dir(workdir: str, member: int | None = None) -> str:
  """The TensorBoard run of a single run (`member` None) or of sweep member `member`."""
  if member is None:
    return os.path.join(workdir, "tensorboard")
  return os.path.join(workdir, "members", str(int(member)), "tensorboard")


# Record fields that are not TensorBoard scalars: the step, the member (it selects the run),
# the member's hyperparameters (in its hparams summary instead) and the timestamp.
_NOT_SCALARS = ("step", "member", "wall_time")
_WRITER_IDS = itertools.count()


class MetricLogger:
  """Appends records to metrics.jsonl and scalars to TensorBoard (process 0 only).

  A record with a "member" field goes to that member's TensorBoard run
  (`tensorboard_dir(workdir, member)`), one without to the run's. On resume, records at or
  after the resume step are dropped first, so that the file describes exactly one
  trajectory; `append=True` keeps every record (a logger opened after training, for the
  evaluation's records).
  """

  def __init__(self, workdir: str, *, resume_step: int = 0, tensorboard: bool = True, append: bool = False):
    self.enabled = jax.process_index() == 0
    self.workdir = workdir
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb: dict[int | None, Any] = {}       # member (None: the run) -> SummaryWriter
    self._writer_cls = None
    if not self.enabled:
      return
    if append:
      pass
    elif resume_step and os.path.exists(self.path):
      keep = [r for r in read_metrics(workdir) if r.get("step", 0) < resume_step]
      with open(self.path + ".tmp", "w") as f:
        for r in keep:
          f.write(json.dumps(r) + "\n")
      os.replace(self.path + ".tmp", self.path)
    elif not resume_step and os.path.exists(self.path):
      os.remove(self.path)
    self._f = open(self.path, "a")
    if tensorboard:
      self._writer_cls = tensorboard_writer_class()

  def _writer(self, member: int | None) -> Any:
    """The SummaryWriter of `member`'s run (created on first use), or None without TensorBoard."""
    if self._writer_cls is None:
      return None
    if member not in self._tb:
      # tensorboardX names event files by the second and the host only: a second writer of the
      # same run within a second (the evaluation's, after a short training) would clobber the
      # first one's file without a suffix of its own.
      suffix = f".{os.getpid()}.{next(_WRITER_IDS)}"
      self._tb[member] = self._writer_cls(tensorboard_dir(self.workdir, member), filename_suffix=suffix)
    return self._tb[member]

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
    tb = self._writer(record.get("member"))
    if tb is not None:
      step = int(record["step"])
      for k, v in record.items():
        if k in _NOT_SCALARS or k.startswith("hp/"):
          continue
        if np.ndim(v) == 0 and isinstance(v, (int, float, np.number)):
          tb.add_scalar(k, float(v), step)
        elif k.startswith("spectrum") and len(v):
          eig = np.asarray(v, np.float64)
          eig = eig[np.isfinite(eig)]   # a diverged step logs NaNs: keep them out of the histogram
          if eig.size:
            tb.add_histogram(k + "_log10", np.log10(np.maximum(eig, 1e-12)), step)
      tb.flush()

  def write_hparams(self, hparams: Mapping[str, float], metrics: Mapping[str, float], *,
                    member: int | None = None, step: int | None = None) -> None:
    """An hparams summary in `member`'s TensorBoard run, for TensorBoard's HParams tab.

    `hparams` are the run's hyperparameters ({"optim.lr": 1e-3}), `metrics` its final
    values; both writers also log `metrics` as scalars (at `step`), so their keys must not be
    tags the run already has (use e.g. "hparam/loss"). Non-finite metrics are left out.
    """
    tb = self._writer(member) if self.enabled else None
    if tb is None:
      return
    finite = {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
    # Both writers put the session in a sub-run, named `name` (tensorboardX) or `run_name`
    # (PyTorch); "." keeps it in the member's own run, beside its training curves.
    accepts = inspect.signature(tb.add_hparams).parameters
    kw = {"name" if "name" in accepts else "run_name": "."}
    if step is not None and "global_step" in accepts:
      kw["global_step"] = int(step)
    tb.add_hparams({k: float(v) for k, v in hparams.items()}, finite, **kw)

  def close(self) -> None:
    if not self.enabled:
      return
    self._f.close()
    for tb in self._tb.values():
      tb.close()
    self._tb = {}


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
