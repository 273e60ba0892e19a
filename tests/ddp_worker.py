"""One DDP rank for tests/test_ddp.py: runs several tiny runs in a row in this process.

Started twice by the test with LOCAL_RANK/WORLD_SIZE/MASTER_* set, so Lightning sees the processes as
created externally (as under Slurm) and both ranks take part in every fit and collective.
Usage: python tests/ddp_worker.py <out dir> <name>=<override>,<override> ...
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import TINY, run_config  # noqa: E402


def keep_methods(built: list):
    """Wraps `lifelong.run.build` so the worker sees the methods it trained (to dump their memories)."""
    import lifelong.run

    build = lifelong.run.build

    def recording_build(cfg):
        scenario, method = build(cfg)
        built.append(method)
        return scenario, method

    lifelong.run.build = recording_build


def main() -> None:
    import os

    import torch

    out = Path(sys.argv[1])
    built: list = []
    keep_methods(built)
    for spec in sys.argv[2:]:
        name, overrides = spec.split("=", 1)
        run_config(out / name, *TINY, "trainer.accelerator=cpu", "trainer.devices=2", "+trainer.strategy=ddp_find_unused_parameters_true",
                   *overrides.split(","))
        memory = getattr(built[-1], "memory", None)
        if memory is not None:  # every rank's memory after the last task, for tests/test_rehearsal.py
            state = {k: v.cpu() for k, v in memory.state_dict().items() if k != "_extra_state"}
            torch.save(state, out / name / f"memory_rank{os.environ.get('LOCAL_RANK', '0')}.pt")
        # every rank's whole method state after the last task (between-task statistics, generators), for
        # test_ddp.py's rank-equality check
        state = {k: v.detach().cpu() for k, v in built[-1].state_dict().items() if isinstance(v, torch.Tensor)}
        torch.save(state, out / name / f"state_rank{os.environ.get('LOCAL_RANK', '0')}.pt")
        print(f"done {name}", flush=True)


if __name__ == "__main__":
    main()
