"""Theory simulators for self-supervised learning dynamics (pure JAX, jit/vmap-able).

Submodules (import them explicitly, e.g. `from jaxssl.dynamics import bao`):

* `ode`      -- diffrax wrapper shared by all simulators: `integrate`, `grid_map`
                (vmapped hyperparameter grids), `crossing_time`.
* `tian`     -- Tian, Chen & Ganguli (2021): linear BYOL/SimSiam, L2 loss; the cubic
                predictor ODE, collapse threshold, invariant, SGD network.
* `halvagal` -- Halvagal, Laborieux & Zenke (2023): eigenvalue ODEs with a closed-form
                predictor, Euclidean/cosine losses and IsoLoss; toy network.
* `bao`      -- Bao (2023/2025): cosine vs L2 linear SimSiam under weight decay; the
                concentrated-norm cosine eigenmode ODE, exact e^{-2ρt} norm decay,
                quasi-static regime diagram, SGD network and (ρ × σ²) phase diagram.
* `jing`     -- Jing et al. (2022): the two DirectCLR toy cases of dimensional collapse.
* `hem`      -- Koromilas et al. (2024): contrastive-loss minimisers as hyperspherical
                energy minimisation (L-BFGS); KCL batch-size independence.

See docs/dynamics.md for the derivations and the reproduced outcomes.
"""
__all__ = ["ode", "tian", "halvagal", "bao", "jing", "hem"]
