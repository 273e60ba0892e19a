"""Lightning without the optional backends of torchmetrics that no run uses.

`import lightning` imports torchmetrics (Lightning reads its version, and logs through its
`Metric`), and `import torchmetrics` imports every optional backend it finds installed: scipy's
signal and stats packages (audio metrics), torchvision's models (image metrics) and matplotlib
(`Metric.plot`). Those were about a third of the CPU time of `import lightning` (1 to 1.4 s of
about 4.5 s on a shared 2-core machine, `python -X importtime`); a run uses torchmetrics'
accuracy only. `lightning()` imports Lightning with torchmetrics told that those backends are
absent, so they load only where our code imports them itself (matplotlib for the plots,
torchvision for file datasets and its backbones, scipy through scikit-learn).

The price: in that process torchmetrics' own image, audio and plotting metrics report their
backend missing. It is a no-op when torchmetrics is already imported (a test session, a script
that imported it first) and falls back to the plain import if torchmetrics changed its layout.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# torchmetrics.utilities.imports flags that make `import torchmetrics` load a backend at import time
SKIPPED_FLAGS = ("_SCIPY_AVAILABLE", "_SCIPI_AVAILABLE", "_SCIPY_GREATER_EQUAL_1_8", "_TORCHVISION_AVAILABLE",
                 "_MATPLOTLIB_AVAILABLE")
SKIPPED_PACKAGES = {"scipy"}  # torchmetrics/__init__ imports scipy.signal when find_spec finds scipy


def lightning() -> None:
    """Import `lightning` (and torchmetrics) without torchmetrics' optional scipy, torchvision and
    matplotlib imports."""
    if "torchmetrics" not in sys.modules and "lightning" not in sys.modules:
        try:
            _mark_backends_absent()
        except Exception:  # noqa: BLE001  (another torchmetrics layout: import it the plain way)
            sys.modules.pop("torchmetrics.utilities.imports", None)
    import lightning_utilities.core.imports as requirements

    available = requirements.package_available
    requirements.package_available = lambda name: name not in SKIPPED_PACKAGES and available(name)
    try:
        import lightning  # noqa: F401
    finally:
        requirements.package_available = available
    flags = sys.modules.get("torchmetrics.utilities.imports")
    utilities = sys.modules.get("torchmetrics.utilities")
    if flags is not None and utilities is not None and not hasattr(utilities, "imports"):
        utilities.imports = flags


def _mark_backends_absent() -> None:
    """Load torchmetrics' flag module ahead of the package and set the flags of `SKIPPED_FLAGS` to
    unavailable (each is a `RequirementCache` that keeps the first answer in `available`)."""
    package = importlib.util.find_spec("torchmetrics")  # finds the package without running it
    if package is None or package.origin is None:
        return
    name = "torchmetrics.utilities.imports"
    spec = importlib.util.spec_from_file_location(name, Path(package.origin).parent / "utilities" / "imports.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    for flag in SKIPPED_FLAGS:
        if hasattr(module, flag):
            getattr(module, flag).available = False
