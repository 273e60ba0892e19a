"""Datasets, class-incremental scenarios and the per-task data module."""

from lifelong.data.datasets import DATASETS, ImageSet, load_dataset
from lifelong.data.scenario import Scenario, Task, build_scenario

__all__ = ["DATASETS", "ImageSet", "Scenario", "Task", "build_scenario", "load_dataset"]
