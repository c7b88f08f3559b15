"""Data-parallel training with a momenta optimizer: one process per device, run by torchrun.

    torchrun --nproc_per_node 2 --standalone examples/ddp_train.py

Each process trains a replica of the model on its share of every batch; DDP averages the
gradients, so every replica takes the same step. The optimizer is a momenta optimizer used
exactly as torch.optim's would be: nothing in this script is specific to momenta except the
line that creates it. Runs on CPU (gloo) or, where there are GPUs, one per process (NCCL).
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import momenta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--checkpoint", help="save model and optimizer state here at the end")
    args = parser.parse_args()

    # torchrun sets RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.device_count() >= int(os.environ["LOCAL_WORLD_SIZE"]):  # a GPU per process
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend)
    rank = dist.get_rank()

    # the same data and initial weights on every process (DDP also broadcasts rank 0's)
    torch.manual_seed(0)
    x = torch.randn(1024, 16)
    y = torch.tanh(x @ torch.randn(16, 1) / 4)
    data = TensorDataset(x, y)
    sampler = DistributedSampler(data, shuffle=True, seed=0)  # each rank its own share
    loader = DataLoader(data, batch_size=32, sampler=sampler)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    model = DDP(model.to(device), device_ids=[local_rank] if device.type == "cuda" else None)

    opt = momenta.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)  # was torch.optim.AdamW
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(loader))

    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        total = torch.zeros(2, device=device)  # sum of losses, number of samples
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = torch.nn.functional.mse_loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()  # DDP averages the gradients over the ranks here
            opt.step()
            sched.step()
            total += torch.stack([loss.detach() * len(xb), torch.tensor(len(xb), device=device)])
        dist.all_reduce(total)  # the mean loss over all ranks' samples
        if rank == 0:
            print(f"epoch {epoch}: loss {(total[0] / total[1]).item():.4f}", flush=True)

    if args.checkpoint and rank == 0:  # the replicas are identical: rank 0 saves for all
        torch.save({"model": model.module.state_dict(), "optimizer": opt.state_dict()},
                   args.checkpoint)  # fmt: skip
    dist.barrier()  # every rank is done before the process group goes
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
