"""The measurements of the GPU benchmark, one function per stage (see README.md).

Each stage runs in its own process, started by run.py with a time limit and a deadline:

    python benchmarks/gpu/run.py --stage NAME --stage-file F --deadline T [--dry-run]

A stage is a sequence of parts (`Recorder.part`); each part's fields are written to F as
soon as it has them, so a stage killed at its limit still reports what it measured. A
part that raises records "error: ..." as its status and the stage goes on with the next
part; a part that would not fit in the time left records "skipped: ...".

Timing: a "step time" is the median over `rounds` rounds of the mean time per step of
`steps` back-to-back steps, synchronised once at the end of each round (jax:
block_until_ready; torch: cuda.synchronize), after the first call (compile) and `warmup`
steps. Every jaxssl step takes a fresh augmentation key (fold_in(root, step)).

Sizes: `SIZES` (on the GPU; in a dry run: tiny models, a few steps).
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import threading
import time
import traceback
from typing import Any, Callable

import _common   # benchmarks/_common.py (benchmarks/ is on sys.path)
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl import config as config_lib
from jaxssl import data as data_lib
from jaxssl import parallel
from jaxssl import state as state_lib
from jaxssl import step as step_lib

PAPER_PEAK_TFLOPS = 989.0       # H200 SXM dense bf16, datasheet
REFERENCE_PEAK_TFLOPS = 790.0   # 8192^3 bf16 matmul on random data, seen on this kind before (KINDS.md)
TEMPERATURES = [0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0]

# name: (on the GPU, in a dry run). `sweep`: (tag, model, batch, steps per round, rounds).
SIZES: dict[str, tuple[Any, Any]] = {
    "matmul_n": (8192, 256), "matmul_dtype": ("bfloat16", "bfloat16"), "matmul_iters": (20, 3),
    "matmul_rounds": (3, 2),
    "train_model": ("resnet18", "convnet_small"), "train_batch": (512, 16), "train_warmup": (5, 1),
    "train_steps": (20, 2), "train_rounds": (3, 2), "torch_compile_backend": ("inductor", "aot_eager"),
    "members": (8, 8),
    "sweep": ((("small", "convnet_small", 256, 10, 3), ("resnet18", "resnet18", 128, 5, 3)),
              (("small", "convnet_small", 16, 2, 2), ("resnet18", "resnet18", 8, 1, 2))),
    "spectrum_batch": (256, 16), "spectrum_steps": (100, 100), "spectrum_rounds": (3, 1), "spectrum_warmup": (10, 1),
    "sharded_rows": (4096, 64), "sharded_dim_z": (128, 16), "sharded_dim_r": (512, 32),
    "real_batch": (None, 64), "calibration_s": (8.0, 2.0), "min_steps": (100, 5),
    "eval": ({}, dict(probe_epochs=2, lidar_images=64, lidar_views=2, baselines=False)),
}
# Seconds a part needs at the least to be worth starting: (GPU, dry run).
NEED = {"jax_step": (45, 12), "torch_eager": (15, 4), "torch_compile": (60, 6), "sweep_model": (45, 15),
        "spectrum_program": (12, 6), "real_eval": (60, 15)}


# ----------------------------------------------------------------------------- recording

def _plain(v: Any) -> Any:
  """JSON-ready: numpy scalars and arrays to Python, NaN / inf to None, tuples to lists."""
  if isinstance(v, (np.ndarray, jax.Array)):
    v = np.asarray(v).tolist()
  if isinstance(v, (list, tuple)):
    return [_plain(x) for x in v]
  if isinstance(v, np.generic):
    v = v.item()
  if isinstance(v, float) and not np.isfinite(v):
    return None
  return v


class Recorder:
  """A stage's fields (dotted keys below the stage), rewritten to the stage file on every change."""

  def __init__(self, path: str, deadline: float, dry_run: bool):
    self.path, self.deadline, self.dry_run = path, deadline, dry_run
    self.fields: dict[str, Any] = {}
    self.errors: list[str] = []
    self.partial: list[str] = []   # parts skipped for lack of time

  def set(self, prefix: str = "", **fields: Any) -> None:
    """Sets `prefix + name` for each field and writes the file."""
    for k, v in fields.items():
      self.fields[prefix + k] = _plain(v)
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(self.fields, f, indent=1)
    os.replace(tmp, self.path)

  def left(self) -> float:
    return self.deadline - time.time()

  def need(self, what: str) -> float:
    return NEED[what][1 if self.dry_run else 0]

  def part(self, prefix: str, need_s: float, fn: Callable[[Callable[..., None]], Any],
           skip: str | None = None) -> Any:
    """Runs `fn(put)` (put(**fields) sets fields under `prefix`) and records its status:
    "ok", "error: ...", or "skipped: ..." (when `skip` is given or under `need_s` seconds
    are left). Returns fn's result, or None."""
    put = lambda **kw: self.set(prefix, **kw)   # noqa: E731
    if skip is None and self.left() < need_s:
      skip = f"stage time limit ({self.left():.0f} s left, needs ~{need_s:.0f} s)"
      self.partial.append(prefix.rstrip("."))
    if skip is not None:
      put(status=f"skipped: {skip}")
      print(f"{prefix}: skipped: {skip}", flush=True)
      return None
    try:
      out = fn(put)
    except (Exception, KeyboardInterrupt) as e:   # noqa: BLE001 - a failed part must not stop the stage
      traceback.print_exc()
      msg = f"{type(e).__name__}: {e}"[:600]
      self.errors.append(f"{prefix.rstrip('.') or 'stage'}: {msg}")
      put(status=f"error: {msg}")
      return None
    put(status="ok")
    return out


def run_stage(args: Any) -> int:
  """Entry point of a stage process (run.py --stage NAME)."""
  rec = Recorder(args.stage_file, args.deadline or time.time() + 3600, args.dry_run)
  sizes = {k: v[1 if args.dry_run else 0] for k, v in SIZES.items()}
  fn = STAGE_FUNCTIONS[args.stage]
  print(f"stage {args.stage}: {jax.devices()[0].platform} ({jax.device_count()} device(s)), "
        f"{rec.left():.0f} s", flush=True)
  rec.part("", 0, lambda put: fn(rec, sizes, args))
  notes = rec.errors + [f"{p}: skipped for lack of time" for p in rec.partial]
  rec.set(status="error" if rec.errors else "partial" if rec.partial else "ok", error="; ".join(notes) or None)
  return 0


# ----------------------------------------------------------------------------- timing

def measure(step: Callable[[], Any], sync: Callable[[], Any], *, warmup: int, steps: int,
            rounds: int) -> dict[str, Any]:
  """{"first_step_s", "step_s", "round_step_s"}: see the module docstring."""
  t0 = time.perf_counter()
  step()
  sync()
  first = time.perf_counter() - t0
  for _ in range(warmup):
    step()
  sync()
  per_round = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    for _ in range(steps):
      step()
    sync()
    per_round.append((time.perf_counter() - t0) / steps)
  return {"first_step_s": first, "step_s": statistics.median(per_round), "round_step_s": per_round}


class JaxSteps:
  """Calls a compiled jaxssl step on one batch, keeping the state; key i for the i-th call."""

  def __init__(self, compiled: Any, state: Any, batch: Any, keys: list[Any]):
    self.compiled, self.state, self.batch, self.keys = compiled, state, batch, keys
    self.metrics: Any = None
    self.calls = 0

  def __call__(self) -> None:
    key = self.keys[self.calls % len(self.keys)]
    self.state, self.metrics = self.compiled(self.state, self.batch, key)
    self.calls += 1

  def sync(self) -> None:
    jax.block_until_ready((self.state, self.metrics))


def compile_timed(jitted: Any, *args: Any) -> tuple[Any, float, Any]:
  """(compiled, seconds to compile, lowered) of `jitted` at `args`."""
  lowered = jitted.lower(*args)
  t0 = time.perf_counter()
  compiled = lowered.compile()
  return compiled, time.perf_counter() - t0, lowered


def cost_flops(obj: Any) -> float | None:
  """The "flops" of `.cost_analysis()` of a Lowered / Compiled (a dict, or a list of them);
  None where the backend gives none."""
  try:
    ca = obj.cost_analysis()
  except Exception as e:   # noqa: BLE001 - a missing FLOP count must not lose the timing
    print(f"cost_analysis: {type(e).__name__}: {e}", flush=True)
    return None
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else None
  return float(ca["flops"]) if ca and "flops" in ca else None


def step_keys(cfg: Any, steps: range, stream: int | None = None) -> list[jax.Array]:
  """The augmentation keys of `steps`, on the device (as jaxssl.run makes them)."""
  root = step_lib.augmentation_root_key(cfg, stream)
  keys = [jax.random.fold_in(root, s) for s in steps]
  return jax.block_until_ready(keys)


def device_batch(cfg: Any, setup: Any, mesh: Any, seed: int = 0) -> tuple[dict[str, np.ndarray], Any]:
  """One synthetic uint8 batch of the config's shape: (host copy, on the mesh)."""
  host = _common.synthetic_batches(1, int(cfg.data.batch_size), setup.image_shape, setup.num_classes, seed)[0]
  return host, jax.device_put(host, parallel.batch_sharding(mesh))


def max_abs_diff(a: Any, b: Any) -> float:
  """max |a - b| over all leaves of two pytrees of the same structure."""
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ----------------------------------------------------------------------------- configs

def tiny_resnet(cfg: Any) -> Any:
  """ResNet-18 (CIFAR stem) at 1/16 width and a 16-8 projector: the dry run's ResNet."""
  with cfg.unlocked():
    cfg.model.encoder_kwargs["width"] = 1 / 16
    cfg.model.projector = dict(cfg.model.projector, hidden_dim=16, out_dim=8)
  return cfg


def shrink(cfg: Any, dry_run: bool) -> Any:
  """On one device; in a dry run also the tiny version of the network
  (`config.shrink_to_tiny_model` for the ConvNet, `tiny_resnet` for ResNets) and the
  augmentation preset "none", which halves the compile time on the CPU."""
  if dry_run:
    if cfg.model.encoder == "convnet_small":
      config_lib.shrink_to_tiny_model(cfg)
    else:
      tiny_resnet(cfg)
    cfg.data.augment = "none"
  cfg.mesh.num_devices = 1
  return cfg


def set_compute_dtype(cfg: Any, dtype: str) -> Any:
  """`config.model.dtype`: the network computes in `dtype`; parameters, BatchNorm statistics
  and the loss stay float32."""
  config_lib.set_field(cfg, "model.dtype", dtype)
  return cfg


def load_torch() -> tuple[Any, str | None]:
  """((torch, nn, F, defs) from _torch_reference, None) or (None, why not)."""
  try:
    import _torch_reference
    return _torch_reference.torch_side(), None
  except ImportError as e:
    return None, f"PyTorch is not installed ({e})"


# ----------------------------------------------------------------------------- 1. devices

def stage_devices(rec: Recorder, sz: dict[str, Any], args: Any) -> None:
  """jax.devices(), versions, and the bf16 matmul rate of this device."""
  import jaxlib
  devs = jax.devices()
  print("jax.devices():", devs, flush=True)
  rec.set(platform=devs[0].platform, device_kind=devs[0].device_kind, device_count=len(devs),
          devices=[str(d) for d in devs], jax_version=jax.__version__, jaxlib_version=jaxlib.__version__,
          python=sys.version.split()[0], cpu_count=os.cpu_count(), load_average=list(_common.load_average()))
  tl, why = load_torch()
  if tl is not None:
    torch = tl[0]
    rec.set(torch_version=torch.__version__,
            torch_cuda_device=torch.cuda.get_device_name() if torch.cuda.is_available() else None)
  else:
    print(why, flush=True)

  def matmul(put):
    n, dt, iters = sz["matmul_n"], jnp.dtype(sz["matmul_dtype"]), sz["matmul_iters"]
    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a, b = jax.random.normal(ka, (n, n), dt), jax.random.normal(kb, (n, n), dt)
    f = jax.jit(lambda x, y: x @ y)
    out = [f(a, b)]
    m = measure(lambda: out.__setitem__(0, f(a, b)), lambda: jax.block_until_ready(out[0]),
                warmup=2, steps=iters, rounds=sz["matmul_rounds"])
    tflops = 2.0 * n ** 3 / m["step_s"] / 1e12
    print(f"matmul {dt.name} {n}^3: {tflops:.3g} TFLOP/s", flush=True)
    put(n=n, dtype=dt.name, iters=iters, seconds=m["step_s"], tflops_per_s=tflops,
        paper_peak_tflops_per_s=PAPER_PEAK_TFLOPS, reference_peak_tflops_per_s=REFERENCE_PEAK_TFLOPS)

  rec.part("matmul.", 0, matmul)


# ----------------------------------------------------------------------------- 2. train step

def train_step_config(sz: dict[str, Any], dry_run: bool, dtype: str) -> Any:
  """benchmarks/train_step.py's config (resnet18: simclr.py:cifar10 with AdamW), shrunk
  in a dry run, at the compute dtype."""
  import train_step as bench_train_step   # benchmarks/train_step.py
  cfg = bench_train_step.make_config(sz["train_model"], sz["train_batch"], "float32")
  return set_compute_dtype(shrink(cfg, dry_run), dtype)


def stage_train_step(rec: Recorder, sz: dict[str, Any], args: Any) -> None:
  """jaxssl vs PyTorch eager vs torch.compile, bf16 then f32; img/s, ratios and MFU."""
  tl, no_torch = load_torch()
  gpu = jax.default_backend() == "gpu"
  torch_device = None
  if tl is not None:
    torch = tl[0]
    torch_device = torch.device("cuda" if gpu else "cpu")
    # The CPUs this process may use (taskset / container CPU set), not os.cpu_count(): more
    # torch threads than usable CPUs stall under load (issue 21).
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if gpu and not torch.cuda.is_available():
      no_torch = f"PyTorch {torch.__version__} sees no CUDA device"
    torch.backends.cudnn.benchmark = True   # autotuned convolutions for the fixed shapes, as XLA autotunes
  cfg0 = train_step_config(sz, args.dry_run, "float32")
  peak = _measured_peak(args)
  rec.set(model=cfg0.model.encoder, batch=int(cfg0.data.batch_size), augment=cfg0.data.augment,
          image_shape=list(data_lib.dataset_info(cfg0.data.name).image_shape),
          optimizer=cfg0.optim.name, warmup_steps=sz["train_warmup"], timed_steps=sz["train_steps"],
          rounds=sz["train_rounds"], torch_compile_backend=sz["torch_compile_backend"],
          torch_device=str(torch_device) if torch_device is not None else None,
          bf16_method="config.model.dtype = bfloat16 (the models' compute "
                      "dtype; parameters, BatchNorm statistics and the loss float32); PyTorch: "
                      "torch.autocast(bfloat16)",
          f32_precision=("float32 at JAX's default precision (XLA runs float32 dots and convolutions on "
                         "TF32 tensor cores on Ampere and later); PyTorch with allow_tf32=True (matmul and "
                         "cuDNN) to match" if gpu else "float32 (CPU)"))
  timing = dict(warmup=sz["train_warmup"], steps=sz["train_steps"], rounds=sz["train_rounds"])
  for dtype, tag in (("bfloat16", "bf16"), ("float32", "f32")):
    cfg = train_step_config(sz, args.dry_run, dtype)
    if dtype == "float32" and gpu and tl is not None:
      tl[0].backends.cuda.matmul.allow_tf32 = True   # as XLA's default precision on the GPU
      tl[0].backends.cudnn.allow_tf32 = True
    p = f"{tag}."
    ctx: dict[str, Any] = {}
    rec.part(p + "jax.", rec.need("jax_step"), lambda put: _jax_train_step(put, cfg, timing, peak, ctx))
    if "setup" not in ctx:    # without the jaxssl step there is nothing to compare with
      for side in ("torch_eager", "torch_compile"):
        rec.part(f"{p}{side}.", 0, None, skip="the jaxssl step did not run")
      continue
    for side, compiled in (("torch_eager", False), ("torch_compile", True)):
      out = rec.part(f"{p}{side}.", rec.need(side),
                     lambda put: _torch_train_step(put, tl, cfg, ctx, torch_device, dtype, compiled, sz, timing),
                     skip=no_torch)
      if out is not None:
        rec.set(p, **{f"ratio_vs_{side}": out / ctx["step_s"]})
    ctx.clear()


def _measured_peak(args: Any) -> float | None:
  """The matmul rate the devices stage measured in this run (its stage file is beside ours)."""
  path = os.path.join(os.path.dirname(os.path.abspath(args.stage_file)), "devices.json")
  try:
    with open(path) as f:
      return json.load(f).get("matmul.tflops_per_s")
  except (OSError, ValueError):
    return None


def _jax_train_step(put, cfg, timing, peak, ctx) -> None:
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  mesh = parallel.make_mesh(1)
  host, batch = device_batch(cfg, setup, mesh)
  n_keys = 1 + timing["warmup"] + timing["steps"] * timing["rounds"]
  keys = step_keys(cfg, range(n_keys))
  jitted = step_lib.jit_train_step(setup, mesh)
  compiled, compile_s, lowered = compile_timed(jitted, state, batch, keys[0])
  flops = cost_flops(compiled)
  put(compile_s=compile_s, flops_per_step=flops, flops_per_step_lowered=cost_flops(lowered))
  runner = JaxSteps(compiled, state, batch, keys)
  m = measure(runner, runner.sync, **timing)
  b = int(cfg.data.batch_size)
  tflops = flops / m["step_s"] / 1e12 if flops else None
  put(first_step_s=m["first_step_s"], step_s=m["step_s"], images_per_s=b / m["step_s"], tflops_per_s=tflops,
      mfu_vs_paper_peak=tflops / PAPER_PEAK_TFLOPS if tflops else None,
      mfu_vs_measured_peak=tflops / peak if tflops and peak else None,
      last_loss=float(runner.metrics["loss"]))
  print(f"jaxssl {cfg.model.encoder_kwargs.get('dtype', 'float32')}: {1e3 * m['step_s']:.2f} ms/step, "
        f"{b / m['step_s']:.0f} img/s, {tflops or float('nan'):.1f} TFLOP/s", flush=True)
  ctx.update(setup=setup, host=host, step_s=m["step_s"])


def _torch_train_step(put, tl, cfg, ctx, device, dtype, compiled, sz, timing) -> float:
  """Times `_torch_reference.TorchTrainer` (eager, or its network under torch.compile);
  returns the step time."""
  import _torch_reference
  torch, nn, F, defs = tl
  setup, host = ctx["setup"], ctx["host"]
  trainer = _torch_reference.TorchTrainer(torch, nn, F, defs, cfg, setup.view_cfgs, setup.image_shape[-1],
                                          setup.num_classes, device, dtype == "bfloat16", int(cfg.seed))
  if compiled:
    trainer.net = torch.compile(trainer.net, backend=sz["torch_compile_backend"])
  images = torch.from_numpy(host["image"]).to(device)
  labels = torch.from_numpy(host["label"]).long().to(device)
  last: list[Any] = [None]
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  m = measure(lambda: last.__setitem__(0, trainer.step(images, labels)), sync, **timing)
  b = int(cfg.data.batch_size)
  first = {"compile_s" if compiled else "first_step_s": m["first_step_s"]}   # torch.compile compiles at the first call
  put(step_s=m["step_s"], images_per_s=b / m["step_s"], last_loss=float(last[0].detach()), **first)
  print(f"torch {'compile' if compiled else 'eager'} {dtype}: {1e3 * m['step_s']:.2f} ms/step, "
        f"{b / m['step_s']:.0f} img/s", flush=True)
  return m["step_s"]


# ----------------------------------------------------------------------------- 3. sweep

def stage_sweep(rec: Recorder, sz: dict[str, Any], args: Any) -> None:
  """K vmapped members (member_chunk = K) vs K sequential runs, small ConvNet and ResNet-18.

  The sequential side builds each run anew but compiles the single-run step once and
  reuses it: the K programs are the same (the swept temperature is a traced
  hyperparameter, the augmentation stream only changes the keys). As separate jobs they
  would each compile it: `sequential_wall_s` counts that compile K times,
  `sequential_wall_one_compile_s` once.
  """
  k = sz["members"]
  values = (TEMPERATURES * k)[:k]
  rec.set(members=k, field="loss.temperature", values=values, member_chunk=k, start_step=1)
  for tag, model, batch, steps, rounds in sz["sweep"]:
    rec.part(f"{tag}.", rec.need("sweep_model"),
             lambda put: _sweep_model(put, model, batch, steps, rounds, values, args.dry_run))


def _sweep_model(put, model, batch, steps, rounds, values, dry_run) -> None:
  import sweep as bench_sweep   # benchmarks/sweep.py
  from jaxssl import sweep as sweep_lib
  k = len(values)
  cfg = shrink(bench_sweep.make_config(model, batch), dry_run)
  cfg.mesh.member_chunk = k
  members = sweep_lib.members_from_sweep(cfg, [("loss.temperature", values)])
  timing = dict(warmup=0, steps=steps, rounds=rounds)
  n_steps = 1 + steps * rounds
  step_ids = range(1, 1 + n_steps)     # from step 1: the diagnostics (step % log_every == 0) never run
  put(model=cfg.model.encoder, batch=batch, steps=n_steps)
  # Untimed: the first build's one-time costs would be charged to whichever side runs first.
  jax.block_until_ready(state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))[1])

  t0 = time.perf_counter()
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  mesh = sweep_lib.make_member_mesh(cfg)
  state = sweep_lib.stack_members(cfg, state, members).replace(step=jnp.asarray(1, jnp.int32))
  jitted, state_sh = sweep_lib.jit_member_step(setup, mesh, state)
  state = jax.device_put(state, state_sh)
  build_s = time.perf_counter() - t0
  host, dbatch = device_batch(cfg, setup, mesh)
  per_member = [step_keys(cfg, step_ids, i) for i in range(k)]
  keys = [jnp.stack([per_member[i][s] for i in range(k)]) for s in range(n_steps)]
  compiled, compile_s, _ = compile_timed(jitted, state, dbatch, keys[0])
  runner = JaxSteps(compiled, state, dbatch, keys)
  m = measure(runner, runner.sync, **timing)
  sweep_steps_s = m["first_step_s"] + m["step_s"] * steps * rounds
  sweep_params, sweep_loss = jax.device_get((runner.state.params, runner.metrics["loss"]))
  del runner, state
  sweep_wall = build_s + compile_s + sweep_steps_s
  put(sweep_build_s=build_s, sweep_compile_s=compile_s, sweep_first_step_s=m["first_step_s"],
      sweep_step_s=m["step_s"], sweep_wall_s=sweep_wall)
  print(f"sweep {model}: build {build_s:.1f} s, compile {compile_s:.1f} s, {1e3 * m['step_s']:.1f} ms/step", flush=True)

  runs, diffs, loss_diffs, run_compiled, run_compile_s = [], [], [], None, None
  for i, member in enumerate(members):
    t0 = time.perf_counter()
    mcfg = sweep_lib.member_config(cfg, member, i)
    msetup, mstate = state_lib.build(mcfg, jax.random.PRNGKey(mcfg.seed))
    mmesh = parallel.make_mesh(1)
    mstate = jax.device_put(mstate.replace(step=jnp.asarray(1, jnp.int32)), parallel.replicated(mmesh))
    jitted_i = step_lib.jit_train_step(msetup, mmesh)
    mbuild_s = time.perf_counter() - t0
    if run_compiled is None:
      run_compiled, run_compile_s, _ = compile_timed(jitted_i, mstate, jax.device_put(host, parallel.batch_sharding(mmesh)),
                                                     per_member[i][0])
    runner = JaxSteps(run_compiled, mstate, jax.device_put(host, parallel.batch_sharding(mmesh)), per_member[i])
    mm = measure(runner, runner.sync, **timing)
    params, loss = jax.device_get((runner.state.params, runner.metrics["loss"]))
    del runner, mstate
    diffs.append(max_abs_diff(params, jax.tree.map(lambda x: x[i], sweep_params)))
    loss_diffs.append(abs(float(loss) - float(np.asarray(sweep_loss)[i])))
    runs.append(dict(build_s=mbuild_s, first_step_s=mm["first_step_s"], step_s=mm["step_s"],
                     steps_s=mm["first_step_s"] + mm["step_s"] * steps * rounds))
    print(f"run {i} (tau={member['loss.temperature']}): {1e3 * mm['step_s']:.1f} ms/step, "
          f"max |param - member {i}| {diffs[-1]:.2e}", flush=True)
  run_steps = sum(r["steps_s"] for r in runs)
  run_builds = sum(r["build_s"] for r in runs)
  seq_wall = run_builds + k * run_compile_s + run_steps
  seq_one = run_builds + run_compile_s + run_steps
  step_sum = sum(r["step_s"] for r in runs)
  pmax = max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(sweep_params))
  tol = 1e-3 * max(1.0, pmax)
  put(run_build_s=runs[0]["build_s"], run_compile_s=run_compile_s, run_first_step_s=runs[0]["first_step_s"],
      run_step_s_sum=step_sum, sequential_wall_s=seq_wall, sequential_wall_one_compile_s=seq_one,
      ratio_steady=step_sum / m["step_s"], ratio_with_compile=seq_wall / sweep_wall,
      ratio_with_one_compile=seq_one / sweep_wall, max_abs_param_diff_per_member=diffs,
      max_abs_param_diff=max(diffs), max_abs_param=pmax, max_abs_last_loss_diff=max(loss_diffs),
      check_tolerance=tol, check_passed=bool(max(diffs) <= tol))
  print(f"sweep {model}: steady {step_sum / m['step_s']:.2f}x, with compile {seq_wall / sweep_wall:.2f}x, "
        f"max |param diff| {max(diffs):.2e} (tol {tol:.0e})", flush=True)


# ----------------------------------------------------------------------------- 4. spectrum overhead

def spectrum_config(batch: int, log_every: int, dry_run: bool) -> Any:
  """The Fashion-MNIST main job's config (simclr.py: convnet_small) at `batch` and `log_every`."""
  cfg = config_lib.load_config(_common.SIMCLR_CONFIG, [f"--config.data.batch_size={batch}",
                                                       f"--config.train.log_every={log_every}"])
  return shrink(cfg, dry_run)


def stage_spectrum_overhead(rec: Recorder, sz: dict[str, Any], args: Any) -> None:
  """The step with the in-graph diagnostics every step, every 100 steps, and never.

  Three compiled programs (train.log_every 1, 100 and 10**9), each timed over rounds of
  `spectrum_steps` = 100 consecutive steps from step 1: at log_every=100 a round holds
  exactly one diagnostics step; at 10**9, none.
  """
  batch, steps = sz["spectrum_batch"], sz["spectrum_steps"]
  cfg = spectrum_config(batch, _common.LOG_EVERY, args.dry_run)
  rec.set(model=cfg.model.encoder, batch=batch, steps_per_round=steps, rounds=sz["spectrum_rounds"])
  times = {}
  for tag, log_every in (("never", _common.LOG_EVERY), ("log_every_1", 1), ("log_every_100", 100)):
    times[tag] = rec.part(f"{tag}.", rec.need("spectrum_program"),
                          lambda put: _spectrum_program(put, sz, log_every, args.dry_run))
  base, every, hundred = times.get("never"), times.get("log_every_1"), times.get("log_every_100")
  if base and every:
    rec.set(overhead_every_step=every / base - 1, overhead_log_every_100_predicted=(every / base - 1) / 100)
  if base and hundred:
    rec.set(overhead_log_every_100=hundred / base - 1)


def _spectrum_program(put, sz, log_every, dry_run) -> float:
  cfg = spectrum_config(sz["spectrum_batch"], log_every, dry_run)
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  state = state.replace(step=jnp.asarray(1, jnp.int32))
  mesh = parallel.make_mesh(1)
  _, batch = device_batch(cfg, setup, mesh)
  timing = dict(warmup=sz["spectrum_warmup"], steps=sz["spectrum_steps"], rounds=sz["spectrum_rounds"])
  n = 1 + timing["warmup"] + timing["steps"] * timing["rounds"]
  keys = step_keys(cfg, range(1, 1 + n))
  compiled, compile_s, _ = compile_timed(step_lib.jit_train_step(setup, mesh), state, batch, keys[0])
  runner = JaxSteps(compiled, state, batch, keys)   # any 100 consecutive steps hold one multiple of 100
  m = measure(runner, runner.sync, **timing)
  put(log_every=log_every, compile_s=compile_s, step_s=m["step_s"])
  print(f"log_every={log_every}: {1e3 * m['step_s']:.3f} ms/step", flush=True)
  return m["step_s"]


# ----------------------------------------------------------------------------- 5. sharded

def stage_sharded(rec: Recorder, sz: dict[str, Any], args: Any) -> None:
  """Every in-graph diagnostic and NT-Xent (value and gradient) sharded over all devices
  (jax.shard_map, rows split over "data") against the unsharded call on the whole batch."""
  from jax.sharding import Mesh, PartitionSpec as P
  from jaxssl import diagnostics, losses, selection

  n_dev = jax.device_count()
  rows = sz["sharded_rows"] - sz["sharded_rows"] % n_dev
  rng = np.random.default_rng(0)
  z1 = rng.normal(size=(rows, sz["sharded_dim_z"])).astype(np.float32)
  z2 = (z1 + 0.7 * rng.normal(size=z1.shape) + 0.3).astype(np.float32)
  r = (rng.normal(size=(rows, sz["sharded_dim_r"])) * np.linspace(2, 0.01, sz["sharded_dim_r"])).astype(np.float32)
  tol = 1e-4
  rec.set(device_count=n_dev, rows=rows, dim_z=z1.shape[1], dim_r=r.shape[1], tolerance=tol)

  def quantities(a, b, c, ax):
    out = {"spectrum_z": diagnostics.spectrum(a, axis_name=ax), "spectrum_r": diagnostics.spectrum(c, axis_name=ax),
           "norm_z": diagnostics.embedding_norm(a, axis_name=ax),
           "rankme_z": selection.rankme(a, axis_name=ax), "rankme_r": selection.rankme(c, axis_name=ax),
           "alignment": diagnostics.alignment(a, b, axis_name=ax),
           "uniformity": -diagnostics.uniformity(a, t=2.0, axis_name=ax)}
    out["effective_rank_z"] = diagnostics.effective_rank(out["spectrum_z"])
    out["effective_rank_r"] = diagnostics.effective_rank(out["spectrum_r"])
    loss, grad = jax.value_and_grad(lambda x: losses.nt_xent(x, b, temperature=0.2, axis_name=ax))(a)
    return {**out, "nt_xent": loss}, grad

  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  unsharded = jax.jit(lambda a, b, c: quantities(a, b, c, None))
  sharded = jax.jit(jax.shard_map(lambda a, b, c: quantities(a, b, c, "data"), mesh=mesh,
                                  in_specs=(P("data"),) * 3, out_specs=(P(), P("data"))))
  want, want_grad = jax.device_get(unsharded(z1, z2, r))
  got, got_grad = jax.device_get(sharded(z1, z2, r))
  rel = {k: float(np.max(np.abs(got[k] - want[k])) / max(1.0, float(np.max(np.abs(want[k]))))) for k in want}
  rel["nt_xent_grad"] = float(np.max(np.abs(got_grad - want_grad)) / max(1e-12, float(np.max(np.abs(want_grad)))))
  worst = max(rel.values())
  rec.set("rel_diff.", **rel)
  rec.set(max_rel_diff=worst, check_passed=bool(worst <= tol))
  print(f"sharded over {n_dev} device(s) vs unsharded: max rel diff {worst:.2e} (tol {tol})", flush=True)

  spec_u = jax.jit(lambda a: diagnostics.spectrum(a))
  spec_s = jax.jit(jax.shard_map(lambda a: diagnostics.spectrum(a, axis_name="data"), mesh=mesh,
                                 in_specs=P("data"), out_specs=P()))
  zd = jax.device_put(z1)
  for tag, f in (("unsharded_spectrum_s", spec_u), ("sharded_spectrum_s", spec_s)):
    out = [f(zd)]
    m = measure(lambda: out.__setitem__(0, f(zd)), lambda: jax.block_until_ready(out[0]), warmup=2, steps=10,
                rounds=3)
    rec.set(**{tag: m["step_s"]})


# ----------------------------------------------------------------------------- 6. real run

def real_run_config(sz: dict[str, Any], dry_run: bool) -> Any:
  """The Fashion-MNIST main job (experiments/configs/simclr.py); tiny in a dry run."""
  cfg = config_lib.load_config(_common.SIMCLR_CONFIG)
  if dry_run:
    shrink(cfg, True)
    config_lib.set_field(cfg, "data.batch_size", sz["real_batch"])
  for k, v in sz["eval"].items():
    config_lib.set_field(cfg, f"eval.{k}", v)
  return cfg


def stage_real_run(rec: Recorder, sz: dict[str, Any], args: Any) -> None:
  """Calibrate the steps per second (same step and data iterator as the run), train
  `common.fmnist_cpu(cfg, steps)` for the steps that fit the budget with `jaxssl.run.train`,
  then evaluate the checkpoint with `jaxssl.run.evaluate_workdir` (linear probe, kNN)."""
  sys.path.insert(0, os.path.join(_common.ROOT, "experiments", "configs"))
  import common as configs_common   # experiments/configs/common.py

  budget = float(args.train_seconds_budget or 5.0)
  workdir = args.workdir or os.path.join(os.environ.get("TMPDIR", "/tmp"), f"jaxssl_gpu_real_run_{os.getpid()}")
  cfg = real_run_config(sz, args.dry_run)
  rec.set(dataset=cfg.data.name, model=cfg.model.encoder, encoder_kwargs=json.dumps(dict(cfg.model.encoder_kwargs)),
          batch=int(cfg.data.batch_size), augment=cfg.data.augment,
          idx_dir=data_lib.resolve_idx_dir(cfg.data.idx_dir, cfg.data.data_dir), train_seconds_budget=budget)
  rate = rec.part("calibration.", 0, lambda put: _calibrate(put, cfg, sz["calibration_s"]))
  if not rate:
    rec.part("train.", 0, None, skip="no calibration")
    rec.part("eval.", 0, None, skip="no training")
    return
  num_steps = max(sz["min_steps"], int(rate * budget * 0.92))
  configs_common.fmnist_cpu(cfg, steps=num_steps)   # warm-up, log_every, checkpoints as the main job's config
  config_lib.validate_config(cfg)
  # Past this, the run is stopped (SIGINT: a checkpoint, then a clean stop) so that the evaluation still fits.
  stop_after = min(budget * 1.25 + (30 if args.dry_run else 60), rec.left() - rec.need("real_eval") - 5)
  trained = rec.part("train.", 0, lambda put: _train(put, cfg, workdir, num_steps, budget, stop_after))
  rec.part("eval.", rec.need("real_eval"), lambda put: _evaluate(put, workdir),
           skip=None if trained else "no training")


def _calibrate(put, cfg, seconds) -> float:
  """Steps per second of the run's jitted step fed by the run's data iterator."""
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  mesh = parallel.make_mesh(cfg.mesh.num_devices)
  it = data_lib.make_train_iterator(cfg.data.name, global_batch_size=cfg.data.batch_size, mesh=mesh,
                                    seed=cfg.seed, data_dir=cfg.data.data_dir, idx_dir=cfg.data.idx_dir)
  root = step_lib.augmentation_root_key(cfg)
  state = jax.device_put(state, parallel.replicated(mesh))
  compiled, compile_s, _ = compile_timed(step_lib.jit_train_step(setup, mesh), state, next(it),
                                         jax.random.fold_in(root, 0))
  state, metrics = compiled(state, next(it), jax.random.fold_in(root, 0))
  jax.block_until_ready(metrics)
  steps, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    for _ in range(10):
      steps += 1
      state, metrics = compiled(state, next(it), jax.random.fold_in(root, steps))
    jax.block_until_ready(metrics)
  elapsed = time.perf_counter() - t0
  put(compile_s=compile_s, steps=steps, seconds=elapsed, steps_per_s=steps / elapsed)
  print(f"calibration: {steps / elapsed:.1f} steps/s (compile {compile_s:.1f} s)", flush=True)
  return steps / elapsed


def _train(put, cfg, workdir, num_steps, budget, stop_after) -> bool:
  """jaxssl.run.train for num_steps; SIGINT after `stop_after` seconds (the loop then
  checkpoints and stops, and the evaluation reads that checkpoint)."""
  from jaxssl import run as run_lib
  put(num_steps=num_steps)
  watchdog = threading.Timer(max(stop_after, 1.0), lambda: os.kill(os.getpid(), signal.SIGINT))
  watchdog.daemon = True
  t0 = time.perf_counter()
  watchdog.start()
  try:
    summary = run_lib.train(cfg, workdir, evaluate_at_end=False)
  finally:
    watchdog.cancel()
  wall = time.perf_counter() - t0
  last = summary.get("last") or {}
  steps = int(summary["step"])
  put(steps_done=steps, wall_s=wall, interrupted=summary.get("interrupted"),
      images_per_s_last_log=last.get("images_per_sec"), images_per_s_overall=steps * cfg.data.batch_size / wall,
      last_loss=last.get("loss"), online_probe_acc=last.get("probe_acc"), effective_rank_z=last.get("effective_rank_z"))
  print(f"trained {steps} steps in {wall:.1f} s (budget {budget:.0f} s)", flush=True)
  return steps > 0


def _evaluate(put, workdir) -> None:
  from jaxssl import run as run_lib
  t0 = time.perf_counter()
  res = run_lib.evaluate_workdir(workdir)
  model = res.get("model", {})
  put(wall_s=time.perf_counter() - t0, **{k: model.get(k) for k in (
      "linear_probe", "knn_20", "knn_200", "rankme_r", "alpha_req_r", "lidar_r")},
      raw_pixels_linear_probe=res.get("raw_pixels", {}).get("linear_probe"),
      random_init_linear_probe=res.get("random_init", {}).get("linear_probe"))
  print(f"evaluation: linear probe {model.get('linear_probe')}, kNN-200 {model.get('knn_200')}", flush=True)


STAGE_FUNCTIONS = {"devices": stage_devices, "train_step": stage_train_step, "sweep": stage_sweep,
                   "spectrum_overhead": stage_spectrum_overhead, "sharded": stage_sharded,
                   "real_run": stage_real_run}
