"""How the processes of one run were started (``--launcher``), defined once for the CLI, the runner and studies.

Light on purpose: the parsers import :data:`LAUNCHERS` for ``--help`` without torch.
"""
from __future__ import annotations

import os

from rs_transfer.errors import UserError

LAUNCHERS = ("none", "pytorch", "slurm")


def init_distributed(launcher: str) -> int:
    """Initialise torch.distributed ourselves on CPU (mmengine's init calls torch.cuda.set_device); world size."""
    import torch
    import torch.distributed as dist

    if launcher == "none":
        return 1
    if launcher not in LAUNCHERS:
        raise UserError(f"unknown launcher {launcher!r}; choose one of {', '.join(LAUNCHERS)}")
    if launcher == "pytorch" and "RANK" not in os.environ:
        raise UserError("--launcher pytorch needs torchrun: `torchrun --nproc_per_node N -m rs_transfer.cli run ... "
                        "--launcher pytorch`")
    if launcher == "pytorch" and not torch.cuda.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    if dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))


def launched_world_size(launcher: str) -> int:
    """The world size a run under ``launcher`` gets in THIS process's environment (torchrun / slurm set it)."""
    if launcher == "none":
        return 1
    return int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))
