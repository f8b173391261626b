"""Self-supervised losses: pure functions of [batch, dim] embeddings, returning a scalar.

Embeddings are *not* pre-normalised (the losses that need unit vectors normalise
safely inside). Every loss returns the mean over the global batch; with ``axis_name``
set it runs inside ``jax.shard_map``/``jax.pmap``/``jax.vmap`` and gives the value and
gradients of the unsharded call on the whole batch (negatives all-gathered, moments
psum'd; see `jaxssl.losses._collectives` for the gradient conventions).

| name               | paper                                        | module         |
|--------------------|----------------------------------------------|----------------|
| nt_xent            | SimCLR (Chen et al. 2020)                    | contrastive    |
| info_nce           | CPC / CLIP-style symmetric InfoNCE           | contrastive    |
| dcl                | Decoupled CL (Yeh et al. 2022)               | contrastive    |
| dhel               | DHEL (Koromilas et al. 2024)                 | contrastive    |
| kcl                | Kernel CL (Koromilas et al. 2024)            | contrastive    |
| simple_contrastive | Wang & Liu 2021, L_simple                    | contrastive    |
| hard_contrastive   | Wang & Liu 2021, hard negatives              | contrastive    |
| directclr          | DirectCLR (Jing et al. 2022)                 | contrastive    |
| byol               | BYOL / SimSiam / DirectPred (cosine or l2)   | noncontrastive |
| isoloss            | IsoLoss (Halvagal et al. 2023)               | noncontrastive |
| vicreg             | VICReg (Bardes et al. 2022)                  | noncontrastive |
| barlow_twins       | Barlow Twins (Zbontar et al. 2021)           | noncontrastive |

``LOSSES`` maps each name to its function; ``get_loss(name)`` raises ``ConfigError``
for unknown names. Multi-crop forms (2 global views + N small crops; `jaxssl.losses.multicrop`):
``nt_xent_multicrop``, ``info_nce_multicrop``, ``byol_multicrop``, ``vicreg_multicrop``.
"""
from __future__ import annotations

from typing import Callable

from jaxssl.errors import ConfigError
from jaxssl.losses import kernels
from jaxssl.losses.contrastive import (dcl, dhel, directclr, hard_contrastive, info_nce, kcl,
                                       nt_xent, simple_contrastive)
from jaxssl.losses.kernels import KERNEL_NAMES
from jaxssl.losses.multicrop import byol_multicrop, info_nce_multicrop, nt_xent_multicrop, vicreg_multicrop
from jaxssl.losses.noncontrastive import barlow_twins, byol, isoloss, psd_sqrt, vicreg

LOSSES: dict[str, Callable] = {
    "nt_xent": nt_xent,
    "info_nce": info_nce,
    "dcl": dcl,
    "dhel": dhel,
    "kcl": kcl,
    "simple_contrastive": simple_contrastive,
    "hard_contrastive": hard_contrastive,
    "directclr": directclr,
    "byol": byol,
    "isoloss": isoloss,
    "vicreg": vicreg,
    "barlow_twins": barlow_twins,
}


def get_loss(name: str) -> Callable:
  """The loss function registered under `name` (see `LOSSES`)."""
  try:
    return LOSSES[name]
  except (KeyError, TypeError):
    raise ConfigError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}") from None


__all__ = [*LOSSES, "LOSSES", "get_loss", "psd_sqrt", "kernels", "KERNEL_NAMES", "nt_xent_multicrop",
           "info_nce_multicrop", "byol_multicrop", "vicreg_multicrop"]
