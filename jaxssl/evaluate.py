"""Evaluation of frozen representations: feature extraction, weighted kNN, linear probe.

* `extract_features`: a jitted forward over fixed-size batches (the last one padded, so one
  compilation), optionally data-parallel over a mesh.
* `knn_accuracy`: the weighted kNN classifier of Wu et al. 2018 (InstDisc) as used by
  solo-learn: cosine similarity of L2-normalised features, the top-k training neighbours vote
  for their class with weight exp(sim / T). Several k in one pass. The features may first be
  centred or standardised with the training bank's statistics (`knn_transform`).
* `linear_probe`: multinomial logistic regression on standardised frozen features, trained
  with AdamW + cosine decay; each epoch is one `lax.scan` over shuffled minibatches.
* `evaluate_encoder`: all of it for an encoder, with the raw-pixel and random-init baselines,
  which are cached in the data dir (`jaxssl.eval_cache`), keyed by what determines them.

Accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxssl import data as data_lib
from jaxssl import diagnostics
from jaxssl import eval_cache
from jaxssl import selection
from jaxssl.data.info import KNN_TRANSFORMS   # defined beside the eval splits; re-exported here
from jaxssl.errors import ConfigError, DataError

# --------------------------------------------------------------------------- features


def extract_features(apply_fn: Callable[[jax.Array], jax.Array], images: np.ndarray, *,
                     batch_size: int, mesh: Mesh | None = None) -> np.ndarray:
  """Features `apply_fn(x)` [N, D] float32 of `images` [N, H, W, C].

  `images` may be uint8 (converted to float32 in [0, 1] on the device) or float in [0, 1].
  `apply_fn` maps float32 images [B, H, W, C] to [B, D]. It is jitted once for a batch of
  exactly `batch_size` (the last batch is zero-padded) and reused. With `mesh`, each batch is
  split over all mesh axes (`batch_size` must then divide by the number of devices).
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise DataError(f"extract_features expects images [N, H, W, C], got shape {images.shape}")
  batch_size = int(batch_size)
  if batch_size < 1:
    raise ConfigError(f"batch_size must be positive, got {batch_size}")
  n = len(images)
  sharding = None
  if mesh is not None:
    ndev = int(np.prod(list(mesh.shape.values())))
    if batch_size % ndev:
      raise ConfigError(f"batch_size={batch_size} is not divisible by the {ndev} devices of the mesh; "
                        f"use a multiple of {ndev}.")
    sharding = NamedSharding(mesh, P(tuple(mesh.axis_names)))
  is_int = np.issubdtype(images.dtype, np.integer)

  @jax.jit
  def fwd(x):
    x = x.astype(jnp.float32) / 255.0 if is_int else x.astype(jnp.float32)
    y = apply_fn(x)
    if y.ndim != 2:
      raise DataError(f"apply_fn must return [batch, dim] features, got shape {y.shape}")
    return y.astype(jnp.float32)

  outs = []
  for start in range(0, n, batch_size):
    xb = images[start:start + batch_size]
    m = len(xb)
    if m < batch_size:
      xb = np.concatenate([xb, np.zeros((batch_size - m,) + xb.shape[1:], xb.dtype)])
    xb = jax.device_put(xb, sharding) if sharding is not None else jnp.asarray(xb)
    outs.append((fwd(xb), m))          # dispatch asynchronously; fetch at the end
  if not outs:
    raise DataError("extract_features got no images")
  return np.concatenate([np.asarray(jax.device_get(y))[:m] for y, m in outs], axis=0)


# --------------------------------------------------------------------------- kNN




def knn_transform(train_feats: np.ndarray, test_feats: np.ndarray, kind: str = "none"
                  ) -> tuple[np.ndarray, np.ndarray]:
  r"""The features [N, D] the kNN classifier compares, before their L2 normalisation.

      none:         x
      centre:       x - mu                      mu = mean of the training bank (per feature)
      standardise:  (x - mu) / max(sigma, 1e-6 max_j sigma_j)

  The statistics come from the training bank only (float64), so no test image informs them.
  Post-ReLU pooled features all lie in the positive orthant, where every pair has a cosine
  similarity near 0.9 and the exp(sim / T) votes of the neighbours are nearly uniform;
  centring removes that common direction.
  """
  if kind not in KNN_TRANSFORMS:
    raise ConfigError(f"kNN transform must be one of {', '.join(KNN_TRANSFORMS)}, got {kind!r}")
  train_feats = np.asarray(train_feats, np.float32)
  test_feats = np.asarray(test_feats, np.float32)
  if kind == "none":
    return train_feats, test_feats
  mean = train_feats.mean(0, dtype=np.float64)                              # [D]
  scale = np.ones_like(mean)
  if kind == "standardise":
    std = train_feats.std(0, dtype=np.float64)
    scale = np.maximum(std, 1e-6 * max(float(std.max()), 1e-30))
  return (((train_feats - mean) / scale).astype(np.float32),
          ((test_feats - mean) / scale).astype(np.float32))


def _l2n(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("ks", "num_classes"))
def _knn_chunk(train_n: jax.Array, train_labels: jax.Array, test_chunk: jax.Array, *,
               ks: tuple[int, ...], temperatures: jax.Array, num_classes: int) -> jax.Array:
  """Predictions [len(temperatures), len(ks), C] for a chunk of normalised test features; the
  neighbours are found once for every temperature."""
  sims = jnp.dot(test_chunk, train_n.T, precision=jax.lax.Precision.HIGHEST)   # [C, N]
  top_sims, top_idx = jax.lax.top_k(sims, max(ks))                             # descending
  # exp((s - s_max) / T): the same vote ratios as exp(s / T), which overflows float32 for
  # T < 1/88 (every weight inf, the argmax then meaningless); the largest weight is 1.
  # (s_max as a max over the row, not the slice top_sims[:, :1]: XLA:CPU compiled that slice
  # of top_k's output into a much slower program.)
  shifted = top_sims - jnp.max(top_sims, axis=1, keepdims=True)                # [C, kmax] <= 0
  weights = jnp.exp(shifted[None] / temperatures[:, None, None])               # [nT, C, kmax]
  onehot = jax.nn.one_hot(train_labels[top_idx], num_classes, dtype=jnp.float32)  # [C, kmax, L]
  # The votes of the first k neighbours for each k at once, as one contraction with the mask
  # first_k[i, j] = (j < ks[i]).
  first_k = (jnp.arange(max(ks))[None, :] < jnp.asarray(ks)[:, None]).astype(jnp.float32)  # [len(ks), kmax]
  votes = jnp.einsum("tcj,cjl,kj->tkcl", weights, onehot, first_k,
                     precision=jax.lax.Precision.HIGHEST)                      # [nT, len(ks), C, L]
  return jnp.argmax(votes, axis=-1)                                            # [nT, len(ks), C]


def knn_predict_temperatures(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray, *,
                             ks: Sequence[int] = (200,), temperatures: Sequence[float] = (0.1,),
                             num_classes: int, chunk_size: int = 256, transform: str = "none"
                             ) -> dict[float, dict[int, np.ndarray]]:
  """Weighted-kNN class predictions {T: {k: [N_test] int}} for several temperatures at the cost
  of one (the neighbours do not depend on T); see `knn_accuracy`."""
  train_feats = np.asarray(train_feats, np.float32)
  test_feats = np.asarray(test_feats, np.float32)
  train_labels = np.asarray(train_labels)
  ks = tuple(int(k) for k in ks)
  temps = [float(t) for t in temperatures]
  if train_feats.ndim != 2 or test_feats.ndim != 2 or train_feats.shape[1] != test_feats.shape[1]:
    raise DataError(f"kNN needs features [N, D] with the same D, got {train_feats.shape} and "
                    f"{test_feats.shape}")
  if len(train_labels) != len(train_feats):
    raise DataError(f"{len(train_labels)} train labels for {len(train_feats)} train features")
  if not ks or min(ks) < 1 or max(ks) > len(train_feats):
    raise ConfigError(f"k must be in 1..{len(train_feats)} (the number of training points), got {ks}")
  if not temps or not all(t > 0 for t in temps):
    raise ConfigError(f"kNN temperature must be > 0, got {temps if len(temps) != 1 else temps[0]}")
  if int(num_classes) < 1 or train_labels.min() < 0 or train_labels.max() >= int(num_classes):
    raise DataError(f"labels must lie in [0, num_classes={num_classes})")
  if not np.all(np.isfinite(train_feats)) or not np.all(np.isfinite(test_feats)):
    raise DataError("kNN: features contain NaN or Inf")
  train_feats, test_feats = knn_transform(train_feats, test_feats, transform)
  train_n = _l2n(jnp.asarray(train_feats))
  tl = jnp.asarray(train_labels, jnp.int32)
  test_n = np.asarray(_l2n(jnp.asarray(test_feats)))
  n = len(test_n)
  chunk = max(1, min(int(chunk_size), n))
  t_arr = jnp.asarray(temps, jnp.float32)
  preds = []
  for s in range(0, n, chunk):
    c = test_n[s:s + chunk]
    m = len(c)
    if m < chunk:
      c = np.concatenate([c, np.zeros((chunk - m, c.shape[1]), np.float32)])
    preds.append((_knn_chunk(train_n, tl, jnp.asarray(c), ks=ks, temperatures=t_arr,
                             num_classes=int(num_classes)), m))
  out = np.concatenate([np.asarray(p)[:, :, :m] for p, m in preds], axis=2)   # [nT, len(ks), N_test]
  return {t: {k: out[j, i] for i, k in enumerate(ks)} for j, t in enumerate(temps)}


def knn_predict(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray, *,
                ks: Sequence[int] = (200,), temperature: float = 0.1, num_classes: int,
                chunk_size: int = 256, transform: str = "none") -> dict[int, np.ndarray]:
  """Weighted-kNN class predictions {k: [N_test] int} (see `knn_accuracy`)."""
  out = knn_predict_temperatures(train_feats, train_labels, test_feats, ks=ks, temperatures=(temperature,),
                                 num_classes=num_classes, chunk_size=chunk_size, transform=transform)
  return next(iter(out.values()))


def knn_accuracy(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                 test_labels: np.ndarray, *, k: int = 200, temperature: float = 0.1,
                 num_classes: int, ks: Sequence[int] | None = None,
                 chunk_size: int = 256, transform: str = "none") -> float | dict[int, float]:
  """Weighted kNN accuracy (InstDisc / solo-learn).

  Cosine similarity of L2-normalised features (after `knn_transform(..., transform)`); each
  of the k most similar training points votes for its class with weight
  exp(sim / temperature); the class with the largest total wins. Test points are processed
  in chunks of `chunk_size` (memory chunk_size x N_train).

  Returns a float for `k`, or {k: accuracy} for every k in `ks` when `ks` is given (one pass).
  """
  test_labels = np.asarray(test_labels)
  if len(test_labels) != len(test_feats):
    raise DataError(f"{len(test_labels)} test labels for {len(test_feats)} test features")
  want = tuple(ks) if ks is not None else (k,)
  preds = knn_predict(train_feats, train_labels, test_feats, ks=want, temperature=temperature,
                      num_classes=num_classes, chunk_size=chunk_size, transform=transform)
  acc = {kk: float(np.mean(p == test_labels)) for kk, p in preds.items()}
  return acc if ks is not None else acc[int(k)]


# --------------------------------------------------------------------------- linear probe


@functools.partial(jax.jit, static_argnames=("epochs", "batch_size", "num_classes"))
def _train_probe(x: jax.Array, y: jax.Array, key: jax.Array, *, epochs: int, batch_size: int,
                 num_classes: int, lr: jax.Array, weight_decay: jax.Array):
  n, d = x.shape
  steps_per_epoch = n // batch_size
  total = epochs * steps_per_epoch
  sched = optax.cosine_decay_schedule(1.0, total)
  tx = optax.adamw(lambda s: lr * sched(s), weight_decay=weight_decay)
  params = {"w": jnp.zeros((d, num_classes), jnp.float32), "b": jnp.zeros((num_classes,), jnp.float32)}
  opt = tx.init(params)

  def loss_fn(p, xb, yb):
    logits = xb @ p["w"] + p["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  def step(carry, idx):
    p, o = carry
    loss, g = jax.value_and_grad(loss_fn)(p, x[idx], y[idx])
    upd, o = tx.update(g, o, p)
    return (optax.apply_updates(p, upd), o), loss

  def epoch(carry, k):
    perm = jax.random.permutation(k, n)[: steps_per_epoch * batch_size]
    carry, losses = jax.lax.scan(step, carry, perm.reshape(steps_per_epoch, batch_size))
    return carry, losses.mean()

  (params, _), losses = jax.lax.scan(epoch, (params, opt), jax.random.split(key, epochs))
  return params, losses


@jax.jit
def _probe_accuracy(params, x, y):
  pred = jnp.argmax(x @ params["w"] + params["b"], axis=-1)
  return jnp.mean((pred == y).astype(jnp.float32))


def linear_probe(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                 test_labels: np.ndarray, *, num_classes: int, epochs: int = 100,
                 batch_size: int = 1024, lr: float = 1e-3, weight_decay: float = 5e-4,
                 seed: int = 0) -> dict[str, float]:
  """Linear classifier on frozen features: {"test_accuracy", "train_accuracy", "train_loss"}.

  Features are standardised with the training mean and std (std floored at 1e-6 x the largest
  std, so constant features stay ~0). A linear layer (zero-initialised) is trained with
  softmax cross-entropy and AdamW (`lr`, decoupled `weight_decay`), learning rate cosine-decayed
  to 0 over `epochs` passes of shuffled minibatches of `batch_size` (the remainder of each
  shuffled epoch is dropped). The whole run is one compiled program.
  """
  xtr = np.asarray(train_feats, np.float32)
  xte = np.asarray(test_feats, np.float32)
  ytr = np.asarray(train_labels)
  yte = np.asarray(test_labels)
  if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
    raise DataError(f"linear_probe needs features [N, D] with the same D, got {xtr.shape}, {xte.shape}")
  if len(ytr) != len(xtr) or len(yte) != len(xte):
    raise DataError("linear_probe: the number of labels and features differ")
  if int(num_classes) < 2 or ytr.min() < 0 or ytr.max() >= int(num_classes):
    raise DataError(f"labels must lie in [0, num_classes={num_classes}) with num_classes >= 2")
  if int(epochs) < 1 or not lr > 0 or weight_decay < 0:
    raise ConfigError(f"linear_probe needs epochs >= 1, lr > 0, weight_decay >= 0; got "
                      f"{epochs}, {lr}, {weight_decay}")
  if not np.all(np.isfinite(xtr)) or not np.all(np.isfinite(xte)):
    raise DataError("linear_probe: features contain NaN or Inf")
  bs = max(1, min(int(batch_size), len(xtr)))
  mean = xtr.mean(0, dtype=np.float64)
  std = xtr.std(0, dtype=np.float64)
  std = np.maximum(std, 1e-6 * max(float(std.max()), 1e-30))
  xtr_s = jnp.asarray(((xtr - mean) / std).astype(np.float32))
  xte_s = jnp.asarray(((xte - mean) / std).astype(np.float32))
  ytr_j, yte_j = jnp.asarray(ytr, jnp.int32), jnp.asarray(yte, jnp.int32)
  params, losses = _train_probe(xtr_s, ytr_j, jax.random.PRNGKey(seed), epochs=int(epochs),
                                batch_size=bs, num_classes=int(num_classes),
                                lr=jnp.float32(lr), weight_decay=jnp.float32(weight_decay))
  return {"test_accuracy": float(_probe_accuracy(params, xte_s, yte_j)),
          "train_accuracy": float(_probe_accuracy(params, xtr_s, ytr_j)),
          "train_loss": float(losses[-1])}


# --------------------------------------------------------------------------- evaluation of an encoder

EncodeFn = Callable[[jax.Array], Mapping[str, jax.Array]]


def representation_metrics(z: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """Uniformity (-L_unif, t=2), tolerance, local separation (k = 10) and effective rank of
  embeddings (Wang & Liu; Koromilas), and their RMS norm (`diagnostics.embedding_norm`: a
  collapse to zero, Bao)."""
  z = jnp.asarray(z)
  y = jnp.asarray(labels)
  return {"uniformity": float(-diagnostics.uniformity(z, t=2.0)),
          "tolerance": float(diagnostics.tolerance(z, y)),
          "local_separation": float(diagnostics.local_separation(z, y, k=min(10, len(z) - 1))),
          "effective_rank": float(diagnostics.effective_rank(diagnostics.spectrum(z))),
          "norm": float(diagnostics.embedding_norm(z))}


def evaluate_features(train_feats, train_labels, test_feats, test_labels, *, num_classes: int,
                      ks=(20, 200), knn_temperature: float = 0.1, knn_transform: str = "none",
                      probe_epochs: int = 100, seed: int = 0) -> dict[str, float]:
  """Weighted kNN (each k) and linear-probe test accuracy (percent) of fixed features."""
  knn = knn_accuracy(train_feats, train_labels, test_feats, test_labels, ks=tuple(ks),
                     temperature=knn_temperature, num_classes=num_classes, transform=knn_transform)
  lin = linear_probe(train_feats, train_labels, test_feats, test_labels, num_classes=num_classes,
                     epochs=probe_epochs, seed=seed)
  out = {f"knn_{k}": 100.0 * float(v) for k, v in dict(knn).items()}
  out["linear_probe"] = 100.0 * float(lin["test_accuracy"])
  return out


def label_free_criteria(encode_fn: EncodeFn, train_feats: np.ndarray, feature_dim: int, images: np.ndarray,
                        view_cfgs: Sequence[Any], *, num_images: int, num_views: int, seed: int) -> dict[str, float]:
  """RankMe and alpha-ReQ of the training-split features, and LiDAR of `num_views` augmentations
  of `num_images` training images, for r and z: model selection without labels
  (`jaxssl.selection`; no label is read here)."""
  out = {}
  for which, feats in (("r", train_feats[:, :feature_dim]), ("z", train_feats[:, feature_dim:])):
    f = jnp.asarray(feats)
    out[f"rankme_{which}"] = float(selection.rankme(f))
    out[f"alpha_req_{which}"] = float(selection.alpha_req(f))

  @jax.jit
  def views(key, x):
    def embed(v):
      o = encode_fn(v)
      return jnp.concatenate([o["r"], o["z"]], axis=-1)      # [n, F + D]
    return selection.lidar_views(key, x, embed, num_views=num_views, view_cfg=tuple(view_cfgs))

  n = min(int(num_images), len(images))
  e = views(jax.random.PRNGKey(seed + 20_000), jnp.asarray(images[:n]))   # [n, q, F + D]
  out["lidar_r"] = float(selection.lidar(e[..., :feature_dim]))
  out["lidar_z"] = float(selection.lidar(e[..., feature_dim:]))
  return out


EvalData = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]   # uint8 xtr, int ytr, xte, yte


def _feature_options(cfg: Any) -> dict[str, Any]:
  """The keyword arguments of `evaluate_features` that `cfg` sets (`knn_transform` "none" for a
  config saved before the field existed)."""
  ec = cfg.eval
  return dict(num_classes=data_lib.dataset_info(cfg.data.name).num_classes, ks=tuple(ec.knn_k),
              knn_temperature=float(ec.knn_temperature), knn_transform=str(ec.get("knn_transform", "none")),
              probe_epochs=int(ec.probe_epochs), seed=int(cfg.seed))


def encoder_results(cfg: Any, fn: EncodeFn, arrays: EvalData, *,
                    view_cfgs: Sequence[Any] | None = None) -> dict[str, float]:
  """kNN, linear probe and representation metrics of `fn`'s r (and z) on train -> test
  (`evaluate_encoder` without the baselines); with `view_cfgs` the label-free criteria too."""
  ec = cfg.eval
  xtr, ytr, xte, yte = arrays
  bs = int(ec.batch_size)

  def heads(x):
    out = fn(x)
    return jnp.concatenate([out["r"], out["z"]], axis=-1)    # [B, F + D]
  fdim = int(jax.eval_shape(fn, jax.ShapeDtypeStruct((1,) + tuple(xtr.shape[1:]), jnp.float32))["r"].shape[-1])
  head_fn = jax.jit(heads)
  ftr = extract_features(head_fn, xtr, batch_size=bs)
  fte = extract_features(head_fn, xte, batch_size=bs)
  res = evaluate_features(ftr[:, :fdim], ytr, fte[:, :fdim], yte, **_feature_options(cfg))
  if view_cfgs is not None:
    res.update(label_free_criteria(fn, ftr, fdim, xtr, view_cfgs, num_images=ec.lidar_images,
                                   num_views=ec.lidar_views, seed=int(cfg.seed)))
  n = min(len(fte), 5000)
  res.update({f"{k}_r": v for k, v in representation_metrics(fte[:n, :fdim], yte[:n]).items()})
  res.update({f"{k}_z": v for k, v in representation_metrics(fte[:n, fdim:], yte[:n]).items()})
  return res


def compute_baselines(cfg: Any, arrays: EvalData, random_encode_fn: EncodeFn | None, *,
                      view_cfgs: Sequence[Any] | None = None) -> dict[str, dict[str, float]]:
  """{"raw_pixels": ..., "random_init": ...} (the latter with `random_encode_fn`): the raw pixels
  in [0, 1] as features, and `encoder_results` of the network at random initialisation."""
  xtr, ytr, xte, yte = arrays
  raw_tr = xtr.reshape(len(xtr), -1).astype(np.float32) / 255.0     # [N, H * W * C]
  raw_te = xte.reshape(len(xte), -1).astype(np.float32) / 255.0
  out = {"raw_pixels": evaluate_features(raw_tr, ytr, raw_te, yte, **_feature_options(cfg))}
  if random_encode_fn is not None:
    out["random_init"] = encoder_results(cfg, random_encode_fn, arrays, view_cfgs=view_cfgs)
  return out


def evaluate_encoder(cfg: Any, encode_fn: EncodeFn, *, random_encode_fn: EncodeFn | None = None,
                     baselines: bool | None = None, view_cfgs: Sequence[Any] | None = None,
                     cache_baselines: bool = True) -> dict[str, Any]:
  """kNN + linear probe of an encoder's backbone features r on train -> test, plus
  representation metrics of z and r on the test set, and (optionally) the raw-pixel and
  random-init baselines. Accuracies in percent.

  Args:
    cfg: the run's config (data, eval and seed fields are read).
    encode_fn: float images [B, H, W, C] in [0, 1] -> {"r": [B, F], "z": [B, D]}.
    random_encode_fn: the same network at random initialisation (the baseline).
    baselines: None reads `config.eval.baselines`.
    view_cfgs: the run's augmentation; with it, the label-free criteria (RankMe, alpha-ReQ,
      LiDAR; `label_free_criteria`) are reported too.
    cache_baselines: reuse the baselines from the data dir's cache (`jaxssl.eval_cache`),
      which takes `random_encode_fn` to be the network of config.method / config.model at
      random initialisation from config.seed, as `jaxssl.run` builds it. False computes them.
  """
  baselines = cfg.eval.baselines if baselines is None else baselines
  kw = dict(data_dir=cfg.data.data_dir, idx_dir=cfg.data.idx_dir)
  train_split, test_split = data_lib.eval_splits(cfg)
  arrays = (*data_lib.load_arrays(cfg.data.name, train_split, **kw),
            *data_lib.load_arrays(cfg.data.name, test_split, **kw))
  results: dict[str, Any] = {"model": encoder_results(cfg, encode_fn, arrays, view_cfgs=view_cfgs)}
  if baselines:
    def compute():   # looked up at call time: tests count the calls
      return compute_baselines(cfg, arrays, random_encode_fn, view_cfgs=view_cfgs)
    if cache_baselines:
      key = eval_cache.baseline_key(cfg, arrays, random_init=random_encode_fn is not None, view_cfgs=view_cfgs)
      results.update(eval_cache.cached_baselines(cfg, key, compute))
    else:
      results.update(compute())
  return results


def format_results(results: dict) -> str:
  """A small table: rows = model / baselines, columns = linear probe and kNN accuracies."""
  rows = [(name, r) for name, r in results.items() if isinstance(r, dict)]
  cols = [c for c in ("linear_probe", "knn_200", "knn_20") if any(c in r for _, r in rows)]
  head = f"{'':14s}" + "".join(f"{c:>14s}" for c in cols)
  lines = [f"evaluation at step {results.get('step')} (test accuracy, %)", head]
  for name, r in rows:
    lines.append(f"{name:14s}" + "".join(f"{r.get(c, float('nan')):14.2f}" for c in cols))
  return "\n".join(lines)
