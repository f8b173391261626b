"""config.model.dtype: bfloat16 compute with float32 parameters, BatchNorm statistics and loss;
the float32 default is the program without the field; other values are refused."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import config as config_lib, state as state_lib, step as step_lib
from jaxssl.errors import ConfigError
from jaxssl.methods import LossInputs
from _tiny import CONFIG_DIR, random_batch, tiny_config

# One step of the tiny SimCLR / BYOL from the same initial parameters: bfloat16 has an 8-bit
# mantissa (relative rounding 2^-9 = 0.2 %), the loss moves by a few tenths of a percent.
LOSS_RTOL = 2e-2


def _one_step(cfg):
  """(initial state, state after one train step, its metrics) of `cfg`, on the host."""
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  new, metrics = jax.jit(step_lib.make_train_step(setup))(state, random_batch(16), jax.random.PRNGKey(1))
  return jax.device_get(state), jax.device_get(new), jax.device_get(metrics)


@functools.lru_cache(maxsize=None)
def _tiny_step(method, dtype=None):
  """`_one_step` of the tiny config (dtype None: the default), computed once per module run."""
  return _one_step(tiny_config(method) if dtype is None else tiny_config(method, **{"model.dtype": dtype}))


def _lowered(cfg):
  """The StableHLO text of the train step of `cfg` (what XLA compiles)."""
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  return jax.jit(step_lib.make_train_step(setup)).lower(state, random_batch(16), jax.random.PRNGKey(1)).as_text()


def _eqns(jaxpr):
  """Every equation of a jaxpr, including those of nested jaxprs (jit, cond, custom_vjp, ...)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (tuple, list)) else (v,)):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _eqns(inner)


def _matmul_dtypes(setup, state, x):
  """{dtype names} of the outputs of every convolution and matmul of the network on x."""
  jaxpr = jax.make_jaxpr(lambda p, b, x: state_lib.apply(setup, p, b, x, train=True))(
      state.params, state.batch_stats, x)
  ops = [e for e in _eqns(jaxpr.jaxpr) if e.primitive.name in ("conv_general_dilated", "dot_general")]
  assert {e.primitive.name for e in ops} == {"conv_general_dilated", "dot_general"}
  return {str(v.aval.dtype) for e in ops for v in e.outvars}


def _loss_and_grads(cfg, x1, x2):
  """The method's loss of two fixed views and its gradient: the train step's loss_fn, without
  the augmentation, the optimizer and the diagnostics (which cost most of a step's compilation)."""
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  hp = {**setup.method.static_values(cfg), **state.hparams}

  def loss_fn(params):
    o1, stats = state_lib.apply(setup, params, state.batch_stats, x1, train=True)
    o2, _ = state_lib.apply(setup, params, stats, x2, train=True)
    return setup.method.loss(LossInputs(o1, o2, None, None, None), hp)
  return jax.device_get(jax.jit(jax.value_and_grad(loss_fn))(state.params))


def test_bfloat16_loss_is_close_to_float32_and_gradients_are_float32():
  x = jnp.asarray(random_batch(16)["image"], jnp.float32) / 255.0        # [16, 28, 28, 1]
  x1, x2 = x, x[:, ::-1]                                                 # two "views"
  l32, g32 = _loss_and_grads(tiny_config("simclr"), x1, x2)
  l16, g16 = _loss_and_grads(tiny_config("simclr", **{"model.dtype": "bfloat16"}), x1, x2)
  assert l16.dtype == np.float32 and l16 != l32
  np.testing.assert_allclose(l16, l32, rtol=LOSS_RTOL)
  assert all(g.dtype == np.float32 and np.all(np.isfinite(g)) for g in jax.tree.leaves(g16))


# The whole train step, two compilations each (~20 s on 2 quiet CPU cores, more when loaded).
# byol: the MLP predictor head and the EMA target too.
@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_bfloat16_step_is_close_to_float32_with_float32_params(method):
  s32, n32, m32 = _tiny_step(method)
  s16, n16, m16 = _tiny_step(method, "bfloat16")
  # Same initial parameters: the dtype changes the computation, not the initialisation.
  for a, b in zip(jax.tree.leaves(s32.params), jax.tree.leaves(s16.params)):
    np.testing.assert_array_equal(a, b)
  assert np.isfinite(m16["loss"]) and m16["loss"] != m32["loss"]     # really another computation
  np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=LOSS_RTOL)
  # Parameters, optimizer moments, BatchNorm statistics and the method's state stay float32.
  for tree in (s16.params, n16.params, n16.batch_stats, n16.opt_state, n16.extra, n16.probe):
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.floating))
  assert jax.tree.leaves(n16.params) and jax.tree.leaves(n16.batch_stats)
  # The loss and every diagnostic are float32.
  assert all(np.asarray(v).dtype in (np.float32, np.int32, np.bool_) for v in m16.values())


def test_bfloat16_activations_are_bfloat16_and_outputs_float32():
  x = jnp.asarray(random_batch(8)["image"], jnp.float32) / 255.0        # [8, 28, 28, 1]
  for dtype, want in (("float32", {"float32"}), ("bfloat16", {"bfloat16"})):
    cfg = tiny_config("byol", **{"model.dtype": dtype})
    setup, state = state_lib.build(cfg, jax.random.PRNGKey(0))
    # Every conv of the encoder and matmul of projector and predictor runs in the compute dtype.
    assert _matmul_dtypes(setup, state, x) == want, dtype
    out, stats = state_lib.apply(setup, state.params, state.batch_stats, x, train=True)
    assert {k: v.dtype for k, v in out.items()} == {"r": jnp.float32, "z": jnp.float32, "p": jnp.float32}
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(stats))
    assert state_lib.encode(setup, state, x).dtype == jnp.float32


def _without_dtype(cfg):
  """`cfg` as configs were before config.model.dtype existed."""
  with cfg.model.unlocked():
    del cfg.model["dtype"]
  return cfg


def _same_bits(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(la, lb))


def test_float32_default_is_the_program_without_the_field():
  default = tiny_config("simclr")
  assert default.model.dtype == "float32"
  explicit = tiny_config("simclr", **{"model.dtype": "float32"})
  absent = _without_dtype(tiny_config("simclr"))
  # The same train step, to the last instruction ...
  assert _lowered(explicit) == _lowered(absent) == _lowered(default)
  # ... and the same loss and gradients, bit for bit.
  x = jnp.asarray(random_batch(16)["image"], jnp.float32) / 255.0
  assert _same_bits(_loss_and_grads(default, x, x[:, ::-1]), _loss_and_grads(absent, x, x[:, ::-1]))
  # config.json of a float32 run is the one of a config without the field (so --resume of runs
  # saved before it is unchanged), and reading it back gives the default again.
  assert config_lib.to_json(default) == config_lib.to_json(absent)
  assert '"dtype"' not in config_lib.to_json(default)
  assert config_lib.from_json(config_lib.to_json(default)).model.dtype == "float32"
  bf16 = config_lib.load_config(f"{CONFIG_DIR}/simclr.py", ["--config.model.dtype=bfloat16"])
  assert config_lib.from_json(config_lib.to_json(bf16)).model.dtype == "bfloat16"


@pytest.mark.slow
def test_float32_default_train_step_is_bit_identical_to_the_one_without_the_field():
  _, n_def, m_def = _tiny_step("simclr")
  _, n, m = _one_step(_without_dtype(tiny_config("simclr")))
  assert _same_bits(m, m_def) and _same_bits(n, n_def)


def test_model_dtype_is_listed_by_jaxssl_config():
  text = config_lib.describe_config(config_lib.load_config(f"{CONFIG_DIR}/simclr.py"))
  line = next(ln for ln in text.splitlines() if ln.startswith("model.dtype "))
  assert "'float32'" in line and "bfloat16" in line


def test_invalid_dtype_and_the_per_module_route_are_refused():
  path = f"{CONFIG_DIR}/simclr.py"
  for bad in ("float16", "bf16", "int8"):
    with pytest.raises(ConfigError, match=r"config.model.dtype='%s'; use one of 'float32', 'bfloat16'" % bad):
      config_lib.load_config(path, [f"--config.model.dtype={bad}"])
  # The per-module route is refused, and the message names the one field that works.
  for sub in ("encoder_kwargs", "projector", "predictor"):
    with pytest.raises(ConfigError, match=rf"config.model.{sub}.dtype is not supported.*--config.model.dtype=bfloat16"):
      config_lib.load_config(path, [f"--config.model.{sub}.dtype=bfloat16"])
  # ... also when a config file sets it.
  cfg = tiny_config("simclr")
  cfg.model.encoder_kwargs = dict(cfg.model.encoder_kwargs, dtype="bfloat16")
  with pytest.raises(ConfigError, match="config.model.dtype"):
    config_lib.validate_config(cfg)
