"""Multi-process training through RecBole's own distributed path, on GPUs or on CPUs.

RecBole 1.2.1 starts one process per rank (``nproc``, ``world_size``, ``ip``, ``port``,
``offset``), and ``Config`` then joins a process group with the NCCL backend and puts the
rank on ``cuda:<local_rank>``; its trainers wrap the model in
``DistributedDataParallel(device_ids=[local_rank])``. Both assume CUDA. Here:

- ``init_process_group`` joins with gloo when the run is on the CPU (no GPU, or
  ``use_gpu: False``) and leaves the CUDA case to RecBole (NCCL);
- ``DistributedMixin`` builds DDP for the device the model is on, and keeps the
  data-derived buffers (content features, word bags, neighbour table: non-persistent
  buffers every rank builds identically from the dataset) out of DDP's broadcasts;
- ``broadcast_``, ``barrier`` and ``agreed_text`` keep InvRL's own stages and the
  checkpoint names consistent across ranks.

Gradients are averaged over ranks by DDP, and RecBole gives each rank
``train_batch_size / world_size`` interactions per step, so a model whose loss is a
mean over the batch takes the same step as one process. A loss summed over the batch
(UltraGCN-MM, as in the release) is scaled by ``world_size`` (``loss_scale``).
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def is_distributed(config: Mapping[str, Any]) -> bool:
    """True inside a rank of a multi-process run (RecBole's ``single_spec`` is False)."""
    return not config["single_spec"]


def is_decider(config: Mapping[str, Any]) -> bool:
    """The process that makes the decisions all ranks share: rank 0, or the only one."""
    return not is_distributed(config) or dist.get_rank() == 0


def loss_scale(config: Mapping[str, Any]) -> int:
    """Factor for a loss summed over the batch, so DDP's gradient average equals the
    one-process gradient of the whole batch."""
    return int(config["world_size"]) if is_distributed(config) else 1


def wants_cuda(config_dict: Mapping[str, Any]) -> bool:
    """RecBole's device rule: CUDA when ``use_gpu``, a ``gpu_id`` and a visible GPU."""
    return bool(config_dict.get("use_gpu", True)) and bool(str(config_dict["gpu_id"])) and torch.cuda.is_available()


def init_cpu_process_group(config_dict: dict[str, Any]) -> None:
    """Join the process group with gloo and configure the rank like RecBole does for CUDA."""
    rank = int(config_dict["local_rank"]) + int(config_dict["offset"])
    if not dist.is_initialized():
        dist.init_process_group(
            backend="gloo",
            rank=rank,
            world_size=int(config_dict["world_size"]),
            init_method=f"tcp://{config_dict['ip']}:{config_dict['port']}",
            timeout=timedelta(seconds=float(config_dict.get("ddp_timeout") or 7200)),
        )
    config_dict["device"] = torch.device("cpu")
    config_dict["single_spec"] = False
    if config_dict["local_rank"] != 0:  # RecBole's choice: only rank 0 logs and shows bars
        config_dict["state"] = "error"
        config_dict["show_progress"] = False
        config_dict["verbose"] = False


def data_buffer_names(model: torch.nn.Module) -> list[str]:
    """Fully qualified names of the non-persistent buffers (derived from the dataset)."""
    return [
        f"{module_name}.{buffer}" if module_name else buffer
        for module_name, module in model.named_modules()
        for buffer in module._non_persistent_buffers_set
    ]


def wrap_ddp(model: torch.nn.Module, config: Mapping[str, Any]) -> DistributedDataParallel:
    """DDP for the model's device: ``device_ids`` on CUDA only; data buffers not broadcast."""
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, data_buffer_names(model))
    on_cuda = config["device"].type == "cuda"
    return DistributedDataParallel(model, device_ids=[config["local_rank"]] if on_cuda else None)


class DistributedMixin:
    """A RecBole trainer whose DDP wrapper works on CPU (gloo) as well as on CUDA."""

    def __init__(self, config, model):
        if not is_distributed(config):
            super().__init__(config, model)
            return
        config["single_spec"] = True  # RecBole's own wrapper assumes CUDA; built below instead
        try:
            super().__init__(config, model)
        finally:
            config["single_spec"] = False
        if config["device"].type == "cuda":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.distributed_model = wrap_ddp(self.model, config)


def broadcast_(tensor: torch.Tensor, config: Mapping[str, Any]) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank 0's (no-op in a single process)."""
    if is_distributed(config):
        dist.broadcast(tensor, src=0)
    return tensor


def barrier(config: Mapping[str, Any]) -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint)."""
    if is_distributed(config):
        dist.barrier()


def agreed_text(text: str, config: Mapping[str, Any]) -> str:
    """Rank 0's ``text`` on every rank (``text`` itself in a single process)."""
    if not is_distributed(config):
        return text
    device = config["device"]
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8, device=device)
    length = torch.tensor([len(data)], dtype=torch.long, device=device)
    dist.broadcast(length, src=0)
    received = torch.zeros(int(length.item()), dtype=torch.uint8, device=device)
    received[: len(data)] = data[: int(length.item())]
    dist.broadcast(received, src=0)
    return bytes(received.cpu().tolist()).decode("utf-8")
