"""Pictures: `wds-pipeline train` draws loss, accuracy and data-wait per epoch into
<out_dir>/plots at the end of a real (tiny) run; plot_metrics on a log written by the real
metrics writer draws all four, with the curves the records give (a resume's rewritten
records counted once), locally and on gs://; `wds-pipeline plot` redraws them; a plotting
failure is one warning line; `inspect --plot` draws the dataset's histograms from the
index and the cls members (the counts checked against a full read)."""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from shardgen import make_dataset
from test_cli import run
from trainer_helpers import small_config, write_config

from wds_pipeline import format as fmt
from wds_pipeline import storage
from wds_pipeline.cli import main
from wds_pipeline.index import load_index
from wds_pipeline.plots import DATASET_SIZE, NO_CLASS, class_counts, durations
from wds_pipeline.train.metrics import MetricsLog
from wds_pipeline.train.plots import PLOTS, SIZE, epoch_curves, plot_metrics, read_records

MIN_BYTES = 10_000  # an empty 800x500 canvas is ~4 KB; axes, ticks and curves add to it


def check_png(data: bytes, size: tuple[int, int]) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > MIN_BYTES, len(data)
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == size and im.format == "PNG"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    # 32 clips of 0.1-0.3 s, 4 speakers, 2 shards.
    return make_dataset(str(tmp_path_factory.mktemp("plot-data")), [16, 16], speakers=4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data) -> tuple[Path, str]:
    """A tiny `wds-pipeline train` run (2 epochs, validation on the training data) and what
    it printed."""
    root = tmp_path_factory.mktemp("plot-run")
    doc = small_config(data, str(root / "run"), data={"valid": [data]})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", "--config", write_config(str(root / "c.yaml"), doc)]) == 0
    return root / "run", out.getvalue()


def test_train_writes_the_plots_its_metrics_hold(trained):
    run_dir, printed = trained
    plots = run_dir / "plots"
    # No trial lists in the validation data: no EER, so no eer.png (and none listed).
    assert sorted(p.name for p in plots.iterdir()) == ["accuracy.png", "data_wait.png",
                                                       "loss.png"]
    assert f"plots: {plots}/loss.png, {plots}/accuracy.png, {plots}/data_wait.png" in printed
    for p in plots.iterdir():
        check_png(p.read_bytes(), SIZE)
    curves = epoch_curves(read_records((run_dir / "metrics.jsonl").read_bytes()))
    assert {m: sorted(c) for m, c in curves.items()} == {
        "loss": ["train"], "accuracy": ["valid"], "data_wait": ["train"]}
    assert all(sorted(c) == [0, 1] for m in curves.values() for c in m.values())


def _log(path: Path) -> None:
    """Two epochs as the trainer logs them, then a resume from step 3 that logs step 4 and
    epoch 1 again (the last record of a step, and of an epoch, is the one that counts)."""
    m = MetricsLog(str(path), tensorboard=False)
    m.write("train", 2, {"epoch": 0, "loss": 2.0, "data_wait": 0.5})
    m.write("train", 3, {"epoch": 0, "loss": 1.0, "data_wait": 0.3})
    m.write("epoch", 3, {"epoch": 0, "data_wait": 0.4, "samples": 12})
    m.write("valid", 3, {"epoch": 0, "valid_accuracy": 0.5, "valid_eer": 0.4,
                         "valid_noisy_accuracy": 0.25, "valid_noisy_eer": 0.45,
                         "valid_min_dcf_0.01": 0.9, "valid_trials": 10.0})
    m.write("train", 4, {"epoch": 1, "loss": 9.0, "data_wait": 0.9})  # cut short by a kill
    m.write("train", 4, {"epoch": 1, "loss": 0.5, "data_wait": 0.2})  # the resumed run's
    m.write("epoch", 6, {"epoch": 1, "data_wait": 0.9})
    m.write("epoch", 6, {"epoch": 1, "data_wait": 0.1})
    m.write("valid", 6, {"epoch": 1, "valid_accuracy": 0.75, "valid_eer": 0.2,
                         "valid_noisy_accuracy": 0.5, "valid_noisy_eer": 0.3})


def test_plot_metrics_draws_the_four_plots_from_the_records(tmp_path):
    _log(tmp_path)
    curves = epoch_curves(read_records((tmp_path / "metrics.jsonl").read_bytes()))
    assert curves == {
        "loss": {"train": {0: 1.5, 1: 0.5}},
        "accuracy": {"valid": {0: 0.5, 1: 0.75}, "valid_noisy": {0: 0.25, 1: 0.5}},
        "eer": {"valid": {0: 0.4, 1: 0.2}, "valid_noisy": {0: 0.45, 1: 0.3}},
        "data_wait": {"train": {0: 0.4, 1: 0.1}},  # the epoch records' own figure
    }
    written = plot_metrics(str(tmp_path / "metrics.jsonl"), str(tmp_path / "plots"))
    assert written == [str(tmp_path / "plots" / f"{m}.png") for m in PLOTS]
    for url in written:
        check_png(Path(url).read_bytes(), SIZE)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        f"{m}.png" for m in PLOTS)  # committed by rename: no temp file left


def test_plots_go_to_gs_through_storage(tmp_path, gcs_emulator):
    _log(tmp_path)
    out = gcs_emulator.gs("run-plots/plots")
    written = plot_metrics(str(tmp_path / "metrics.jsonl"), out, **gcs_emulator.storage_options)
    assert written == [f"{out}/{m}.png" for m in PLOTS]
    for url in written:
        check_png(storage.read_bytes(url, **gcs_emulator.storage_options), SIZE)


def test_plot_command_redraws_and_a_failure_is_one_warning(capsys, trained, tmp_path):
    run_dir, _ = trained
    code, out, _ = run(capsys, "plot", run_dir, "--out", tmp_path / "again")
    assert code == 0 and out.strip() == "plots: " + ", ".join(
        f"{tmp_path}/again/{m}.png" for m in ("loss", "accuracy", "data_wait"))
    for m in ("loss", "accuracy", "data_wait"):
        assert (tmp_path / "again" / f"{m}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run(capsys, "plot", tmp_path / "nowhere")
    assert code == 1 and err.count("\n") == 1 and "metrics.jsonl: no such file" in err

    from wds_pipeline.train.plots import write_training_plots

    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "plots").write_text("a file where the plots folder goes")
    warnings: list[str] = []
    assert write_training_plots(str(run_dir / "metrics.jsonl"), str(tmp_path / "blocked"),
                                log=warnings.append) == []
    (line,) = warnings
    assert line.startswith("warning: training plots not drawn (") and "\n" not in line
    assert line.endswith(f"redraw them with `wds-pipeline plot {tmp_path}/blocked`")


def test_inspect_plot_draws_durations_and_samples_per_class(capsys, data, tmp_path):
    code, out, err = run(capsys, "inspect", data, "--plot", tmp_path / "d.png")
    assert code == 0, err
    assert out.splitlines()[-1] == f"plot: {tmp_path}/d.png"
    check_png((tmp_path / "d.png").read_bytes(), DATASET_SIZE)
    # The figures drawn, against a full read of the shards.
    idx = load_index(data)
    names = {v: k for k, v in idx.label_map.items()}
    seen: Counter[str] = Counter()
    frames = []
    for i in range(len(idx.shards)):
        with open(idx.shard_url(i), "rb") as f:
            for _, fields in fmt.iter_samples(f, source=idx.shard_url(i)):
                seen[names[fmt.decode_field(fmt.CLS, fields[fmt.CLS])] if fmt.CLS in fields
                     else NO_CLASS] += 1
                frames.append(len(fmt.decode_field(idx.audio_field, fields[idx.audio_field])))
    assert class_counts(idx, progress=False) == seen and sum(seen.values()) == 32
    assert durations(idx) == [n / idx.sample_rate for n in frames]
    code, out, _ = run(capsys, "inspect", data.removesuffix("/index.json"), "--plot",
                       tmp_path / "folder")
    assert code == 0 and (tmp_path / "folder" / "dataset.png").exists()
