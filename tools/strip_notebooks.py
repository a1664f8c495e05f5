"""Keep the notebooks stored without outputs: check them, or strip them in place.

    python tools/strip_notebooks.py --check          # exit 1 naming each notebook with outputs
    python tools/strip_notebooks.py                  # strip notebooks/*.ipynb in place
    python tools/strip_notebooks.py path/to/x.ipynb  # given notebooks only

A stored output goes stale with the code (counts, timings, paths of the machine that ran it)
and makes every diff noisy, so a notebook is stored as its cells: no outputs, no execution
counts, no per-cell execution timings. Plain JSON, so the check needs no Jupyter packages; a
strip is written to a temporary name and renamed over the notebook.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
from typing import Any

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")
# What running a notebook leaves in a cell's metadata (nbclient's timings, Colab's view state).
RUN_METADATA = ("execution", "outputId", "executionInfo")


def problems(doc: dict[str, Any]) -> list[str]:
    """What running left in the notebook ``doc``: one line per cell, empty when clean."""
    found = []
    for i, cell in enumerate(doc.get("cells", [])):
        what = []
        if cell.get("outputs"):
            what.append(f"{len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            what.append(f"execution count {cell['execution_count']}")
        what += [f"metadata {k!r}" for k in RUN_METADATA if k in cell.get("metadata", {})]
        if what:
            found.append(f"cell {i} ({cell.get('id', 'no id')}): {', '.join(what)}")
    return found


def strip(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with every code cell's outputs and execution count emptied (in place)."""
    for cell in doc.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        for key in RUN_METADATA:
            cell.get("metadata", {}).pop(key, None)
    return doc


def _write(path: str, doc: dict[str, Any]) -> None:
    # nbformat's own layout (indent 1, text as is), so a strip of a clean notebook is a no-op.
    data = (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".ipynb.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="NOTEBOOK",
                   help="notebooks (default: notebooks/*.ipynb)")
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 when a notebook holds outputs")
    args = p.parse_args(argv)
    paths = args.paths or sorted(glob.glob(os.path.join(NOTEBOOKS, "*.ipynb")))
    dirty = 0
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            print(f"{path}: cannot read the notebook: {e}", file=sys.stderr)
            return 2
        found = problems(doc)
        if not found:
            continue
        dirty += 1
        if args.check:
            print(f"{path}: stored with outputs; strip it with python tools/strip_notebooks.py "
                  f"{path}\n  " + "\n  ".join(found), file=sys.stderr)
        else:
            _write(path, strip(doc))
            print(f"{path}: stripped {len(found)} cell(s)")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
