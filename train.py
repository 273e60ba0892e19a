"""Train a method on a task sequence: `python train.py method=lwf dataset=cifar100`.

Everything is configured in `conf/`; this file hands the composed config to `lifelong.cli`, which
checks it before the heavy imports, runs the task loop and turns errors and interruptions into one
line each (see its docstring for the exit statuses).
"""
import sys
from pathlib import Path

from lifelong import interrupt  # light: Ctrl-C during the imports below is one line, not a traceback

with interrupt.at_startup():
    import hydra
    from omegaconf import DictConfig

    import lifelong.config  # noqa: F401  (registers the config resolvers)
    from lifelong import cli

CONF = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return cli.main(cfg)


if __name__ == "__main__":
    with interrupt.at_startup(cleanup=cli.remove_unstarted_run_dir):
        cli.check_command_line(sys.argv[1:], CONF)  # misspelt keys: "did you mean ...?" instead of Hydra's advice
        main()
