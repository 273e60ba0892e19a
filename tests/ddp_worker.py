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


def main() -> None:
    out = Path(sys.argv[1])
    for spec in sys.argv[2:]:
        name, overrides = spec.split("=", 1)
        run_config(out / name, *TINY, "trainer.accelerator=cpu", "trainer.devices=2", "+trainer.strategy=ddp_find_unused_parameters_true",
                   *overrides.split(","))
        print(f"done {name}", flush=True)


if __name__ == "__main__":
    main()
