"""``wds-pipeline embed``: every utterance of an index once, with its speaker, equal to the
model's own ``embed``; on gs:// (the emulator); resumed after a real SIGKILL without
recomputing committed parts; a damaged part named and recomputed; another run's folder refused."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from embed_helpers import HOLD_ENV, trained_checkpoints
from shardgen import all_keys, make_dataset
from test_reliability_disk_full import fill
from trainer_helpers import wait_until_held

from wds_pipeline.index import load_index
from wds_pipeline.loader import StreamingLoader
from wds_pipeline.sv.embeddings import EmbeddingsError, load_embeddings, read_manifest
from wds_pipeline.train.embed import EmbedConflictError, EmbedOptions, embed_index
from wds_pipeline.train.saved_model import load_saved_model

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
ALONE = 1e-3  # --batch-seconds below any utterance: each is embedded alone, unpadded
QUIET = dict(num_workers=0, progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    # 38 clips of 0.1-0.3 s, 3 speakers, 4 shards (so 4 parts).
    return make_dataset(str(tmp_path_factory.mktemp("embed-data")), [10, 9, 11, 8], speakers=3)


@pytest.fixture(scope="module")
def ckpt(data, tmp_path_factory) -> str:
    return trained_checkpoints(data, str(tmp_path_factory.mktemp("embed-run")))


@pytest.fixture(scope="module")
def reference(data, ckpt) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """key -> (speaker, int16 waveform, the model's embed() of the utterance alone): read one
    utterance at a time through the loader, embedded by the model loaded independently."""
    model = load_saved_model(ckpt).model
    out = {}
    loader = StreamingLoader(data, batch_size=1, shuffle=False, waveform_dtype="int16", num_workers=0)
    for b in loader:
        assert b.waveform is not None
        with torch.no_grad():
            vec = model.embed(b.waveform, b.lengths)[0].numpy()
        out[b.keys[0]] = (loader.label_names[int(b.labels[0])], b.waveform[0].numpy(), vec)
    return out


@pytest.fixture(scope="module")
def batched(data, ckpt, tmp_path_factory) -> str:
    """The default options (batches of up to 200 s, padded): an embeddings folder."""
    out = str(tmp_path_factory.mktemp("embed-batched") / "emb")
    embed_index(ckpt, data, out, EmbedOptions(**QUIET))
    return out


def cli_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]))


def wds(*args: str) -> list[str]:
    return [sys.executable, "-m", "wds_pipeline.cli", *args]


def test_every_utterance_once_with_its_speaker_and_the_models_embedding(data, ckpt, reference, batched, tmp_path):
    r = embed_index(ckpt, data, str(tmp_path / "alone"), EmbedOptions(batch_seconds=ALONE, **QUIET))
    assert (r.inputs, r.written, r.parts, r.computed, r.skipped) == (38, 38, 4, 4, 0)
    emb = load_embeddings(str(tmp_path / "alone"))
    assert sorted(emb.keys.tolist()) == sorted(all_keys(data)) and len(set(emb.keys.tolist())) == 38
    assert emb.vectors.dtype == np.float32 and emb.vectors.shape == (38, 8)
    for key, speaker, vec in zip(emb.keys, emb.speakers, emb.vectors):
        ref_speaker, _, ref = reference[key]
        assert speaker == ref_speaker
        np.testing.assert_allclose(vec, ref, rtol=1e-5, atol=1e-6, err_msg=key)
    # Batched by duration (sorted, padded to each batch's longest): the same keys in the same
    # order, and vectors that differ from the unpadded ones only by the padding's few frames.
    b = load_embeddings(batched)
    assert b.keys.tolist() == emb.keys.tolist() and b.speakers.tolist() == emb.speakers.tolist()
    cos = (b.vectors * emb.vectors).sum(1) / np.linalg.norm(b.vectors, axis=1) / np.linalg.norm(emb.vectors, axis=1)
    assert cos.min() > 0.999
    m = read_manifest(batched)
    assert (m.dim, m.count, m.normalized, m.chunk_seconds, m.sample_rate) == (8, 38, False, None, 16000)
    assert m.model["step"] == 2 and m.model["factory"] == "wds_pipeline.train.models:speaker_tdnn"
    assert [p.count for p in m.parts] == [s.nsamples for s in load_index(data).shards]


def test_chunk_mean_equals_the_mean_of_the_chunks_embeddings(data, ckpt, reference, tmp_path):
    model = load_saved_model(ckpt).model
    embed_index(ckpt, data, str(tmp_path / "c"), EmbedOptions(chunk_seconds=0.1, batch_seconds=ALONE, **QUIET))
    emb = load_embeddings(str(tmp_path / "c"))
    c = 1600  # 0.1 s at 16 kHz
    several = 0
    for key, vec in zip(emb.keys, emb.vectors):
        wave = reference[key][1]
        n = math.ceil(len(wave) / c)
        starts = [0] if len(wave) <= c else [round(s) for s in np.linspace(0, len(wave) - c, n)]
        several += len(starts) > 1
        width = min(c, len(wave))
        chunks = torch.stack([torch.from_numpy(wave[s:s + width]) for s in starts])
        with torch.no_grad():
            want = model.embed(chunks, torch.full((len(starts),), width)).double().mean(0).numpy()
        np.testing.assert_allclose(vec, want, rtol=1e-5, atol=1e-6, err_msg=key)
    assert several > 10 and read_manifest(str(tmp_path / "c")).chunk_seconds == 0.1
    # Another setting into that folder: refused, naming the fix; --overwrite replaces it.
    with pytest.raises(EmbedConflictError, match="embed into another folder, or pass --overwrite"):
        embed_index(ckpt, data, str(tmp_path / "c"), EmbedOptions(**QUIET))
    r = embed_index(ckpt, data, str(tmp_path / "c"), EmbedOptions(overwrite=True, **QUIET))
    assert (r.written, r.computed) == (38, 4) and read_manifest(str(tmp_path / "c")).chunk_seconds is None


def test_cli_prints_the_counts_and_refuses_a_bad_checkpoint_in_one_line(data, ckpt, batched, tmp_path):
    p = subprocess.run(wds("embed", "--checkpoint", ckpt, data, str(tmp_path / "cli"), "--workers", "2",
                           "--no-progress"), capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "38 utterances in, 38 embeddings written (dim 8) in 4 parts" in p.stdout
    a, b = load_embeddings(str(tmp_path / "cli")), load_embeddings(batched)
    assert a.keys.tolist() == b.keys.tolist()  # workers change nothing: parts follow the index
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=1e-5, atol=1e-6)
    p = subprocess.run(wds("embed", "--checkpoint", str(tmp_path / "none.pt"), data, str(tmp_path / "x")),
                       capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=300)
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        f"wds-pipeline embed: {tmp_path / 'none.pt'}: no such checkpoint file"]


def test_gcs_output_and_a_rerun_that_skips_every_part(data, ckpt, batched, gcs_emulator):
    so = gcs_emulator.storage_options
    out = gcs_emulator.gs("embed/run1")
    r = embed_index(ckpt, data, out, EmbedOptions(**QUIET), **so)
    assert (r.written, r.computed) == (38, 4)
    got, local = load_embeddings(out, **so), load_embeddings(batched)
    assert got.keys.tolist() == local.keys.tolist() and got.speakers.tolist() == local.speakers.tolist()
    np.testing.assert_array_equal(got.vectors, local.vectors)
    fs = gcs_emulator.fs
    generations = {p: fs.info(p).get("generation") for p in fs.ls(f"{gcs_emulator.bucket}/embed/run1")}
    r = embed_index(ckpt, data, out, EmbedOptions(**QUIET), **so)
    assert (r.skipped, r.computed, r.written) == (4, 0, 38)
    fs.invalidate_cache()
    parts = {p: g for p, g in generations.items() if p.endswith(".npz")}
    assert len(parts) == 4 and {p: fs.info(p).get("generation") for p in parts} == parts


def test_sigkill_mid_run_then_the_rerun_keeps_committed_parts_and_equals_an_uninterrupted_run(data, tmp_path):
    # Each utterance is embedded alone, a part's all at once before its commit (parts of 8 to
    # 11): the run that holds in its 13th embed call has committed exactly one part, in any
    # order of parts and on any machine.
    slow = trained_checkpoints(data, str(tmp_path / "run"), model={"factory": "embed_helpers:slow_embed_tdnn"})
    held = tmp_path / "held"
    ref, out = tmp_path / "ref", tmp_path / "cut"

    def argv(to: Path) -> list[str]:
        return wds("embed", "--checkpoint", slow, data, str(to), "--batch-seconds", str(ALONE), "--workers", "2",
                   "--no-progress")

    # The uninterrupted run: a process like the others (torch's thread count, so its rounding).
    assert subprocess.run(argv(ref), capture_output=True, env=cli_env(), cwd=REPO, timeout=300).returncode == 0
    proc = subprocess.Popen(argv(out), env={**cli_env(), HOLD_ENV: f"12:{held}"}, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_held(proc, str(held))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # embed and its DataLoader workers
        proc.wait()
    committed = {n: (out / n).stat().st_mtime_ns for n in os.listdir(out) if n.endswith(".npz")
                 and (out / n.replace(".npz", ".json")).exists()}
    assert len(committed) == 1 and not (out / "embeddings.json").exists(), sorted(os.listdir(out))
    p = subprocess.run(argv(out), capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"skipped {len(committed)} parts (already committed, hash verified)" in p.stderr
    assert f"computed {4 - len(committed)}" in p.stdout
    assert {n: (out / n).stat().st_mtime_ns for n in committed} == committed
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temp file of the killed commit left
    a, b = load_embeddings(str(out)), load_embeddings(str(ref))
    assert a.keys.tolist() == b.keys.tolist() and a.speakers.tolist() == b.speakers.tolist()
    np.testing.assert_array_equal(a.vectors, b.vectors)


def test_a_damaged_part_is_named_and_recomputed(data, ckpt, batched, tmp_path):
    import shutil

    out = str(tmp_path / "emb")
    shutil.copytree(batched, out)
    part = Path(out) / "part-000002.npz"
    raw = bytearray(part.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    part.write_bytes(bytes(raw))
    with pytest.raises(EmbeddingsError, match=rf"^{part}: sha256 differs from the manifest \(the part is damaged\); "
                                              "rerun `wds-pipeline embed` with the same arguments"):
        load_embeddings(out)
    notes: list[str] = []
    r = embed_index(ckpt, data, out, EmbedOptions(**QUIET), log=notes.append)
    assert (r.skipped, r.computed) == (3, 1)
    assert "part-000002.npz: missing or damaged (size or sha256 differs from its sidecar); computing it again" in notes
    a, b = load_embeddings(out), load_embeddings(batched)
    assert a.keys.tolist() == b.keys.tolist()
    np.testing.assert_array_equal(a.vectors, b.vectors)
    part.write_bytes(b"not an npz")
    with pytest.raises(EmbeddingsError, match="part-000002.npz: 10 bytes, the manifest says .* \\(truncated\\)"):
        load_embeddings(out)


def test_preflight_runs_embed_on_a_real_batch_and_fails_on_non_finite_vectors(data, tmp_path):
    from trainer_helpers import MeanModel, small_config

    from wds_pipeline.train.config import parse_config
    from wds_pipeline.train.models import SpeakerTDNN
    from wds_pipeline.train.preflight_embed import check_embedding
    from wds_pipeline.train.preflight_report import PreflightReport

    class NanTDNN(SpeakerTDNN):
        def embed(self, waveform, lengths):
            return super().embed(waveform, lengths) * float("nan")

    cfg = parse_config(small_config(data, str(tmp_path)), "t.yaml")
    cpu = torch.device("cpu")
    found = []
    for model in (SpeakerTDNN(3, channels=16, embed_dim=8), NanTDNN(3, channels=16, embed_dim=8), MeanModel(3)):
        r = PreflightReport()
        check_embedding(r, cfg, model.train(), cpu, None)
        assert model.training  # left as it was found
        found += [(c.name, c.status, c.detail) for c in r.checks]
    assert found == [
        ("embedding", "pass", "embed on 2 training utterances on cpu: (2, 8), finite"),
        ("embedding", "fail", "embed gave non-finite values on a training batch on cpu"),
        ("embedding", "warn", "wds_pipeline.train.models:speaker_tdnn has no embed(waveform, lengths): validation "
                              "gives no EER or minDCF, and `wds-pipeline embed` cannot use it")]


def test_a_full_disk_stops_embed_in_one_line_and_the_rerun_with_space_completes(data, ckpt, batched,
                                                                               tmpfs_factory):
    """ENOSPC on a real small tmpfs: one line naming the file, nothing half-written published,
    no manifest; with space again the same command finishes, equal to a run on a roomy disk."""
    disk = tmpfs_factory(size="64k", name="emb-disk")
    filler = fill(disk, leave=6 * 1024)  # room for about one part
    out = os.path.join(disk, "emb")
    p = subprocess.run(wds("embed", "--checkpoint", ckpt, data, out, "--workers", "0", "--no-progress"),
                       capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=300)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("wds-pipeline embed: [Errno 28] disk full writing ") and "/emb/part-" in lines[0]
    assert lines[0].endswith("nothing was published under that name; free space on that disk and rerun")
    left = os.listdir(out) if os.path.isdir(out) else []
    assert "embeddings.json" not in left and not [n for n in left if ".tmp-" in n], left
    os.remove(filler)
    p = subprocess.run(wds("embed", "--checkpoint", ckpt, data, out, "--workers", "0", "--no-progress"),
                       capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr
    a, b = load_embeddings(out), load_embeddings(batched)
    assert a.keys.tolist() == b.keys.tolist() and a.speakers.tolist() == b.speakers.tolist()
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=1e-5, atol=1e-6)
