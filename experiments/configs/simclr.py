"""SimCLR (NT-Xent, Chen et al. 2020).  `--config experiments/configs/simclr.py[:dataset]`

Expected linear-probe accuracy (papers; docs/papers.md):
  cifar10   ResNet-18, 200 ep, batch 256: ~86.0 (Koromilas et al., best InfoNCE-family baseline)
  cifar100  ResNet-18, 200 ep:            ~58.1 (Koromilas et al.)
  stl10     ResNet-18 (solo-learn recipe), 200 ep: ~85 (not a seed-paper number)
  imagenet2012 ResNet-50, 100 ep, 2-layer projector: 66.5 [check] (Jing et al. Table)
  fashion_mnist small ConvNet, CPU (default): see README for the measured numbers.
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("simclr", dataset)
  if dataset == "fashion_mnist":
    # lr 3e-3: chosen from 1e-3 / 3e-3 and tau 0.1 / 0.2 / 0.5 at 1000 steps on a held-out part
    # of the training split (docs/figures/tuning/simclr, docs/methods.md).
    c.optim.lr = 3e-3
    # Crop area (0.4, 1) instead of the fmnist preset's (0.2, 1): chosen from (0.08, 0.2, 0.4,
    # 0.6) x projector width at 1000 steps, held out (docs/figures/tuning/simclr_augment).
    c.data.crop_scale = (0.4, 1.0)
    return common.fmnist_cpu(c, steps=3000)   # the main job: ~9 min of training on 2 CPU cores
  if dataset == "imagenet2012":
    common.lars(c, 0.3, 1e-6, 4096)
    c.loss.temperature = 0.1
    c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=128, num_layers=2)
    c.expected_linear_top1 = 66.5
    return common.set_epochs(c, 100)
  common.lars(c, 0.4 if dataset != "stl10" else 0.3, 1e-5, 256)
  c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=256, num_layers=2)
  c.expected_linear_top1 = {"cifar10": 86.0, "cifar100": 58.1, "stl10": 85.0}[dataset]
  return common.set_epochs(c, 200)
