"""What both Colab notebooks do before their own steps: install, mount Drive, run commands.

A notebook imports it from ``REPO/notebooks`` (REPO: the checkout, cloned on Colab) and calls
``install(REPO)`` and ``mount_drive(DRIVE)``; ``sh``, ``settings``, ``show_plots`` and
``last_validation`` serve the later cells. It is not part of the installed package: the
notebooks run from the repository, where ``configs/colab.yaml`` is too.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from typing import Any

# What a runtime brings and a new copy would break: Colab's torch is a CUDA build matched to
# the VM (a second torch is GBs and may not see the GPU); a new numpy needs a runtime restart.
KEEP_INSTALLED = ("torch", "numpy")
PLOTS = ("loss", "accuracy", "eer", "data_wait")


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


def install(repo: str, extras: str = "") -> str:
    """``pip install -e REPO[extras]`` with the runtime's torch and numpy pinned as they are;
    returns the constraints file, for later installs (WhisperX) to keep the same pins.

    Without torch (a bare local Python) the CPU build pinned by the repository's constraints
    is installed first; with it (Colab: a CUDA build) nothing replaces it."""
    pins = []
    for name in KEEP_INSTALLED:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    if not any(p.startswith("torch==") for p in pins):
        with open(os.path.join(repo, "constraints.txt")) as f:
            torch_pin = next(line.strip() for line in f if line.startswith("torch=="))
        _pip(torch_pin, "--index-url", "https://download.pytorch.org/whl/cpu")
        pins.append(torch_pin)
    constraints = os.path.join(tempfile.gettempdir(), "wds-pipeline-colab-constraints.txt")
    with open(constraints, "w") as f:
        f.write("\n".join(pins) + "\n")
    _pip("-c", constraints, "-e", f"{repo}[{extras}]" if extras else repo)
    print(f"installed wds-pipeline from {repo}, keeping {', '.join(pins)}")
    return constraints


def mount_drive(drive: str, mountpoint: str = "/content/drive") -> None:
    """Mount Google Drive on Colab; elsewhere ``drive`` is taken as the folder it would be."""
    if importlib.util.find_spec("google.colab") is not None:
        from google.colab import drive as colab_drive  # type: ignore[import-not-found]

        colab_drive.mount(mountpoint)
    else:
        print(f"not on Colab (google.colab is absent): {drive} stands in for Drive")
    os.makedirs(drive, exist_ok=True)
    # The command-line tool sits beside this Python (a venv kernel need not have it on PATH).
    if shutil.which("wds-pipeline") is None:
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]


def sh(command: str) -> None:
    """``!command`` with its output in the cell, stopping the notebook when it fails (a bare
    ``!`` carries on after an error, and every later cell would fail less clearly)."""
    from IPython import get_ipython

    shell = get_ipython()
    shell.system(command)
    code = shell.user_ns.get("_exit_code", 0)
    if code:
        raise RuntimeError(f"`{command}` exited with status {code}: see its output above")


def settings(values: dict[str, Any]) -> str:
    """``--set key=value ...`` for ``wds-pipeline train``/``preflight`` (values as YAML)."""
    return " ".join("--set " + shlex.quote(f"{k}={json.dumps(v, separators=(',', ':'))}")
                    for k, v in values.items())


def show_plots(out_dir: str) -> list[str]:
    """Display the training plots ``wds-pipeline train`` wrote under ``OUT_DIR/plots``;
    returns the ones shown."""
    from IPython.display import Image, display

    shown = []
    for name in PLOTS:
        path = os.path.join(out_dir, "plots", f"{name}.png")
        if os.path.exists(path):
            print(f"{name}: {path}")
            display(Image(filename=path))
            shown.append(path)
    print(f"{len(shown)} plot(s) shown from {out_dir}/plots")
    return shown


def last_validation(out_dir: str) -> dict[str, Any]:
    """The last validation record of ``OUT_DIR/metrics.jsonl`` (empty when there is none)."""
    found: dict[str, Any] = {}
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") == "valid":
                found = record
    return found
