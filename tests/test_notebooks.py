"""The Colab notebooks, run top to bottom by a real Jupyter kernel, as a user would run them.

Each notebook runs in an ipykernel of this Python (a kernelspec made for the test, so nbclient
starts ``sys.executable``, the project's venv), outside Colab (``google.colab`` is absent),
with its parameters cell followed by an injected cell of small sizes and ``INSTALL = False``
(the package is installed already). Drive is the FUSE stand-in (tools/slowfs.py) mounted at
the notebook's ``DRIVE``; where FUSE is unavailable (no /dev/fuse or libfuse3, as for the
FUSE tests, see tests/test_fuse_availability.py) ``DRIVE`` is a plain local folder and the
test says so in its output and in a ``drive`` property. The assertions are on the cells'
outputs: the counts written, verify's total, the resumed-from line, the accuracy lines, the
plots displayed. The stored notebooks hold no outputs (tools/strip_notebooks.py).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest

from tools.slowfs import fuse_unavailable_reason, mount_slowfs
from tools.strip_notebooks import problems

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
STRIP = REPO / "tools" / "strip_notebooks.py"
CELL_TIMEOUT = 300
# The plots `wds-pipeline train` writes for a run without trial lists (no EER to draw).
TRAINING_PLOTS = ("loss.png", "accuracy.png", "data_wait.png")


@pytest.fixture
def drive(tmp_path: Path, record_property) -> Iterator[str]:
    """The notebook's DRIVE: a slowfs mount (20 ms per open, 40 MB/s), else a local folder."""
    reason = fuse_unavailable_reason()
    if reason:
        print(f"FUSE is unavailable ({reason}): DRIVE is a plain local folder")
        record_property("drive", f"local folder (FUSE unavailable: {reason})")
        folder = tmp_path / "drive"
        folder.mkdir()
        yield str(folder)
        return
    src, mnt = tmp_path / "drive-src", tmp_path / "drive"
    src.mkdir()
    record_property("drive", "slowfs FUSE mount")
    with mount_slowfs(str(src), str(mnt), latency_ms=20, bandwidth_mbps=40, start_timeout=120) as m:
        yield m.mountpoint


def _kernel_manager(tmp_path: Path) -> Any:
    """A kernel of this Python: a kernelspec naming sys.executable, found only by this test
    (a system-wide "python3" kernelspec could name another interpreter)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = tmp_path / "kernels" / "wds-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "wds-pipeline test", "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(spec.parent)], ensure_native_kernel=False)
    return KernelManager(kernel_name="wds-test", kernel_spec_manager=ksm)


def run_notebook(name: str, params: dict[str, Any], tmp_path: Path) -> Any:
    """Execute notebooks/NAME with ``params`` injected after its parameters cell (as
    papermill does); returns the executed notebook (its cells carry their outputs)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: expected one cell tagged 'parameters'"
    injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()))
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(tagged[0] + 1, injected)
    env = dict(os.environ, IPYTHONDIR=str(tmp_path / "ipython"), MPLBACKEND="Agg")
    # The kernel finds wds-pipeline beside its Python itself (colab_setup.mount_drive):
    # leave the venv off PATH, as a kernel started by a Jupyter server may have it.
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != bindir)
    # startup_timeout: the kernel's start (nbclient's default 60 s) on a loaded CI machine.
    client = nbclient.NotebookClient(nb, km=_kernel_manager(tmp_path), timeout=CELL_TIMEOUT,
                                     startup_timeout=CELL_TIMEOUT,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{name}: a cell failed:\n{e}")
    return nb


def cell_text(nb: Any, source_part: str) -> str:
    """The text output (streams and text results) of the one code cell containing
    ``source_part``, with tqdm's carriage-return redraws kept as lines."""
    cells = [c for c in nb.cells if c.cell_type == "code" and source_part in c.source]
    assert len(cells) == 1, f"{len(cells)} cells contain {source_part!r}"
    parts = []
    for out in cells[0].outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "text/plain" in out.get("data", {}):
            parts.append(out.data["text/plain"])
    return "".join(parts).replace("\r\n", "\n").replace("\r", "\n")


def cell_images(nb: Any, source_part: str) -> list[tuple[int, int]]:
    """(width, height) of each PNG displayed by the code cell containing ``source_part``."""
    from PIL import Image

    (cell,) = [c for c in nb.cells if c.cell_type == "code" and source_part in c.source]
    return [Image.open(io.BytesIO(base64.b64decode(out.data["image/png"]))).size
            for out in cell.outputs if "image/png" in out.get("data", {})]


def _plots_expected() -> bool:
    """Whether `wds-pipeline train` writes plots in this checkout (train/plots.py is in)."""
    return (REPO / "wds_pipeline" / "train" / "plots.py").exists()


def _check_plots(nb: Any, source_part: str, run_dir: Path) -> None:
    written = sorted(p.name for p in (run_dir / "plots").glob("*.png")) if (run_dir / "plots").is_dir() else []
    text = cell_text(nb, source_part)
    sizes = cell_images(nb, source_part)
    assert f"{len(sizes)} plot(s) shown from {run_dir}/plots" in text
    assert len(sizes) == len([n for n in written if n[:-4] in ("loss", "accuracy", "eer", "data_wait")])
    if _plots_expected():
        assert set(TRAINING_PLOTS) <= set(written), written
        for width, height in sizes:  # a real figure, not an empty or icon-sized image
            assert width >= 300 and height >= 200, (width, height)


def test_quickstart_runs_top_to_bottom(drive, tmp_path):
    mydrive = os.path.join(drive, "MyDrive")
    nb = run_notebook("colab_quickstart.ipynb", {
        "DRIVE": mydrive, "SPEAKERS": 4, "UTTERANCES": 4, "EPOCHS": 3, "BATCH_SIZE": 8,
        "SETTINGS": {"loader.crop_seconds": 1.5},
        "STOP_AT_STEP": 4, "CACHE_DIR": str(tmp_path / "cache"), "INSTALL": False}, tmp_path)
    work = Path(mydrive) / "wds_quickstart"
    run_dir = work / "runs" / "speaker"

    assert f"not on Colab (google.colab is absent): {mydrive} stands in for Drive" in cell_text(nb, "mount_drive(DRIVE)")
    # 4 speakers x 2 chapters x 4 utterances; every 4th utterance of a speaker held out.
    assert "manifest" in cell_text(nb, "write_holdout_manifest") and "32 rows" in cell_text(nb, "write_holdout_manifest")
    built = cell_text(nb, 'sh(f"wds-pipeline build {SOURCE_ARGS}')
    assert "train: 24 inputs, 24 written, 0 rejected" in built
    assert "valid: 8 inputs, 8 written, 0 rejected" in built
    assert "32 inputs, 32 written, 0 rejected" in built
    (histograms,) = cell_images(nb, "wds-pipeline verify")  # inspect --plot's PNG, displayed
    assert histograms[0] >= 300 and histograms[1] >= 200, histograms
    checked = cell_text(nb, "wds-pipeline verify")
    assert "samples 24" in checked and "verify OK: 2 split(s), 32 samples" in checked
    preflight = cell_text(nb, "wds-pipeline preflight")
    assert re.search(r"PASS\s+checkpoint dir\s+" + re.escape(f"{run_dir}/checkpoints"), preflight), preflight
    assert "FAIL" not in preflight

    first = cell_text(nb, "--max-steps {STOP_AT_STEP}")
    assert "4 optimizer steps" in first and "resumed from" not in first
    resumed = cell_text(nb, "checkpoints on Drive:")
    ckpt = f"{run_dir}/checkpoints/ckpt-000000004.pt"
    assert "checkpoints on Drive: ['ckpt-000000003.pt', 'ckpt-000000004.pt']" in resumed  # epoch 0's end, the stop
    assert f"resumed from {ckpt} (epoch 1, step 4, batch 1 of the epoch)" in resumed
    # 24 clips in batches of 8, 3 epochs: 9 steps, the last checkpoint at step 9.
    assert f"latest {run_dir}/checkpoints/ckpt-000000009.pt" in resumed
    assert re.search(r"^validation: valid_accuracy \d\.\d{4}$", resumed, re.M), resumed

    evaluation = cell_text(nb, "show_plots(RUN)")
    assert re.search(r"validation accuracy \d+\.\d% at step 9 over 4 speakers \(chance 25\.0%\)",
                     evaluation), evaluation
    _check_plots(nb, "show_plots(RUN)", run_dir)


def _timed_words(folder: Path) -> int:
    """Words with times in the WhisperX JSON of every session under ``folder`` (the synthetic
    sessions time every command word and leave the spoken numbers untimed)."""
    n = 0
    for path in folder.glob("*/*.json"):
        doc = json.loads(path.read_text())
        n += sum("start" in w for s in doc["segments"] for w in s["words"])
    return n


def test_sessions_runs_top_to_bottom(drive, tmp_path):
    mydrive = os.path.join(drive, "MyDrive")
    nb = run_notebook("colab_sessions.ipynb", {
        "DRIVE": mydrive, "SYNTH_SESSIONS": 2, "SYNTH_SECONDS": 20.0, "EPOCHS": 4, "BATCH_SIZE": 8,
        "SETTINGS": {},
        "CACHE_DIR": str(tmp_path / "cache"), "INSTALL": False}, tmp_path)
    sessions = Path(mydrive) / "wds_sessions" / "sessions"
    run_dir = Path(mydrive) / "wds_sessions" / "runs" / "keywords"

    assert ("WhisperX skipped (whisperx is not importable): using the transcripts next to the "
            "recordings, 4 of 4 recordings have one") in cell_text(nb, "import whisperx")
    built = cell_text(nb, "--mode words")
    for split in ("train", "valid"):
        n = _timed_words(sessions / split)
        assert n >= 10
        assert f"{split}: {n} inputs, {n} written, 0 rejected" in built, built
    trained = cell_text(nb, 'configs/colab.yaml {settings(TRAIN)}')
    assert "trained 4 epoch(s)" in trained and "8 classes" in trained
    accuracy = cell_text(nb, "keyword accuracy")
    assert re.search(r"keyword accuracy \d+\.\d% on the held-out recordings \(8 commands, "
                     r"chance 12\.5%\)", accuracy), accuracy
    _check_plots(nb, "keyword accuracy", run_dir)


# ---------------------------------------------------------------------------
# stored without outputs


def _strip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(STRIP), *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_stored_notebooks_have_no_outputs():
    stored = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert [p.name for p in stored] == ["colab_quickstart.ipynb", "colab_sessions.ipynb"]
    for path in stored:
        assert problems(json.loads(path.read_text())) == [], path
    p = _strip("--check")
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")


def test_notebooks_pass_the_linter():
    """ruff reads the notebooks' cells as Python: an undefined name (a helper not imported, a
    parameter misspelt) fails here, before a kernel runs anything."""
    ruff = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    assert ruff, "ruff is in the test extra"
    p = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", str(NOTEBOOKS)],
                       capture_output=True, text=True, timeout=60, check=False, cwd=REPO)
    assert p.returncode == 0, p.stdout + p.stderr


def test_a_notebook_saved_with_outputs_fails_the_check(tmp_path):
    copy = tmp_path / "colab_quickstart.ipynb"
    shutil.copy(NOTEBOOKS / "colab_quickstart.ipynb", copy)
    clean = copy.read_bytes()
    doc = json.loads(clean)
    code = [c for c in doc["cells"] if c["cell_type"] == "code"]
    code[1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "repository: /x\n"}]
    code[1]["execution_count"] = 2
    code[2]["execution_count"] = 3
    code[2]["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    copy.write_text(json.dumps(doc, indent=1))

    p = _strip("--check", str(copy))
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.splitlines() == [
        f"{copy}: stored with outputs; strip it with python tools/strip_notebooks.py {copy}",
        f"  cell {doc['cells'].index(code[1])} ({code[1]['id']}): 1 output(s), execution count 2",
        f"  cell {doc['cells'].index(code[2])} ({code[2]['id']}): execution count 3, metadata 'execution'",
    ]
    p = _strip(str(copy))
    assert (p.returncode, p.stdout) == (0, f"{copy}: stripped 2 cell(s)\n")
    assert copy.read_bytes() == clean  # back to the stored bytes: nbformat's layout
    assert _strip("--check", str(copy)).returncode == 0


def test_colab_setup_settings_reach_the_config_as_given():
    """The notebooks' ``--set`` arguments survive the shell and YAML: paths with spaces, lists."""
    import importlib.util
    import shlex

    from wds_pipeline.typedconfig import set_dotted

    spec = importlib.util.spec_from_file_location("colab_setup", NOTEBOOKS / "colab_setup.py")
    assert spec is not None and spec.loader is not None
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    values = {"data.valid": ["/My Drive/x's/index.json"], "run.epochs": 3, "model.channels": 64,
              "loader.cache_dir": "/content/cache"}
    words = shlex.split(setup.settings(values))
    assert words[::2] == ["--set"] * 4
    doc: dict[str, Any] = {}
    for assignment in words[1::2]:
        set_dotted(doc, assignment)
    assert doc == {"data": {"valid": ["/My Drive/x's/index.json"]}, "run": {"epochs": 3},
                   "model": {"channels": 64}, "loader": {"cache_dir": "/content/cache"}}
