"""A Lightning callback for tests/test_interrupt.py: at the first training batch it sends its own
process $SWALLOWED_SIGNAL and swallows the exception the handler raises, as code that clears errors
does (torch's C initialisation after a failed numpy import). It notes that in <run dir>/swallowed."""
import os
import signal
import time
from pathlib import Path

import lightning as L


class SwallowSignal(L.Callback):
    def __init__(self):
        self.sent = False

    def on_train_batch_start(self, trainer, *args) -> None:
        if self.sent:
            return
        self.sent = True
        name = os.environ["SWALLOWED_SIGNAL"]
        try:
            os.kill(os.getpid(), signal.Signals[name])
            time.sleep(2)
        except BaseException:  # noqa: BLE001  (on purpose)
            Path(trainer.default_root_dir, "swallowed").write_text(name)
