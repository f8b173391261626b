"""Meshes, shardings, multi-host initialisation and global-batch helpers.

jaxssl uses JAX's own SPMD machinery: a `jax.sharding.Mesh` over all devices of all
processes, `jax.jit` with `NamedSharding` for the train step (XLA inserts the
collectives, so BatchNorm statistics and loss negatives are global automatically),
and `jax.shard_map` where collectives are written by hand (losses with `axis_name`).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxssl.errors import ConfigError

DATA_AXIS = "data"
MEMBER_AXIS = "member"

# A process that stops sending heartbeats for this long is declared dead by the coordination
# service (JAX's default is 100 s). The survivors' collectives fail at once when a peer's
# sockets close; this bounds the wait to name the lost process and to shut down.
HEARTBEAT_TIMEOUT_S = 10
SHUTDOWN_TIMEOUT_S = 30


def make_mesh(num_devices: int | None = None,
              axis_names: Sequence[str] = (DATA_AXIS,),
              shape: Sequence[int] | None = None,
              devices: Sequence[Any] | None = None) -> Mesh:
  """Builds a mesh over the first `num_devices` global devices (all by default).

  Args:
    num_devices: how many devices to use; defaults to all of `jax.devices()`.
    axis_names: mesh axis names, e.g. ("data",) or ("member", "data").
    shape: mesh shape; defaults to (num_devices,) for a 1-D mesh.
    devices: explicit device list (overrides num_devices).
  """
  if devices is None:
    all_devices = jax.devices()
    n = len(all_devices) if num_devices is None else int(num_devices)
    if n < 1 or n > len(all_devices):
      raise ConfigError(
          f"num_devices={num_devices} but {len(all_devices)} device(s) are available "
          f"({jax.default_backend()}). Use a value in 1..{len(all_devices)}.")
    devices = all_devices[:n]
  n = len(devices)
  if shape is None:
    if len(axis_names) != 1:
      raise ConfigError(f"mesh shape is required for a {len(axis_names)}-D mesh {tuple(axis_names)}")
    shape = (n,)
  if int(np.prod(shape)) != n:
    raise ConfigError(f"mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices, got {n}")
  return Mesh(np.asarray(devices, dtype=object).reshape(tuple(shape)), tuple(axis_names))


def batch_sharding(mesh: Mesh, axis: str | tuple[str, ...] = DATA_AXIS) -> NamedSharding:
  """Sharding that splits the leading (batch) axis over `axis` and replicates the rest."""
  return NamedSharding(mesh, P(axis))


def replicated(mesh: Mesh) -> NamedSharding:
  """Fully replicated sharding on `mesh`."""
  return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh, axis: str = DATA_AXIS) -> int:
  return int(mesh.shape[axis])


def check_batch_divisible(global_batch_size: int, mesh: Mesh, axis: str = DATA_AXIS) -> None:
  """Fails early, with a fix, when the global batch cannot be split evenly."""
  n = data_parallel_size(mesh, axis)
  if global_batch_size <= 0:
    raise ConfigError(f"batch_size must be positive, got {global_batch_size}")
  if global_batch_size % n:
    lo = (global_batch_size // n) * n
    hi = lo + n
    raise ConfigError(
        f"batch_size={global_batch_size} is not divisible by the {n} devices of mesh axis "
        f"'{axis}'. Use a multiple of {n} (e.g. {lo or n} or {hi}), or run on fewer devices.")
  if global_batch_size % jax.process_count():
    raise ConfigError(
        f"batch_size={global_batch_size} is not divisible by the {jax.process_count()} processes.")


def host_to_global(local: Any, mesh: Mesh, axis: str | tuple[str, ...] = DATA_AXIS) -> Any:
  """Turns each process's local slice (a pytree of NumPy arrays) into global `jax.Array`s
  sharded over the batch axis, via `jax.make_array_from_process_local_data`."""
  sharding = batch_sharding(mesh, axis)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


def env_int(name: str) -> int:
  """An integer environment variable, or a ConfigError naming it."""
  text = os.environ[name]
  try:
    return int(text)
  except ValueError:
    raise ConfigError(f"environment variable {name}={text!r} must be an integer (e.g. {name}=2); "
                      "fix or unset it.") from None


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None,
                           local_device_ids: Sequence[int] | None = None) -> bool:
  """Starts JAX's multi-controller runtime when running multi-process.

  Arguments fall back to the environment: JAXSSL_COORDINATOR, JAXSSL_NUM_PROCESSES,
  JAXSSL_PROCESS_ID. With none of them set, `jax.distributed.initialize()` is called
  with no arguments only where JAX can auto-detect the cluster (Cloud TPU pods, SLURM,
  Open MPI); on a single machine nothing happens. Returns True if initialised.
  """
  coordinator_address = coordinator_address or os.environ.get("JAXSSL_COORDINATOR")
  if num_processes is None and os.environ.get("JAXSSL_NUM_PROCESSES"):
    num_processes = env_int("JAXSSL_NUM_PROCESSES")
  if process_id is None and os.environ.get("JAXSSL_PROCESS_ID"):
    process_id = env_int("JAXSSL_PROCESS_ID")
  explicit = coordinator_address is not None or num_processes is not None or process_id is not None
  if explicit:
    if coordinator_address is None or num_processes is None or process_id is None:
      raise ConfigError(
          "multi-process training needs all of coordinator address, number of processes and "
          f"process id; got coordinator={coordinator_address!r}, num_processes={num_processes!r}, "
          f"process_id={process_id!r}.")
    if not 0 <= process_id < num_processes:
      raise ConfigError(f"process_id={process_id} must be in [0, {num_processes}).")
    if num_processes == 1:
      return False
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids,
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
                               shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
    return True
  auto = ("SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1) or \
         ("TPU_WORKER_HOSTNAMES" in os.environ and "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")) or \
         ("OMPI_COMM_WORLD_SIZE" in os.environ and int(os.environ["OMPI_COMM_WORLD_SIZE"]) > 1)
  if auto:
    jax.distributed.initialize(heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
                               shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
    return True
  return False


# Where a failing run's checkpoints are, for the one-paragraph message (set by `jaxssl train`).
_FAILURE_CONTEXT = {"workdir": None}
PEER_FAILURE_EXIT_CODE = 3


def set_failure_workdir(workdir: str | None) -> None:
  """Names the workdir in the message printed if a peer process dies."""
  _FAILURE_CONTEXT["workdir"] = workdir


def failure_paragraph(me: int, n: int, lost: list[int] | None, cause: str) -> str:
  """The message a survivor prints: who was lost, that the checkpoints are intact, --resume."""
  who = (f"process {', '.join(map(str, lost))} of {n}" if lost else
         f"another of the {n} processes (the coordination service could not say which yet)")
  workdir = _FAILURE_CONTEXT["workdir"]
  where = f"in {workdir}/checkpoints " if workdir else ""
  return (f"process {me} lost contact with {who}: it died, was killed or its host failed ({cause}). "
          f"The last complete checkpoint {where}is intact; start every process again with the same "
          "command and --resume to continue.")


_PEER_FAILURE_MARKERS = ("gloo", "connection reset", "connection closed", "socket closed", "unavailable",
                         "heartbeat", "coordination service", "barrier", "deadline exceeded", "nccl")


def is_peer_failure(error: BaseException) -> bool:
  """Whether `error` is a collective or coordination failure in a multi-process run.

  These are what a process sees when another process of the run dies: Gloo/NCCL
  all-reduce errors and coordination-service errors, raised as `JaxRuntimeError`.
  """
  if jax.process_count() <= 1 or not isinstance(error, jax.errors.JaxRuntimeError):
    return False
  text = str(error).lower()
  return any(marker in text for marker in _PEER_FAILURE_MARKERS)


def lost_processes() -> list[int] | None:
  """The process ids that are gone, or None if that cannot be told at once.

  With two processes the lost one is the other. With more, the coordination service only
  names the dead process after HEARTBEAT_TIMEOUT_S, and by then JAX's own abort has fired
  (`jaxssl.supervise` reports that case, with the id parsed from the service's error).
  """
  n, me = jax.process_count(), jax.process_index()
  return [1 - me] if n == 2 else None


def peer_failure_message(error: BaseException) -> str:
  """One paragraph for a survivor of a collective failure: who was lost, how to continue."""
  first_line = str(error).strip().splitlines()[0][:300]
  return failure_paragraph(jax.process_index(), jax.process_count(), lost_processes(), first_line)
