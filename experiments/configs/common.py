"""Shared pieces of the configs: `base_config(method, dataset)` returns a complete config
that the per-method files adjust. Every field here is overridable on the command line:
`--config.loss.temperature=0.2`."""
import ml_collections

from jaxssl import methods
from jaxssl.errors import ConfigError

# Paper recipes (PAPERS.md); the expected linear-probe accuracies are listed in each file.
DATASETS = {
    # Downsampling first (14x14 from the first conv) makes a train step ~2.8x cheaper on a
    # CPU than the stride-1 stem, with the same 0.39M parameters and 256-d features.
    "fashion_mnist": dict(encoder="convnet_small", encoder_kwargs={"strides": (2, 2, 2, 1)},
                          augment="fmnist", image_size=28),
    "cifar10": dict(encoder="resnet18", encoder_kwargs={"stem": "cifar"}, augment="simclr", image_size=32),
    "cifar100": dict(encoder="resnet18", encoder_kwargs={"stem": "cifar"}, augment="simclr", image_size=32),
    "stl10": dict(encoder="resnet18", encoder_kwargs={"stem": "cifar"}, augment="simclr", image_size=96),
    "imagenet2012": dict(encoder="resnet50", encoder_kwargs={"stem": "imagenet"}, augment="simclr", image_size=224),
}


def base_config(method: str, dataset: str = "fashion_mnist") -> ml_collections.ConfigDict:
  if dataset not in DATASETS:
    raise ConfigError(f"unknown dataset {dataset!r} for this config; use one of {', '.join(DATASETS)} "
                      "(e.g. experiments/configs/simclr.py:cifar10)")
  d = DATASETS[dataset]
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = method
  c.data = ml_collections.ConfigDict(dict(
      name=dataset, batch_size=256, augment=d["augment"], image_size=d["image_size"],
      data_dir=ml_collections.FieldReference(None, field_type=str),
      idx_dir=ml_collections.FieldReference(None, field_type=str)))
  c.model = ml_collections.ConfigDict(dict(
      encoder=d["encoder"], encoder_kwargs=dict(d["encoder_kwargs"]),
      projector=dict(kind="mlp", hidden_dim=512, out_dim=128, num_layers=2),
      predictor=dict(hidden_dim=512, num_layers=2)))
  # The method's own sections (loss, and ema / predictor where it has them) start from its
  # declared hyperparameters (jaxssl.methods): those declarations hold their defaults.
  for name, section in methods.method_sections(method).items():
    c[name] = section
  c.optim = ml_collections.ConfigDict(dict(name="adamw", lr=1e-3, weight_decay=1e-6, momentum=0.9,
                                           warmup_steps=100, schedule="cosine"))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=2000, log_every=100, checkpoint_every=500, keep_checkpoints=3,
      online_probe=True, probe_lr=1e-3, aug_stream=0, nonfinite_policy="stop", rollback_lr_factor=0.5,
      max_rollbacks=5,
      # Label-free collapse alarm on diagnostics steps (jaxssl.loop.collapse_alarm): RankMe of z
      # and r below a fraction of their dimension, or the RMS norm of z below a floor.
      collapse_alarm=dict(policy="warn", min_rank_fraction_z=0.01, min_rank_fraction_r=0.01,
                          min_norm_z=1e-4)))
  # kNN: standardised backbone features, T = 0.02, chosen on a held-out part of the training
  # split (experiments/knn_protocol.py, docs/methods.md); T = 0.1 untransformed before.
  c.eval = ml_collections.ConfigDict(dict(at_end=True, knn_k=(20, 200), knn_temperature=0.02,
                                          knn_transform="standardise",
                                          # None: the dataset's labelled train split and test split
                                          train_split=ml_collections.FieldReference(None, field_type=str),
                                          test_split=ml_collections.FieldReference(None, field_type=str),
                                          probe_epochs=100, batch_size=1024, baselines=True,
                                          # label-free LiDAR: q augmented views of n training images
                                          lidar_images=1000, lidar_views=8))
  c.mesh = ml_collections.ConfigDict(dict(
      num_devices=ml_collections.FieldReference(None, field_type=int),
      member_devices=1,   # sweeps: devices the member axis is sharded over (2-D mesh)
      # sweeps: members per vmap (None: all on GPU/TPU, 1 on CPU; see jaxssl.sweep.member_chunk)
      member_chunk=ml_collections.FieldReference(None, field_type=int)))
  return c


NUM_TRAIN = {"fashion_mnist": 60000, "cifar10": 50000, "cifar100": 50000, "stl10": 105000,
             "imagenet2012": 1281167}


def set_epochs(c: ml_collections.ConfigDict, epochs: float) -> ml_collections.ConfigDict:
  """num_steps from epochs; warm-up 10 epochs (capped at 10% of training), logs every ~1/50."""
  steps = int(round(NUM_TRAIN[c.data.name] * epochs / c.data.batch_size))
  c.train.num_steps = steps
  c.optim.warmup_steps = int(min(10 * NUM_TRAIN[c.data.name] / c.data.batch_size, 0.1 * steps))
  c.train.log_every = max(1, steps // 50)
  c.train.checkpoint_every = max(1, steps // 10)
  return c


def lars(c, base_lr, weight_decay, batch_size):
  """LARS with the linear scaling rule lr = base_lr * batch / 256."""
  c.data.batch_size = batch_size
  c.optim.name = "lars"
  c.optim.lr = base_lr * batch_size / 256
  c.optim.weight_decay = weight_decay
  return c


def fmnist_cpu(c, steps=2000):
  """CPU-sized Fashion-MNIST settings: small ConvNet, AdamW, ~minutes on 2 cores."""
  c.train.num_steps = steps
  c.optim.warmup_steps = min(100, steps // 10)
  c.train.log_every = max(1, steps // 20)
  c.train.checkpoint_every = max(1, steps // 4)
  c.eval.probe_epochs = 100
  return c


def contrastive_recipe(c, dataset: str, expected: dict | None = None):
  """The shared recipe of the InfoNCE-family configs: the CPU Fashion-MNIST default, or
  SimCLR's LARS recipe (ImageNet: batch 4096, 100 epochs; CIFAR / STL-10: batch 256, 200
  epochs) with `expected` = {dataset: expected linear top-1} where the paper gives one."""
  if dataset == "fashion_mnist":
    return fmnist_cpu(c)
  if dataset == "imagenet2012":
    lars(c, 0.3, 1e-6, 4096)
    c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=128, num_layers=2)
    return set_epochs(c, 100)
  lars(c, 0.4, 1e-5, 256)
  c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=256, num_layers=2)
  if expected is not None:
    c.expected_linear_top1 = expected[dataset]
  return set_epochs(c, 200)
