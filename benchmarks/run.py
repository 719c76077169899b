"""Entry point: ``python benchmarks/run.py IMAGE_DIR --out benchmarks/results/kodak [--quick]``.

Run as a script, Python puts this folder first on ``sys.path``; replacing it with the repository
root makes ``benchmarks`` import as a package (and keeps its module names from shadowing any
installed ones), then :func:`benchmarks.suite.main` takes over.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _main() -> int:
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))
    from benchmarks.suite import main

    return main()


if __name__ == "__main__":
    raise SystemExit(_main())
