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

Timing: `--warmup` steps per side (the first jaxssl call compiles; its time is reported
separately), then `--repeats` rounds; each round times one jaxssl step and one torch step
(interleaved, so both see the same background load). Each step is synchronised (jax:
block_until_ready; torch: cuda.synchronize on GPU, eager CPU ops are synchronous).
images/s = batch / median step time (each image gives two views). The load average is
printed because other processes share the CPUs; torch runs with torch.set_num_threads(
os.cpu_count()), XLA uses all visible cores.

The PyTorch side is `benchmarks/_torch_reference.py`. That it computes the same step as
jaxssl (same loss, gradients, update and BatchNorm statistics from the same weights and
views) is checked numerically by `tests/test_torch_reference.py` on a tiny network; this
script only times the two sides.

    python benchmarks/train_step.py [--model convnet_small|resnet18] [--batch 256]
        [--repeats 20] [--warmup 3] [--gpu | --cpu] [--dtype float32|bfloat16] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

if "--cpu" in sys.argv:
  os.environ["JAX_PLATFORMS"] = "cpu"

import _common  # noqa: E402  (benchmarks/ is the script's directory)
import _torch_reference  # noqa: E402
import jax  # noqa: E402
import ml_collections  # noqa: E402

from jaxssl import config as config_lib  # noqa: E402
from jaxssl import parallel, state as state_lib, step as step_lib  # noqa: E402

LOG_EVERY = _common.LOG_EVERY


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
  if dtype != "float32":
    with cfg.unlocked():
      cfg.model.encoder_kwargs["dtype"] = dtype
      cfg.model.projector["dtype"] = dtype
  return cfg


# ----------------------------------------------------------------------------- main

def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--model", choices=("convnet_small", "resnet18"), default=None,
                  help="default: resnet18 on a GPU, convnet_small on the CPU")
  ap.add_argument("--batch", type=int, default=None, help="default: 512 on a GPU, 256 on the CPU")
  ap.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                  help="compute dtype; default bfloat16 on a GPU, float32 on the CPU")
  ap.add_argument("--repeats", type=int, default=20)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--gpu", action="store_true", help="require a GPU on both sides")
  ap.add_argument("--cpu", action="store_true", help="run both sides on the CPU (sets JAX_PLATFORMS=cpu)")
  ap.add_argument("--json", type=str, default=None, help="also write results here")
  args = ap.parse_args(argv)

  try:
    torch, nn, F, defs = _torch_reference.torch_side()
  except ImportError:
    print(_common.TORCH_MISSING)
    return 2

  gpu = (not args.cpu) and jax.default_backend() == "gpu" and torch.cuda.is_available()
  if args.gpu and not gpu:
    print(f"--gpu: no GPU on both sides (jax backend {jax.default_backend()!r}, "
          f"torch.cuda.is_available()={torch.cuda.is_available()})")
    return 2
  model = args.model or ("resnet18" if gpu else "convnet_small")
  batch = args.batch or (512 if gpu else 256)
  dtype = args.dtype or ("bfloat16" if gpu else "float32")
  device = torch.device("cuda" if gpu else "cpu")
  torch.set_num_threads(os.cpu_count())
  if gpu:
    # Plain float32 semantics for the float32 parts on both sides (the bf16 parts are bf16).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
  sync = torch.cuda.synchronize if gpu else (lambda: None)

  cfg = make_config(model, batch, dtype)
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(args.seed))
  mesh = parallel.make_mesh(1)
  step_fn = step_lib.jit_train_step(setup, mesh)
  host_batch = _common.synthetic_batches(1, batch, setup.image_shape, setup.num_classes, args.seed)[0]
  batch_j = jax.device_put(host_batch, parallel.batch_sharding(mesh))
  root = step_lib.augmentation_root_key(cfg)
  n_keys = 1 + args.warmup + args.repeats
  keys = [jax.device_put(jax.random.fold_in(root, s), parallel.replicated(mesh)) for s in range(n_keys)]

  trainer = _torch_reference.TorchTrainer(torch, nn, F, defs, cfg, setup.view_cfgs, setup.image_shape[-1],
                         setup.num_classes, device, dtype == "bfloat16", args.seed)
  images_t = torch.from_numpy(host_batch["image"]).to(device)
  labels_t = torch.from_numpy(host_batch["label"]).long().to(device)

  load0 = _common.load_average()
  n_params = sum(p.numel() for p in trainer.net.parameters())
  print(f"SimCLR train step, {model} {dict(cfg.model.encoder_kwargs)} + MLP projector {cfg.model.projector.hidden_dim}-"
        f"{cfg.model.projector.out_dim} ({n_params / 1e6:.2f}M params), batch {batch} x "
        f"{'x'.join(map(str, setup.image_shape))} uint8 (2 views each), augment preset "
        f"{cfg.data.augment!r}, NT-Xent tau {cfg.loss.temperature}, AdamW, online probe, {dtype}, "
        f"{'GPU' if gpu else 'CPU'}; diagnostics off (train.log_every={LOG_EVERY})")
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}: {jax.devices()[0].device_kind}), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads"
        f"{', ' + torch.cuda.get_device_name() if gpu else ''}); {_common.cpu_description()}; "
        f"load average {_common.format_load(load0)} (other processes share the CPUs)")
  print(f"median of {args.repeats} interleaved rounds after {args.warmup} warm-up steps per side")
  print()

  # ---------------------------------------------------------------- timing
  t0 = time.perf_counter()
  state, m = step_fn(state, batch_j, keys[0])
  jax.block_until_ready((state, m))
  first_s = time.perf_counter() - t0
  for i in range(args.warmup):
    state, m = step_fn(state, batch_j, keys[1 + i])
    jax.block_until_ready((state, m))
  for _ in range(args.warmup + 1):
    trainer.step(images_t, labels_t)
    sync()
  jt, tt = [], []
  for i in range(args.repeats):
    k = keys[1 + args.warmup + i]
    t0 = time.perf_counter()
    state, m = step_fn(state, batch_j, k)
    jax.block_until_ready((state, m))
    jt.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    loss = trainer.step(images_t, labels_t)
    sync()
    tt.append(time.perf_counter() - t0)
  jloss, tloss = float(m["loss"]), float(loss.detach())
  load1 = _common.load_average()

  jm, tm = statistics.median(jt), statistics.median(tt)
  header = f"{'side':<26}{'step median [ms]':>18}{'min [ms]':>10}{'images/s':>11}{'last loss':>11}"
  print(header)
  print("-" * len(header))
  print(f"{'jaxssl (jit, XLA)':<26}{1e3 * jm:>18.1f}{1e3 * min(jt):>10.1f}{batch / jm:>11.0f}{jloss:>11.4f}")
  print(f"{'torch (eager)':<26}{1e3 * tm:>18.1f}{1e3 * min(tt):>10.1f}{batch / tm:>11.0f}{tloss:>11.4f}")
  print()
  print(f"throughput ratio jaxssl / torch: {tm / jm:.2f}x   (jaxssl first call incl. compile: {first_s:.1f} s)")
  print(f"load average after: {_common.format_load(load1)}")

  if args.json:
    _common.write_json(args.json, dict(
        benchmark="train_step", model=model, batch=batch, dtype=dtype, device="gpu" if gpu else "cpu",
        image_shape=list(setup.image_shape), augment_preset=cfg.data.augment,
        temperature=float(cfg.loss.temperature), optimizer="adamw", log_every=LOG_EVERY,
        repeats=args.repeats, warmup=args.warmup, load_average_before=list(load0),
        load_average_after=list(load1), cpu_count=os.cpu_count(), jax=jax.__version__,
        jax_device=jax.devices()[0].device_kind, torch=torch.__version__,
        torch_threads=torch.get_num_threads(), torch_params=n_params,
        results=dict(jax_median_s=jm, torch_median_s=tm, jax_images_per_s=batch / jm,
                     torch_images_per_s=batch / tm, ratio_jax_over_torch_images_per_s=tm / jm,
                     jax_first_call_s=first_s, jax_times_s=jt, torch_times_s=tt,
                     jax_last_loss=jloss, torch_last_loss=tloss)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
