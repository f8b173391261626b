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

Numerical cross-check: the torch network is loaded with jaxssl's initial parameters and
BatchNorm statistics; jaxssl runs two steps from step 100 (end of warm-up, lr = 1e-3, no
diagnostics), and torch runs two steps on exactly the views jaxssl made (recomputed with
`augment.make_views` and the step's key). Compared: the loss of both steps, the gradient
norm of step 1, and the parameters and BatchNorm running statistics after step 1. Adam's
first update is ~lr * sign(g), so entries whose gradient is float noise (e.g. the bias of
a Linear followed by BatchNorm, zero analytically) may move by +-lr on either side; they
are counted, not required to be zero, and the trajectories diverge chaotically from
there, so after step 2 only the loss is compared. torch keeps the unbiased batch
variance in its running average, jaxssl/flax the biased one (~1/n relative difference).

    python benchmarks/train_step.py [--model convnet_small|resnet18] [--batch 256]
        [--repeats 20] [--warmup 3] [--gpu | --cpu] [--dtype float32|bfloat16] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time

if "--cpu" in sys.argv:
  os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxssl import augment  # noqa: E402
from jaxssl import config as config_lib  # noqa: E402
from jaxssl.models._common import channel_stats  # noqa: E402

CONFIG = "experiments/configs/simclr.py"
LOG_EVERY = 10**9


# ----------------------------------------------------------------------------- config

def make_config(model: str, batch: int, dtype: str):
  root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
  path = os.path.join(root, CONFIG)
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


def synthetic_batch(batch: int, shape: tuple[int, int, int], num_classes: int, seed: int):
  """Smooth random uint8 images (low-resolution noise upsampled, plus fine noise)."""
  rng = np.random.default_rng(seed)
  h, w, c = shape
  low = rng.uniform(0, 255, (batch, h // 4 + 1, w // 4 + 1, c))
  img = np.repeat(np.repeat(low, 4, axis=1), 4, axis=2)[:, :h, :w]
  img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
  labels = rng.integers(0, num_classes, batch).astype(np.int32)
  return img, labels


# ----------------------------------------------------------------------------- PyTorch side

def torch_side():
  import torch
  import torch.nn as nn
  import torch.nn.functional as F

  class ConvNet(nn.Module):
    def __init__(self, in_ch, widths=(32, 64, 128, 256), strides=(1, 2, 2, 2)):
      super().__init__()
      self.convs, self.bns = nn.ModuleList(), nn.ModuleList()
      for c, s in zip(widths, strides):
        self.convs.append(nn.Conv2d(in_ch, c, 3, s, 1, bias=False))
        self.bns.append(nn.BatchNorm2d(c, eps=1e-5, momentum=0.1))
        in_ch = c
      self.feature_dim = in_ch

    def forward(self, x):
      for c, b in zip(self.convs, self.bns):
        x = F.relu(b(c(x)))
      return x.float().mean(dim=(2, 3))

  class BasicBlock(nn.Module):
    def __init__(self, in_ch, width, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(in_ch, width, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(width)
      self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(width)
      self.down_conv = self.down_bn = None
      if stride != 1 or in_ch != width:
        self.down_conv = nn.Conv2d(in_ch, width, 1, stride, 0, bias=False)
        self.down_bn = nn.BatchNorm2d(width)

    def forward(self, x):
      y = F.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      s = x if self.down_conv is None else self.down_bn(self.down_conv(x))
      return F.relu(y + s)

  class ResNet18(nn.Module):
    """torchvision-free ResNet-18, CIFAR stem (3x3 conv stride 1, no max-pool)."""

    def __init__(self, in_ch=3, base=64):
      super().__init__()
      self.stem_conv = nn.Conv2d(in_ch, base, 3, 1, 1, bias=False)
      self.stem_bn = nn.BatchNorm2d(base)
      blocks, c = [], base
      for i, n in enumerate((2, 2, 2, 2)):
        w = base * 2 ** i
        for j in range(n):
          blocks.append(BasicBlock(c, w, 2 if (i > 0 and j == 0) else 1))
          c = w
      self.blocks = nn.ModuleList(blocks)
      self.feature_dim = c

    def forward(self, x):
      x = F.relu(self.stem_bn(self.stem_conv(x)))
      for b in self.blocks:
        x = b(x)
      return x.float().mean(dim=(2, 3))

  class MLPHead(nn.Module):
    """Linear - BN - ReLU - Linear (SimCLR v1 projector, as jaxssl's MLPHead)."""

    def __init__(self, in_dim, hidden, out_dim):
      super().__init__()
      self.linears = nn.ModuleList([nn.Linear(in_dim, hidden), nn.Linear(hidden, out_dim)])
      self.norms = nn.ModuleList([nn.BatchNorm1d(hidden)])

    def forward(self, x):
      x = F.relu(self.norms[0](self.linears[0](x)))
      return self.linears[1](x).float()

  class SSLNet(nn.Module):
    def __init__(self, encoder, hidden, out_dim, mean, std):
      super().__init__()
      self.encoder = encoder
      self.projector = MLPHead(encoder.feature_dim, hidden, out_dim)
      self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
      self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
      r = self.encoder((x - self.mean) / self.std)
      return r, self.projector(r)

  def nt_xent(z1, z2, temperature):
    m = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    logits = z @ z.T / temperature
    eye = torch.eye(2 * m, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    targets = torch.cat([torch.arange(m, 2 * m), torch.arange(0, m)]).to(z.device)
    return F.cross_entropy(logits, targets)

  return torch, nn, F, dict(ConvNet=ConvNet, ResNet18=ResNet18, SSLNet=SSLNet, nt_xent=nt_xent)


# ------------------------------------------------------------------- torch augmentation

BRIGHTNESS, CONTRAST, SATURATION, HUE = augment.BRIGHTNESS, augment.CONTRAST, augment.SATURATION, augment.HUE


def make_torch_augment(torch, F):
  """Batched torch version of `jaxssl.augment.augment_image` for an `AugmentConfig`."""

  def gray(x):  # [B, C, H, W] -> [B, 1, H, W]
    if x.shape[1] == 1:
      return x
    wr, wg, wb = augment.GRAY_WEIGHTS
    return wr * x[:, 0:1] + wg * x[:, 1:2] + wb * x[:, 2:3]

  def bcast(v):
    return v.view(-1, 1, 1, 1)

  def crop_boxes(b, h, w, cfg, dev, gen):
    n = augment.CROP_ATTEMPTS
    u = torch.rand(b, 2 * n + 2, device=dev, generator=gen)
    area = float(h * w)
    target = area * (cfg.crop_scale[0] + (cfg.crop_scale[1] - cfg.crop_scale[0]) * u[:, :n])
    lo, hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
    r = torch.exp(lo + (hi - lo) * u[:, n:2 * n])
    cw, ch = torch.sqrt(target * r), torch.sqrt(target / r)
    ok = (cw <= w) & (ch <= h)
    first = torch.argmax(ok.to(torch.int32), dim=1, keepdim=True)
    any_ok = ok.any(dim=1)
    in_ratio = w / h
    if in_ratio < cfg.crop_ratio[0]:
      fw, fh = float(w), w / cfg.crop_ratio[0]
    elif in_ratio > cfg.crop_ratio[1]:
      fw, fh = h * cfg.crop_ratio[1], float(h)
    else:
      fw, fh = float(w), float(h)
    ch = torch.where(any_ok, ch.gather(1, first)[:, 0], torch.full_like(any_ok, fh, dtype=ch.dtype))
    cw = torch.where(any_ok, cw.gather(1, first)[:, 0], torch.full_like(any_ok, fw, dtype=cw.dtype))
    uy = torch.where(any_ok, u[:, 2 * n], 0.5)
    ux = torch.where(any_ok, u[:, 2 * n + 1], 0.5)
    return uy * (h - ch), ux * (w - cw), ch, cw

  def affine_jitter(y, op, factors, cheap):
    one = torch.ones_like(factors[:, 0])
    zero = torch.zeros_like(one)
    is_b = (op == BRIGHTNESS) if BRIGHTNESS in cheap else torch.zeros_like(op, dtype=torch.bool)
    is_c = (op == CONTRAST) if CONTRAST in cheap else torch.zeros_like(op, dtype=torch.bool)
    is_s = (op == SATURATION) if SATURATION in cheap else torch.zeros_like(op, dtype=torch.bool)
    a = torch.where(is_b, factors[:, BRIGHTNESS],
                    torch.where(is_c, factors[:, CONTRAST], torch.where(is_s, factors[:, SATURATION], one)))
    out = bcast(a) * y
    if SATURATION in cheap or CONTRAST in cheap:
      g = gray(y)
      if SATURATION in cheap:
        out = out + bcast(torch.where(is_s, 1.0 - factors[:, SATURATION], zero)) * g
      if CONTRAST in cheap:
        out = out + bcast(torch.where(is_c, 1.0 - factors[:, CONTRAST], zero)) * g.mean(dim=(1, 2, 3), keepdim=True)
    return out.clamp(0.0, 1.0)

  def adjust_hue(x, delta):
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    dc = maxc - minc
    safe = torch.where(dc > 0, dc, torch.ones_like(dc))
    h6 = torch.where(r == maxc, (g - b) / safe,
                     torch.where(g == maxc, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h6 = h6 + 6.0 * delta.view(-1, 1, 1)
    out = []
    for n in (5.0, 3.0, 1.0):
      k = n + h6
      k = k - 6.0 * torch.floor(k / 6.0)
      out.append(maxc - dc * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(out, dim=1).clamp(0.0, 1.0)

  def active_ops(cfg, c):
    ops = []
    if cfg.brightness > 0:
      ops.append(BRIGHTNESS)
    if cfg.contrast > 0:
      ops.append(CONTRAST)
    if c == 3 and cfg.saturation > 0:
      ops.append(SATURATION)
    if c == 3 and cfg.hue > 0:
      ops.append(HUE)
    return ops

  def blur(x, sigma, size):
    r = size // 2
    d = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    wts = torch.exp(-0.5 * (d[None] / sigma[:, None]) ** 2)
    wts = wts / wts.sum(dim=1, keepdim=True)                       # [B, size]
    hh, ww = x.shape[2], x.shape[3]
    xp = F.pad(x, (0, 0, r, r), mode="reflect")
    x = sum(bcast(wts[:, k]) * xp[:, :, k:k + hh] for k in range(size))
    xp = F.pad(x, (r, r, 0, 0), mode="reflect")
    return sum(bcast(wts[:, k]) * xp[:, :, :, k:k + ww] for k in range(size))

  def augment_batch(x, cfg, gen):
    """x: float [B, C, H, W] in [0, 1] -> float [B, C, h, w] in [0, 1]."""
    b, c, h, w = x.shape
    oh, ow = cfg.output_size
    dev = x.device
    u = torch.rand(b, 16, device=dev, generator=gen)
    if cfg.crop_p > 0 or (oh, ow) != (h, w):
      if cfg.crop_p > 0:
        y0, x0, ch, cw = crop_boxes(b, h, w, cfg, dev, gen)
        if cfg.crop_p < 1:
          keep = u[:, 0] < cfg.crop_p
          y0, x0 = torch.where(keep, y0, 0.0), torch.where(keep, x0, 0.0)
          ch, cw = torch.where(keep, ch, float(h)), torch.where(keep, cw, float(w))
      else:
        y0 = x0 = torch.zeros(b, device=dev)
        ch, cw = torch.full((b,), float(h), device=dev), torch.full((b,), float(w), device=dev)
      theta = torch.zeros(b, 2, 3, device=dev)
      theta[:, 0, 0] = cw / w
      theta[:, 0, 2] = (2 * x0 + cw) / w - 1
      theta[:, 1, 1] = ch / h
      theta[:, 1, 2] = (2 * y0 + ch) / h - 1
      grid = F.affine_grid(theta, (b, c, oh, ow), align_corners=False)
      x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.flip_p > 0:
      x = torch.where(bcast(u[:, 1] < cfg.flip_p), x.flip(-1), x)
    ops = active_ops(cfg, c)
    if cfg.jitter_p > 0 and ops:
      uj = torch.rand(b, 8, device=dev, generator=gen)
      order = torch.argsort(uj[:, :4], dim=1)

      def factor(v, s):
        lo_ = max(0.0, 1.0 - s)
        return lo_ + (1.0 + s - lo_) * v

      factors = torch.stack([factor(uj[:, 4], cfg.brightness), factor(uj[:, 5], cfg.contrast),
                             factor(uj[:, 6], cfg.saturation), cfg.hue * (2.0 * uj[:, 7] - 1.0)], dim=1)
      cheap = [k for k in ops if k != HUE]
      y = x
      if HUE not in ops:
        for i in range(4):
          y = affine_jitter(y, order[:, i], factors, cheap)
      else:
        j = torch.argmax((order == HUE).to(torch.int32), dim=1)
        none = torch.full_like(j, -1)
        if cheap:
          for i in range(3):
            y = affine_jitter(y, torch.where(i < j, order[:, i], none), factors, cheap)
        y = adjust_hue(y, factors[:, HUE])
        if cheap:
          for i in range(1, 4):
            y = affine_jitter(y, torch.where(i > j, order[:, i], none), factors, cheap)
      x = y if cfg.jitter_p >= 1 else torch.where(bcast(u[:, 2] < cfg.jitter_p), y, x)
    if cfg.gray_p > 0 and c == 3:
      x = torch.where(bcast(u[:, 3] < cfg.gray_p), gray(x).expand_as(x), x)
    if cfg.blur_p > 0:
      sigma = cfg.blur_sigma[0] + (cfg.blur_sigma[1] - cfg.blur_sigma[0]) * u[:, 4]
      y = blur(x, sigma, cfg.kernel_size)
      x = y if cfg.blur_p >= 1 else torch.where(bcast(u[:, 5] < cfg.blur_p), y, x)
    if cfg.solarize_p > 0:
      x = torch.where(bcast(u[:, 6] < cfg.solarize_p) & (x >= cfg.solarize_threshold), 1.0 - x, x)
    if cfg.noise_p > 0 and cfg.noise_std > 0:
      noise = torch.randn(x.shape, device=dev, generator=gen, dtype=x.dtype)
      x = torch.where(bcast(u[:, 7] < cfg.noise_p), x + cfg.noise_std * noise, x)
    return x.clamp(0.0, 1.0)

  return augment_batch


def unit_schedule_value(cfg, step: int) -> float:
  """Python float of `jaxssl.train.unit_schedule(cfg)(step)` (warm-up + cosine / constant)."""
  total = int(cfg.train.num_steps)
  warmup = int(min(cfg.optim.get("warmup_steps", 0), max(total - 1, 0)))
  if cfg.optim.get("schedule", "cosine") == "constant":
    return min(step / warmup, 1.0) if warmup else 1.0
  if warmup:
    if step < warmup:
      return step / warmup
    frac = min(step - warmup, total - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * frac))
  frac = min(step, total) / max(total, 1)
  return 0.5 * (1 + math.cos(math.pi * frac))


class TorchTrainer:
  """The eager PyTorch SimCLR step: augment two views, forward, NT-Xent, AdamW, online probe."""

  def __init__(self, torch, nn, F, defs, cfg, view_cfgs, in_ch, num_classes, device, bf16, seed):
    self.torch, self.F, self.cfg, self.view_cfgs = torch, F, cfg, view_cfgs
    self.device, self.bf16 = device, bf16
    mean, std = channel_stats(in_ch, cfg.model.encoder_kwargs.get("mean"), cfg.model.encoder_kwargs.get("std"))
    torch.manual_seed(seed)
    if cfg.model.encoder == "convnet_small":
      # The same widths and strides as the jaxssl config (the Fashion-MNIST default
      # downsamples first: strides (2, 2, 2, 1)).
      ek = cfg.model.encoder_kwargs
      enc = defs["ConvNet"](in_ch, widths=tuple(ek.get("widths", (32, 64, 128, 256))),
                            strides=tuple(ek.get("strides", (1, 2, 2, 2))))
    else:
      enc = defs["ResNet18"](in_ch)
    proj = cfg.model.projector
    self.net = defs["SSLNet"](enc, int(proj.hidden_dim), int(proj.out_dim), mean, std).to(device)
    self.net.train()
    self.nt_xent = defs["nt_xent"]
    decay = [p for p in self.net.parameters() if p.ndim > 1]
    no_decay = [p for p in self.net.parameters() if p.ndim <= 1]
    self.lr, self.wd = float(cfg.optim.lr), float(cfg.optim.weight_decay)
    self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.wd},
                                  {"params": no_decay, "weight_decay": 0.0}],
                                 lr=self.lr, betas=(0.9, 0.999), eps=1e-8)
    self.probe = nn.Linear(enc.feature_dim, num_classes).to(device)
    nn.init.zeros_(self.probe.weight)
    nn.init.zeros_(self.probe.bias)
    self.probe_opt = torch.optim.Adam(self.probe.parameters(), lr=float(cfg.train.get("probe_lr", 1e-3)))
    self.temperature = float(cfg.loss.temperature)
    self.augment = make_torch_augment(torch, F)
    self.gen = torch.Generator(device=device)
    self.gen.manual_seed(seed)
    self.step_count = 0

  def views(self, images_u8):
    x = images_u8.permute(0, 3, 1, 2).float() / 255.0
    return (self.augment(x, self.view_cfgs[0], self.gen), self.augment(x, self.view_cfgs[1], self.gen))

  def train_on_views(self, v1, v2, labels, lr=None):
    torch = self.torch
    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
      r1, z1 = self.net(v1)
      r2, z2 = self.net(v2)
    loss = self.nt_xent(z1.float(), z2.float(), self.temperature)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    lr = self.lr * unit_schedule_value(self.cfg, self.step_count) if lr is None else lr
    for g in self.opt.param_groups:
      g["lr"] = lr
    self.opt.step()
    logits = self.probe(r1.detach().float())
    ce = self.F.cross_entropy(logits, labels)
    self.probe_opt.zero_grad(set_to_none=True)
    ce.backward()
    self.probe_opt.step()
    self.step_count += 1
    return loss

  def step(self, images_u8, labels):
    v1, v2 = self.views(images_u8)
    return self.train_on_views(v1, v2, labels)

  def grad_norm(self):
    return float(self.torch.sqrt(sum((p.grad.float() ** 2).sum() for p in self.net.parameters()
                                     if p.grad is not None)))

  # ------------------------------------------------------------ jaxssl <-> torch weights
  def _names(self, prefix, tree):
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
      keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
      out[".".join([prefix] + keys)] = leaf
    return out

  _LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}

  def _to_torch_name(self, name):
    parts = name.split(".")[1:]
    parts[-1] = self._LEAF[parts[-1]]
    return ".".join(parts)

  @staticmethod
  def _to_torch_layout(a):
    a = np.asarray(a, np.float32)
    if a.ndim == 4:
      return a.transpose(3, 2, 0, 1)   # HWIO -> OIHW
    if a.ndim == 2:
      return a.T                       # [in, out] -> [out, in]
    return a

  def load_from_jax(self, params, batch_stats):
    """Copies jaxssl's params / batch_stats (pure dicts) into the torch network."""
    sd = self.net.state_dict()
    flat = {**self._names("p", params), **self._names("s", batch_stats)}
    used = set()
    for name, leaf in flat.items():
      tname = self._to_torch_name(name)
      if tname not in sd:
        raise KeyError(f"no torch tensor {tname!r} for jaxssl leaf {name!r}")
      src = self.torch.from_numpy(np.array(self._to_torch_layout(leaf), dtype=np.float32, copy=True))
      if tuple(src.shape) != tuple(sd[tname].shape):
        raise ValueError(f"{name}: shape {tuple(src.shape)} vs torch {tuple(sd[tname].shape)}")
      sd[tname].copy_(src)
      used.add(tname)
    missing = [k for k, v in sd.items() if k not in used and v.is_floating_point()]
    if missing:
      raise KeyError(f"torch tensors without a jaxssl counterpart: {missing}")

  def compare_with_jax(self, params, batch_stats, lr):
    """Differences torch - jax of the parameters and BatchNorm running statistics.

    The bias of a Linear followed by BatchNorm has an analytically zero gradient (BN
    removes it); its float noise becomes a +-lr step under Adam, so it is reported apart.
    """
    sd = self.net.state_dict()
    flat_p, flat_s = self._names("p", params), self._names("s", batch_stats)
    pre_bn = {n for n in flat_p if re.search(r"\.linears\.\d+\.bias$", n)
              and any(m.startswith(n.replace(".linears.", ".norms.").rsplit(".", 1)[0] + ".")
                      for m in flat_p)}
    out = dict(max_abs_param_diff=0.0, max_abs_param=0.0, n_params=0, n_param_diff_gt_tenth_lr=0,
               max_abs_pre_bn_bias_diff=0.0, max_abs_batch_stat_diff=0.0, max_abs_batch_stat=0.0)
    for name, leaf in {**flat_p, **flat_s}.items():
      t = sd[self._to_torch_name(name)].detach().float().cpu().numpy()
      j = self._to_torch_layout(leaf)
      d = np.abs(t - j)
      if name in pre_bn:
        out["max_abs_pre_bn_bias_diff"] = max(out["max_abs_pre_bn_bias_diff"], float(d.max()))
      elif name.startswith("p."):
        out["max_abs_param_diff"] = max(out["max_abs_param_diff"], float(d.max()))
        out["max_abs_param"] = max(out["max_abs_param"], float(np.abs(j).max()))
        out["n_params"] += int(d.size)
        out["n_param_diff_gt_tenth_lr"] += int((d > 0.1 * lr).sum())
      else:
        out["max_abs_batch_stat_diff"] = max(out["max_abs_batch_stat_diff"], float(d.max()))
        out["max_abs_batch_stat"] = max(out["max_abs_batch_stat"], float(np.abs(j).max()))
    return out


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
  ap.add_argument("--no-check", action="store_true", help="skip the numerical cross-check")
  ap.add_argument("--json", type=str, default=None, help="also write results here")
  args = ap.parse_args(argv)

  try:
    torch, nn, F, defs = torch_side()
  except ImportError:
    print("PyTorch is not installed: `pip install torch==2.13.0` (or `make bench`).")
    return 2
  from jaxssl import parallel, train

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
  setup, state = train.build(cfg, jax.random.PRNGKey(args.seed))
  mesh = parallel.make_mesh(1)
  step_fn = train.jit_train_step(setup, mesh)
  images_np, labels_np = synthetic_batch(batch, setup.image_shape, setup.num_classes, args.seed)
  batch_j = jax.device_put({"image": images_np, "label": labels_np}, parallel.batch_sharding(mesh))
  root = train.augmentation_root_key(cfg)
  n_keys = 2 + args.warmup + args.repeats
  keys = [jax.device_put(jax.random.fold_in(root, s), parallel.replicated(mesh)) for s in range(n_keys)]
  keys_chk = [jax.random.fold_in(root, 100 + s) for s in range(2)]

  trainer = TorchTrainer(torch, nn, F, defs, cfg, setup.view_cfgs, setup.image_shape[-1],
                         setup.num_classes, device, dtype == "bfloat16", args.seed)
  images_t = torch.from_numpy(images_np).to(device)
  labels_t = torch.from_numpy(labels_np).long().to(device)

  load0 = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
  n_params = sum(p.numel() for p in trainer.net.parameters())
  print(f"SimCLR train step, {model} {dict(cfg.model.encoder_kwargs)} + MLP projector {cfg.model.projector.hidden_dim}-"
        f"{cfg.model.projector.out_dim} ({n_params / 1e6:.2f}M params), batch {batch} x "
        f"{'x'.join(map(str, setup.image_shape))} uint8 (2 views each), augment preset "
        f"{cfg.data.augment!r}, NT-Xent tau {cfg.loss.temperature}, AdamW, online probe, {dtype}, "
        f"{'GPU' if gpu else 'CPU'}; diagnostics off (train.log_every={LOG_EVERY})")
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}: {jax.devices()[0].device_kind}), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads"
        f"{', ' + torch.cuda.get_device_name() if gpu else ''}); {os.cpu_count()} CPUs visible, "
        f"{platform.processor() or platform.machine()}; load average {load0[0]:.2f} {load0[1]:.2f} "
        f"{load0[2]:.2f} (other processes share the CPUs)")
  print(f"median of {args.repeats} interleaved rounds after {args.warmup} warm-up steps per side")
  print()

  # ---------------------------------------------------------------- cross-check
  check = None
  if not args.no_check:
    host = jax.device_get(state)
    make_views = jax.jit(augment.make_views, static_argnums=2)
    trainer.load_from_jax(host.params, host.batch_stats)
    st = jax.tree.map(jnp.copy, state).replace(step=jnp.asarray(100, jnp.int32))
    jl, jg, tl, tg = [], [], [], []
    for s, k in enumerate(keys_chk):
      # The step draws its views from the step key itself (jaxssl.train.make_train_step).
      v1, v2 = make_views(k, batch_j["image"], setup.view_cfgs)
      st, m = step_fn(st, batch_j, k)
      m = jax.device_get(m)
      jl.append(float(m["loss"]))
      jg.append(float(m["grad_norm"]))
      tv1 = torch.from_numpy(np.array(v1)).permute(0, 3, 1, 2).contiguous().to(device)
      tv2 = torch.from_numpy(np.array(v2)).permute(0, 3, 1, 2).contiguous().to(device)
      loss = trainer.train_on_views(tv1, tv2, labels_t, lr=float(m["lr"]))
      tl.append(float(loss.detach()))
      tg.append(trainer.grad_norm())
      if s == 0:
        host_chk = jax.device_get(st)
        diffs = trainer.compare_with_jax(host_chk.params, host_chk.batch_stats, float(m["lr"]))
    lr = float(cfg.optim.lr)
    bf16 = dtype == "bfloat16"
    rel = lambda a, b: abs(a - b) / max(abs(b), 1e-12)
    frac = diffs["n_param_diff_gt_tenth_lr"] / diffs["n_params"]
    tests = {
        "loss, step 1": (rel(jl[0], tl[0]), 2e-2 if bf16 else 1e-5),
        "grad norm, step 1": (rel(jg[0], tg[0]), 5e-2 if bf16 else 1e-3),
        "loss, step 2": (rel(jl[1], tl[1]), 2e-2 if bf16 else 1e-3),
        "params after step 1: fraction |d| > lr/10": (frac, 5e-2 if bf16 else 1e-2),
        "BN running stats after step 1: max |d| / max |stat|":
            (diffs["max_abs_batch_stat_diff"] / max(diffs["max_abs_batch_stat"], 1e-12), 2e-2 if bf16 else 1e-2),
    }
    ok = all(v <= t for v, t in tests.values())
    check = dict(jax_losses=jl, torch_losses=tl, jax_grad_norms=jg, torch_grad_norms=tg, lr=lr,
                 after_step_1=diffs, tests={k: dict(value=v, tolerance=t, ok=v <= t) for k, (v, t) in tests.items()},
                 passed=ok)
    print("cross-check: torch loaded with jaxssl's initial weights and BN statistics, trained on the views "
          "jaxssl made, 2 steps from step 100 (lr 1e-3):")
    print(f"  loss       jax {', '.join(f'{v:.6f}' for v in jl)}   torch {', '.join(f'{v:.6f}' for v in tl)}")
    print(f"  grad norm  jax {', '.join(f'{v:.5f}' for v in jg)}   torch {', '.join(f'{v:.5f}' for v in tg)}")
    print(f"  after step 1: max|dparam| {diffs['max_abs_param_diff']:.2e} (lr {lr:g}); "
          f"{diffs['n_param_diff_gt_tenth_lr']} of {diffs['n_params']} entries differ by > lr/10 "
          "(Adam's first step is ~lr*sign(g): entries with float-noise-sized gradients may flip)")
    print(f"                pre-BN Linear biases (zero gradient analytically) max|d| "
          f"{diffs['max_abs_pre_bn_bias_diff']:.2e}; BN running stats max|d| "
          f"{diffs['max_abs_batch_stat_diff']:.2e} of max {diffs['max_abs_batch_stat']:.3f} "
          "(torch averages the unbiased batch variance, flax the biased one)")
    for k, (v, t) in tests.items():
      print(f"  {k:<55}{v:>10.2e}  (tolerance {t:.0e}) {'ok' if v <= t else 'FAIL'}")
    print("  CHECK (same loss, gradients and update):", "PASS" if ok else "FAIL")
    print()
    del st, host_chk
    trainer = TorchTrainer(torch, nn, F, defs, cfg, setup.view_cfgs, setup.image_shape[-1],
                           setup.num_classes, device, dtype == "bfloat16", args.seed)

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
  load1 = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3

  jm, tm = statistics.median(jt), statistics.median(tt)
  header = f"{'side':<26}{'step median [ms]':>18}{'min [ms]':>10}{'images/s':>11}{'last loss':>11}"
  print(header)
  print("-" * len(header))
  print(f"{'jaxssl (jit, XLA)':<26}{1e3 * jm:>18.1f}{1e3 * min(jt):>10.1f}{batch / jm:>11.0f}{jloss:>11.4f}")
  print(f"{'torch (eager)':<26}{1e3 * tm:>18.1f}{1e3 * min(tt):>10.1f}{batch / tm:>11.0f}{tloss:>11.4f}")
  print()
  print(f"throughput ratio jaxssl / torch: {tm / jm:.2f}x   (jaxssl first call incl. compile: {first_s:.1f} s)")
  print(f"load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
  if check is not None:
    print("CHECK (same loss, gradients and update):", "PASS" if check["passed"] else "FAIL")

  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(dict(
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
                       jax_last_loss=jloss, torch_last_loss=tloss),
          check=check, check_passed=None if check is None else check["passed"]), f, indent=2)
  return 0 if (check is None or check["passed"]) else 1


if __name__ == "__main__":
  sys.exit(main())
