"""Benchmark: forward + backward of `nt_xent` and `dhel` at batch 4096, dim 128, jitted
jaxssl against a straightforward PyTorch (CPU) implementation of the same loss, side by
side in one run.

Each side computes the loss and its gradients w.r.t. both views (z1, z2 of shape
[batch, dim], float32, not normalised). Timings are the median of `--repeats` runs after
`--warmup` runs (the JAX warm-up includes compilation, reported separately). Both sides
run on the same CPU threads; the load average is printed because other processes
share the machine. The loss values and gradients of the two sides are compared.

The PyTorch side is what one would write by hand (and what the papers' code does):
  nt_xent: F.normalize, one [2M, 2M] logits matrix, the diagonal masked to -inf,
           F.cross_entropy with the other view as target (SimCLR).
  dhel:    pakoromilas/DHEL-KCL ``losses.py`` (include_augs=True): exp of the two
           same-view similarity matrices, diagonal zeroed, -log(pos / (sum_u * sum_v)).

    python benchmarks/losses.py [--batch 4096] [--dim 128] [--repeats 10] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import _common  # noqa: E402  (benchmarks/ is the script's directory)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxssl import losses  # noqa: E402


# ----------------------------------------------------------------------------- PyTorch side

def torch_losses():
  """(torch, {name: loss(z1, z2, temperature)}) of the hand-written PyTorch losses."""
  import torch
  import torch.nn.functional as F

  def dhel(z1, z2, temperature):
    m = z1.shape[0]
    u = F.normalize(z1, dim=1)
    v = F.normalize(z2, dim=1)
    eye = torch.eye(m, dtype=torch.bool)
    sim_u = torch.exp(u @ u.T / temperature).masked_fill(eye, 0)
    sim_v = torch.exp(v @ v.T / temperature).masked_fill(eye, 0)
    pos = torch.exp(torch.sum(u * v, dim=-1) / temperature)
    return -torch.log(pos / (sim_u.sum(dim=-1) * sim_v.sum(dim=-1))).mean()

  return torch, {"nt_xent": _common.torch_nt_xent, "dhel": dhel}


def time_torch(torch, fn, z1_np, z2_np, temperature, warmup, repeats):
  z1 = torch.tensor(z1_np, requires_grad=True)
  z2 = torch.tensor(z2_np, requires_grad=True)

  def step():
    z1.grad = None
    z2.grad = None
    loss = fn(z1, z2, temperature)
    loss.backward()
    return loss

  for _ in range(warmup):
    step()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - t0)
  return float(loss.detach()), z1.grad.numpy().copy(), z2.grad.numpy().copy(), times


# ----------------------------------------------------------------------------- JAX side

def time_jax(fn, z1_np, z2_np, temperature, warmup, repeats):
  step = jax.jit(jax.value_and_grad(lambda a, b: fn(a, b, temperature=temperature), argnums=(0, 1)))
  z1, z2 = jnp.asarray(z1_np), jnp.asarray(z2_np)
  t0 = time.perf_counter()
  jax.block_until_ready(step(z1, z2))
  first = time.perf_counter() - t0
  for _ in range(max(warmup - 1, 0)):
    jax.block_until_ready(step(z1, z2))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(step(z1, z2))
    times.append(time.perf_counter() - t0)
  loss, (g1, g2) = out
  return float(loss), np.asarray(g1), np.asarray(g2), times, first


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--batch", type=int, default=4096)
  ap.add_argument("--dim", type=int, default=128)
  ap.add_argument("--temperature", type=float, default=0.3)
  ap.add_argument("--repeats", type=int, default=10)
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--losses", type=str, default="nt_xent,dhel")
  ap.add_argument("--json", type=str, default=None, help="also write results here")
  args = ap.parse_args(argv)

  try:
    torch, torch_fns = torch_losses()
  except ImportError:
    print(_common.TORCH_MISSING)
    return 2

  rng = np.random.default_rng(args.seed)
  z1 = rng.standard_normal((args.batch, args.dim)).astype(np.float32)
  z2 = (z1 + 0.5 * rng.standard_normal((args.batch, args.dim))).astype(np.float32)

  load = _common.load_average()
  print(f"forward+backward (grads w.r.t. both views), batch {args.batch}, dim {args.dim}, "
        f"tau {args.temperature}, float32, CPU; median of {args.repeats} runs after "
        f"{args.warmup} warm-up runs")
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); {_common.cpu_description()}; load average "
        f"{_common.format_load(load)} (other processes share the CPUs)")
  print()
  header = (f"{'loss':<10}{'jaxssl jit [ms]':>17}{'torch [ms]':>13}{'torch/jax':>11}"
            f"{'jax loss':>14}{'torch loss':>14}{'|dloss|':>10}{'max|dgrad|':>12}")
  print(header)
  print("-" * len(header))
  results, ok = {}, True
  for name in args.losses.split(","):
    jl, jg1, jg2, jt, first = time_jax(getattr(losses, name), z1, z2, args.temperature,
                                       args.warmup, args.repeats)
    tl, tg1, tg2, tt, = time_torch(torch, torch_fns[name], z1, z2, args.temperature,
                                   args.warmup, args.repeats)
    jm, tm = statistics.median(jt), statistics.median(tt)
    dloss = abs(jl - tl)
    gscale = max(np.abs(tg1).max(), np.abs(tg2).max())
    dgrad = float(max(np.abs(jg1 - tg1).max(), np.abs(jg2 - tg2).max()) / gscale)
    same = bool(dloss <= 1e-4 * max(1.0, abs(tl)) and dgrad <= 1e-3)
    ok &= same
    print(f"{name:<10}{1e3 * jm:>17.1f}{1e3 * tm:>13.1f}{tm / jm:>11.2f}"
          f"{jl:>14.6f}{tl:>14.6f}{dloss:>10.1e}{dgrad:>12.1e}")
    results[name] = dict(jax_median_s=jm, torch_median_s=tm, ratio_torch_over_jax=tm / jm,
                         jax_first_call_s=first, jax_times_s=jt, torch_times_s=tt,
                         jax_loss=jl, torch_loss=tl, abs_loss_diff=dloss,
                         max_rel_grad_diff=dgrad, same=same)
  print()
  print("max|dgrad| is relative to the largest gradient entry. "
        "JAX first-call (compile) times: "
        + ", ".join(f"{k} {v['jax_first_call_s']:.2f} s" for k, v in results.items()))
  print("CHECK (same loss and gradients):", "PASS" if ok else "FAIL")
  if args.json:
    _common.write_json(args.json, dict(
        batch=args.batch, dim=args.dim, temperature=args.temperature, repeats=args.repeats,
        warmup=args.warmup, load_average=list(load), cpu_count=os.cpu_count(), jax=jax.__version__,
        torch=torch.__version__, torch_threads=torch.get_num_threads(), results=results, check_passed=ok))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
