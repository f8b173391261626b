"""What the benchmark scripts share: the machine description and load average they print,
synthetic uint8 batches, the straightforward PyTorch NT-Xent loss, the learning-rate
multiplier of a config as Python floats, and the JSON writer.

The scripts are run as `python benchmarks/NAME.py`, so this directory is on `sys.path`
and they import this module as `import _common`. It imports neither jax nor torch at
module level: a benchmark chooses its JAX platform (JAX_PLATFORMS) before importing jax,
and torch is optional (`TORCH_MISSING` is what a benchmark prints without it).
"""
from __future__ import annotations

import json
import os
import platform
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIMCLR_CONFIG = os.path.join(ROOT, "experiments", "configs", "simclr.py")
# train.log_every of every benchmarked step: the in-graph spectrum diagnostics run only
# when step % log_every == 0, so the timed steps (after step 0) never compute them.
LOG_EVERY = 10**9
TORCH_MISSING = "PyTorch is not installed: `pip install torch==2.13.0` (or `make bench`)."

LoadAverage = tuple[float, float, float]


def load_average() -> LoadAverage:
  """The 1, 5 and 15 minute load averages (NaN where the OS has none)."""
  return os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3


def format_load(load: LoadAverage) -> str:
  """'1.23 4.56 7.89': a load average as the benchmarks print it."""
  return " ".join(f"{v:.2f}" for v in load)


def cpu_description() -> str:
  """'N CPUs visible, <processor>': the CPU part of every benchmark's header line."""
  return f"{os.cpu_count()} CPUs visible, {platform.processor() or platform.machine()}"


def synthetic_batches(n: int, batch: int, shape: tuple[int, int, int], num_classes: int,
                      seed: int) -> list[dict[str, np.ndarray]]:
  """`n` batches {"image": uint8 [batch, H, W, C], "label": int32 [batch]} from one seed.

  The images are smooth random images (uniform noise at a quarter of the resolution,
  upsampled 4x by repetition, plus N(0, 20) pixel noise, clipped to [0, 255]), so that
  crops, blur and colour jitter see structure; labels are uniform in [0, num_classes).
  Batch i depends only on (seed, i): the first batch of any `n` is the same.
  """
  rng = np.random.default_rng(seed)
  h, w, c = shape
  out = []
  for _ in range(n):
    low = rng.uniform(0, 255, (batch, h // 4 + 1, w // 4 + 1, c))
    img = np.repeat(np.repeat(low, 4, axis=1), 4, axis=2)[:, :h, :w]
    img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    out.append({"image": img, "label": rng.integers(0, num_classes, batch).astype(np.int32)})
  return out


def torch_nt_xent(z1: Any, z2: Any, temperature: float) -> Any:
  """NT-Xent (SimCLR) over the 2M views of z1, z2 [M, D], written as by hand in PyTorch.

  F.normalize, one [2M, 2M] logits matrix with its diagonal masked to -inf, and
  F.cross_entropy with the other view of each example as the target; on z1's device.
  """
  import torch
  import torch.nn.functional as F

  m = z1.shape[0]
  z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
  logits = z @ z.T / temperature
  eye = torch.eye(2 * m, dtype=torch.bool, device=z.device)
  logits = logits.masked_fill(eye, float("-inf"))
  targets = torch.cat([torch.arange(m, 2 * m), torch.arange(0, m)]).to(z.device)
  return F.cross_entropy(logits, targets)


def unit_schedule_values(cfg: Any) -> Callable[[int], float]:
  """step -> `unit_schedule(cfg)(step)` of jaxssl (warm-up + cosine or constant) as a float.

  The library's schedule is evaluated once, vectorised, for steps 0..train.num_steps;
  it is constant after num_steps, so later steps get its last value. A PyTorch loop can
  then set its learning rate without a JAX call inside the timed step.
  """
  from jaxssl import optim

  total = int(cfg.train.num_steps)
  table = np.asarray(optim.unit_schedule(cfg)(np.arange(total + 1)), np.float64)
  table = np.broadcast_to(table, (total + 1,))   # the constant schedule returns a scalar
  return lambda step: float(table[min(max(int(step), 0), total)])


def write_json(path: str, result: dict[str, Any]) -> None:
  """Writes `result` to `path` as indented JSON, creating the parent directory."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
