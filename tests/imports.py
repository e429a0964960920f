"""Which modules a piece of code imports, run in a fresh interpreter (the test process has
imported nearly everything already)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable

from tests.golden import REPO_ROOT


def modules_imported(code: str, names: Iterable[str]) -> list[str]:
    """The modules named in ``names`` (each with its submodules) that are in ``sys.modules``
    after ``code`` runs in a new Python process started in the repository root."""
    wanted = tuple(names)
    probe = (
        f"{code}\nimport sys\n"
        f"print(sorted(k for k in sys.modules if any(k == n or k.startswith(n + '.')"
        f" for n in {wanted!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])
