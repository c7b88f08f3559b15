"""Low-precision state of sharded parameters (FSDP2's DTensors): each rank stores its own shard.

FSDP2 shards a parameter along its first dimension (``Shard(0)``, ``torch.chunk``'s split of
the rows; ``Replicate`` on the other dimensions of an HSDP mesh). A coded state buffer of such
a parameter is laid out by rows (:class:`~.storage.Stored` ``rowwise``)::

    codes  (rows, bytes a row)     scales  (rows, blocks a row)

each row of the parameter cut into its own blocks (the last one padded). A block never spans
two rows, so it never spans two shards: codes and scales are DTensors sharded exactly like the
parameter, each rank codes and decodes its own rows with no communication, and a distributed
checkpoint (DCP) saves and reshards them as it does the parameter. bf16 buffers and the
compensation are DTensors shaped like the parameter.

A step, a store or a restore of a sharded parameter's state works on the local tensors
(:func:`local`); new buffers are wrapped back into DTensors placed like the parameter
(:func:`like`). Placements other than these (tensor parallelism's ``Shard(1)``, a parameter
sharded twice) are refused by :func:`problem`.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import torch
from torch import Tensor


def sharded(x: Any) -> bool:
    """``x`` is a DTensor (FSDP2's parameter, or a state buffer of one): by name, so that
    torch.distributed is not imported for the question."""
    return type(x).__name__ == "DTensor" and hasattr(x, "to_local") and hasattr(x, "full_tensor")


def problem(p: Any) -> str | None:
    """Why the state of DTensor ``p`` cannot be stored at low precision, or ``None``: it must
    be sharded along its first dimension, at most once (FSDP2, HSDP). (Its 1-D parameters,
    and those with rows shorter than a block, keep coded requests at full precision:
    :meth:`.storage.Storage.of`.)"""
    from torch.distributed.tensor import Replicate, Shard

    sharding = [q for q in p.placements if not isinstance(q, Replicate)]
    if any(not isinstance(q, Shard) or q.dim != 0 for q in sharding) or len(sharding) > 1:
        return f"its placements {tuple(p.placements)} shard it otherwise than along dim 0, once (FSDP2)"
    return None


def first_row(p: Any) -> int:
    """The first row of the parameter that this rank's shard of DTensor ``p`` holds
    (``torch.chunk``'s split of the rows over the mesh dimension that shards them)."""
    from torch.distributed.tensor import Shard

    for d, q in enumerate(p.placements):
        if isinstance(q, Shard):
            n = p.device_mesh.size(d)
            chunk = -(-p.shape[0] // n)
            return int(min(p.device_mesh.get_local_rank(d) * chunk, p.shape[0]))
    return 0


def local_of(x: Any) -> Any:
    """This rank's shard of DTensor ``x`` (the same memory: writes into it are the
    DTensor's); anything else as it is."""
    return x.to_local() if sharded(x) else x


def local(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with every DTensor replaced by its local tensor (:func:`local_of`)."""
    return {k: local_of(v) for k, v in state.items()}


def like(value: Tensor, p: Any, shape: tuple[int, ...]) -> Any:
    """A rank's local ``value`` as a DTensor of global ``shape``, placed like parameter ``p``
    (its rows sharded as ``p``'s)."""
    from torch.distributed.tensor import DTensor

    stride = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        stride[i] = stride[i + 1] * shape[i + 1]
    return DTensor.from_local(
        value, p.device_mesh, p.placements, run_check=False, shape=torch.Size(shape), stride=tuple(stride)
    )


def write_back(
    state: MutableMapping[str, Any], before: Mapping[str, Any], after: Mapping[str, Any], p: Any, shapes: Mapping[str, tuple[int, ...]]
) -> None:
    """What a local step or store changed, from ``before`` (:func:`local`) to ``after``, into
    ``state``: a key whose local tensor was written in place is already there; a new or
    replaced tensor becomes a DTensor of its global shape (``shapes``, else the parameter's),
    placed like ``p``; other values go in as they are; keys gone from ``after`` go."""
    for k in [k for k in state if k not in after]:
        del state[k]
    for k, v in after.items():
        if k in before and before[k] is v:
            continue
        if isinstance(v, Tensor) and not sharded(v) and v.dim() > 0:
            state[k] = like(v, p, tuple(shapes.get(k, tuple(p.shape))))
        else:
            state[k] = v
