"""Distributed setup, FSDP2 and torch.compile, applied to the model from the outside.

Kept apart from ``train/model.py`` as in torchtitan: the model stays a plain nn.Module and this
module wraps it. Order matters (torchtitan's): activation checkpointing, then compile each
block, then shard (FSDP2's hooks sit around the compiled blocks, so its all-gathers and
reduce-scatters stay outside the graphs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device: cuda requested but torch.cuda.is_available() is False")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(requested)


def init_distributed(requested_device: str = "auto") -> DistInfo:
    """Read torchrun's env (RANK, LOCAL_RANK, WORLD_SIZE); start NCCL (GPU) or gloo (CPU).

    Without those variables (in-process use) this is a single process and nothing is started.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=device)


def make_mesh(info: DistInfo) -> DeviceMesh:
    """A 1-D data-parallel mesh over all ranks (world size 1 works too, for FSDP2 at W=1)."""
    if not dist.is_initialized():
        # FSDP2 at world size 1 still needs a process group (a single-rank one)
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
        backend = "nccl" if info.device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=0, world_size=1)
    return init_device_mesh(info.device.type, (info.world_size,), mesh_dim_names=("dp",))


def apply_fsdp(
    model: nn.Module,
    mesh: DeviceMesh,
    param_dtype: torch.dtype | None = torch.bfloat16,
    reduce_dtype: torch.dtype | None = torch.float32,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """FSDP2 (``fully_shard``): each block is one unit, the root holds embedding + head.

    ``param_dtype=bf16, reduce_dtype=fp32``: compute in bf16 (no autocast needed) while
    gradients are reduced and the sharded master weights and optimizer state stay fp32.
    The tied embedding/LM-head weight must live in a single unit, hence the root.
    The last block is not resharded after forward: backward needs it right away. The root is
    never resharded after forward (FSDP2's default for the root, kept by passing nothing):
    its embedding/head is the largest unit and backward starts with it.
    The blocks do not cast their forward inputs (``cast_forward_inputs=False``): the hidden
    state already arrives in bf16 from the root, and the RoPE cos/sin tables must stay fp32
    (cast to bf16 they are off by up to 2e-3 and FSDP and plain runs diverge).
    """
    mp_root = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    mp_block = MixedPrecisionPolicy(
        param_dtype=param_dtype, reduce_dtype=reduce_dtype, cast_forward_inputs=False
    )
    layers = list(model.layers)  # type: ignore[attr-defined]
    for i, block in enumerate(layers):
        last = i == len(layers) - 1
        fully_shard(
            block,
            mesh=mesh,
            mp_policy=mp_block,
            reshard_after_forward=reshard_after_forward and not last,
        )
    fully_shard(model, mesh=mesh, mp_policy=mp_root)
    return model


def apply_activation_checkpointing(model: nn.Module) -> nn.Module:
    """Recompute every block in backward instead of keeping its activations (less memory,
    about one more forward of compute). Apply before ``apply_compile`` and ``apply_fsdp``."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    layers = model.layers  # type: ignore[attr-defined]
    for i, block in enumerate(list(layers)):
        layers[i] = checkpoint_wrapper(block, preserve_rng_state=False)
    return model


def apply_compile(model: nn.Module) -> nn.Module:
    """Compile each block and the head (final norm + LM head + loss), as torchtitan does.

    Each block is replaced by its compiled wrapper (``torch.compile(block, fullgraph=True)``);
    blocks share a shape, so one graph serves all of them. Wrapping (rather than
    ``block.compile()``) keeps FSDP2's hooks, which ``apply_fsdp`` registers on the wrapper,
    outside the compiled region. The wrapper adds ``_orig_mod.`` to parameter names;
    DCP's ``get_state_dict`` strips it, so checkpoints do not depend on compilation.
    """
    layers = model.layers  # type: ignore[attr-defined]
    for i, block in enumerate(list(layers)):
        layers[i] = torch.compile(block, fullgraph=True)
    model.head = torch.compile(model.head, fullgraph=True)  # type: ignore[attr-defined]
    return model


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_min(value: int) -> int:
    """The smallest ``value`` over all ranks (``value`` itself in a single process)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return value
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
