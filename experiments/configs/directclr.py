"""DirectCLR (Jing et al. ICLR 2022): InfoNCE on r[:, :d0], no projector, zero-init residual.
`--config experiments/configs/directclr.py[:dataset]`

Expected: ImageNet ResNet-50, 100 epochs, d0 = 360: 62.7 linear probe (confirmed in docs/papers.md §C).
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("directclr", dataset)
  c.model.projector = dict(kind="identity")
  if dataset == "fashion_mnist":
    return common.fmnist_cpu(c)
  c.model.encoder_kwargs["zero_init_residual"] = True
  if dataset == "imagenet2012":
    c.loss.dim = 360
    common.lars(c, 0.3, 1e-6, 4096)
    c.expected_linear_top1 = 62.7
    return common.set_epochs(c, 100)
  c.loss.dim = 128           # of ResNet-18's 512-d representation (same ratio as 360/2048 ~ 0.18 -> 90; 128 used)
  common.lars(c, 0.4, 1e-5, 256)
  return common.set_epochs(c, 200)
