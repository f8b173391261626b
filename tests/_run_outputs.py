"""Helpers for tests of a run's outputs.

* `read_run(logdir)`: the scalars and hparams sessions of one TensorBoard run, read back from
  its event files. It parses the TFRecord framing directly and decodes the `Event` protos with
  the protobuf modules of tensorboardX (or, without it, of tensorboard), so nothing is sampled
  away (TensorBoard's EventAccumulator keeps a reservoir). It skips the calling test when
  neither is installed, or when jaxssl has no TensorBoard writer (then it writes no events).
* `small_eval_data(n_train, n_test)`: a context in which the evaluation (and the kNN monitor)
  see only the first images of each split, and the evaluation skips the label-free criteria
  (LiDAR compiles an augmentation program: most of a tiny evaluation's time), so an end-of-run
  evaluation takes seconds; its kNN and linear probe are computed as always.
"""
from __future__ import annotations

import collections
import contextlib
import glob
import os
import struct

import pytest

from jaxssl import data as data_lib
from jaxssl import evaluate as eval_lib
from jaxssl import logging_utils


@contextlib.contextmanager
def small_eval_data(n_train: int, n_test: int):
  """`jaxssl.data.load_arrays` (what evaluate.py and monitor.py read whole splits with) returns the
  first `n_test` images of a test split and the first `n_train` of any other (training batches
  come from `jaxssl.data.iterator` and are unaffected); `evaluate.label_free_criteria` returns {}."""
  real = data_lib.load_arrays

  def sliced(name, split, **kw):
    x, y = real(name, split, **kw)
    n = n_test if split == data_lib.dataset_info(name).test_split else n_train
    return x[:n], y[:n]

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(data_lib, "load_arrays", sliced)
    mp.setattr(eval_lib, "label_free_criteria", lambda *a, **kw: {})
    yield


def _protos():
  if logging_utils.tensorboard_writer_class() is None:
    pytest.skip("no TensorBoard writer (tensorboardX or torch.utils.tensorboard) installed")
  try:
    from tensorboardX.proto import event_pb2, plugin_hparams_pb2
    return event_pb2, plugin_hparams_pb2
  except ImportError:
    pass
  try:
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2
    return event_pb2, plugin_data_pb2
  except ImportError:
    pytest.skip("neither tensorboardX nor tensorboard is installed to read event files")


def _records(path: str):
  """The payloads of a TFRecord file: uint64 length, uint32 CRC, data, uint32 CRC."""
  with open(path, "rb") as f:
    data = f.read()
  pos = 0
  while pos + 12 <= len(data):
    (n,) = struct.unpack("<Q", data[pos:pos + 8])
    pos += 12
    yield data[pos:pos + n]
    pos += n + 4


def read_run(logdir: str) -> tuple[dict[str, list[tuple[int, float]]], list[dict]]:
  """({tag: [(step, value), ...] in file order}, [hparams session: {"hparams": {...}}, ...])
  of every event file directly in `logdir` (not its sub-directories: other runs)."""
  event_pb2, hparams_pb2 = _protos()
  scalars: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
  sessions = []
  files = sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
  assert files, f"no event files in {logdir}"
  for path in files:
    for payload in _records(path):
      ev = event_pb2.Event.FromString(payload)
      if not ev.HasField("summary"):
        continue
      for v in ev.summary.value:
        if v.HasField("simple_value"):
          scalars[v.tag].append((int(ev.step), float(v.simple_value)))
        elif v.metadata.plugin_data.plugin_name == "hparams" and v.tag.endswith("session_start_info"):
          content = hparams_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
          hp = content.session_start_info.hparams
          sessions.append({"hparams": {k: hp[k].number_value for k in hp}})
  return dict(scalars), sessions
