"""The plain eager PyTorch reference of jaxssl's SimCLR train step, for
`benchmarks/train_step.py` (which times it against the jitted jaxssl step) and
`tests/test_torch_reference.py` (which checks it against jaxssl numerically).

  torch_side()          the networks (convnet_small, ResNet-18 with the CIFAR stem, the MLP
                        projector) as torch modules, imported lazily: torch is optional.
  make_torch_augment()  a batched torch version of `jaxssl.augment.augment_image`, driven by
                        the same `AugmentConfig`s (same probabilities and strengths, not the
                        same random numbers).
  TorchTrainer          augment two views, forward, NT-Xent, AdamW with the config's
                        warm-up + cosine schedule (`jaxssl.optim.unit_schedule`), the online
                        linear probe (optionally in channels_last memory format); loads
                        jaxssl's initial parameters and BatchNorm statistics
                        (`load_from_jax`) and compares its own with jaxssl's
                        (`compare_with_jax`).

See `benchmarks/train_step.py` for what each part does and how it matches jaxssl.
"""
from __future__ import annotations

import math
import re
from typing import Any

import _common
import jax
import numpy as np

from jaxssl import augment
from jaxssl.models._common import channel_stats

# ----------------------------------------------------------------------------- PyTorch side

def torch_side() -> tuple[Any, Any, Any, dict[str, Any]]:
  """(torch, torch.nn, torch.nn.functional, {"ConvNet", "ResNet18", "SSLNet", "nt_xent"}).

  Raises ImportError without torch.
  """
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

  return torch, nn, F, dict(ConvNet=ConvNet, ResNet18=ResNet18, SSLNet=SSLNet, nt_xent=_common.torch_nt_xent)


# ------------------------------------------------------------------- torch augmentation

BRIGHTNESS, CONTRAST, SATURATION, HUE = augment.BRIGHTNESS, augment.CONTRAST, augment.SATURATION, augment.HUE


def make_torch_augment(torch: Any, F: Any) -> Any:
  """Batched torch version of `jaxssl.augment.augment_image`: (x, AugmentConfig, generator) -> x.

  x is float [B, C, H, W] in [0, 1]; the result is float [B, C, h, w] in [0, 1].
  """

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
    ops = augment._active_jitter_ops(cfg, c)   # the same ops as jaxssl, in the same order
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


class TorchTrainer:
  """The eager PyTorch SimCLR step: augment two views, forward, NT-Xent, AdamW, online probe."""

  def __init__(self, torch: Any, nn: Any, F: Any, defs: dict[str, Any], cfg: Any, view_cfgs: tuple,
               in_ch: int, num_classes: int, device: Any, bf16: bool, seed: int, channels_last: bool = False):
    """The network of `cfg` (convnet_small or resnet18) on `device`, seeded with `seed`.

    channels_last: the network's parameters and the views it is given are in
    `torch.channels_last` memory format (the views are converted inside the step).
    """
    self.torch, self.F, self.cfg, self.view_cfgs = torch, F, cfg, view_cfgs
    self.device, self.bf16 = device, bf16
    self.memory_format = torch.channels_last if channels_last else None
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
    if self.memory_format is not None:
      self.net = self.net.to(memory_format=self.memory_format)
    self.net.train()
    self.nt_xent = defs["nt_xent"]
    decay = [p for p in self.net.parameters() if p.ndim > 1]
    no_decay = [p for p in self.net.parameters() if p.ndim <= 1]
    self.lr, self.wd = float(cfg.optim.lr), float(cfg.optim.weight_decay)
    self.unit_schedule = _common.unit_schedule_values(cfg)
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

  def views(self, images_u8: Any) -> tuple[Any, Any]:
    """Two augmented float views [B, C, h, w] of a uint8 [B, H, W, C] batch."""
    x = images_u8.permute(0, 3, 1, 2).float() / 255.0
    return (self.augment(x, self.view_cfgs[0], self.gen), self.augment(x, self.view_cfgs[1], self.gen))

  def train_on_views(self, v1: Any, v2: Any, labels: Any, lr: float | None = None) -> Any:
    """One step on given views: NT-Xent, AdamW at `lr` (default: the config's schedule), probe.

    Returns the (torch scalar) loss.
    """
    torch = self.torch
    if self.memory_format is not None:
      v1, v2 = v1.contiguous(memory_format=self.memory_format), v2.contiguous(memory_format=self.memory_format)
    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
      r1, z1 = self.net(v1)
      r2, z2 = self.net(v2)
    loss = self.nt_xent(z1.float(), z2.float(), self.temperature)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    lr = self.lr * self.unit_schedule(self.step_count) if lr is None else lr
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

  def step(self, images_u8: Any, labels: Any) -> Any:
    """One full step from a uint8 batch (augmentation included); returns the loss."""
    v1, v2 = self.views(images_u8)
    return self.train_on_views(v1, v2, labels)

  def grad_norm(self) -> float:
    """Global L2 norm of the network's gradients from the last step."""
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

  def load_from_jax(self, params: Any, batch_stats: Any) -> None:
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

  def compare_with_jax(self, params: Any, batch_stats: Any, lr: float) -> dict[str, Any]:
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
