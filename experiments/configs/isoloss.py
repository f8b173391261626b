"""IsoLoss (Halvagal, Laborieux, Zenke NeurIPS 2023): closed-form predictor (s/max + eps)^alpha,
loss whose gradient equalises the eigenmode learning rates. Trains without an EMA target.
`--config experiments/configs/isoloss.py[:dataset]`   (`--config.ema.enabled=True` adds one)

Recipe (docs/papers.md §E): ResNet-18 CIFAR stem, projector 4096 -> 256, LARS lr 1.0, batch 256,
weight decay 1e-4, 1000 epochs, tau_C = 0.5 without EMA target (0.998 with).
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("isoloss", dataset)
  if dataset == "fashion_mnist":
    return common.fmnist_cpu(c)
  common.lars(c, 1.0, 1e-4, 256)
  c.model.projector = dict(kind="mlp", hidden_dim=4096, out_dim=256, num_layers=2)
  return common.set_epochs(c, 1000)
