"""Train a method on a task sequence: `python train.py method=lwf dataset=cifar100`.

Everything is configured in `conf/`; this file only hands the composed config to `lifelong.run`.
"""
import hydra
from omegaconf import DictConfig

import lifelong.config  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from lifelong.run import main as run_main

    return run_main(cfg)


if __name__ == "__main__":
    main()
