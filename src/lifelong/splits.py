"""How a class-incremental scenario cuts its classes into tasks, without torch: the early configuration
checks (`lifelong.validate`) run it before the heavy imports, the scenario builder when it cuts the data."""
from __future__ import annotations

from lifelong.errors import ConfigError

NAMED_ORDERS = ("random", "natural", "icarl1993", "numpy")


def named_order_problem(order: str, n_classes: int) -> str | None:
    """What is wrong with `scenario.class_order=<name>` for a dataset of `n_classes` (None: nothing)."""
    if order == "icarl1993" and n_classes != 100:
        return (f"scenario.class_order=icarl1993 is the CIFAR-100 order but this dataset has "
                f"{n_classes} classes; use class_order=random, natural or an explicit list")
    if order not in NAMED_ORDERS:
        return f"scenario.class_order={order!r} is unknown; valid choices: {list(NAMED_ORDERS)} or a list of class ids"
    return None


def task_sizes(n_classes: int, n_tasks: int, nc_first_task: int | None) -> list[int]:
    """Classes per task: an optional larger first task, then equal tasks (FACIL's convention)."""
    if n_tasks < 1:
        raise ConfigError(f"scenario.n_tasks={n_tasks} must be at least 1")
    if nc_first_task is None:
        if n_classes % n_tasks:
            divisors = [d for d in range(1, n_classes + 1) if n_classes % d == 0]
            raise ConfigError(
                f"scenario.n_tasks={n_tasks} does not divide the {n_classes} classes; valid choices: "
                f"{divisors}, or set scenario.nc_first_task so the rest divides evenly"
            )
        return [n_classes // n_tasks] * n_tasks
    if nc_first_task < 1:
        raise ConfigError(f"scenario.nc_first_task={nc_first_task} must be at least 1 (or null: tasks of equal size)")
    if n_tasks == 1 and nc_first_task != n_classes:
        raise ConfigError(f"scenario.nc_first_task={nc_first_task}: with scenario.n_tasks=1 the one task holds all "
                          f"{n_classes} classes; leave scenario.nc_first_task=null")
    if nc_first_task >= n_classes:
        raise ConfigError(
            f"scenario.nc_first_task={nc_first_task} is too large for {n_classes} classes in {n_tasks} "
            f"tasks; it must leave at least one class for each of the other {n_tasks - 1} tasks"
        )
    rest, other = n_classes - nc_first_task, n_tasks - 1
    if other == 0 or rest % other or rest < other:
        raise ConfigError(
            f"scenario.nc_first_task={nc_first_task} leaves {rest} classes that do not split into "
            f"{other} equal tasks; choose nc_first_task so that ({n_classes} - nc_first_task) is a "
            f"multiple of {other}"
        )
    return [nc_first_task] + [rest // other] * other
