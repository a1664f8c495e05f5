"""Running ``wds-pipeline`` as a user does: the installed console script in a subprocess
(``python -m wds_pipeline.cli`` where the script is absent), output captured as text."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
_EXE = Path(sys.executable).parent / "wds-pipeline"
WDS = [str(_EXE)] if _EXE.exists() else [sys.executable, "-m", "wds_pipeline.cli"]


def cli(*argv: Any, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(WDS + [str(a) for a in argv], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def cli_many(argvs: list[list[Any]]) -> list[subprocess.CompletedProcess[str]]:
    """Several runs side by side: each process spends seconds starting (torch is imported
    for the train commands' options), which a sequential table would pay one after another."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda argv: cli(*argv), argvs))
