"""Shard builder on real files: counts, keys, fields, determinism, resume, bad input.

Corpora are written here with numpy + soundfile (manifest source) or with
``wds_pipeline.synth`` (LibriSpeech layout). Helpers at the top are reused by
test_cli.py and test_readers_compat.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from shardgen import sample_crcs

from wds_pipeline import format as fmt
from wds_pipeline.builder import BuildConfigError, BuildOptions, OutputConflictError, build_dataset
from wds_pipeline.index import load_index
from wds_pipeline.records import Reject, label_order

SR = 16000
REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "wds_pipeline.cli"]

# ---------------------------------------------------------------------------
# helpers


def signal_wave(seconds: float, sr: int, *, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A voiced-ish test signal (two tones + noise) in [-0.5, 0.5], float32."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * (150 + 10 * seed) * t) + 0.1 * np.sin(2 * np.pi * 1200 * t)
    x = x + 0.02 * rng.standard_normal(n)
    x = x.astype(np.float32)
    if channels > 1:
        x = np.stack([x * (1 - 0.3 * c) for c in range(channels)], axis=1)
    return x


def write_audio(path: Path, seconds: float, *, sr: int = SR, seed: int = 0, channels: int = 1,
                subtype: str = "PCM_16", format: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), signal_wave(seconds, sr, seed=seed, channels=channels), sr,
             subtype=subtype, format=format)
    return path


def write_manifest(folder: Path, rows: list[dict], name: str = "clips.csv") -> Path:
    cols = ["path"] + sorted({k for r in rows for k in r} - {"path"})
    lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in rows]
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_clip_corpus(folder: Path, n: int = 6, *, seconds=(1.0, 2.5), sr: int = SR,
                     speakers: int = 3) -> Path:
    """n mono clips with speakers s0..s{k-1}; ids are the file stems."""
    rows = []
    for i in range(n):
        dur = seconds[0] + (seconds[1] - seconds[0]) * (i % 4) / 3
        write_audio(folder / "audio" / f"utt-{i:03d}.flac", dur, sr=sr, seed=i)
        rows.append({"path": f"audio/utt-{i:03d}.flac", "speaker": f"s{i % speakers}",
                     "id": f"utt-{i:03d}"})
    return write_manifest(folder, rows)


def synth_libri(root: Path) -> Path:
    from wds_pipeline.synth import synth_librispeech

    synth_librispeech(str(root), speakers=4, chapters_per_speaker=1, utterances_per_chapter=3,
                      min_seconds=1.0, max_seconds=3.0, seed=3)
    return root


def build(source: str, src, out, *, source_options=None, **options):
    options.setdefault("workers", 1)
    options.setdefault("progress", False)
    logs: list[str] = []
    result = build_dataset(source, str(src), str(out), options=BuildOptions(**options),
                           source_options=source_options or {}, log=logs.append)
    result.logs = logs  # type: ignore[attr-defined]
    return result


def read_split(split_dir: Path) -> dict[str, dict]:
    """{key: {field: decoded}} of every sample in a split, in shard order."""
    idx = load_index(str(split_dir))
    out: dict[str, dict] = {}
    for i in range(len(idx.shards)):
        with open(idx.shard_url(i), "rb") as f:
            for key, fields in fmt.iter_samples(f, source=idx.shard_url(i)):
                assert key not in out
                out[key] = {name: fmt.decode_field(name, data) for name, data in fields.items()}
    return out


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def libri(tmp_path_factory) -> Path:
    return synth_libri(tmp_path_factory.mktemp("corpus") / "LibriSpeech")


@pytest.fixture(scope="module")
def libri_built(libri, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("out")
    return out, build("librispeech", libri, out, shard_size=2)


# ---------------------------------------------------------------------------
# contents


def expected_libri(libri: Path) -> dict[str, dict[str, dict]]:
    """{split: {utt id: {"speaker", "text", "path"}}} straight from the files."""
    out: dict[str, dict[str, dict]] = {}
    for trans in sorted(libri.rglob("*.trans.txt")):
        split = trans.relative_to(libri).parts[0]
        for line in trans.read_text().splitlines():
            utt, text = line.split(" ", 1)
            flac = trans.parent / f"{utt}.flac"
            out.setdefault(split, {})[utt] = {"speaker": utt.split("-")[0], "text": text,
                                              "path": flac}
    return out


def test_librispeech_counts_keys_metadata_and_labels(libri, libri_built):
    out, result = libri_built
    expected = expected_libri(libri)
    assert sorted(result.splits) == sorted(expected) == ["dev-clean", "train-clean-100"]
    assert result.counts.inputs == result.counts.written == 12
    assert result.counts.rejected == 0
    for split, utts in expected.items():
        idx = load_index(str(out / split))
        samples = read_split(out / split)
        assert set(samples) == set(utts)  # LibriSpeech ids are valid keys as they are
        speakers = label_order({u["speaker"] for u in utts.values()})
        assert idx.label_map == {s: i for i, s in enumerate(speakers)}
        assert idx.fields == ["audio.npy", "cls", "json"]
        assert idx.counts.inputs == idx.counts.written == idx.counts.samples == len(utts)
        assert [s.url for s in idx.shards] == [f"shard-00000{i}.tar" for i in range(3)]
        assert idx.build_fingerprint and idx.tool_version
        assert idx.preprocessing["sample_rate"] == SR and idx.preprocessing["codec"] == "npy"
        frames = [f for s in idx.shards for f in s.sample_frames]
        assert sum(frames) == sum(len(s["audio.npy"]) for s in samples.values())
        for key, s in samples.items():
            u = utts[key]
            audio = s["audio.npy"]
            ref, sr = sf.read(str(u["path"]), dtype="int16")
            assert sr == SR and audio.dtype == np.int16
            # 16 kHz int16 FLAC in, 16 kHz int16 out: bit-exact.
            np.testing.assert_array_equal(audio, ref)
            meta = s["json"]
            assert meta == {
                "id": key, "key": key, "speaker": u["speaker"], "text": u["text"],
                "duration": round(len(ref) / SR, 6), "sample_rate": SR,
                "num_samples": len(ref),
                "source": str(u["path"].relative_to(libri)), "offset": 0.0,
                "dataset": "librispeech", "split": split,
                "chapter": key.split("-")[1],
            }
            assert s["cls"] == idx.label_map[u["speaker"]]


def test_index_holds_each_samples_crc32_and_the_journal_too(libri_built):
    out, _ = libri_built
    for split in ("dev-clean", "train-clean-100"):
        idx = load_index(str(out / split))
        for i, info in enumerate(idx.shards):
            assert len(info.sample_crc32) == info.nsamples
            assert info.sample_crc32 == sample_crcs(idx.shard_url(i), info.sample_offsets)
            entry = json.loads((out / split / "_build" / f"shard-{i:06d}.json").read_text())
            assert entry["info"]["sample_crc32"] == info.sample_crc32


def test_label_map_is_per_split_sorted_and_stable(libri, libri_built, tmp_path):
    out, _ = libri_built
    again = build("librispeech", libri, tmp_path / "o", shard_size=5, shuffle_seed=7)
    for split in again.splits:
        a = load_index(str(out / split)).label_map
        b = load_index(str(tmp_path / "o" / split)).label_map
        assert a == b and list(a.values()) == list(range(len(a)))
        assert list(a) == label_order(a)


@pytest.mark.parametrize("codec,compress,fbank,audio_field,fbank_field", [
    ("npy", "none", False, "audio.npy", None),
    ("npy", "zstd", True, "audio.npy.zst", "fbank.npy.zst"),
    ("flac", "none", True, "audio.flac", "fbank.npy"),
])
def test_fields_follow_codec_compress_fbank(tmp_path, codec, compress, fbank, audio_field,
                                            fbank_field):
    from wds_pipeline.features import FbankConfig, num_frames

    manifest = make_clip_corpus(tmp_path / "c", n=3)
    build("manifest", manifest, tmp_path / "ref")
    res = build("manifest", manifest, tmp_path / "o", codec=codec, compress=compress,
                fbank=fbank)
    assert res.counts.written == 3
    idx = load_index(str(tmp_path / "o" / "train"))
    want = sorted([audio_field, "cls", "json"] + ([fbank_field] if fbank else []))
    assert idx.fields == want and idx.audio_field == audio_field
    assert idx.preprocessing["fbank"] == (FbankConfig().to_dict() if fbank else None)
    ref_samples = read_split(tmp_path / "ref" / "train")
    with open(tmp_path / "o" / "train" / "shard-000000.tar", "rb") as f:
        names = [m.name for m, _ in fmt.iter_tar_members(f)]
    assert sorted({n.split(".", 1)[1] for n in names}) == want
    for key, s in read_split(tmp_path / "o" / "train").items():
        assert set(s) == set(want)
        # Every codec stores the same int16 samples (FLAC is lossless).
        np.testing.assert_array_equal(s[audio_field], ref_samples[key]["audio.npy"])
        if fbank:
            feats = s[fbank_field]
            assert feats.dtype == np.float16
            assert feats.shape == (num_frames(len(s[audio_field]), FbankConfig()), 80)
            assert np.isfinite(feats).all()


def test_chunking_cuts_keys_offsets_and_drops_short_tail(tmp_path):
    write_audio(tmp_path / "a.wav", 5.3, seed=1)
    write_audio(tmp_path / "b.wav", 4.2, seed=2)
    manifest = write_manifest(tmp_path, [{"path": "a.wav", "speaker": "x"},
                                         {"path": "b.wav", "speaker": "y"}])
    res = build("manifest", manifest, tmp_path / "o", chunk_seconds=2.0, min_chunk_seconds=0.5)
    assert (res.counts.inputs, res.counts.written, res.counts.samples) == (2, 2, 5)
    samples = read_split(tmp_path / "o" / "train")
    assert sorted(samples) == ["a-c0000", "a-c0001", "a-c0002", "b-c0000", "b-c0001"]
    full, _ = sf.read(str(tmp_path / "a.wav"), dtype="int16")
    joined = np.concatenate([samples[f"a-c000{i}"]["audio.npy"] for i in range(3)])
    np.testing.assert_array_equal(joined, full)
    assert [samples[f"a-c000{i}"]["json"]["offset"] for i in range(3)] == [0.0, 2.0, 4.0]
    assert [samples[f"a-c000{i}"]["json"]["chunk"] for i in range(3)] == [0, 1, 2]
    assert samples["a-c0002"]["json"]["num_samples"] == int(1.3 * SR)
    assert all(samples[k]["json"]["id"] == "a" for k in samples if k.startswith("a-"))
    # b: 2 s + 2 s, the 0.2 s tail is below --min-chunk-seconds
    assert len(samples["b-c0001"]["audio.npy"]) == 2 * SR


# ---------------------------------------------------------------------------
# determinism and resume


def test_rebuild_is_byte_identical_for_any_worker_count(libri, libri_built, tmp_path):
    out, _ = libri_built
    build("librispeech", libri, tmp_path / "w2", shard_size=2, workers=2)
    a, b = tree_bytes(out), tree_bytes(tmp_path / "w2")
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    assert any(k.endswith(".tar") for k in a) and "dev-clean/index.json" in a


def test_rerun_is_already_complete(libri, libri_built):
    out, _ = libri_built
    before = tree_bytes(out)
    again = build("librispeech", libri, out, shard_size=2)
    assert again.already_complete
    assert "already complete" in again.summary()
    assert tree_bytes(out) == before


def test_shuffle_seed_mixes_order_not_content(tmp_path):
    manifest = make_clip_corpus(tmp_path / "c", n=8, seconds=(0.6, 0.8))
    orders = {}
    for name, seed in [("sorted", None), ("s0", 0), ("s1", 1)]:
        build("manifest", manifest, tmp_path / name, shuffle_seed=seed, shard_size=3)
        orders[name] = list(read_split(tmp_path / name / "train"))
    assert orders["sorted"] == [f"utt-{i:03d}" for i in range(8)]
    assert sorted(orders["s0"]) == sorted(orders["s1"]) == orders["sorted"]
    assert orders["s0"] != orders["sorted"] and orders["s0"] != orders["s1"]


def test_max_shard_bytes_cuts_by_estimated_size(tmp_path):
    manifest = make_clip_corpus(tmp_path / "c", n=7, seconds=(1.0, 1.0))
    # 1 s at 16 kHz int16 = 32 kB (+ headers): 3 per 100 kB shard
    res = build("manifest", manifest, tmp_path / "o", max_shard_bytes=100_000, shard_size=100)
    idx = load_index(str(tmp_path / "o" / "train"))
    # estimate per clip: 32,000 audio bytes + 2,048 overhead -> two clips per shard
    assert [s.nsamples for s in idx.shards] == [2, 2, 2, 1]
    assert all(s.filesize <= 100_000 for s in idx.shards)
    assert res.counts.samples == 7


def test_corrupt_journaled_shard_is_rebuilt_on_resume(libri, libri_built, tmp_path):
    out, _ = libri_built
    work = tmp_path / "o"
    shutil.copytree(out, work)
    split = work / "dev-clean"
    (split / "index.json").unlink()  # as if interrupted before the index
    tar = split / "shard-000000.tar"
    data = bytearray(tar.read_bytes())
    data[700] ^= 0xFF
    tar.write_bytes(bytes(data))
    res = build("librispeech", libri, work, shard_size=2)
    assert any("shard-000000.tar does not match its journal" in m for m in res.logs)
    s = res.splits["dev-clean"]
    assert (s.shards_built, s.shards_reused) == (1, 2)
    assert res.splits["train-clean-100"].already_complete
    assert tree_bytes(work) == tree_bytes(out)


def test_damaged_journal_entry_means_rebuild_not_refusal(libri, libri_built, tmp_path):
    out, _ = libri_built
    work = tmp_path / "o"
    shutil.copytree(out, work)
    split = work / "train-clean-100"
    (split / "index.json").unlink()
    (split / "_build" / "shard-000001.json").write_bytes(b"")  # e.g. after a power cut
    res = build("librispeech", libri, work, shard_size=2)
    assert any("unreadable journal entry" in m and "will be rebuilt" in m for m in res.logs)
    s = res.splits["train-clean-100"]
    assert (s.shards_built, s.shards_reused) == (1, 2)
    assert tree_bytes(work) == tree_bytes(out)


def _journal_count(split_dir: Path) -> int:
    d = split_dir / "_build"
    return len(list(d.glob("*.json"))) if d.is_dir() else 0


# Shards of the interrupted build: its processes hold mid-shard once they journaled one
# (held_build_env), so a few more than two workers' worth are enough.
SLOW_SHARDS = 8
HOLD_SITE = Path(__file__).resolve().parent / "hold_build"


def held_build_env(marker: Path) -> dict[str, str]:
    """The environment of a CLI build whose every process, once it has journaled a shard,
    holds in its next shard's first sample write (temp tar open) after creating ``marker``
    (tests/hold_build/sitecustomize.py): a signal sent once ``marker`` exists lands
    mid-build and mid-shard on any machine."""
    path = os.pathsep.join(p for p in (str(HOLD_SITE), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, WDS_TEST_HOLD_BUILD=str(marker))


def slow_build_args(tmp_path: Path, workers: int) -> tuple[Path, Path, list[str]]:
    """A SLOW_SHARDS-shard build of one-clip shards (zstd level 19)."""
    rows = []
    for i in range(SLOW_SHARDS):
        write_audio(tmp_path / "c" / f"f{i:02d}.flac", 4.0, sr=44100, seed=i)
        rows.append({"path": f"f{i:02d}.flac", "speaker": f"s{i % 3}"})
    manifest = write_manifest(tmp_path / "c", rows)
    out = tmp_path / "out"
    args = ["build", "manifest", str(manifest), str(out), "--shard-size", "1", "--workers",
            str(workers), "--compress", "zstd", "--zstd-level", "19", "--no-progress"]
    return manifest, out, args


def wait_until_held(proc: subprocess.Popen, split_dir: Path, marker: Path) -> None:
    """Until a process of the build started with ``held_build_env(marker)`` holds, a shard
    journaled."""
    deadline = time.monotonic() + 120
    while not (marker.exists() and _journal_count(split_dir) >= 1):
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        assert time.monotonic() < deadline, "the build did not journal a shard and hold within 120 s"
        time.sleep(0.01)


def _default_sigint() -> None:
    # A command started from a terminal has SIGINT at its default; one started by a shell
    # as a background job (`make test &`, nohup scripts) inherits it ignored, and Python
    # then keeps ignoring Ctrl-C. Start the CLI as from a terminal, whoever runs the tests.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_mid_build(tmp_path: Path, workers: int, sig: int, *, group: bool = False
                        ) -> tuple[subprocess.Popen, bytes, Path, Path, list[str]]:
    """Start the build and send ``sig`` (to its whole process group with ``group``, as a
    terminal's Ctrl-C does) once it holds mid-shard, a shard journaled; returns the finished
    process, its stderr, the manifest, OUT and the CLI arguments."""
    manifest, out, args = slow_build_args(tmp_path, workers)
    marker = tmp_path / "held"
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO, start_new_session=group, preexec_fn=_default_sigint,
                            env=held_build_env(marker))
    wait_until_held(proc, out / "train", marker)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc, err, manifest, out, args


def test_sigkilled_build_resumes_to_identical_index(tmp_path):
    """Kill the CLI once a shard is journaled; rerunning finishes it, reusing that shard."""
    proc, _, manifest, out, args = interrupt_mid_build(tmp_path, 1, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    done = _journal_count(out / "train")
    assert not (out / "train" / "index.json").exists(), "build finished before the kill"
    assert done == 1  # held in the second shard

    rerun = subprocess.run(CLI + args, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    reused = int(rerun.stderr.split("reused from the journal")[0].rsplit(",", 1)[1].split()[0])
    assert reused == done  # every journaled shard was verified and kept
    assert f"({SLOW_SHARDS - reused} built, {reused} reused)" in rerun.stdout

    clean = tmp_path / "clean"
    build("manifest", manifest, clean, shard_size=1, compress="zstd", zstd_level=19)
    assert (out / "train" / "index.json").read_bytes() == \
        (clean / "train" / "index.json").read_bytes()
    assert tree_bytes(out) == tree_bytes(clean)


def test_ctrl_c_with_two_workers_exits_130_and_resumes(tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it."""
    from wds_pipeline.verify import verify_dataset

    proc, err, _, out, args = interrupt_mid_build(tmp_path, 2, signal.SIGINT, group=True)
    assert proc.returncode == 130, err.decode()
    assert b"interrupted; rerun the same command to resume" in err
    assert not (out / "train" / "index.json").exists()
    staging = out / "train" / "_build" / "tmp"
    assert not staging.exists() or list(staging.iterdir()) == []  # temp tars removed
    done = _journal_count(out / "train")
    rerun = subprocess.run(CLI + args, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done} reused from the journal" in rerun.stderr
    assert verify_dataset(str(out), progress=False).ok


# ---------------------------------------------------------------------------
# one build at a time per OUT


def test_two_builds_into_one_out_at_once_never_mix(tmp_path):
    """The issue's repro: two different builds started together into one OUT. Whoever gets
    OUT first builds it; the other is refused (held lock, or a different dataset) and the
    result is exactly the winner's solo build."""
    from wds_pipeline.synth import synth_librispeech
    from wds_pipeline.verify import verify_dataset

    src = tmp_path / "lsm"
    synth_librispeech(str(src), speakers=8, chapters_per_speaker=2, utterances_per_chapter=6,
                      parts=("train-clean-100",), seed=5)
    base = ["build", "librispeech", str(src), str(tmp_path / "cc"), "--shard-size", "4",
            "--no-progress"]
    variants = {"plain": base, "peak": base + ["--normalize", "peak"]}
    procs = {name: subprocess.Popen(CLI + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, cwd=REPO) for name, argv in variants.items()}
    results = {name: (p.wait(timeout=600), p.stderr.read()) for name, p in procs.items()}
    winners = [name for name, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    (loser,) = set(results) - set(winners)
    code, err = results[loser]
    assert ("is being written by another build" in err and code == 1) or \
        ("already holds a different dataset" in err and code == 2), err
    assert verify_dataset(str(tmp_path / "cc"), decode=False, progress=False).ok
    solo = tmp_path / "solo"
    argv = variants[winners[0]]
    assert subprocess.run(CLI + argv[:3] + [str(solo)] + argv[4:], cwd=REPO,
                          capture_output=True).returncode == 0
    assert tree_bytes(tmp_path / "cc" / "train-clean-100") == \
        tree_bytes(solo / "train-clean-100")
    assert not (tmp_path / "cc" / ".wds-pipeline.lock").exists()


def test_a_held_lock_names_its_holder_and_a_dead_holder_is_taken_over(libri, tmp_path):
    import socket

    from wds_pipeline.builder.lock import LOCK_NAME, locked

    out = tmp_path / "o"
    argv = CLI + ["build", "librispeech", str(libri), str(out), "--shard-size", "2",
                  "--workers", "1", "--no-progress"]
    out.mkdir()
    with locked(str(out), {}):  # held by this (live) test process
        held = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert held.returncode == 1
    assert f"is being written by another build (host {socket.gethostname()}, pid " \
           f"{os.getpid()}, since " in held.stderr
    assert "--wait-for-lock SECONDS" in held.stderr and LOCK_NAME in held.stderr
    assert list(out.iterdir()) == []  # refused before writing anything; the lock released

    # A holder killed with -9 on this host: its lock is stale and the next build proceeds.
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    rec = {"host": socket.gethostname(), "pid": holder.pid, "pid_start": None,
           "started": time.time(), "renewed": time.time(), "command": "wds-pipeline build x",
           "token": "t"}
    (out / LOCK_NAME).write_text(json.dumps(rec))
    holder.kill()
    holder.wait()
    ok = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert f"taking over a stale lock (host {socket.gethostname()}, pid {holder.pid}" in ok.stderr
    assert f"its process {holder.pid} on this host is gone" in ok.stderr
    assert not (out / LOCK_NAME).exists()


def _descendants(pid: int) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo.extend(kids - out)
            out |= kids
    return out


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_workers_exit_when_the_coordinator_is_killed(tmp_path):
    _, out, args = slow_build_args(tmp_path, workers=2)
    marker = tmp_path / "held"
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=REPO, env=held_build_env(marker))
    wait_until_held(proc, out / "train", marker)
    workers = _descendants(proc.pid)
    assert len(workers) >= 2  # the fork server and its workers
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 60
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if Path(f"/proc/{p}").exists()
                 and "Z" not in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1][:3]}
        time.sleep(0.1)
    assert alive == set(), f"worker processes {sorted(alive)} outlived the killed coordinator"


# ---------------------------------------------------------------------------
# bad input


@pytest.fixture
def bad_corpus(tmp_path) -> Path:
    d = tmp_path / "bad"
    good = [write_audio(d / f"good{i}.flac", 1.5, seed=i) for i in range(3)]
    (d / "empty.flac").write_bytes(b"")
    whole = write_audio(d / "whole.flac", 2.0, seed=9).read_bytes()
    (d / "truncated.flac").write_bytes(whole[: len(whole) // 3])
    (d / "notes.wav").write_text("these are my notes, not audio\n" * 20)
    write_audio(d / "stereo44k.wav", 1.5, sr=44100, channels=2, seed=4)
    write_audio(d / "u8_8k.wav", 1.5, sr=8000, subtype="PCM_U8", seed=5)
    write_audio(d / "short.wav", 0.2, seed=6)
    rows = [{"path": p.name, "speaker": "a"} for p in good] + [
        {"path": n, "speaker": "b"} for n in
        ["empty.flac", "truncated.flac", "notes.wav", "stereo44k.wav", "u8_8k.wav", "short.wav",
         "missing.wav"]]
    return write_manifest(d, rows)


def test_bad_inputs_are_rejected_or_converted_and_listed(bad_corpus, tmp_path):
    res = build("manifest", bad_corpus, tmp_path / "o")
    c = res.counts
    assert (c.inputs, c.written, c.rejected, c.samples) == (10, 5, 5, 5)
    idx = load_index(str(tmp_path / "o" / "train"))
    rejected = {r.input: r for r in idx.rejected}
    assert sorted(rejected) == ["empty.flac", "missing.wav", "notes.wav", "short.wav",
                                "truncated.flac"]
    assert rejected["empty.flac"].stage == "decode" and "zero-byte" in rejected["empty.flac"].reason
    assert rejected["truncated.flac"].stage == "decode"
    assert "truncated" in rejected["truncated.flac"].reason
    assert "text file" in rejected["notes.wav"].reason
    assert rejected["short.wav"] == Reject("short.wav", rejected["short.wav"].reason, "filter")
    assert "shorter than --min-duration" in rejected["short.wav"].reason
    assert rejected["missing.wav"].stage == "scan" and "missing file" in rejected["missing.wav"].reason
    samples = read_split(tmp_path / "o" / "train")
    assert sorted(samples) == ["good0", "good1", "good2", "stereo44k", "u8_8k"]
    for key in ("stereo44k", "u8_8k"):
        a = samples[key]["audio.npy"]
        assert a.ndim == 1 and a.dtype == np.int16  # mono int16
        assert samples[key]["json"]["sample_rate"] == SR
        assert abs(len(a) - 1.5 * SR) <= 1  # resampled to 16 kHz, same duration
        assert np.abs(a).max() > 1000  # real signal, not silence
    # min-duration 0: the short clip is kept
    res0 = build("manifest", bad_corpus, tmp_path / "o0", min_duration=0.0)
    assert res0.counts.written == 6


def test_librispeech_transcript_rejects_reach_the_right_split(libri, tmp_path):
    work = tmp_path / "LibriSpeech"
    shutil.copytree(libri, work)
    trans = sorted((work / "dev-clean").rglob("*.trans.txt"))[0]
    lines = trans.read_text().splitlines()
    # drop the first utterance's line (audio without transcript) and add a line for
    # an utterance whose audio does not exist
    stem = trans.name[: -len(".trans.txt")]
    trans.write_text("\n".join(lines[1:] + [f"{stem}-9999 NO SUCH AUDIO"]) + "\n")
    res = build("librispeech", work, tmp_path / "o", shard_size=2)
    dev = load_index(str(tmp_path / "o" / "dev-clean"))
    train = load_index(str(tmp_path / "o" / "train-clean-100"))
    assert train.rejected == [] and train.counts.rejected == 0
    reasons = {r.input: r.reason for r in dev.rejected}
    no_line = str((trans.parent / (lines[0].split()[0] + ".flac")).relative_to(work))
    no_audio = str((trans.parent / f"{stem}-9999.flac").relative_to(work))
    assert sorted(reasons) == sorted([no_line, no_audio])
    assert "no transcript line" in reasons[no_line]
    assert "transcript line for missing audio" in reasons[no_audio]
    assert (dev.counts.inputs, dev.counts.written, dev.counts.rejected) == (7, 5, 2)
    assert res.counts.inputs == 13


def test_rejects_carry_their_split_even_when_a_part_has_no_records(libri, tmp_path):
    work = tmp_path / "LibriSpeech"
    shutil.copytree(libri, work)
    dev_flacs = sorted(str(p.relative_to(work)) for p in (work / "dev-clean").rglob("*.flac"))
    for trans in (work / "dev-clean").rglob("*.trans.txt"):
        trans.unlink()  # every dev-clean utterance becomes a reject, none a record
    build("librispeech", work, tmp_path / "o", shard_size=2)
    dev = load_index(str(tmp_path / "o" / "dev-clean"))
    train = load_index(str(tmp_path / "o" / "train-clean-100"))
    assert train.rejected == [] and train.counts.rejected == 0
    assert train.counts.inputs == train.counts.written
    assert sorted(r.input for r in dev.rejected) == dev_flacs
    assert (dev.counts.inputs, dev.counts.written) == (len(dev_flacs), 0)
    # One part alone: its split is named after the part, not "train".
    build("librispeech", work, tmp_path / "d", source_options={"parts": "dev-clean"})
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["dev-clean"]
    assert load_index(str(tmp_path / "d" / "dev-clean")).counts.rejected == len(dev_flacs)


def test_moving_the_corpus_or_out_inside_it_keeps_the_fingerprint(libri, tmp_path):
    first = tmp_path / "a" / "LibriSpeech"
    shutil.copytree(libri, first)
    chap = sorted((first / "dev-clean").glob("*/*"))[0]
    (chap / "stray.txt").write_text("notes")  # a reject whose reason names its path
    out = tmp_path / "out"
    build("librispeech", first, out, shard_size=2)
    reasons = [r.reason for r in load_index(str(out / "dev-clean")).rejected]
    assert len(reasons) == 1 and str(tmp_path) not in reasons[0]
    assert f"dev-clean/{chap.parent.name}/{chap.name}/stray.txt" in reasons[0]
    moved = tmp_path / "b" / "LibriSpeech"
    shutil.move(str(first.parent), str(moved.parent))
    res = build("librispeech", moved, out, shard_size=2)
    assert res.already_complete
    # OUT inside the source folder: the second run must not see OUT as a stray input.
    inside = moved / "shards"
    build("librispeech", moved, inside, shard_size=2)
    res = build("librispeech", moved, inside, shard_size=2)
    assert res.already_complete
    assert [r.reason for r in load_index(str(inside / "dev-clean")).rejected] == reasons


def test_duplicate_keys_after_sanitising_reject_the_later_input(tmp_path):
    write_audio(tmp_path / "x.wav", 1.0)
    write_audio(tmp_path / "y.wav", 1.0, seed=1)
    manifest = write_manifest(tmp_path, [{"path": "x.wav", "id": "spk.1"},
                                         {"path": "y.wav", "id": "spk_1"}])
    res = build("manifest", manifest, tmp_path / "o")
    idx = load_index(str(tmp_path / "o" / "train"))
    assert (res.counts.written, res.counts.rejected) == (1, 1)
    (r,) = idx.rejected
    # sorted by id: "spk.1" < "spk_1", so y.wav (spk_1) comes second
    assert r.input == "y.wav" and r.stage == "filter" and "duplicate key 'spk_1'" in r.reason
    assert list(read_split(tmp_path / "o" / "train")) == ["spk_1"]
    assert idx.fields == ["audio.npy", "json"]  # no labels -> no cls


def test_all_rejected_writes_no_shards(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    manifest = write_manifest(tmp_path, [{"path": "a.wav"}])
    res = build("manifest", manifest, tmp_path / "o")
    assert res.counts.written == 0 and res.exit_code(strict=False) == 1
    assert list((tmp_path / "o" / "train").glob("*.tar")) == []
    assert load_index(str(tmp_path / "o" / "train")).shards == []


def test_different_dataset_in_out_is_refused_unless_overwrite(libri, libri_built, tmp_path):
    out, _ = libri_built
    work = tmp_path / "o"
    shutil.copytree(out, work)
    before = tree_bytes(work)
    with pytest.raises(OutputConflictError, match="--overwrite"):
        build("librispeech", libri, work, shard_size=3)
    assert tree_bytes(work) == before  # refused before touching anything
    res = build("librispeech", libri, work, shard_size=3, overwrite=True)
    assert any("--overwrite removed" in m for m in res.logs)
    assert sorted(p.name for p in (work / "dev-clean").glob("*.tar")) == \
        ["shard-000000.tar", "shard-000001.tar"]
    assert load_index(str(work / "dev-clean")).shards[0].nsamples == 3


def test_bad_options_are_config_errors(libri, tmp_path):
    with pytest.raises(BuildConfigError, match="FLAC is already compressed"):
        build("librispeech", libri, tmp_path / "o", codec="flac", compress="zstd")
    with pytest.raises(BuildConfigError, match="unknown source"):
        build("nope", libri, tmp_path / "o")
    with pytest.raises(BuildConfigError, match="not a directory"):
        build("librispeech", tmp_path / "missing", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_journal_entry_holds_info_rejects_and_fingerprint(bad_corpus, tmp_path):
    build("manifest", bad_corpus, tmp_path / "o", shard_size=100)
    entry = json.loads((tmp_path / "o" / "train" / "_build" / "shard-000000.json").read_text())
    idx = load_index(str(tmp_path / "o" / "train"))
    assert entry["fingerprint"] == idx.build_fingerprint
    assert entry["info"] == idx.shards[0].to_dict()
    assert len(entry["rejects"]) == 4  # decode/filter rejects; the scan reject is not a shard's
    assert entry["counts"] == {"inputs": 9, "written": 5, "rejected": 4, "samples": 5}
    assert not (tmp_path / "o" / "train" / "_build" / "tmp").exists()


# ---------------------------------------------------------------------------
# remote output


@pytest.mark.gcs
def test_build_to_gcs_resume_and_verify(gcs_emulator, tmp_path):
    """All output I/O goes through storage.py: a gs:// OUT works, resumes and verifies."""
    from wds_pipeline.verify import verify_dataset

    so = gcs_emulator.storage_options
    manifest = make_clip_corpus(tmp_path / "c", n=5, seconds=(0.6, 0.9))
    out = gcs_emulator.gs("ds1")
    res = build("manifest", manifest, out, shard_size=2, storage_options=so)
    assert res.counts.written == 5 and res.splits["train"].shards == 3
    local = tmp_path / "local"
    build("manifest", manifest, local, shard_size=2)
    fs = gcs_emulator.fs
    remote_index = fs.cat_file(f"{gcs_emulator.bucket}/ds1/train/index.json")
    assert remote_index == (local / "train" / "index.json").read_bytes()
    for i in range(3):
        assert fs.cat_file(f"{gcs_emulator.bucket}/ds1/train/shard-00000{i}.tar") == \
            (local / "train" / f"shard-00000{i}.tar").read_bytes()
    # interrupted after two shards: index and last shard gone -> rerun reuses two
    fs.rm_file(f"{gcs_emulator.bucket}/ds1/train/index.json")
    fs.rm_file(f"{gcs_emulator.bucket}/ds1/train/shard-000002.tar")
    fs.rm_file(f"{gcs_emulator.bucket}/ds1/train/_build/shard-000002.json")
    again = build("manifest", manifest, out, shard_size=2, storage_options=so)
    s = again.splits["train"]
    assert (s.shards_built, s.shards_reused) == (1, 2)
    assert fs.cat_file(f"{gcs_emulator.bucket}/ds1/train/index.json") == remote_index
    report = verify_dataset(out, progress=False, **so)
    assert report.ok, report.to_text()


@pytest.mark.fuse
def test_build_to_a_drive_like_fuse_mount(slowfs_factory, tmp_path):
    """On a FUSE mount shards are staged on local disk and copied in whole: the mount
    sees one create per shard, never a partially written shard name."""
    mount = slowfs_factory("drive", latency_ms=20, bandwidth_mbps=50)
    manifest = make_clip_corpus(tmp_path / "c", n=5, seconds=(0.6, 0.9))
    out = Path(mount.mountpoint) / "shards"
    res = build("manifest", manifest, out, shard_size=2)
    assert res.counts.written == 5
    local = tmp_path / "local"
    build("manifest", manifest, local, shard_size=2)
    assert tree_bytes(Path(mount.source) / "shards") == tree_bytes(local)
    created = [line.split(" ", 1)[1] for line in mount.log_lines() if line.startswith("create")]
    tars = [c for c in created if c.endswith(".tar") or ".tar." in c]
    # each shard: one temp file created then renamed onto its final name
    assert len(tars) == 3 and all("/." in t and ".tmp-" in t for t in tars), tars


def test_a_gcs_out_is_held_by_a_lease_object(gcs_emulator, tmp_path):
    import socket

    from wds_pipeline.builder.lock import LOCK_NAME, OutputLockedError, locked

    so = gcs_emulator.storage_options
    manifest = make_clip_corpus(tmp_path / "c", n=3, seconds=(0.6, 0.9))
    out = gcs_emulator.gs("leased")
    with locked(out, so):
        lease = json.loads(gcs_emulator.fs.cat_file(f"{gcs_emulator.bucket}/leased/{LOCK_NAME}"))
        assert (lease["host"], lease["pid"]) == (socket.gethostname(), os.getpid())
        with pytest.raises(OutputLockedError, match=rf"pid {os.getpid()}, since "):
            build("manifest", manifest, out, storage_options=so)
    assert not gcs_emulator.fs.exists(f"{gcs_emulator.bucket}/leased/{LOCK_NAME}")
    assert build("manifest", manifest, out, storage_options=so).counts.written == 3


def test_shards_are_written_with_the_umask_not_0600(tmp_path):
    manifest = make_clip_corpus(tmp_path / "c", n=2, seconds=(0.6, 0.9))
    old = os.umask(0o022)
    try:
        build("manifest", manifest, tmp_path / "o")
    finally:
        os.umask(old)
    tars = list((tmp_path / "o" / "train").glob("*.tar"))
    assert tars and {oct(p.stat().st_mode & 0o777) for p in tars} == {oct(0o644)}


def test_pool_workers_run_torch_single_threaded_even_when_torch_is_imported_later():
    """--fbank imports torch on a worker's first shard, after the worker started: it must
    still run one thread (two threads per worker on two cores made fbank builds up to 8x
    slower under load)."""
    from shard_tasks import torch_threads

    from wds_pipeline.builder.executor import LocalPoolExecutor

    reports = list(LocalPoolExecutor(2, fn=torch_threads).run(["a", "b", "c"]))
    assert [r.error for r in reports] == [None, None, None]
    assert [r.outcome for r in reports] == [1, 1, 1]
