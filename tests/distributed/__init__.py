"""momenta under torch.distributed: DDP, FSDP2, ZeroRedundancyOptimizer, distributed
checkpoints and torch.compile, each compared with torch.optim under the same setup.

The tests start their own processes: :func:`.launch.run` starts one fresh Python process per
rank (gloo on CPU; NCCL where two GPUs exist), which runs *scenarios* (``scenario(ctx)`` in a
test module, executed on every rank by :mod:`.worker`) and reports back, within a hard
timeout. One process group runs every optimizer of a scenario, and the DDP, FSDP2, ZeRO and
checkpoint scenarios share one process group (:data:`.launch.SUITE`), so that the start-up is
paid once; each optimizer is still its own test (:func:`.launch.shared_run`).

* :mod:`.cases` — the optimizers under test and their torch.optim equivalents;
* :mod:`.common` — model, data, training loop and comparisons used by the scenarios;
* :mod:`.launch` — starting the ranks, with a hard timeout (test side);
* :mod:`.worker` — a rank's entry point: process group, scenarios, result (process side);
* ``test_ddp``, ``test_fsdp``, ``test_zero``, ``test_checkpoint``, ``test_compile`` — the
  scenarios and their tests; ``test_example`` — the README's torchrun example;
  ``test_launch`` — a failing or hanging run fails the test instead of hanging it.
"""
