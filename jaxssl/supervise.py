"""A thin parent process for multi-process runs, so that a dead peer gives a message.

When one process of a multi-process run dies, JAX's coordination client in every
survivor calls LOG(FATAL) from a C++ thread: the survivor aborts with a C++ stack trace
and no word about what to do, or waits in a collective and the shutdown barrier first.
No Python code runs before that abort (the client's callback cannot be replaced from
Python: its status argument has no Python type), so `jaxssl` runs the work in a child
process and watches it:

- the child's stderr streams through; the C++ stack-trace lines are dropped;
- a child killed by SIGABRT after a coordination error becomes one paragraph naming the
  lost process (parsed from the service's error) and saying `--resume` continues;
- SIGTERM / SIGINT to the parent are forwarded once to the child (the child runs in
  its own process group, so a terminal's Ctrl-C reaches it once, through us);
- the child dies with the parent (PR_SET_PDEATHSIG), so killing the parent kills the run.

The child is `python -m jaxssl <same arguments>` with JAXSSL_SUPERVISED=1.
"""
from __future__ import annotations

import collections
import ctypes
import os
import re
import signal
import subprocess
import sys
from typing import Sequence

from jaxssl import parallel

SUPERVISED_ENV = "JAXSSL_SUPERVISED"
_STACK_TRACE_LINE = re.compile(r"^\s+@\s+0x[0-9a-f]+\s")
_PR_SET_PDEATHSIG = 1


def is_supervised_child() -> bool:
  return os.environ.get(SUPERVISED_ENV) == "1"


def _die_with_parent() -> None:  # runs in the child between fork and exec
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  except OSError:
    pass  # not Linux: the child outlives a killed parent, as any process would


def lost_from_coordination_error(text: str) -> list[int] | None:
  """Process ids that a coordination-service error names as gone, or None.

  >>> lost_from_coordination_error("unhealthy (stopped sending heartbeats):\\n1\\nThe tasks")
  [1]
  """
  m = re.search(r"stopped sending heartbeats\)?:\s*((?:\d+[,\s]*)+)", text)
  if m:
    return sorted({int(x) for x in re.findall(r"\d+", m.group(1))})
  if re.search(r"leader task|Failed to send RPC to coordination service|Socket closed", text):
    return [0]      # the coordination service lives in process 0
  return None


def run_supervised(argv: Sequence[str], process_id: int, num_processes: int, workdir: str | None) -> int:
  """Runs `python -m jaxssl argv` as a child and returns its exit status (see module doc)."""
  env = dict(os.environ, **{SUPERVISED_ENV: "1"})
  child = subprocess.Popen([sys.executable, "-m", "jaxssl", *argv], env=env, stderr=subprocess.PIPE,
                           process_group=0, preexec_fn=_die_with_parent)

  def forward(signum, frame):
    if child.poll() is None:
      child.send_signal(signum)

  old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
  tail: collections.deque[str] = collections.deque(maxlen=400)
  pending = b""
  try:
    fd = child.stderr.fileno()
    while True:
      try:
        chunk = os.read(fd, 65536)
      except InterruptedError:
        continue
      if not chunk:
        break
      pending += chunk
      # Whole lines are filtered; a progress bar's \r-updates pass through at once.
      *lines, pending = pending.split(b"\n")
      for raw in lines:
        line = raw.decode(errors="replace")
        tail.append(line)
        if not _STACK_TRACE_LINE.match(line):
          sys.stderr.write(line + "\n")
      if b"\r" in pending:
        head, _, pending = pending.rpartition(b"\r")
        sys.stderr.write(head.decode(errors="replace") + "\r")
      sys.stderr.flush()
    if pending:
      sys.stderr.write(pending.decode(errors="replace"))
    rc = child.wait()
  finally:
    for sig, handler in old.items():
      signal.signal(sig, handler)
  text = "\n".join(tail)
  if rc == -signal.SIGABRT and ("coordination" in text or "distributed service" in text):
    parallel.set_failure_workdir(workdir)
    cause = next((line.strip() for line in tail if "absl::Status" in line or "heartbeats" in line),
                 "the coordination service reported a failure")
    cause = cause.split("absl::Status:")[-1].strip()[:300]
    print("jaxssl: error: " + parallel.failure_paragraph(process_id, num_processes,
                                                         lost_from_coordination_error(text), cause),
          file=sys.stderr, flush=True)
    return parallel.PEER_FAILURE_EXIT_CODE
  return rc if rc >= 0 else 128 - rc
