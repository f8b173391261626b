"""How a sweep steps its members: the stacked state's member axis, the member modes
(`config.mesh.member_mode`: one program mapping all members, or the single-run step per
member) and the jitted member step. `jaxssl.sweep` builds the members and their outputs
and re-exports these names; `jaxssl.run` composes them with the loop.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxssl import checkpoint as ckpt_lib
from jaxssl import config as config_lib
from jaxssl import parallel
from jaxssl import step as step_lib
from jaxssl.errors import ConfigError
from jaxssl.state import Setup, TrainState
from jaxssl.step import make_train_step


def member_axes(state: TrainState) -> TrainState:
  """vmap axes of a stacked state: 0 everywhere except the shared step counter."""
  return jax.tree.map(lambda _: 0, state.replace(step=None)).replace(step=None)


def unstack_member(state: TrainState | MemberStates, i: int) -> TrainState:
  """Member i of a stacked (host) state or of a `MemberStates`, as a single-run state."""
  if isinstance(state, MemberStates):
    return state.members[i]
  return jax.tree.map(lambda x: x[i], state.replace(step=None)).replace(step=state.step)


def make_member_mesh(cfg: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """2-D ("member", "data") mesh: members split over `config.mesh.member_devices` devices."""
  n = cfg.mesh.num_devices or jax.device_count()
  m = int(cfg.mesh.member_devices or 1)
  if n % m:
    raise ConfigError(f"config.mesh.member_devices={m} must divide the {n} devices")
  return parallel.make_mesh(n, axis_names=(parallel.MEMBER_AXIS, parallel.DATA_AXIS), shape=(m, n // m))


MEMBER_MODES = config_lib.MEMBER_MODES


def member_mode(cfg: ml_collections.ConfigDict) -> str:
  """How a sweep steps its members (`config.mesh.member_mode`): "program" or "sequential".

  * "program": one compiled step maps all members (`jax.vmap` over the member axis, or
    `member_chunk` members per vmap, unrolled), optionally sharded over devices
    (`mesh.member_devices`). Best on GPU/TPU, where the member-batched matmuls fill the chip.
  * "sequential": the single-run step, compiled once (the hyperparameters are traced arrays,
    so one executable serves every member), is called for each member in turn on the shared
    batch. The state is then a `MemberStates`, K separate single-run states: nothing is
    sliced out of or stacked into a member axis per step, and member i runs the very program
    of its separate run, so it equals that run bit for bit. On XLA:CPU this is faster than the
    one program, whose compile time grows with K and whose vmapped convolutions become
    grouped convolutions (benchmarks/sweep.py).
  * "auto" (default): "sequential" on the CPU, unless `member_chunk` or `member_devices > 1`
    asks for the one program; "program" on accelerators.
  """
  mode = config_lib.configured_member_mode(cfg)
  sharded = int(cfg.mesh.member_devices or 1) > 1
  if mode == "sequential" and sharded:
    raise ConfigError(f"config.mesh.member_mode='sequential' steps one member at a time; it cannot shard "
                      f"members over config.mesh.member_devices={cfg.mesh.member_devices} devices (use 'program').")
  if mode == "auto":
    cpu = jax.default_backend() == "cpu"
    mode = "sequential" if cpu and not sharded and cfg.mesh.member_chunk is None else "program"
  return mode


def member_chunk(cfg: ml_collections.ConfigDict, num_members: int) -> int:
  """How many sweep members one vmap evaluates at a time in the one-program mode
  (`config.mesh.member_chunk`).

  `member_chunk = K` vmaps all K members (one program, batched matmuls: best on GPU/TPU).
  Smaller chunks vmap groups of members, unrolled inside the same compiled step. On a
  CPU, XLA runs member-batched convolutions (grouped convolutions) several times slower
  than K plain ones, so the default there is 1: the K single-member steps, unrolled in one
  program, still sharing each input batch.
  """
  chunk = cfg.mesh.member_chunk
  if chunk is None:
    chunk = 1 if jax.default_backend() == "cpu" else num_members
  chunk = int(chunk)
  if not 1 <= chunk:
    raise ConfigError(f"config.mesh.member_chunk must be >= 1, got {chunk}")
  return min(chunk, num_members)


@jax.tree_util.register_pytree_node_class
class MemberStates:
  """The K members of a sequential sweep (`member_mode` "sequential"): K single-run states.

  A pytree whose children are the members' `TrainState`s. It offers what the loop reads of
  a state (`step`, the shared step counter, and `params`, a tuple of the members' parameter
  trees). `stacked_state` turns it into the stacked layout that checkpoints, evaluation and
  callers see, `split_members` back.
  """

  def __init__(self, members: Sequence[TrainState]):
    self.members = tuple(members)

  def tree_flatten(self):
    return self.members, None

  @classmethod
  def tree_unflatten(cls, aux, children):
    del aux
    return cls(children)

  @property
  def step(self) -> jax.Array:
    return self.members[0].step

  @property
  def params(self) -> tuple:
    return tuple(m.params for m in self.members)


def split_members(state: TrainState, sharding: Any) -> MemberStates:
  """A stacked state as K single-run states on the devices (`sharding`: a single run's).

  Each member is put from the host as its own buffers: the single-run step donates its
  state, so no buffer (the shared step counter included) may belong to two members.
  """
  host = jax.device_get(state)
  k = int(jax.tree.leaves(host.params)[0].shape[0])
  return MemberStates([jax.device_put(unstack_member(host, i), sharding) for i in range(k)])


def stacked_state(state: TrainState | MemberStates) -> TrainState:
  """The stacked layout (leading member axis, shared step) of a sweep's state, either form."""
  if not isinstance(state, MemberStates):
    return state
  stack = jnp.stack if isinstance(state.step, jax.Array) else np.stack
  per_member = [m.replace(step=None) for m in state.members]
  return jax.tree.map(lambda *xs: stack(xs), *per_member).replace(step=state.step)


class StackedCheckpoints:
  """A `checkpoint.Checkpointer` that saves a `MemberStates` in the stacked layout, so a
  sweep's checkpoints are the same whichever member mode wrote them (the loop only saves
  through it; a sweep never rolls back)."""

  def __init__(self, ckpt: ckpt_lib.Checkpointer):
    self._ckpt = ckpt

  def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> None:
    self._ckpt.save(step, stacked_state(state), meta, force=force)

  def restore(self, step: int, target: Any):
    raise NotImplementedError("a sweep's loop never restores (no rollback in sweeps)")

  def __getattr__(self, name: str) -> Any:
    return getattr(self._ckpt, name)


class SequentialMemberStep:
  """The member step of `member_mode` "sequential": `single_step` (a jitted or compiled
  single-run step) applied to each member of a `MemberStates` in turn, on the shared batch,
  member i with keys[i]. Returns (new MemberStates, metrics stacked over members).

  `lower(...).compile()` mirrors `jax.jit`'s ahead-of-time API (benchmarks/sweep.py times
  the compilation apart): it compiles the one single-run step that every member uses.
  """

  def __init__(self, single_step: Callable):
    self.single_step = single_step
    self._stack_metrics = jax.jit(lambda ms: jax.tree.map(lambda *xs: jnp.stack(xs), *ms))

  def __call__(self, state: MemberStates, batch: Any, keys: Sequence[jax.Array]) -> tuple[MemberStates, Any]:
    news, metrics = [], []
    for member, key in zip(state.members, keys, strict=True):
      new, m = self.single_step(member, batch, key)
      news.append(new)
      metrics.append(m)
    return MemberStates(news), self._stack_metrics(metrics)

  def lower(self, state: MemberStates, batch: Any, keys: Sequence[jax.Array]):
    lowered = self.single_step.lower(state.members[0], batch, keys[0])

    class Lowered:
      def compile(_self) -> "SequentialMemberStep":
        return SequentialMemberStep(lowered.compile())
    return Lowered()


def make_sweep_mesh(cfg: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """The mesh of a sweep: a single run's data mesh in the sequential member mode (so member i
  compiles to its separate run's program), else `make_member_mesh`'s 2-D mesh."""
  if member_mode(cfg) == "sequential":
    return parallel.make_mesh(cfg.mesh.num_devices)
  return make_member_mesh(cfg)


def member_keys_fn(cfg: ml_collections.ConfigDict, num_members: int) -> Callable[[int], Any]:
  """step -> the members' augmentation keys: member i's is fold_in(stream i's root, step), stacked
  [K, 2] for the one program, a tuple of K keys in the sequential mode."""
  roots = [step_lib.augmentation_root_key(cfg, i) for i in range(num_members)]
  if member_mode(cfg) == "sequential":
    return lambda step: tuple(jax.random.fold_in(r, step) for r in roots)
  return lambda step: jnp.stack([jax.random.fold_in(r, step) for r in roots])


def jit_member_step(setup: Setup, mesh: jax.sharding.Mesh, state: TrainState):
  """The train step mapped over members (`member_mode`), for the mesh of `make_sweep_mesh`.

  Sequential mode: a `SequentialMemberStep` around the single-run step, for a `MemberStates`
  (`split_members` of the stacked state, once on the device). One program: members are
  vmapped (all at once, or `member_chunk` at a time, unrolled); with
  `config.mesh.member_devices > 1` the member axis is also sharded over devices.
  Returns (step, sharding of the stacked state).
  """
  if member_mode(setup.cfg) == "sequential":
    return SequentialMemberStep(step_lib.jit_train_step(setup, mesh)), parallel.replicated(mesh)
  step_fn = make_train_step(setup)
  axes = member_axes(state)
  num_members = int(jax.tree.leaves(state.params)[0].shape[0])
  shard_members = mesh.shape[parallel.MEMBER_AXIS] > 1
  chunk = num_members if shard_members else member_chunk(setup.cfg, num_members)
  if chunk == num_members:
    mstep = jax.vmap(step_fn, in_axes=(axes, None, 0), out_axes=(axes, 0),
                     spmd_axis_name=parallel.MEMBER_AXIS if shard_members else None)
  else:
    # Groups of `chunk` members, unrolled in Python inside the one jitted program (a
    # `lax.map` over members measured ~35x slower per step on XLA:CPU than this).
    vchunk = jax.vmap(step_fn, in_axes=(axes, None, 0), out_axes=(axes, 0))

    def mstep(state, batch, keys):
      shared_step = state.step   # the step counter is shared, not per member
      per_member = state.replace(step=None)
      news, metrics = [], []
      for lo in range(0, num_members, chunk):
        part = jax.tree.map(lambda x: x[lo:lo + chunk], per_member)
        if chunk == 1:
          new, m = step_fn(jax.tree.map(lambda x: x[0], part).replace(step=shared_step), batch, keys[lo])
          new, m = jax.tree.map(lambda x: x[None], (new.replace(step=None), m))
        else:
          new, m = vchunk(part.replace(step=shared_step), batch, keys[lo:lo + chunk])
          new = new.replace(step=None)
        news.append(new)
        metrics.append(m)
      cat = lambda *xs: jnp.concatenate(xs, axis=0)
      new = jax.tree.map(cat, *news)
      return new.replace(step=shared_step + 1), jax.tree.map(cat, *metrics)
  mem = NamedSharding(mesh, P(parallel.MEMBER_AXIS))
  rep = parallel.replicated(mesh)
  state_sh = jax.tree.map(lambda _: mem, state.replace(step=None)).replace(step=rep)
  return jax.jit(mstep, in_shardings=(state_sh, parallel.batch_sharding(mesh), mem),
                 out_shardings=(state_sh, mem), donate_argnums=(0,)), state_sh
