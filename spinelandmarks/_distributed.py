"""Which process of a multi-process (DDP) run this is, and a barrier between them.

Lightning's ``ddp`` launcher starts the other ranks at the first ``Trainer.fit`` by running the
same command again with ``LOCAL_RANK``/``NODE_RANK`` set (torchrun and SLURM set ``RANK``), so
before that fit a process knows its rank from the environment, and after it from
``torch.distributed``. A single process (or the main process of ``ddp_spawn``) is rank 0.
"""

from __future__ import annotations

import os

import torch.distributed as dist

__all__ = ["barrier", "is_rank_zero"]


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_rank_zero() -> bool:
    """True in the process that writes shared files (global rank 0, or the only process)."""
    if _initialized():
        return dist.get_rank() == 0
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    return all(int(os.environ.get(k, "0")) == 0 for k in ("LOCAL_RANK", "NODE_RANK",
                                                           "GROUP_RANK"))


def barrier() -> None:
    """Wait until every rank reaches this call; nothing to wait for in a single process.

    Uses the process group's timeout (Lightning's default: 30 minutes).
    """
    if _initialized():
        dist.barrier()
