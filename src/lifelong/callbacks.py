"""Lightning callbacks a run can add to every fit through the config (`callbacks.<name>`):

    python train.py +callbacks.modes._target_=lifelong.callbacks.ModeAudit

`ModeAudit` checks what `lifelong.methods.base.PhaseModes` sets up: at every training step it
records which submodules are in train mode and flags two kinds of violation, a module of
`frozen_modules()` (or one inside it) in train mode, and a parameter the optimizer updates whose
module is in eval mode without being frozen (a generator trained with running BatchNorm
statistics, say). One JSON line per fit goes to `<run dir>/mode_audit.jsonl`.

`Interruptions` is not optional: the runner adds it to every fit.
"""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from lifelong import interrupt


class Interruptions(L.Callback):
    """In every fit (added by the runner): a signal whose exception got lost where it landed (see
    `lifelong.interrupt`) ends the fit at the next training batch instead of never."""

    def on_train_batch_end(self, *args) -> None:
        interrupt.check()

    def on_validation_batch_end(self, *args) -> None:
        interrupt.check()


class ModeAudit(L.Callback):
    def __init__(self, filename: str = "mode_audit.jsonl", raise_on_violation: bool = False):
        self.filename, self.raise_on_violation = filename, raise_on_violation
        self._modes: set[frozenset[str]] = set()
        self._violations: set[str] = set()
        self._steps = 0

    @staticmethod
    def check(pl_module, optimizers) -> tuple[frozenset[str], set[str]]:
        """(names of the submodules in train mode, violations) for the current state of `pl_module`."""
        names = {id(m): name or "<method>" for name, m in pl_module.named_modules()}
        in_train = frozenset(names[id(m)] for m in pl_module.modules() if m.training)
        frozen = {id(sub) for f in pl_module.frozen_modules() for sub in f.modules()}
        violations = {f"frozen module {names[id(m)]} is in train mode"
                      for m in pl_module.modules() if id(m) in frozen and m.training}
        trained = {id(p) for opt in optimizers for group in opt.param_groups for p in group["params"]}
        for module in pl_module.modules():
            if module.training or id(module) in frozen:
                continue
            for pname, p in module.named_parameters(recurse=False):
                if id(p) in trained:
                    violations.add(f"trained parameter {names[id(module)]}.{pname} is in an eval-mode module")
        return in_train, violations

    def on_train_start(self, trainer, pl_module) -> None:
        self._modes, self._violations, self._steps = set(), set(), 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        modes, violations = self.check(pl_module, trainer.optimizers)
        self._modes.add(modes)
        self._violations |= violations
        self._steps += 1
        if violations and self.raise_on_violation:
            raise RuntimeError("; ".join(sorted(violations)))

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        phase = getattr(pl_module, "phase", None)
        task = getattr(pl_module, "task", None)
        record = {
            "task": None if task is None else task.id,
            "phase": None if phase is None else phase.name,
            "steps": self._steps,
            "train_mode": sorted(set().union(*self._modes)) if self._modes else [],
            "modes_vary": len(self._modes) > 1,
            "violations": sorted(self._violations),
        }
        path = Path(trainer.default_root_dir) / self.filename
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
