"""Scale-out on torch.distributed: `torchrun --nproc-per-node N -m vdnacli add ...`.

Each rank counts its shard of the images (refs[rank::world], or its part of a streamed
source's shards); counts, Gaussian sums, image counts and content hashes are
summed/gathered across ranks, and rank 0 alone writes the DNA. Backend: NCCL when the ranks use CUDA, gloo on CPUs. Nothing is pickled:
hashes travel as uint8 tensors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from vdnacli.dna import DNA, Gaussian, LayerGaussian, images_digest


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


def current() -> Rank:
    """The rank of this process as torchrun sets it (single process otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Rank()
    return Rank(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(device_type: str) -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")


def device_for(rank: Rank, device: str) -> str:
    """Under torchrun on GPUs each rank takes the GPU of its local rank."""
    if rank.active and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{rank.local_rank}"
    return device


def shard(refs, rank: Rank):
    """This rank's share of a source: every world-th ref of a list (or of a random-access
    Source); for a streamed Source (tar shards, parquet row groups, videos), a part of its
    units, which the decode workers of the rank split again (vdnacli.sources.base.Source)."""
    if not rank.active:
        return refs
    if hasattr(refs, "shard"):
        return refs.shard(rank.rank, rank.world)
    return refs[rank.rank :: rank.world]


def _all_reduce(arr: np.ndarray, device) -> np.ndarray:
    import torch
    import torch.distributed as dist

    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()


def _gather_hashes(hashes: np.ndarray, device) -> np.ndarray:
    import torch
    import torch.distributed as dist

    world = dist.get_world_size()
    n = torch.tensor([hashes.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = np.zeros((longest, 16), dtype=np.uint8)
    padded[: hashes.shape[0]] = hashes
    t = torch.from_numpy(padded).to(device)
    parts = [torch.zeros_like(t) for _ in range(world)]
    dist.all_gather(parts, t)
    rows = [p.cpu().numpy()[: int(s.item())] for p, s in zip(parts, sizes)]
    return np.unique(np.concatenate(rows), axis=0) if rows else hashes


def reduce_dna(local: DNA, device) -> DNA:
    """Sum the ranks' partial DNAs; every rank gets the total (rank 0 writes it)."""
    hist = {l: _all_reduce(h, device) for l, h in local.hist.items()} if local.hist is not None else None
    gauss = None
    if local.gauss is not None:
        gauss = {}
        for l, g in local.gauss.items():
            c = int(_all_reduce(np.array([g.count], dtype=np.int64), device)[0])
            gauss[l] = Gaussian(c, _all_reduce(g.sum, device), _all_reduce(g.sumsq, device))
    layer_gauss = None
    if getattr(local, "layer_gauss", None) is not None:
        layer_gauss = {}
        for l, g in local.layer_gauss.items():
            c = int(_all_reduce(np.array([g.count], dtype=np.int64), device)[0])
            layer_gauss[l] = LayerGaussian(c, _all_reduce(g.sum, device), _all_reduce(g.outer, device))
    meta = dict(local.meta)
    meta["num_images"] = int(_all_reduce(np.array([local.num_images], dtype=np.int64), device)[0])
    hashes = _gather_hashes(local.image_hashes if local.image_hashes is not None else np.zeros((0, 16), np.uint8), device)
    meta["images_sha256"] = images_digest(hashes)
    shards = None
    if local.shards is not None:  # an image's shard depends on its content alone: shard j sums over ranks
        from vdnacli.shards import Shards

        sh = local.shards

        def pairs(d):
            return None if d is None else {l: (_all_reduce(a, device), _all_reduce(b, device)) for l, (a, b) in d.items()}

        shards = Shards(sh.count, _all_reduce(sh.images, device),
                        None if sh.hist is None else {l: _all_reduce(h, device) for l, h in sh.hist.items()},
                        pairs(sh.gauss), pairs(sh.layer_gauss))
    return DNA(meta=meta, hist=hist, gauss=gauss, layer_gauss=layer_gauss, image_hashes=hashes, ranges=local.ranges,
               shards=shards)


def reduce_int(value: int, device) -> int:
    return int(_all_reduce(np.array([value], dtype=np.int64), device)[0])
