"""One config system: ml_collections `get_config()` files plus `--config.a.b=value` overrides.

Configs are Python files in `experiments/configs/` that define `get_config()` (as in
big_vision). `load_config(path, overrides)` imports the file, applies overrides with
type checking, and validates the result, raising `ConfigError` that names the field
*before* anything is compiled.
"""
from __future__ import annotations

import ast
import copy
import difflib
import importlib.util
import json
import math
import os
import sys
from typing import Any, Iterable, Sequence

import ml_collections

from jaxssl import augment
from jaxssl import data as data_lib
from jaxssl.data import info as data_info
from jaxssl import methods
from jaxssl import multicrop as multicrop_lib
from jaxssl import optim
from jaxssl.errors import ConfigError, DataError


def _import_config_file(path: str) -> ml_collections.ConfigDict:
  """Imports `path` (or `path:arg`, big_vision style) and returns `get_config([arg])`."""
  arg = None
  if ":" in os.path.basename(path):
    path, arg = path.rsplit(":", 1)
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist. Pick one of experiments/configs/*.py.")
  spec = importlib.util.spec_from_file_location("jaxssl_user_config", path)
  module = importlib.util.module_from_spec(spec)
  # Config files may import their siblings (e.g. `import common`), as in big_vision.
  config_dir = os.path.dirname(os.path.abspath(path))
  sys.path.insert(0, config_dir)
  try:
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    if not hasattr(module, "get_config"):
      raise ConfigError(f"config file {path!r} has no get_config() function.")
    cfg = module.get_config(arg) if arg is not None else module.get_config()
  except SyntaxError as e:
    raise ConfigError(f"config file {path!r} has a syntax error at line {e.lineno}: {e.msg}"
                      + (f": {e.text.strip()!r}" if e.text else "") + ". Fix the file and run again.") from None
  except ConfigError as e:
    raise ConfigError(f"config file {path!r}" + (f" with argument {arg!r}" if arg is not None else "")
                      + f": {e}") from None
  except Exception as e:  # noqa: BLE001 - a user's config file can raise anything
    variant = f"get_config({arg!r})" if arg is not None else "get_config()"
    raise ConfigError(f"config file {path!r}: {variant} failed with {type(e).__name__}: {e}. "
                      + ("The part after ':' is the file's argument (a dataset name for the files in "
                         "experiments/configs, e.g. ':cifar10'). " if arg is not None else "")
                      + "Fix the file or the argument.") from None
  finally:
    sys.path.remove(config_dir)
  if not isinstance(cfg, ml_collections.ConfigDict):
    cfg = ml_collections.ConfigDict(cfg)
  return cfg


def parse_value(text: str) -> Any:
  """A command-line value: a Python literal, true/false, none/null, else the bare string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    low = text.lower()
    if low in ("true", "false"):
      return low == "true"
    if low in ("none", "null"):
      return None
    return text  # a bare string, e.g. --config.method=byol


def _resolve(cfg: ml_collections.ConfigDict, dotted: str) -> tuple[ml_collections.ConfigDict, str]:
  parts = dotted.split(".")
  node = cfg
  for i, part in enumerate(parts[:-1]):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      hint = difflib.get_close_matches(part, keys, n=3)
      raise ConfigError(f"unknown config field 'config.{'.'.join(parts[:i + 1])}'"
                        + (f"; did you mean {', '.join(hint)}?" if hint else f"; known here: {sorted(keys)}"))
    node = node[part]
  leaf = parts[-1]
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    if leaf == "dtype" and len(parts) == 3 and parts[0] == "model":
      raise ConfigError(_dtype_route_error(parts[1]))
    keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
    hint = difflib.get_close_matches(leaf, keys, n=3)
    raise ConfigError(f"unknown config field 'config.{dotted}'"
                      + (f"; did you mean {', '.join('config.' + '.'.join(parts[:-1] + [h]) for h in hint)}?"
                         if hint else f"; known fields at this level: {sorted(keys)}"))
  return node, leaf


def set_field(cfg: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  """Sets `cfg.<dotted> = value`, with the type check of the existing field."""
  node, leaf = _resolve(cfg, dotted)
  old = node[leaf]
  if old is not None and value is not None and not isinstance(old, ml_collections.ConfigDict):
    if isinstance(old, bool) != isinstance(value, bool) and not isinstance(value, str):
      raise ConfigError(f"config.{dotted} expects {type(old).__name__} (current value {old!r}), got {value!r}")
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    elif isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)):
      value = type(old)(value)
    elif isinstance(old, str) and not isinstance(value, str):
      value = str(value)
    elif type(old) is not type(value):
      raise ConfigError(f"config.{dotted} expects {type(old).__name__} (current value {old!r}), "
                        f"got {type(value).__name__} {value!r}")
  try:
    with node.unlocked() if hasattr(node, "unlocked") else _null():
      node[leaf] = value
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.{dotted}: cannot set {value!r}: {e}") from None


class _null:
  def __enter__(self): return self
  def __exit__(self, *a): return False


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
  """Applies `config.a.b=value` (or `a.b=value`) strings."""
  for item in overrides:
    item = item[2:] if item.startswith("--") else item
    if "=" not in item:
      raise ConfigError(f"override {item!r} must look like --config.field=value")
    key, text = item.split("=", 1)
    key = key[len("config."):] if key.startswith("config.") else key
    set_field(cfg, key, parse_value(text))
  return cfg


# Fields a recipe sets in proportion to its train.num_steps: an override of num_steps alone
# rescales them (a 300-step run of a 3000-step recipe logs, checkpoints and warms up in
# the same proportions), unless they are overridden too.
DERIVED_FROM_NUM_STEPS = {"train.log_every": 1, "train.checkpoint_every": 1, "optim.warmup_steps": 0}


def _overridden_fields(overrides: Iterable[str]) -> set[str]:
  fields = set()
  for item in overrides:
    item = item[2:] if item.startswith("--") else item
    item = item[len("config."):] if item.startswith("config.") else item
    fields.add(item.split("=", 1)[0])
  return fields


def rescale_derived_fields(cfg: ml_collections.ConfigDict, recipe_steps: int,
                           explicit: set[str]) -> dict[str, tuple[int, int]]:
  """Rescales DERIVED_FROM_NUM_STEPS by num_steps / recipe_steps, in place.

  Each field not in `explicit` becomes max(minimum, round(value * num_steps / recipe_steps)).
  Returns {field: (recipe value, new value)} of the fields that changed.
  """
  steps = cfg.train.num_steps
  changed = {}
  if not isinstance(steps, int) or not isinstance(recipe_steps, int) or steps == recipe_steps or recipe_steps <= 0:
    return changed
  for field, minimum in DERIVED_FROM_NUM_STEPS.items():
    node, leaf = _resolve(cfg, field)
    old = node[leaf]
    if field in explicit or not isinstance(old, int) or isinstance(old, bool):
      continue
    new = max(minimum, round(old * steps / recipe_steps))
    if new != old:
      node[leaf] = new
      changed[field] = (old, new)
  return changed


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config of `path` ("file.py[:variant]") with `overrides`, validated.

  Overriding train.num_steps alone rescales DERIVED_FROM_NUM_STEPS (see
  `rescale_derived_fields`); `jaxssl config` and `jaxssl train` print the result.
  """
  cfg = add_engine_defaults(_import_config_file(path))
  recipe_steps = cfg.train.num_steps if "train" in cfg and "num_steps" in cfg.train else None
  apply_overrides(cfg, overrides)
  if recipe_steps is not None:
    rescale_derived_fields(cfg, recipe_steps, _overridden_fields(overrides))
  validate_config(cfg)
  return cfg


# Engine fields added after runs were first saved, with their defaults. `load_config` and
# `from_json` add them where a config lacks them; `to_json` leaves them out while they hold
# their default, so a default run's config.json, and `--resume` of a run saved before the
# field existed, are unchanged.
ENGINE_DEFAULTS: dict[str, Any] = {"model.dtype": "float32",
                                   # the kNN monitor during training (jaxssl.monitor): off by default
                                   "eval.monitor_every": 0, "eval.monitor_train_images": 5000,
                                   "eval.monitor_test_images": 1000,
                                   # the views' crop area range (jaxssl.augment.views_of_config): the preset's
                                   "data.crop_scale": None,
                                   # multi-crop (jaxssl.multicrop): off by default
                                   **multicrop_lib.DEFAULTS,
                                   # sweeps: how members are stepped (jaxssl.sweep.member_mode)
                                   "mesh.member_mode": "auto"}


def add_engine_defaults(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds each missing ENGINE_DEFAULTS field (in sections that exist), in place; returns `cfg`."""
  for dotted, default in ENGINE_DEFAULTS.items():
    section, leaf = dotted.rsplit(".", 1)
    node = cfg.get(section) if isinstance(cfg, ml_collections.ConfigDict) else None
    if isinstance(node, ml_collections.ConfigDict) and leaf not in node:
      with node.unlocked():
        node[leaf] = default
  return cfg


def to_json(cfg: ml_collections.ConfigDict) -> str:
  """The config as JSON (sorted keys), without ENGINE_DEFAULTS fields at their default."""
  at_default = []
  for dotted, default in ENGINE_DEFAULTS.items():
    section, leaf = dotted.rsplit(".", 1)
    node = cfg.get(section)
    if isinstance(node, ml_collections.ConfigDict) and leaf in node and node[leaf] == default:
      at_default.append((section, leaf))
  if at_default:
    cfg = copy.deepcopy(cfg)
    for section, leaf in at_default:
      with cfg[section].unlocked():
        del cfg[section][leaf]
  return cfg.to_json_best_effort(indent=2, sort_keys=True)


def from_json(text: str) -> ml_collections.ConfigDict:
  """The config of `to_json` text (lists become tuples), with ENGINE_DEFAULTS added."""
  return add_engine_defaults(ml_collections.ConfigDict(_tuples(json.loads(text))))


def _tuples(x):
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def _positive(cfg, dotted: str, *, allow_zero: bool = False) -> None:
  node, leaf = _resolve(cfg, dotted)
  v = node[leaf]
  if v is None:
    return
  if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
    raise ConfigError(f"config.{dotted} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")


MODEL_DTYPES = ("float32", "bfloat16")
MEMBER_MODES = ("auto", "program", "sequential")   # config.mesh.member_mode (jaxssl.sweep.member_mode)


def configured_member_mode(cfg: ml_collections.ConfigDict) -> str:
  """config.mesh.member_mode (absent: "auto"), checked to be one of MEMBER_MODES."""
  mode = cfg.mesh.get("member_mode", "auto")
  if mode not in MEMBER_MODES:
    raise ConfigError(f"config.mesh.member_mode={mode!r}; use one of {', '.join(map(repr, MEMBER_MODES))}")
  return mode


def _dtype_route_error(sub: str) -> str:
  return (f"config.model.{sub}.dtype is not supported: the compute dtype of the whole network (encoder, "
          f"projector and predictor) is the one field config.model.dtype, e.g. --config.model.dtype=bfloat16 "
          f"(one of {', '.join(map(repr, MODEL_DTYPES))}; parameters, BatchNorm statistics and the loss stay "
          "float32).")


def model_compute_dtype(cfg: ml_collections.ConfigDict) -> str | None:
  """The network's compute dtype from config.model.dtype (absent: "float32"), or None for
  float32: the modules' default, so the float32 program is exactly the one without the field."""
  dtype = cfg.model.get("dtype", "float32")
  return None if dtype == "float32" else dtype


def validate_model_dtype(cfg: ml_collections.ConfigDict) -> None:
  """config.model.dtype is one of MODEL_DTYPES, and no sub-dict of config.model sets its own dtype."""
  dtype = cfg.model.get("dtype", "float32")
  if dtype not in MODEL_DTYPES:
    raise ConfigError(f"config.model.dtype={dtype!r}; use one of {', '.join(map(repr, MODEL_DTYPES))} "
                      "(the compute dtype; parameters, BatchNorm statistics and the loss stay float32)")
  for sub in ("encoder_kwargs", "projector", "predictor"):
    kwargs = cfg.model.get(sub)
    if isinstance(kwargs, (dict, ml_collections.ConfigDict)) and "dtype" in kwargs:
      raise ConfigError(_dtype_route_error(sub))


TINY_ENCODER_KWARGS = {"widths": (4, 8), "strides": (2, 2)}


def shrink_to_tiny_model(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a Fashion-MNIST config's network, in place, to one that compiles in seconds.

  For smoke runs (tests, `--quick` experiments, the notebook's tiny mode): a 2-layer
  ConvNet with 4/8 channels (8-d representation), MLP projector 16 -> 8, predictor with 16
  hidden units, and a 4-d DirectCLR sub-vector. Non-MLP projectors (linear, identity) keep
  their kind. Returns `cfg`.
  """
  cfg.model.encoder_kwargs = dict(TINY_ENCODER_KWARGS)
  cfg.model.projector = dict(cfg.model.projector)
  if cfg.model.projector.get("kind", "mlp") == "mlp":
    cfg.model.projector.update(hidden_dim=16, out_dim=8)
  cfg.model.predictor = dict(hidden_dim=16, num_layers=2)
  if "dim" in cfg.loss:
    cfg.loss.dim = 4
  return cfg


# One line per engine field, for `jaxssl config` (method fields are documented by their HParam).
FIELD_DOCS = {
    "seed": "seed of the initial parameters, data order and augmentations",
    "method": "SSL method (jaxssl.methods.METHODS)",
    "data.name": "dataset (fashion_mnist, cifar10, cifar100, stl10, imagenet2012)",
    "data.batch_size": "global batch size (split over devices and processes)",
    "data.augment": "augmentation preset (jaxssl.augment.preset: simclr, byol, fmnist, none)",
    "data.image_size": "crop size of the views",
    "data.crop_scale": "(min, max) fraction of the image area a view's random crop covers (None: the preset's)",
    "data.multicrop_num_small": "multi-crop: small crops per image beside the 2 global views (0: off; SwAV / DINO)",
    "data.multicrop_small_size": "multi-crop: side of the small crops in px (None: round(image_size * 96/224))",
    "data.multicrop_small_scale": "multi-crop: (min, max) fraction of the image area a small crop covers",
    "data.data_dir": "data directory (else $JAXSSL_DATA_DIR, $TFDS_DATA_DIR, ~/tensorflow_datasets)",
    "data.idx_dir": "directory of the Fashion-MNIST IDX files (else $JAXSSL_FMNIST_DIR, the data dir, Debian's)",
    "model.encoder": "backbone (resnet18, resnet34, resnet50, convnet_small)",
    "model.encoder_kwargs": "keyword arguments of the backbone (stem, widths, strides, ...)",
    "model.dtype": "compute dtype of encoder, projector and predictor: float32 or bfloat16 (params, BN stats, loss: f32)",
    "model.projector": "projector head: kind (mlp, linear, identity), hidden_dim, out_dim, num_layers",
    "model.predictor": "MLP predictor head of BYOL / SimSiam: hidden_dim, num_layers",
    "optim.name": "optimizer: sgd, lars or adamw",
    "optim.lr": "peak learning rate (traced: sweepable)",
    "optim.weight_decay": "weight decay on kernels (traced: sweepable)",
    "optim.momentum": "momentum of sgd / lars",
    "optim.warmup_steps": "linear warm-up steps",
    "optim.schedule": "cosine (decay to 0 at num_steps) or constant",
    "train.num_steps": "number of train steps (may be raised on --resume)",
    "train.log_every": "steps between logged metrics and in-graph diagnostics",
    "train.checkpoint_every": "steps between checkpoints",
    "train.keep_checkpoints": "checkpoints kept (>= 1)",
    "train.online_probe": "train an online linear probe on stop-gradient features",
    "train.probe_lr": "learning rate of the online probe (Adam)",
    "train.aug_stream": "augmentation stream (sweep member i uses stream i)",
    "train.nonfinite_policy": "on a non-finite loss or gradient: stop, skip or rollback",
    "train.rollback_lr_factor": "learning-rate factor of each rollback",
    "train.max_rollbacks": "consecutive rollbacks before giving up",
    "train.collapse_alarm.policy": "collapse alarm: off, warn or stop",
    "train.collapse_alarm.min_rank_fraction_z": "alarm when RankMe of z < this fraction of its dimension",
    "train.collapse_alarm.min_rank_fraction_r": "alarm when RankMe of r < this fraction of its dimension",
    "train.collapse_alarm.min_norm_z": "alarm when the RMS norm of z < this (a collapse to zero)",
    "eval.at_end": "evaluate when training ends",
    "eval.knn_k": "k of the weighted kNN classifiers",
    "eval.knn_temperature": "temperature of the kNN vote weights",
    "eval.knn_transform": "kNN features before L2 normalisation: none, centre or standardise (train-bank statistics)",
    "eval.train_split": "labelled split the kNN bank and the linear probe train on (None: the dataset's)",
    "eval.test_split": "split evaluated (None: the dataset's test split; e.g. 'train[50000:]' to choose settings)",
    "eval.probe_epochs": "epochs of the linear probe",
    "eval.batch_size": "batch size of feature extraction",
    "eval.baselines": "also evaluate raw pixels and the random-init encoder (cached in <data dir>/eval_baselines)",
    "eval.lidar_images": "LiDAR: number of training images (surrogate classes)",
    "eval.lidar_views": "LiDAR: augmented views per image (even)",
    "eval.monitor_every": "kNN monitor: steps between weighted-kNN accuracies of the current backbone (0: off)",
    "eval.monitor_train_images": "kNN monitor: the first N eval-train images are the neighbour bank",
    "eval.monitor_test_images": "kNN monitor: the first N test images are the queries",
    "mesh.num_devices": "devices to use (None: all)",
    "mesh.member_devices": "sweeps: devices the member axis is sharded over",
    "mesh.member_chunk": "sweeps: members per vmap in the one-program mode (None: all on GPU/TPU, 1 on CPU)",
    "mesh.member_mode": "sweeps: 'program' (members mapped in one step), 'sequential' (the single-run step "
                        "per member) or 'auto' (sequential on CPU)",
}


def describe_config(cfg: ml_collections.ConfigDict) -> str:
  """Every field of a resolved config with its value and a one-line description (`jaxssl config`)."""
  docs = dict(FIELD_DOCS)
  for h in methods.get_method(cfg.method).hparams:
    docs[h.field] = h.doc + (" (traced: sweepable)" if h.sweepable else "")
  flat: list[tuple[str, Any]] = []

  def walk(node, prefix):
    for k in sorted(node.keys()):
      v = node[k]
      key = f"{prefix}{k}"
      if isinstance(v, ml_collections.ConfigDict) and key not in docs:
        walk(v, key + ".")
      else:
        flat.append((key, v.to_dict() if isinstance(v, ml_collections.ConfigDict) else v))
  walk(cfg, "")
  width = max(len(k) for k, _ in flat)
  lines = []
  for k, v in flat:
    text = repr(v)
    lines.append(f"{k:<{width}}  {text:<28}  # {docs.get(k, '')}".rstrip(" #"))
  return "\n".join(lines)


ENGINE_SECTIONS = ("data", "model", "loss", "optim", "train", "eval", "mesh")


def _int_at_least(cfg, dotted: str, low: int) -> None:
  node, leaf = _resolve(cfg, dotted)
  v = node[leaf]
  if isinstance(v, bool) or not isinstance(v, int) or v < low:
    raise ConfigError(f"config.{dotted} must be an int >= {low}, got {v!r}")


def validate_eval_config(cfg: ml_collections.ConfigDict) -> None:
  """Checks config.eval; called before training, so a bad setting never costs a run."""
  ks = cfg.eval.knn_k
  if not isinstance(ks, (tuple, list)) or not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1
                                                        for k in ks):
    raise ConfigError(f"config.eval.knn_k must be a non-empty tuple of ints >= 1 (e.g. (20, 200)), got {ks!r}")
  _int_at_least(cfg, "eval.probe_epochs", 1)
  _int_at_least(cfg, "eval.batch_size", 1)
  _positive(cfg, "eval.knn_temperature")
  transform = cfg.eval.get("knn_transform", "none")
  if transform not in data_info.KNN_TRANSFORMS:
    raise ConfigError(f"config.eval.knn_transform must be one of {', '.join(data_info.KNN_TRANSFORMS)}, "
                      f"got {transform!r}")
  for field in ("train_split", "test_split"):
    split = cfg.eval.get(field, None)
    if split is not None:
      try:
        info = data_lib.dataset_info(cfg.data.name)
        sizes = dict(info.split_sizes)
        for part in data_info.base_splits(info, split):     # names and slice syntax, no data read
          data_info.slice_bounds(part, sizes[part.split("[", 1)[0].strip()])
      except DataError as e:
        raise ConfigError(f"config.eval.{field}: {e}") from None
  _int_at_least(cfg, "eval.lidar_images", 2)
  _int_at_least(cfg, "eval.lidar_views", 2)
  if cfg.eval.lidar_views % 2:
    raise ConfigError(f"config.eval.lidar_views must be even (views come in the augmentation's pairs), "
                      f"got {cfg.eval.lidar_views}")
  _int_at_least(cfg, "eval.monitor_every", 0)
  _int_at_least(cfg, "eval.monitor_train_images", 1)
  _int_at_least(cfg, "eval.monitor_test_images", 1)
  if cfg.eval.monitor_every and cfg.eval.monitor_train_images < max(ks):
    raise ConfigError(f"config.eval.monitor_train_images={cfg.eval.monitor_train_images} is smaller than the "
                      f"largest k of config.eval.knn_k={tuple(ks)}: the kNN monitor needs at least "
                      f"{max(ks)} neighbours in its bank.")
  for flag in ("at_end", "baselines"):
    if not isinstance(cfg.eval[flag], bool):
      raise ConfigError(f"config.eval.{flag} must be True or False, got {cfg.eval[flag]!r}")


def validate_config(cfg: ml_collections.ConfigDict) -> None:
  """Checks a training config; every problem is reported by field name, before compiling."""
  for section in ENGINE_SECTIONS:
    if section not in cfg:
      raise ConfigError(f"config has no '{section}' section; see experiments/configs/simclr.py")
  method = methods.get_method(cfg.method)
  method.validate(cfg)
  _positive(cfg, "optim.lr")
  _positive(cfg, "optim.weight_decay", allow_zero=True)
  if cfg.optim.name not in optim.OPTIMIZERS:
    raise ConfigError(f"config.optim.name={cfg.optim.name!r}; use one of {', '.join(map(repr, optim.OPTIMIZERS))}")
  if cfg.optim.schedule not in optim.SCHEDULES:
    raise ConfigError(f"config.optim.schedule={cfg.optim.schedule!r}; use one of "
                      f"{', '.join(map(repr, optim.SCHEDULES))}")
  _positive(cfg, "data.batch_size")
  if not isinstance(cfg.data.batch_size, int):
    raise ConfigError(f"config.data.batch_size must be an int, got {cfg.data.batch_size!r}")
  if not isinstance(cfg.data.image_size, int) or isinstance(cfg.data.image_size, bool) or cfg.data.image_size < 1:
    raise ConfigError(f"config.data.image_size must be a positive int (the crop size), got {cfg.data.image_size!r}")
  augment.views_of_config(cfg)    # the preset and config.data.crop_scale
  _int_at_least(cfg, "train.num_steps", 1)
  _int_at_least(cfg, "train.log_every", 1)
  _int_at_least(cfg, "train.checkpoint_every", 1)
  # keep_checkpoints = 0 would keep nothing: the trained model would be lost.
  _int_at_least(cfg, "train.keep_checkpoints", 1)
  _int_at_least(cfg, "optim.warmup_steps", 0)
  _int_at_least(cfg, "train.max_rollbacks", 0)
  _int_at_least(cfg, "train.aug_stream", 0)
  validate_eval_config(cfg)
  validate_model_dtype(cfg)
  configured_member_mode(cfg)
  multicrop_lib.validate(cfg)
  alarm = cfg.train.collapse_alarm
  if alarm.policy not in ("off", "warn", "stop"):
    raise ConfigError(f"config.train.collapse_alarm.policy={alarm.policy!r}; use 'off', 'warn' or 'stop'")
  for key in ("min_rank_fraction_z", "min_rank_fraction_r"):
    v = alarm[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
      raise ConfigError(f"config.train.collapse_alarm.{key} must be in [0, 1], got {v!r}")
  _positive(cfg, "train.collapse_alarm.min_norm_z", allow_zero=True)
  _positive(cfg, "train.rollback_lr_factor")
  if not cfg.train.rollback_lr_factor < 1:
    raise ConfigError(f"config.train.rollback_lr_factor must be in (0, 1), got {cfg.train.rollback_lr_factor!r}")
  if cfg.train.nonfinite_policy not in ("stop", "skip", "rollback"):
    raise ConfigError(f"config.train.nonfinite_policy={cfg.train.nonfinite_policy!r}; "
                      "use 'stop', 'skip' or 'rollback'")
  data_lib.dataset_info(cfg.data.name)  # unknown dataset -> ConfigError listing the known ones
