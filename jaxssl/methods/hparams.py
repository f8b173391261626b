"""Declared hyperparameters: `HParam(field, default, constraint, sweepable)`.

A method lists its hyperparameters once; from that one declaration jaxssl derives
* the config section defaults (`config_sections`): the method's `get_config()` starts
  from them and sets only what its recipe changes;
* validation (`check`): every value is checked against its constraint, by field name,
  before anything is compiled;
* the sweepable set and the initial traced values (`state.hparams`): a sweepable
  hyperparameter is an array in the train state, so `jax.vmap` trains K values at once.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import ml_collections

from jaxssl.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Constraint:
  """A predicate on a config value with a human description ("> 0", "in (0, 1]")."""
  describe: str
  ok: Callable[[Any], bool]

  def __call__(self, value: Any) -> bool:
    try:
      return bool(self.ok(value))
    except TypeError:
      return False


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def interval(lo: float | None, hi: float | None, *, lo_open: bool = True, hi_open: bool = False) -> Constraint:
  """A finite number in an interval, e.g. interval(0, 1) is (0, 1]; None leaves a side open."""
  left = "-inf" if lo is None else f"{lo:g}"
  right = "inf" if hi is None else f"{hi:g}"
  text = f"in {'(' if lo_open or lo is None else '['}{left}, {right}{')' if hi_open or hi is None else ']'}"

  def ok(v):
    if not _is_number(v):
      return False
    if lo is not None and (v < lo or (lo_open and v == lo)):
      return False
    return not (hi is not None and (v > hi or (hi_open and v == hi)))
  return Constraint(text, ok)


POSITIVE = Constraint("> 0 (finite)", lambda v: _is_number(v) and v > 0)
NON_NEGATIVE = Constraint(">= 0 (finite)", lambda v: _is_number(v) and v >= 0)
POSITIVE_INT = Constraint("an int >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1)
BOOL = Constraint("True or False", lambda v: isinstance(v, bool))


def one_of(*choices: str) -> Constraint:
  return Constraint(f"one of {', '.join(map(repr, choices))}", lambda v: v in choices)


@dataclasses.dataclass(frozen=True)
class HParam:
  """One declared hyperparameter of a method.

  Attributes:
    field: its config field, e.g. "loss.temperature" (a section and a key).
    default: the value `get_config()` starts from.
    constraint: what a valid value is.
    sweepable: True for a number that may differ between the members of one compiled
      sweep; it is then an array in `state.hparams` under `key`, never a constant
      compiled into the program. False for values that change the program's
      structure (a kernel name, a sub-vector size, an update frequency).
    doc: one line for `jaxssl config`.
    key: the name in `state.hparams` (default: the field's last part).
  """
  field: str
  default: Any
  constraint: Constraint
  sweepable: bool = False
  doc: str = ""
  key: str = ""

  def __post_init__(self):
    if self.field.count(".") != 1:
      raise ValueError(f"HParam field must be 'section.key', got {self.field!r}")
    if not self.key:
      object.__setattr__(self, "key", self.field.split(".")[1])

  @property
  def section(self) -> str:
    return self.field.split(".")[0]

  @property
  def name(self) -> str:
    return self.field.split(".")[1]

  def value(self, cfg: ml_collections.ConfigDict) -> Any:
    """The value in `cfg` (the declaration's default when the section lacks the key)."""
    sec = cfg.get(self.section)
    if sec is None or self.name not in sec:
      return self.default
    return sec[self.name]

  def check(self, cfg: ml_collections.ConfigDict) -> None:
    v = self.value(cfg)
    if not self.constraint(v):
      raise ConfigError(f"config.{self.field} must be {self.constraint.describe}, got {v!r}"
                        + (f" ({self.doc})" if self.doc else ""))


def config_sections(hparams: Sequence[HParam]) -> dict[str, ml_collections.ConfigDict]:
  """{section: ConfigDict of defaults} for a list of declarations."""
  out: dict[str, dict[str, Any]] = {}
  for h in hparams:
    out.setdefault(h.section, {})[h.name] = h.default
  return {k: ml_collections.ConfigDict(v) for k, v in out.items()}
