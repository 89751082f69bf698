"""Data-parallel training with ``torch.distributed``: the process group, the ranks, their errors.

:func:`modelpress.compress.train.fit` (and so the ``train`` and ``distill`` stages and prune's fine-tuning, which all
call it) trains data-parallel in two ways:

* ``nproc`` > 1 (``--nproc N``, ``nproc: N`` in YAML): :func:`run_ranks` forks N worker processes on this machine,
  joins them in a gloo group on a free localhost port, runs the training loop in each and hands rank 0's final
  weights back to the calling process, which goes on as if it had trained alone (only it writes outputs). Forked
  ranks run one intra-op thread each: the OpenMP runtime in torch's wheels (libgomp) hangs in a forked child that
  asks for more than one thread, and on a CPU one rank per core is the point of data parallelism anyway.
* under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` in the environment,
  WORLD_SIZE > 1): :func:`torchrun_env` reads them and every call of ``fit`` in the launched script trains across
  the launched ranks (it joins the group from the environment unless the script did). The loop trains on the CPU,
  so the group is gloo; NCCL would need the loop to move batches to a GPU, which it does not.

Every rank takes ``batch/N`` of every global batch (a strided share of the same seeded permutation, like
``DistributedSampler`` without padding), gradients are all-reduced by ``DistributedDataParallel``, and each rank's
loss is weighted by its share of the batch, and BatchNorm layers normalise with the whole batch's statistics
(:func:`sync_batchnorm`), so every optimizer step is the one-process step on the whole batch up to the order of
float additions. Dropout is the exception: each rank draws its own masks from the same seed, so a model with dropout
trains as well but not to the same weights. Only rank 0 writes checkpoints and shows a progress bar.

Errors: a rank that raises writes its error and exits; the caller stops the other ranks at once and raises one
error naming the rank that failed first (an :class:`InputError` stays exit 2, anything else is exit 1). Joining the
group and every collective time out after :data:`TIMEOUT_S` seconds, so a rank that never arrives is an error, not a
hang.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..config import Interval, option
from ..errors import BackendUnavailable, InputError, ModelpressError
from ..io import read_json, write_json

#: The most ranks ``--nproc`` starts on one machine (each is a full process holding a copy of the model and data).
MAX_NPROC = 64
#: Seconds to wait for all ranks to join the group, and for any collective (a rank that stopped answering).
TIMEOUT_S = 300.0
#: Seconds a stopped rank gets to exit after SIGTERM before it is killed.
GRACE_S = 5.0

_RESULT_JSON = "result.json"
_RESULT_TENSORS = "result.safetensors"


def nproc_option() -> Any:
    """The ``nproc`` field of a stage that trains (train, distill; prune's fine-tuning)."""
    return option(1, Interval(int, 1, MAX_NPROC, noun=False),
                  help="Data-parallel processes for training (torch.distributed, gloo); each takes batch/N of "
                       "every batch. 1 trains in this process.")


def check_nproc(where: str, nproc: int, batch_size: int) -> None:
    """``nproc`` in [1, MAX_NPROC] and no larger than the batch (every rank needs a share of a full batch)."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or not 1 <= nproc <= MAX_NPROC:
        raise InputError(f"{where}.nproc must be in [1, {MAX_NPROC}], got {nproc}")
    if nproc > int(batch_size):
        raise InputError(f"{where}.nproc = {nproc} is larger than {where}.batch_size = {batch_size}: each process "
                         f"takes batch/nproc samples of every batch",
                         hint=f"use nproc ≤ {batch_size} or a larger batch_size")


@dataclass(frozen=True)
class Group:
    """This process's place in a data-parallel group."""

    rank: int
    world: int
    local_rank: int = 0
    backend: str = "gloo"


_CURRENT: Group | None = None


def current() -> Group | None:
    """The group the running training loop belongs to (``None`` when it trains alone)."""
    return _CURRENT


def rank() -> int:
    """This process's rank in the running data-parallel training (0 when there is none)."""
    return _CURRENT.rank if _CURRENT is not None else 0


def torchrun_env() -> Group | None:
    """The group ``torchrun`` (or any launcher setting its variables) started this process in; ``None`` when
    ``WORLD_SIZE`` is unset or 1."""
    world_text = os.environ.get("WORLD_SIZE")
    if world_text is None:
        return None
    values: dict[str, int] = {}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        text = os.environ.get(name, "0" if name == "LOCAL_RANK" else None)
        try:
            values[name] = int(text) if text is not None else -1
        except ValueError:
            raise InputError(f"environment variable {name}={text!r} is not an integer",
                             hint="launch with torchrun, or unset WORLD_SIZE to train in one process") from None
    world, index = values["WORLD_SIZE"], values["RANK"]
    if world <= 1:
        return None
    if not 0 <= index < world:
        raise InputError(f"environment variable RANK={os.environ.get('RANK')!r} must be in [0, {world}) "
                         f"for WORLD_SIZE={world}", hint="launch with torchrun, which sets both")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise InputError(f"WORLD_SIZE={world} is set but {name} is not", hint="launch with torchrun")
    return Group(index, world, values["LOCAL_RANK"])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require_distributed() -> Any:
    import torch.distributed as dist

    if not dist.is_available():
        raise BackendUnavailable("this torch build has no torch.distributed", hint="train with nproc 1")
    return dist


def join(group: Group, *, addr: str, port: int, timeout_s: float | None = None) -> None:
    """Join the process group (TCP rendezvous at ``addr:port``); an error naming the rank after ``timeout_s``."""
    dist = _require_distributed()
    timeout_s = TIMEOUT_S if timeout_s is None else float(timeout_s)
    try:
        dist.init_process_group(group.backend, init_method=f"tcp://{addr}:{port}", rank=group.rank,
                                world_size=group.world, timeout=timedelta(seconds=timeout_s))
    except Exception as exc:  # DistStoreError, RuntimeError, ValueError: one line whatever torch raised
        first = (str(exc).splitlines() or [""])[0][:300]
        raise ModelpressError(f"rank {group.rank} of {group.world} could not join the torch.distributed group at "
                              f"{addr}:{port} within {timeout_s:g} s ({type(exc).__name__}: {first})",
                              hint="check that every rank was started with the same MASTER_ADDR/MASTER_PORT and "
                                   "WORLD_SIZE") from None


def leave() -> None:
    dist = _require_distributed()
    if dist.is_initialized():
        dist.destroy_process_group()


class activate:
    """``with activate(group):`` — :func:`current` / :func:`rank` answer for ``group`` inside the block."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.before: Group | None = None

    def __enter__(self) -> Group:
        global _CURRENT
        self.before, _CURRENT = _CURRENT, self.group
        return self.group

    def __exit__(self, *exc: Any) -> None:
        global _CURRENT
        _CURRENT = self.before


def ensure_torchrun_group(group: Group) -> Group:
    """Under torchrun: join the group from the environment unless the script already did; the group as used."""
    dist = _require_distributed()
    if dist.is_initialized():
        if dist.get_world_size() != group.world or dist.get_rank() != group.rank:
            raise InputError(f"the torch.distributed group already joined (rank {dist.get_rank()} of "
                             f"{dist.get_world_size()}) is not the one in the environment (RANK={group.rank}, "
                             f"WORLD_SIZE={group.world})")
        if dist.get_backend() != "gloo":
            raise InputError(f"training runs on the CPU and needs a gloo group; the script joined "
                             f"{dist.get_backend()}", hint="init_process_group('gloo') or let fit() join it")
        return group
    join(group, addr=os.environ["MASTER_ADDR"], port=int(os.environ["MASTER_PORT"]))
    return group


# ---- forked ranks ------------------------------------------------------------------------------------------------
Worker = Callable[[Group], "tuple[dict[str, Any], dict[str, Any]] | None"]


def run_ranks(nproc: int, worker: Worker, *, timeout_s: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fork ``nproc`` ranks on this machine, run ``worker(group)`` in each, return rank 0's ``(record, tensors)``.

    ``worker`` runs inside the joined gloo group (with :func:`rank` set) and returns, on rank 0, a JSON-safe record
    and a mapping of CPU tensors (both come back through files: safetensors and JSON, no pickle); other ranks'
    return values are ignored. The first rank to fail stops the others and its error is raised here.
    """
    if nproc < 2:
        raise ValueError("run_ranks needs at least 2 ranks")
    if "fork" not in multiprocessing.get_all_start_methods():
        raise BackendUnavailable("data-parallel training with nproc > 1 needs the fork start method (Linux, macOS)",
                                 hint="launch with torchrun instead, or train with nproc 1")
    _require_distributed()
    timeout_s = TIMEOUT_S if timeout_s is None else float(timeout_s)
    ctx = multiprocessing.get_context("fork")
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="modelpress-ddp-"))
    procs = [ctx.Process(target=_rank_main, args=(r, nproc, port, folder, worker, timeout_s), daemon=True,
                         name=f"modelpress-rank-{r}") for r in range(nproc)]
    try:
        for p in procs:
            p.start()
        _watch(procs, folder, timeout_s)
        record = read_json(folder / _RESULT_JSON)
        tensors = _load_tensors(folder / _RESULT_TENSORS)
        return record, tensors
    finally:
        _stop(procs)
        shutil.rmtree(folder, ignore_errors=True)


def _rank_main(index: int, world: int, port: int, folder: Path, worker: Worker, timeout_s: float) -> None:
    """A forked rank: one thread, quiet unless rank 0, join, work, write rank 0's result or this rank's error."""
    code = 0
    try:
        import torch

        torch.set_num_threads(1)  # libgomp hangs in a forked child that asks for more threads than this
        _die_with_parent()
        if index != 0:
            from .. import progress

            progress.set_quiet(True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the caller, which stops the ranks
        group = Group(index, world, index, "gloo")
        join(group, addr="127.0.0.1", port=port, timeout_s=timeout_s)
        try:
            with activate(group):
                out = worker(group)
        finally:
            leave()
        if index == 0:
            if out is None:
                raise RuntimeError("rank 0 returned no result")
            record, tensors = out
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                      str(folder / _RESULT_TENSORS))
            write_json(folder / _RESULT_JSON, record)
    except BaseException as exc:  # noqa: BLE001 — reported to the caller, which raises it as one error
        code = int(getattr(exc, "exit_code", 1) or 1)
        message = exc.format_message() if isinstance(exc, ModelpressError) else \
            f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:500]}"
        try:
            write_json(folder / f"error-{index}.json", {"rank": index, "time": time.time(), "message": message,
                                                        "exit_code": code, "input_error": isinstance(exc, InputError),
                                                        "peer": _peer_gone(exc)})
        except OSError:
            pass
    finally:
        os._exit(code)  # no atexit handlers or buffers of the parent run twice


def _die_with_parent() -> None:
    """Linux: SIGTERM this rank when the process that forked it dies (killed callers leave no orphans)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the collectives' timeout still ends an orphaned rank
    if os.getppid() == 1:  # the caller died before the line above
        os._exit(1)


def _peer_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another rank went away (a consequence, not the cause)."""
    name = type(exc).__name__
    return name.startswith("Dist") or "gloo" in str(exc).lower() or "connection" in str(exc).lower()


def _watch(procs: list[Any], folder: Path, timeout_s: float) -> None:
    """Wait for every rank; at the first one that fails, stop the others and raise its error."""
    from multiprocessing.connection import wait

    pending = {p.sentinel: p for p in procs}
    while pending:
        for sentinel in wait(list(pending), timeout=1.0):
            proc = pending.pop(sentinel)
            proc.join()
            if proc.exitcode != 0:
                _stop(procs)
                raise _failure(procs, folder, timeout_s)


def _failure(procs: list[Any], folder: Path, timeout_s: float) -> ModelpressError:
    """One error for the group: the first rank that raised (by the time it recorded), else a rank that died without
    a word (a signal, ``os._exit``), else the first collective that failed because a peer went away."""
    errors = []
    for path in folder.glob("error-*.json"):
        try:
            errors.append(read_json(path))
        except (OSError, ValueError):
            continue
    world = len(procs)
    own = sorted((e for e in errors if not e.get("peer")), key=lambda e: (float(e.get("time", 0)), e.get("rank", 0)))
    if own:
        first = own[0]
        text = f"data-parallel training failed on rank {first['rank']} of {world}: {first['message']}"
        return InputError(text) if first.get("input_error") else ModelpressError(text)
    reported = {int(e.get("rank", -1)) for e in errors}
    for index, proc in enumerate(procs):
        if index not in reported and proc.exitcode not in (0, None) and not getattr(proc, "stopped_by_us", False):
            how = f"was killed by signal {-proc.exitcode}" if proc.exitcode < 0 else f"exited with {proc.exitcode}"
            return ModelpressError(f"data-parallel training failed: rank {index} of {world} {how}",
                                   hint="a checkpoint folder keeps the last finished epoch; run again to resume")
    if errors:
        first = min(errors, key=lambda e: (float(e.get("time", 0)), e.get("rank", 0)))
        if "timed out" in str(first["message"]).lower():
            return ModelpressError(f"data-parallel training failed: rank {first['rank']} of {world} waited "
                                   f"{timeout_s:g} s for the other ranks, which stopped answering "
                                   f"({first['message']})", hint="a rank hung; the others were stopped")
        return ModelpressError(f"data-parallel training failed on rank {first['rank']} of {world}: "
                               f"{first['message']}")
    return ModelpressError(f"data-parallel training failed: a rank of {world} stopped")


def _stop(procs: list[Any]) -> None:
    """SIGTERM every rank still running, SIGKILL after :data:`GRACE_S`; reap all."""
    for p in procs:
        if p.pid is not None and p.exitcode is None:
            p.stopped_by_us = True  # its exit code is ours, not its failure
            p.terminate()
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        if p.pid is None:
            continue
        p.join(max(0.0, deadline - time.monotonic()))
        if p.exitcode is None:
            p.kill()
            p.join()


def _load_tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


# ---- collectives used by the training loop -------------------------------------------------------------------------
def broadcast_bytes(payload: bytes | None, *, src: int = 0) -> bytes:
    """``payload`` from rank ``src`` to every rank (as a uint8 tensor; no pickle)."""
    import torch
    import torch.distributed as dist

    size = torch.tensor([len(payload) if payload is not None else 0], dtype=torch.int64)
    dist.broadcast(size, src)
    buf = torch.empty(int(size.item()), dtype=torch.uint8)
    if payload is not None and dist.get_rank() == src:
        buf = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload else buf
    if int(size.item()):
        dist.broadcast(buf, src)
    return bytes(buf.numpy().tobytes())


def broadcast_json(obj: Any, *, src: int = 0) -> Any:
    """A JSON-safe object from rank ``src`` to every rank."""
    import torch.distributed as dist

    data = json.dumps(obj).encode() if dist.get_rank() == src else None
    return json.loads(broadcast_bytes(data, src=src).decode())


def sync_buffers(module: Any, *, src: int = 0) -> None:
    """Every rank's buffers (BatchNorm statistics) become rank ``src``'s."""
    import torch.distributed as dist

    for buf in module.buffers():
        dist.broadcast(buf.data, src)


def all_sum(value: float) -> float:
    """The sum of ``value`` over the ranks (float64)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item())


# ---- BatchNorm over the whole batch ----------------------------------------------------------------------------------
class _Share:
    """Whether this rank's share of the current batch is a stand-in sample (weight 0), set by the training loop."""

    empty = False


SHARE = _Share()


def sync_batchnorm(module: Any) -> Any:
    """``with sync_batchnorm(module):`` — its BatchNorm layers normalise training batches with the statistics of
    the whole global batch (sums all-reduced across the ranks, differentiably) and update their running statistics
    with them, as one process would; torch's ``SyncBatchNorm`` runs on GPUs only. Eval mode is untouched. The
    layers' forward is swapped on the instances for the block and restored after it, so the module's type and
    state_dict keys never change."""
    import contextlib

    from torch.nn.modules.batchnorm import SyncBatchNorm, _BatchNorm

    layers = [m for m in module.modules() if isinstance(m, _BatchNorm) and not isinstance(m, SyncBatchNorm)]

    @contextlib.contextmanager
    def patched() -> Any:
        for layer in layers:
            layer.forward = _global_batchnorm(layer)
        try:
            yield module
        finally:
            for layer in layers:
                layer.__dict__.pop("forward", None)

    return patched()


def _summed(tensor: Any) -> Any:
    """The sum of ``tensor`` over the ranks, differentiable: the gradient is the sum of the ranks' gradients."""
    import torch
    import torch.distributed as dist

    class _AllSum(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, t: Any) -> Any:
            out = t.clone()
            dist.all_reduce(out)
            return out

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            grad = grad.clone()
            dist.all_reduce(grad)
            return grad

    return _AllSum.apply(tensor)


def _global_batchnorm(layer: Any) -> Callable[[Any], Any]:
    import torch

    native = type(layer).forward

    def forward(x: Any) -> Any:
        if not layer.training or x.dim() < 2:
            return native(layer, x)
        dims = [0, *range(2, x.dim())]
        per_channel = x.numel() // max(1, x.shape[1])
        keep = 0.0 if SHARE.empty else 1.0  # a stand-in sample counts for nothing
        wide = x.double()
        stats = torch.cat([wide.sum(dims) * keep, (wide * wide).sum(dims) * keep,
                           torch.tensor([per_channel * keep], dtype=torch.float64)])
        stats = _summed(stats)
        channels = x.shape[1]
        count = stats[-1]
        mean = stats[:channels] / count
        var = (stats[channels : 2 * channels] / count - mean * mean).clamp_min(0)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x - mean.to(x.dtype).view(shape)) * torch.rsqrt(var.to(x.dtype) + layer.eps).view(shape)
        if layer.affine:
            y = y * layer.weight.view(shape) + layer.bias.view(shape)
        if layer.track_running_stats and layer.running_mean is not None:
            with torch.no_grad():
                layer.num_batches_tracked.add_(1)
                momentum = layer.momentum if layer.momentum is not None else 1.0 / float(layer.num_batches_tracked)
                n = float(count)
                unbiased = var * (n / (n - 1)) if n > 1 else var
                layer.running_mean.mul_(1 - momentum).add_(mean.to(layer.running_mean.dtype), alpha=momentum)
                layer.running_var.mul_(1 - momentum).add_(unbiased.to(layer.running_var.dtype), alpha=momentum)
        return y

    return forward
