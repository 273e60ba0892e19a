"""Write docs/errors.md: every bad-input case of tests/test_cli.py (BAD_INPUT) with the line it gets.

    python scripts/error_table.py        # runs each case through train.py (about a second each)

Each case is run as a user would run it, in a fresh temporary folder, and its whole `error:` line
is written next to its command line (temporary paths shown as <tmp>). `tests/test_cli.py` checks
that the file lists every case of the table, in order, with the message the test expects.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "errors.md"

HEADER = """# Bad input and the line it gets

Every case below ends before training with exit status 2, this one line on stderr, no traceback
and no new run directory (an existing run's `train.log` gets the line too). The table is
`BAD_INPUT` in `tests/test_cli.py`, which runs each case through `train.py`; this file is written
from it by `python scripts/error_table.py` (each command also gets `logger=none` and a fresh
`hydra.run.dir`; `<tmp>` is a temporary folder the case prepares).

| input | error line |
| --- | --- |
"""


def code(text: str) -> str:
    """`text` as inline code of a table cell (double backticks when it holds backticks)."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def case_row(args, resolved: list[str], line: str, tmp: Path) -> str:
    notes = [a.__doc__.strip() for a in args if callable(a) and a.__doc__]
    text = " ".join(resolved).replace(str(tmp), "<tmp>")
    note = f" ({'; '.join(notes)})" if notes else ""
    return f"| {code('python train.py ' + text)}{note} | {code(line.replace(str(tmp), '<tmp>'))} |\n"


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import test_cli

    rows = []
    for case in test_cli.BAD_INPUT:
        args, expected = case.values if hasattr(case, "values") else case
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder)
            try:
                resolved = [a(tmp) if callable(a) else a for a in args]
                given = any(a.startswith("hydra.run.dir=") for a in resolved)
                result = test_cli.train(*resolved, "logger.csv=false" if any(a.startswith("logger=") for a in resolved)
                                        else "logger=none", *([] if given else [f"hydra.run.dir={tmp}/runs/new"]),
                                        cwd=tmp)
                line = next((x for x in result.stderr.splitlines() if x.startswith("error: ")), result.stderr.strip())
                assert expected in line, f"{args}: {line}"
                rows.append(case_row(args, resolved, line, tmp))
            finally:
                test_cli.unfreeze(tmp)
        print(rows[-1], end="", flush=True)
    DOC.write_text(HEADER + "".join(rows))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
