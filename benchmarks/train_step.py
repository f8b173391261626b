"""Benchmark: SimCLR train-step throughput (images/s) of the jitted jaxssl step against a
plain eager PyTorch implementation of the same step, side by side in one run.

Both sides start from the same uint8 batch already on the device (synthetic images, no
dataset needed) and do the same work per step:

  augmentation  two views of every image, made from the uint8 batch inside the step.
                jaxssl: `jaxssl.augment` (jitted, vmapped per example).
                torch:  a batched implementation written here with torch ops, driven by
                the same `AugmentConfig`s (same probabilities and strengths):
                  random resized crop  torchvision's box sampling (area ~ U(scale), log
                                       ratio ~ U(log ratio), 10 attempts, central
                                       fallback), continuous box, resampled bilinearly
                                       with F.affine_grid + F.grid_sample (the crop is
                                       never smaller than the output, so jaxssl's
                                       antialiasing does not apply either);
                  horizontal flip;
                  colour jitter        brightness / contrast (and saturation / hue on RGB)
                                       with per-example random order, as jaxssl;
                  grayscale (RGB), gaussian blur (separable, reflect padding, per-example
                  sigma), solarize, gaussian noise - each where the preset enables it.
                Preset "fmnist" (default): crop scale (0.2, 1), flip 0.5, brightness and
                contrast 0.4 with p 0.8, blur p 0.2 (3 taps, sigma 0.1..1), noise p 0.2
                (std 0.05). Preset "simclr" at 32 px (--model resnet18): crop scale
                (0.08, 1), flip 0.5, jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2.
  network       encoder + MLP projector, two separate forward passes (one per view, so
                BatchNorm statistics are per view), in training mode.
                convnet_small: 4 x (conv3x3 no bias - BN - ReLU), widths and strides
                from the config (Fashion-MNIST default: widths (32, 64, 128, 256),
                strides (2, 2, 2, 1)), global average pool; projector Linear(256, 512)
                - BN - ReLU - Linear(512, 128). Inputs standardised with mean 0.5, std
                0.25 inside the network on both sides.
                resnet18 (CIFAR stem: conv3x3 s1, no max-pool; BasicBlocks; projector
                Linear(512, 2048) - BN - ReLU - Linear(2048, 256)).
  loss          NT-Xent over the 2B views, tau 0.2 (config value), float32.
  optimizer     AdamW (b1 0.9, b2 0.999, eps 1e-8, lr 1e-3 with the config's warm-up +
                cosine schedule, weight decay 1e-6 on conv/linear kernels only - not on
                biases and BatchNorm parameters, as jaxssl masks them).
  probe         the online linear probe on stop-gradient features of view 1 (Adam,
                lr 1e-3), as jaxssl's step does.
  jaxssl only   cheap metrics (grad norm, finiteness flags, probe accuracy). The in-graph
                spectrum / effective-rank diagnostics run only every `train.log_every`
                steps; it is set to 10**9 here, so the timed steps never compute them
                (only the first, untimed call at step 0 does).

--model resnet18 uses experiments/configs/simclr.py:cifar10 with a synthetic uint8
[B, 32, 32, 3] batch, but with AdamW (lr 1e-3, wd 1e-6, warm-up 100) instead of the
config's LARS, so that both sides use the same optimizer. On a GPU (automatic when
jax.default_backend() == "gpu" and torch.cuda.is_available(), or --gpu) the default is
resnet18, batch 512, bfloat16 compute: jaxssl with encoder/projector dtype=bfloat16
(parameters, BN statistics and the loss in float32), PyTorch eager under
torch.autocast("cuda", torch.bfloat16). On the CPU the default is convnet_small, batch
256, float32.

Timing (`_common.interleave`): `--warmup` warm-up rounds, one step of every side each
(the first jaxssl call compiles, the first torch.compile call compiles; their times are
reported apart), then `--repeats` rounds; each round times, for every PyTorch row in
turn, one jaxssl step and then one step of that row (jaxssl, eager, jaxssl,
channels_last, jaxssl, torch.compile), so each torch step is paired with the jaxssl step
just before it and both saw the same background load. Each step is synchronised (jax:
block_until_ready; torch: cuda.synchronize on GPU, eager CPU ops are synchronous).
Reported per row: the paired ratios t_torch / t_jaxssl of those adjacent pairs (jaxssl's
throughput relative to that row: above 1, jaxssl is faster), their median and their
spread as min-max and inter-quartile range; per side the median and minimum step time,
images/s = batch / median step time (each image gives two views) and the cores it kept
busy (process CPU time / wall time of its steps).

PyTorch rows: eager (the reference), channels_last (network and input views in
`torch.channels_last` memory format) and torch.compile (the network compiled with
`--torch-compile-backend`, default inductor, which needs a C++ compiler on the CPU; if it
fails, the row says "unavailable: <reason>" and the rest is measured). `--torch-variants`
picks the rows.

Threads: the full-thread row gives both sides the CPUs this process may use,
len(os.sched_getaffinity(0)) (`_common.available_cpus`): XLA:CPU sizes its thread pool by
them, torch gets torch.set_num_threads of as many. On the CPU a second, one-thread-per-side
row follows (`--no-one-thread` skips it): the script reruns itself in a child process that
pins itself to its first usable CPU before importing jax (`_common.pin_to_one_cpu`, the
same as `taskset -c N`) and sets torch.set_num_threads(1). XLA's intra-op threads are
fixed when its backend starts, so this cannot be done in the same process, and
XLA_FLAGS=--xla_cpu_multi_thread_eigen=false does not restrict XLA:CPU in jaxlib 0.10;
the "cores busy" column shows that the pinned child never keeps more than one core busy.

Load: the 1-minute load average is read before, between the rounds of and after each
row's measurement, and the CPU that other processes took is measured per round; if a load
average exceeds `--load-limit` (default 1.5, `_common.LOAD_LIMIT`) and other processes took
more than `_common.OTHER_CPU_LIMIT` cores in some round, the row is marked "not a clean
measurement" in the output and "clean": false in --json (`_common.interleave`).

The PyTorch side is `benchmarks/_torch_reference.py`. That it computes the same step as
jaxssl (same loss, gradients, update and BatchNorm statistics from the same weights and
views) is checked numerically by `tests/test_torch_reference.py` on a tiny network; this
script only times the two sides.

    python benchmarks/train_step.py [--model convnet_small|resnet18] [--batch 256]
        [--repeats 20] [--warmup 3] [--gpu | --cpu] [--dtype float32|bfloat16]
        [--torch-variants eager,channels_last,compile] [--torch-compile-backend inductor]
        [--no-one-thread] [--load-limit 1.5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

import _common  # (benchmarks/ is the script's directory; it imports neither jax nor torch)

ONE_THREAD_CHILD = "--one-thread-child"   # internal: the one-thread-per-side child process
# The child pins itself before jax (or torch) is imported: XLA sizes its thread pool then.
PINNED_CPU = _common.pin_to_one_cpu() if ONE_THREAD_CHILD in sys.argv else None
if "--cpu" in sys.argv:
  os.environ["JAX_PLATFORMS"] = "cpu"

import _torch_reference  # noqa: E402
import jax  # noqa: E402
import ml_collections  # noqa: E402

from jaxssl import config as config_lib  # noqa: E402
from jaxssl import parallel, state as state_lib, step as step_lib  # noqa: E402

LOG_EVERY = _common.LOG_EVERY
JAX_SIDE = "jaxssl"
# --torch-variants name -> the row's side name.
TORCH_SIDES = {"eager": "torch eager", "channels_last": "torch channels_last", "compile": "torch.compile"}
RATIO_DEFINITION = ("t_torch / t_jaxssl of each adjacent (jaxssl step, torch step) pair: jaxssl's throughput "
                    "relative to that PyTorch row (above 1: jaxssl is faster)")


# ----------------------------------------------------------------------------- config

def make_config(model: str, batch: int, dtype: str) -> ml_collections.ConfigDict:
  """experiments/configs/simclr.py for `model` at `batch` and compute `dtype`, diagnostics off.

  resnet18 uses the ":cifar10" config with AdamW (lr 1e-3, wd 1e-6, warm-up 100 of 2000
  steps) instead of LARS, so that both sides use the same optimizer.
  """
  path = _common.SIMCLR_CONFIG
  over = [f"--config.data.batch_size={batch}", f"--config.train.log_every={LOG_EVERY}"]
  if model == "resnet18":
    path += ":cifar10"
    over += ["--config.optim.name=adamw", "--config.optim.lr=0.001",
             "--config.optim.weight_decay=1e-6", "--config.optim.warmup_steps=100",
             "--config.train.num_steps=2000"]
  elif model != "convnet_small":
    raise SystemExit(f"--model {model!r}: use convnet_small or resnet18")
  cfg = config_lib.load_config(path, over)
  config_lib.set_field(cfg, "model.dtype", dtype)    # compute dtype; params and loss stay float32
  return cfg


# ----------------------------------------------------------------------------- sides

class JaxSide:
  """One synchronised jaxssl step per call, on one device batch, with the next key."""

  def __init__(self, step_fn: Any, state: Any, batch: Any, keys: list[Any]):
    self.step_fn, self.state, self.batch, self.keys = step_fn, state, batch, keys
    self.metrics: Any = None
    self.calls = 0

  def __call__(self) -> None:
    self.state, self.metrics = self.step_fn(self.state, self.batch, self.keys[self.calls])
    jax.block_until_ready((self.state, self.metrics))
    self.calls += 1


class TorchSide:
  """One synchronised step of a `_torch_reference.TorchTrainer` per call; keeps the last loss."""

  def __init__(self, trainer: Any, images: Any, labels: Any, sync: Any):
    self.trainer, self.images, self.labels, self.sync = trainer, images, labels, sync
    self.loss: Any = None

  def __call__(self) -> None:
    self.loss = self.trainer.step(self.images, self.labels)
    self.sync()


def parse_variants(text: str) -> list[str]:
  """'eager,compile' -> ["eager", "compile"] (names of TORCH_SIDES, in that order)."""
  want = [v.strip() for v in text.split(",") if v.strip()]
  unknown = sorted(set(want) - set(TORCH_SIDES))
  if unknown or not want:
    raise SystemExit(f"--torch-variants {text!r}: choose from {', '.join(TORCH_SIDES)}")
  return [v for v in TORCH_SIDES if v in want]


# ----------------------------------------------------------------------------- one measurement

def measure(args: argparse.Namespace, torch_mods: tuple, gpu: bool, threads: int) -> dict[str, Any]:
  """One row group: jaxssl against every --torch-variants row, interleaved, at `threads`.

  Returns the `_common.interleave` measurement plus what the table and --json need:
  threads_per_side, torch_threads, jax_usable_cpus, per side its summary ("sides_summary":
  median/min step time, images/s, cores busy, first call, last loss) and the setup
  description ("setup").
  """
  torch, nn, F, defs = torch_mods
  model = args.model or ("resnet18" if gpu else "convnet_small")
  batch = args.batch or (512 if gpu else 256)
  dtype = args.dtype or ("bfloat16" if gpu else "float32")
  device = torch.device("cuda" if gpu else "cpu")
  torch.set_num_threads(threads)
  sync = torch.cuda.synchronize if gpu else (lambda: None)

  cfg = make_config(model, batch, dtype)
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(args.seed))
  mesh = parallel.make_mesh(1)
  step_fn = step_lib.jit_train_step(setup, mesh)
  # Placed as the step returns it: otherwise the second call compiles once more (for the
  # committed, replicated state the first call returns) and lands in the timed rounds.
  state = jax.device_put(state, parallel.replicated(mesh))
  host_batch = _common.synthetic_batches(1, batch, setup.image_shape, setup.num_classes, args.seed)[0]
  batch_j = jax.device_put(host_batch, parallel.batch_sharding(mesh))
  root = step_lib.augmentation_root_key(cfg)
  variants = parse_variants(args.torch_variants)
  n_keys = args.warmup + args.repeats * len(variants)    # jaxssl runs once per warm-up round and per pair
  keys = [jax.device_put(jax.random.fold_in(root, s), parallel.replicated(mesh)) for s in range(n_keys)]
  jax_side = JaxSide(step_fn, state, batch_j, keys)

  images_t = torch.from_numpy(host_batch["image"]).to(device)
  labels_t = torch.from_numpy(host_batch["label"]).long().to(device)
  sides: dict[str, TorchSide] = {}
  unavailable: dict[str, str] = {}
  n_params = 0
  for v in variants:
    trainer = _torch_reference.TorchTrainer(torch, nn, F, defs, cfg, setup.view_cfgs, setup.image_shape[-1],
                                            setup.num_classes, device, dtype == "bfloat16", args.seed,
                                            channels_last=(v == "channels_last"))
    n_params = sum(p.numel() for p in trainer.net.parameters())
    if v == "compile":
      try:
        trainer.net = torch.compile(trainer.net, backend=args.torch_compile_backend)
      except Exception as e:   # e.g. an unknown backend; compile errors proper come at the first call
        unavailable[TORCH_SIDES[v]] = _common.one_line_error(e)
        continue
    sides[TORCH_SIDES[v]] = TorchSide(trainer, images_t, labels_t, sync)

  print(f"[{threads} thread(s) per side] SimCLR train step, {model} {dict(cfg.model.encoder_kwargs)} + MLP "
        f"projector {cfg.model.projector.hidden_dim}-{cfg.model.projector.out_dim} ({n_params / 1e6:.2f}M params), "
        f"batch {batch} x {'x'.join(map(str, setup.image_shape))} uint8 (2 views each), augment preset "
        f"{cfg.data.augment!r}, NT-Xent tau {cfg.loss.temperature}, AdamW, online probe, {dtype}, "
        f"{'GPU' if gpu else 'CPU'}; diagnostics off (train.log_every={LOG_EVERY})", flush=True)
  print(f"  jax {jax.__version__} ({jax.devices()[0].platform}: {jax.devices()[0].device_kind}), torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads{', ' + torch.cuda.get_device_name() if gpu else ''}); "
        f"{_common.cpu_description()}{f', pinned to CPU {PINNED_CPU}' if PINNED_CPU is not None else ''}; "
        f"load average {_common.format_load(_common.load_average())}", flush=True)

  m = _common.interleave((JAX_SIDE, jax_side), sides, rounds=args.repeats, warmup=args.warmup,
                         catch=[TORCH_SIDES["compile"]], load_limit=args.load_limit)
  for name, why in unavailable.items():
    m["comparisons"][name] = {"unavailable": why}
  summary = {}
  for name, side in {JAX_SIDE: jax_side, **sides}.items():
    t, c = m["sides"][name]["times_s"], m["sides"][name]["cpu_s"]
    warm = m["warmup_s"][name]
    if not t:
      continue
    med = statistics.median(t)
    loss = side.metrics["loss"] if name == JAX_SIDE else side.loss.detach()
    summary[name] = dict(median_s=med, min_s=min(t), images_per_s=batch / med, cores_busy=sum(c) / sum(t),
                         first_call_s=warm[0] if warm else None, last_loss=float(loss))
  m.update(threads_per_side=threads, torch_threads=torch.get_num_threads(),
           jax_usable_cpus=_common.available_cpus(), pinned_cpu=PINNED_CPU, sides_summary=summary,
           ratio_definition=RATIO_DEFINITION, spread=_common.RATIO_SPREAD,
           setup=dict(model=model, batch=batch, dtype=dtype, device="gpu" if gpu else "cpu",
                      image_shape=list(setup.image_shape), augment_preset=cfg.data.augment,
                      temperature=float(cfg.loss.temperature), torch_params=n_params,
                      torch_variants=variants, torch_compile_backend=args.torch_compile_backend))
  return m


def one_thread_row(args: argparse.Namespace) -> dict[str, Any]:
  """The one-thread-per-side measurement, from a child process pinned to one CPU (see the
  module docstring); {"unavailable": why} if the child fails."""
  fd, path = tempfile.mkstemp(suffix=".json", prefix="train_step_1thread_")
  os.close(fd)
  cmd = [sys.executable, os.path.abspath(__file__), ONE_THREAD_CHILD, "--json", path,
         "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--seed", str(args.seed),
         "--torch-variants", args.torch_variants, "--torch-compile-backend", args.torch_compile_backend,
         "--load-limit", str(args.load_limit)]
  for flag in ("model", "batch", "dtype"):
    if getattr(args, flag) is not None:
      cmd += [f"--{flag}", str(getattr(args, flag))]
  if args.cpu:
    cmd.append("--cpu")
  try:
    rc = subprocess.call(cmd)
    if rc != 0:
      return {"unavailable": f"the one-thread child process exited with status {rc}"}
    with open(path) as f:
      return json.load(f)
  finally:
    os.unlink(path)


# ----------------------------------------------------------------------------- output

def print_rows(rows: dict[str, dict[str, Any]]) -> None:
  """The table: per row group (thread setting) every side, and each PyTorch row's paired ratio."""
  header = (f"{'side':<22}{'median [ms]':>12}{'min [ms]':>10}{'images/s':>10}{'cores busy':>12}"
            f"{'last loss':>11}   paired ratio jaxssl / this row")
  for m in rows.values():
    if "unavailable" in m:
      print(f"\none thread per side: unavailable: {m['unavailable']}")
      continue
    print(f"\n{m['threads_per_side']} thread(s) per side (torch.set_num_threads({m['torch_threads']}); XLA on "
          f"{m['jax_usable_cpus']} usable CPU(s){'' if m['pinned_cpu'] is None else ', pinned'}); {m['rounds']} "
          f"rounds after {m['warmup_blocks']} warm-up; {_common.load_text(m)}")
    print(header)
    print("-" * (len(header) + 20))
    for name, cmp in [(m["a"], None), *m["comparisons"].items()]:
      s = m["sides_summary"].get(name)
      if s is None:
        print(f"{name:<22}{_common.format_ratio(cmp)}")
        continue
      ratio = "" if cmp is None else _common.format_ratio(cmp, _common.is_clean(m))
      print(f"{name:<22}{1e3 * s['median_s']:>12.1f}{1e3 * s['min_s']:>10.1f}{s['images_per_s']:>10.0f}"
            f"{s['cores_busy']:>12.2f}{s['last_loss']:>11.4f}   {ratio}")
    firsts = {n: s["first_call_s"] for n, s in m["sides_summary"].items() if s["first_call_s"] is not None}
    print("first calls (incl. compile): " + ", ".join(f"{n} {t:.1f} s" for n, t in firsts.items()))


# ----------------------------------------------------------------------------- main

def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--model", choices=("convnet_small", "resnet18"), default=None,
                  help="default: resnet18 on a GPU, convnet_small on the CPU")
  ap.add_argument("--batch", type=int, default=None, help="default: 512 on a GPU, 256 on the CPU")
  ap.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                  help="compute dtype; default bfloat16 on a GPU, float32 on the CPU")
  ap.add_argument("--repeats", type=int, default=20, help="interleaved rounds (paired ratios per PyTorch row)")
  ap.add_argument("--warmup", type=int, default=3, help="warm-up rounds (the first compiles)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--torch-variants", type=str, default=",".join(TORCH_SIDES),
                  help=f"comma-separated PyTorch rows: {', '.join(TORCH_SIDES)}")
  ap.add_argument("--torch-compile-backend", type=str, default="inductor")
  ap.add_argument("--no-one-thread", action="store_true", help="skip the one-thread-per-side row (CPU)")
  ap.add_argument("--load-limit", type=float, default=_common.LOAD_LIMIT,
                  help="1-minute load average above which a ratio is not a clean measurement")
  ap.add_argument("--gpu", action="store_true", help="require a GPU on both sides")
  ap.add_argument("--cpu", action="store_true", help="run both sides on the CPU (sets JAX_PLATFORMS=cpu)")
  ap.add_argument(ONE_THREAD_CHILD, action="store_true", help=argparse.SUPPRESS)
  ap.add_argument("--json", type=str, default=None, help="also write results here")
  args = ap.parse_args(argv)
  parse_variants(args.torch_variants)

  try:
    torch_mods = _torch_reference.torch_side()
  except ImportError:
    print(_common.TORCH_MISSING)
    return 2
  torch = torch_mods[0]
  gpu = (not args.cpu) and jax.default_backend() == "gpu" and torch.cuda.is_available()
  if args.gpu and not gpu:
    print(f"--gpu: no GPU on both sides (jax backend {jax.default_backend()!r}, "
          f"torch.cuda.is_available()={torch.cuda.is_available()})")
    return 2
  if gpu:
    # Plain float32 semantics for the float32 parts on both sides (the bf16 parts are bf16).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

  if args.one_thread_child:
    m = measure(args, torch_mods, gpu, 1)
    if args.json:
      _common.write_json(args.json, m)
    return 0

  load0 = _common.load_average()
  rows = {"full_threads": measure(args, torch_mods, gpu, _common.available_cpus())}
  if gpu:
    rows["one_thread"] = {"unavailable": "not measured on a GPU"}
  elif not args.no_one_thread:
    rows["one_thread"] = one_thread_row(args)
  load1 = _common.load_average()
  print_rows(rows)
  print(f"\nratio: {RATIO_DEFINITION}; spread: {_common.RATIO_SPREAD}")
  print(f"load average before {_common.format_load(load0)}, after {_common.format_load(load1)}")

  if args.json:
    full = rows["full_threads"]
    eager = full["comparisons"].get(TORCH_SIDES["eager"], {})
    js, ts = full["sides_summary"][JAX_SIDE], full["sides_summary"].get(TORCH_SIDES["eager"])
    # The keys of the earlier single-thread-setting output, from the full-thread eager row
    # (the ratio is now the median paired ratio, no longer a ratio of two medians).
    results = dict(jax_median_s=js["median_s"], jax_images_per_s=js["images_per_s"],
                   jax_first_call_s=js["first_call_s"], jax_times_s=full["sides"][JAX_SIDE]["times_s"],
                   jax_last_loss=js["last_loss"])
    if ts is not None and "ratio" in eager:
      results.update(torch_median_s=ts["median_s"], torch_images_per_s=ts["images_per_s"],
                     ratio_jax_over_torch_images_per_s=eager["ratio"]["median"],
                     torch_times_s=full["sides"][TORCH_SIDES["eager"]]["times_s"], torch_last_loss=ts["last_loss"])
    _common.write_json(args.json, dict(
        benchmark="train_step", **full["setup"], optimizer="adamw", log_every=LOG_EVERY,
        repeats=args.repeats, warmup=args.warmup, load_average_before=list(load0), load_average_after=list(load1),
        load_limit=args.load_limit, load_ok=all(r.get("load_ok", True) for r in rows.values()),
        clean=all(_common.is_clean(r) for r in rows.values() if "unavailable" not in r),
        cpu_count=os.cpu_count(), usable_cpus=_common.available_cpus(), jax=jax.__version__,
        jax_device=jax.devices()[0].device_kind, torch=torch.__version__, torch_threads=full["torch_threads"],
        ratio_definition=RATIO_DEFINITION, spread=_common.RATIO_SPREAD, rows=rows, results=results))
  return 0


if __name__ == "__main__":
  sys.exit(main())
