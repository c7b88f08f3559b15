"""One rank of a distributed test: ``python worker.py SPEC_JSON`` (started by :mod:`.launch`).

Joins the process group, runs each scenario (``module:function``) in turn with a
:class:`~distributed.common.Context`, and writes what they return (JSON, by scenario) to
``{tmp}/rank{rank}.json``. An exception prints its traceback and ends the process at once
with status 1, without waiting for the other ranks (they are killed by the launcher).

The ranks meet at a ``TCPStore`` that the launcher holds on 127.0.0.1 (on a free port the
OS picks): no port race, and no rank's exit takes the store away from the others.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def main(spec: dict) -> None:  # type: ignore[type-arg]
    started = time.monotonic()
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    rank, world_size, backend = spec["rank"], spec["world_size"], spec["backend"]
    tmp = Path(spec["tmp"])
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
    # collectives give up (and the rank fails) well before the launcher's own timeout
    timeout = float(spec["collective_timeout"])
    store = dist.TCPStore(  # the launcher's: it outlives every rank
        "127.0.0.1", spec["port"], world_size, is_master=False, timeout=timedelta(seconds=timeout)
    )
    dist.init_process_group(
        backend, store=store, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout)
    )
    from distributed.common import Context

    ctx = Context(rank=rank, world_size=world_size, backend=backend, device=device, tmp=tmp)
    print(f"rank {rank}: started in {time.monotonic() - started:.1f} s", flush=True)
    result = {}
    for name in spec["scenarios"]:
        module_name, function_name = name.split(":")
        scenario = getattr(importlib.import_module(module_name), function_name)
        begin = time.monotonic()
        result[name] = scenario(ctx, **spec.get("kwargs", {}))
        print(f"rank {rank}: {name} took {time.monotonic() - begin:.1f} s", flush=True)
    out = tmp / f"rank{rank}.json"
    out.with_suffix(".tmp").write_text(json.dumps(result))
    os.replace(out.with_suffix(".tmp"), out)
    dist.barrier()  # before destroy_process_group, or a rank can die with SIGABRT
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.path[0] = str(TESTS)  # not this script's directory: import this package by its name
    try:
        main(json.loads(sys.argv[1]))
    except BaseException:  # noqa: BLE001 - report anything, then exit without cleanup
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
