"""Weighted kNN vs a NumPy brute force, linear probe vs known optima, feature extraction."""
from __future__ import annotations

import gzip
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxssl import evaluate
from jaxssl.errors import ConfigError, DataError

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"


def _np_knn(train, train_labels, test, *, k, temperature, num_classes):
  """Brute-force weighted kNN in float64 (InstDisc / solo-learn rule)."""
  tr = train / np.linalg.norm(train, axis=1, keepdims=True)
  te = test / np.linalg.norm(test, axis=1, keepdims=True)
  preds = []
  for q in te:
    sims = tr @ q
    idx = np.argsort(-sims)[:k]
    votes = np.zeros(num_classes)
    for i in idx:
      votes[train_labels[i]] += math.exp(sims[i] / temperature)
    preds.append(int(np.argmax(votes)))
  return np.asarray(preds)


def _blobs(n, d, c, seed, spread=1.0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(c, d)) * spread
  y = rng.integers(0, c, n)
  return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y.astype(np.int32)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_knn_matches_numpy_bruteforce(temperature):
  # One draw (shared class centres), split into train and test; 130 test points: chunks of
  # 32 leave a padded remainder.
  x, y = _blobs(530, 8, 5, seed=0, spread=0.7)
  xtr, ytr, xte, yte = x[:400], y[:400], x[400:], y[400:]
  ks = (1, 5, 20, 200)
  preds = evaluate.knn_predict(xtr, ytr, xte, ks=ks, temperature=temperature, num_classes=5, chunk_size=32)
  for k in ks:
    ref = _np_knn(xtr, ytr, xte, k=k, temperature=temperature, num_classes=5)
    np.testing.assert_array_equal(preds[k], ref, err_msg=f"k={k}")
  acc = evaluate.knn_accuracy(xtr, ytr, xte, yte, ks=ks, temperature=temperature, num_classes=5,
                              chunk_size=32)
  assert set(acc) == set(ks)
  for k in ks:
    assert acc[k] == pytest.approx(np.mean(preds[k] == yte))
  single = evaluate.knn_accuracy(xtr, ytr, xte, yte, k=20, temperature=temperature, num_classes=5)
  assert isinstance(single, float) and single == pytest.approx(acc[20])
  assert 0.3 < acc[20] <= 1.0   # clusters are partly separable: well above chance (0.2)


def test_knn_is_scale_invariant_and_k1_is_nearest_neighbour():
  xtr, ytr = _blobs(200, 6, 4, seed=2)
  xte, _ = _blobs(50, 6, 4, seed=3)
  scale = np.random.default_rng(0).uniform(0.1, 10, (200, 1)).astype(np.float32)
  a = evaluate.knn_predict(xtr, ytr, xte, ks=(1, 10), num_classes=4)
  b = evaluate.knn_predict(xtr * scale, ytr, xte * 3.0, ks=(1, 10), num_classes=4)
  np.testing.assert_array_equal(a[1], b[1])
  np.testing.assert_array_equal(a[10], b[10])
  cos = (xte / np.linalg.norm(xte, axis=1, keepdims=True)) @ (xtr / np.linalg.norm(xtr, axis=1, keepdims=True)).T
  np.testing.assert_array_equal(a[1], ytr[np.argmax(cos, axis=1)])


@pytest.mark.parametrize("transform", ["centre", "standardise"])
def test_knn_transform_matches_numpy_reference(transform):
  # Positive-orthant features with a large common offset (like post-ReLU pooled features) and
  # unequal feature scales: the transform changes the neighbours, and must equal the NumPy
  # statistics of the training bank alone (the test points never inform them).
  x, y = _blobs(530, 8, 5, seed=4, spread=0.7)
  x = (np.abs(x) + 6.0) * np.linspace(0.2, 5.0, 8, dtype=np.float32)
  xtr, ytr, xte = x[:400], y[:400], x[400:]
  mu = xtr.astype(np.float64).mean(0)
  sd = xtr.astype(np.float64).std(0) if transform == "standardise" else np.ones(8)
  ref_tr, ref_te = (xtr - mu) / sd, (xte - mu) / sd
  got_tr, got_te = evaluate.knn_transform(xtr, xte, transform)
  np.testing.assert_allclose(got_tr, ref_tr, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_te, ref_te, rtol=1e-5, atol=1e-5)
  preds = evaluate.knn_predict(xtr, ytr, xte, ks=(1, 20, 200), temperature=0.07, num_classes=5,
                               chunk_size=64, transform=transform)
  plain = evaluate.knn_predict(xtr, ytr, xte, ks=(20,), temperature=0.07, num_classes=5)
  for k in (1, 20, 200):
    ref = _np_knn(ref_tr, ytr, ref_te, k=k, temperature=0.07, num_classes=5)
    np.testing.assert_array_equal(preds[k], ref, err_msg=f"k={k}")
  assert np.mean(preds[20] != plain[20]) > 0.05     # the offset made "none" compare other neighbours
  same_tr, same_te = evaluate.knn_transform(xtr, xte, "none")
  np.testing.assert_array_equal(same_te, xte)
  with pytest.raises(ConfigError, match="transform"):
    evaluate.knn_transform(xtr, xte, "whiten")
  with pytest.raises(DataError, match="NaN"):
    evaluate.knn_accuracy(np.where(xtr > 30, np.nan, xtr), ytr, xte, y[400:], k=5, num_classes=5)


def test_knn_at_a_small_temperature_does_not_overflow():
  # exp(sim / T) overflows float32 for T < 1/88; the votes must still be those of the float64
  # rule with the shift exp((sim - max sim) / T), and at T -> 0 the nearest neighbour decides.
  x, y = _blobs(530, 8, 5, seed=5, spread=0.7)
  xtr, ytr, xte = x[:400], y[:400], x[400:]
  tr = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
  te = xte / np.linalg.norm(xte, axis=1, keepdims=True)
  for temperature in (0.005, 0.001):
    preds = evaluate.knn_predict(xtr, ytr, xte, ks=(1, 200), temperature=temperature, num_classes=5)
    sims = te.astype(np.float64) @ tr.T.astype(np.float64)
    ref = []
    for row in sims:
      idx = np.argsort(-row)[:200]
      w = np.exp((row[idx] - row[idx[0]]) / temperature)
      ref.append(int(np.argmax(np.bincount(ytr[idx], weights=w, minlength=5))))
    top2 = np.sort(sims, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-4           # no float32 near-tie at the top
    np.testing.assert_array_equal(preds[200][clear], np.asarray(ref)[clear])
    assert np.mean(preds[200] == preds[1]) > 0.9, temperature


def test_knn_over_several_temperatures_equals_one_temperature_at_a_time():
  x, y = _blobs(530, 8, 5, seed=6, spread=0.7)
  xtr, ytr, xte = x[:400], y[:400], x[400:]
  temps = (0.02, 0.1, 0.5)
  grid = evaluate.knn_predict_temperatures(xtr, ytr, xte, ks=(5, 200), temperatures=temps, num_classes=5,
                                           chunk_size=48, transform="centre")
  assert list(grid) == list(temps)
  ref_tr, ref_te = evaluate.knn_transform(xtr, xte, "centre")
  for t in temps:
    one = evaluate.knn_predict(xtr, ytr, xte, ks=(5, 200), temperature=t, num_classes=5, chunk_size=48,
                               transform="centre")
    for k in (5, 200):
      np.testing.assert_array_equal(grid[t][k], one[k])
      np.testing.assert_array_equal(grid[t][k], _np_knn(ref_tr, ytr, ref_te, k=k, temperature=t, num_classes=5))


def test_knn_errors():
  xtr, ytr = _blobs(20, 4, 2, seed=0)
  with pytest.raises(ConfigError):
    evaluate.knn_accuracy(xtr, ytr, xtr, ytr, k=21, num_classes=2)
  with pytest.raises(ConfigError):
    evaluate.knn_accuracy(xtr, ytr, xtr, ytr, k=5, temperature=0.0, num_classes=2)
  with pytest.raises(DataError):
    evaluate.knn_accuracy(xtr, ytr, xtr[:, :3], ytr, k=5, num_classes=2)
  with pytest.raises(DataError):
    evaluate.knn_accuracy(xtr, ytr + 5, xtr, ytr, k=5, num_classes=2)


def test_linear_probe_separable_data():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(20, 4))
  x = rng.normal(size=(3000, 20)).astype(np.float32) * 3.0 + 5.0     # offset/scale: standardised inside
  scores = (x - 5.0) / 3.0 @ w
  y = np.argmax(scores, axis=1)                                          # linearly separable labels
  top2 = np.sort(scores, axis=1)[:, -2:]
  keep = (top2[:, 1] - top2[:, 0]) > 0.5                                 # with a margin
  x, y = x[keep], y[keep]
  assert len(x) > 2500
  res = evaluate.linear_probe(x[:2000], y[:2000], x[2000:], y[2000:], num_classes=4, epochs=60,
                              batch_size=128, lr=1e-2, weight_decay=0.0)
  assert res["train_accuracy"] > 0.99, res
  assert res["test_accuracy"] > 0.97, res


def test_linear_probe_reaches_bayes_accuracy_on_gaussians():
  # Two Gaussian classes N(+-mu, I): the Bayes-optimal (linear) rule has accuracy Phi(|mu|).
  rng = np.random.default_rng(1)
  d, n = 10, 20000
  mu = np.zeros(d)
  mu[:3] = [0.5, -0.4, 0.3]
  y = rng.integers(0, 2, n)
  x = (rng.normal(size=(n, d)) + np.where(y[:, None] == 1, mu, -mu)).astype(np.float32)
  bayes = 0.5 * (1 + math.erf(np.linalg.norm(mu) / math.sqrt(2)))
  res = evaluate.linear_probe(x[:10000], y[:10000], x[10000:], y[10000:], num_classes=2, epochs=20,
                              lr=1e-2)   # 180 AdamW steps: the default lr 1e-3 would underfit
  # 10k test points: binomial s.e. ~0.004
  assert abs(res["test_accuracy"] - bayes) < 0.015, (res, bayes)
  assert res["test_accuracy"] <= bayes + 0.015


def test_linear_probe_errors():
  x, y = _blobs(50, 4, 3, seed=0)
  with pytest.raises(DataError):
    evaluate.linear_probe(x, y, x[:, :2], y, num_classes=3)
  with pytest.raises(ConfigError):
    evaluate.linear_probe(x, y, x, y, num_classes=3, lr=0.0)
  bad = x.copy()
  bad[0, 0] = np.nan
  with pytest.raises(DataError):
    evaluate.linear_probe(bad, y, x, y, num_classes=3)


def test_extract_features_batches_pads_and_compiles_once():
  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, (53, 4, 4, 2), dtype=np.uint8)
  w = rng.normal(size=(32, 3)).astype(np.float32)
  traces = []

  def apply_fn(x):
    traces.append(x.shape)
    return x.reshape(x.shape[0], -1) @ w

  feats = evaluate.extract_features(apply_fn, imgs, batch_size=16)
  ref = (imgs.reshape(53, -1).astype(np.float32) / 255.0) @ w
  assert feats.shape == (53, 3) and feats.dtype == np.float32
  np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=1e-5)
  assert traces == [(16, 4, 4, 2)]   # one trace for 4 batches (last one padded)
  # float input in [0, 1] is used as is
  feats_f = evaluate.extract_features(apply_fn, imgs.astype(np.float32) / 255.0, batch_size=64)
  np.testing.assert_allclose(feats_f, ref, rtol=1e-5, atol=1e-5)


def test_extract_features_on_mesh():
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 devices")
  mesh = Mesh(np.asarray(jax.devices()[:8]), ("data",))
  imgs = np.random.default_rng(1).integers(0, 256, (50, 3, 3, 1), dtype=np.uint8)
  fn = lambda x: jnp.stack([x.mean(axis=(1, 2, 3)), x.max(axis=(1, 2, 3))], axis=1)
  feats = evaluate.extract_features(fn, imgs, batch_size=16, mesh=mesh)
  x = imgs.astype(np.float32) / 255.0
  np.testing.assert_allclose(feats, np.stack([x.mean((1, 2, 3)), x.max((1, 2, 3))], 1), rtol=1e-6)
  with pytest.raises(ConfigError, match="divisible"):
    evaluate.extract_features(fn, imgs, batch_size=12, mesh=mesh)


def _load_fmnist(split):
  pre = "train" if split == "train" else "t10k"
  with gzip.open(os.path.join(FMNIST_DIR, f"{pre}-images-idx3-ubyte.gz")) as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28 * 28)
  with gzip.open(os.path.join(FMNIST_DIR, f"{pre}-labels-idx1-ubyte.gz")) as f:
    y = np.frombuffer(f.read(), np.uint8, offset=8)
  return x.astype(np.float32) / 255.0, y.astype(np.int32)


@pytest.mark.slow
def test_raw_pixel_baselines_fashion_mnist():
  """PAPERS: raw pixels give ~84% (linear) and ~78-80% (weighted kNN, k=200) on Fashion-MNIST."""
  if not os.path.exists(os.path.join(FMNIST_DIR, "t10k-labels-idx1-ubyte.gz")):
    pytest.skip("Fashion-MNIST IDX files not installed")
  xtr, ytr = _load_fmnist("train")
  xte, yte = _load_fmnist("test")
  knn = evaluate.knn_accuracy(xtr, ytr, xte, yte, ks=(20, 200), temperature=0.1, num_classes=10)
  assert 0.77 <= knn[200] <= 0.81, knn      # measured 0.7885
  assert 0.83 <= knn[20] <= 0.87, knn       # measured 0.8447
  lin = evaluate.linear_probe(xtr, ytr, xte, yte, num_classes=10)
  assert 0.835 <= lin["test_accuracy"] <= 0.86, lin   # measured 0.8457


def test_representation_metrics_norm_and_effective_rank_match_numpy():
  rng = np.random.default_rng(21)
  z = (rng.standard_normal((200, 6)) * np.array([4.0, 2.0, 1.0, 1.0, 0.5, 0.1])).astype(np.float32)
  labels = rng.integers(0, 3, 200)
  got = evaluate.representation_metrics(z, labels)
  z64 = z.astype(np.float64)
  np.testing.assert_allclose(got["norm"], np.sqrt(np.mean(np.sum(z64 ** 2, axis=1))), rtol=1e-5)
  u = z64 / np.linalg.norm(z64, axis=1, keepdims=True)
  s = np.sqrt(np.clip(np.linalg.eigvalsh(np.cov(u.T)), 0, None))
  p = s / s.sum()
  np.testing.assert_allclose(got["effective_rank"], np.exp(-np.sum(p * np.log(p))), rtol=1e-4)
  # Local separation (k = 10): mean same-class cosine minus the mean of the 10 most similar
  # other-class cosines, per anchor, averaged (NumPy reference).
  cos = u @ u.T
  same = labels[:, None] == labels[None, :]
  sep = []
  for i in range(len(u)):
    pos = cos[i][same[i] & (np.arange(len(u)) != i)]
    neg = np.sort(cos[i][~same[i]])[::-1][:10]
    sep.append(pos.mean() - neg.mean())
  np.testing.assert_allclose(got["local_separation"], np.mean(sep), rtol=1e-4, atol=1e-6)
  # A network shrunk to zero (Bao's L2 collapse) keeps its effective rank; only the norm shows it.
  small = evaluate.representation_metrics(z * 1e-5, labels)
  np.testing.assert_allclose(small["effective_rank"], got["effective_rank"], rtol=1e-3)
  np.testing.assert_allclose(small["norm"], got["norm"] * 1e-5, rtol=1e-4)
