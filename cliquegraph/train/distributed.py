"""Several GPUs or machines through torchrun, PyTorch's own launcher (no launcher of ours).

The runner needs nothing else: under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) it joins the
process group (NCCL on GPU, gloo on CPU), wraps the module in DistributedDataParallel, gives each
process its shard of every epoch's order, logs and checkpoints on rank 0 only, and leaves the group
at exit. `--batch-size` stays the recipe's batch over all processes (64 on 4 GPUs: 16 each).

One machine, 8 GPUs:

    torchrun --nproc_per_node 8 -m cliquegraph compile specs/s3.clq --train imagenet \\
        --data /data/imagenet --amp bf16 --channels-last

Two machines with 8 GPUs each: the same command on both, differing only in --node_rank, with
torchrun's own rendezvous at a host:port of the first machine that both can reach:

    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 \\
        --rdzv_backend c10d --rdzv_endpoint node0.example.org:29500 --rdzv_id imagenet-s3 \\
        -m cliquegraph compile specs/s3.clq --train imagenet --data /data/imagenet
    torchrun --nnodes 2 --node_rank 1 ...   (the rest unchanged)

CPU only (slow, but what the tests use): `torchrun --nproc_per_node 2 -m cliquegraph train ...
--device cpu` uses gloo. Resuming (`--resume`) works under torchrun as without it; use the same
number of processes to continue with the very same random streams.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0


def launched() -> bool:
    """Started by torchrun (or anything else that sets its environment)?"""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def setup(device: str) -> tuple[World, torch.device]:
    """Join the process group when launched by torchrun; the World and this process's device."""
    if not launched():
        return World(), torch.device(device)
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                  int(os.environ["LOCAL_RANK"]))
    if device == "cuda":
        torch.cuda.set_device(world.local_rank)
        dev = torch.device("cuda", world.local_rank)
    else:
        dev = torch.device(device)
    if not dist.is_initialized():
        # Generous: rank 0 may spend minutes writing a checkpoint while the others wait.
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=30))
    return world, dev


def teardown(clean: bool = True) -> None:
    """Leave the process group. After a clean run every rank first waits for the others, so
    none tears gloo down while another is still in a collective (an abort at exit); after a
    failure no rank waits (the others may never come)."""
    if dist.is_initialized():
        if clean and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def all_sum(values, device) -> list[float]:
    """Sum a few numbers over all processes (the numbers themselves without torchrun)."""
    t = torch.as_tensor(values, dtype=torch.float64, device=device)
    if active():
        dist.all_reduce(t)
    return t.tolist()


def all_ok(ok: bool, device) -> bool:
    """True where every process says ok: how rank 0's write failure stops the others too."""
    return all_sum([0.0 if ok else 1.0], device)[0] == 0


def sync_buffers(module) -> None:
    """Rank 0's buffers (BatchNorm statistics) everywhere."""
    if active():
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def gather(obj) -> list:
    """Every process's obj, in rank order."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
