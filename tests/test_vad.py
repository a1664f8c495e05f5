"""Voice activity detection (``--vad energy|silero``): trimmed bounds against the known
speech of synthetic voices padded with silence, all-silence clips as rejects, the counts
in the index. The Silero tests skip when the silero-vad package is not installed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_builder import build, read_split, write_manifest

from wds_pipeline.audio import silero
from wds_pipeline.audio.energy import speech_regions, speech_span
from wds_pipeline.builder import BuildConfigError
from wds_pipeline.index import load_index
from wds_pipeline.synth.voices import plan_syllables, synth_voice, voice_params

SR = 16000
TOLERANCE = round(0.030 * SR)  # the 30 ms
needs_silero = pytest.mark.skipif(
    importlib.util.find_spec("silero_vad") is None,
    reason="silero-vad is not installed (pip install 'wds-pipeline[vad]')")
SPANS = {"energy": speech_span, "silero": silero.speech_span}
METHODS = ["energy", pytest.param("silero", marks=needs_silero)]


def padded_voice(seed: int, *, lead: float, trail: float, background_db: float | None = None
                 ) -> tuple[np.ndarray, int, int]:
    """int16 speech of voice ``seed`` between ``lead`` and ``trail`` seconds of silence, and the
    known first/last sample of its speech (the first syllable's onset, the last one's end,
    replayed from the same generator state as synth_voice uses them)."""
    duration = 1.0 + 0.4 * (seed % 5)
    speech = synth_voice(seed, duration, SR, np.random.default_rng(seed))
    syllables = plan_syllables(round(duration * SR), SR, voice_params(seed),
                               np.random.default_rng(seed))
    n_lead, n_trail = round(lead * SR), round(trail * SR)
    x = np.concatenate([np.zeros(n_lead), speech, np.zeros(n_trail)])
    noise = np.random.default_rng(1000 + seed).standard_normal(len(x))
    # Without a background: the faint floor synth_voice leaves in its own pauses (about
    # -85 dBFS), so that the padding sounds like the pauses around the speech.
    x += noise * (5e-5 if background_db is None else 10 ** (background_db / 20))
    pcm = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
    return pcm, n_lead + syllables[0].start, n_lead + syllables[-1].end


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("background_db", [None, -50.0])
@pytest.mark.parametrize("seed", range(10))
def test_trimmed_bounds_are_within_30_ms_of_the_known_speech(seed, background_db, method):
    pcm, begin, end = padded_voice(seed, lead=0.2 + 0.1 * (seed % 4), trail=0.5,
                                   background_db=background_db)
    span = SPANS[method](pcm, SR)
    assert span is not None
    print(f"{method} seed {seed} background {background_db}: begin {span[0] - begin:+d}, "
          f"end {span[1] - end:+d} samples")
    assert abs(span[0] - begin) <= TOLERANCE, (span, begin)
    assert abs(span[1] - end) <= TOLERANCE, (span, end)


@needs_silero
@pytest.mark.parametrize("rate", [8000, 44100])
def test_silero_resamples_other_rates_and_gives_bounds_at_the_clips_rate(rate):
    import soxr

    pcm, begin, end = padded_voice(4, lead=0.35, trail=0.5)
    x = soxr.resample(pcm.astype(np.float32) / 32768, SR, rate)
    span = silero.speech_span(x, rate)
    assert span is not None
    tolerance = round(0.030 * rate)
    assert abs(span[0] - begin * rate / SR) <= tolerance, (span, begin * rate / SR)
    assert abs(span[1] - end * rate / SR) <= tolerance, (span, end * rate / SR)


@needs_silero
def test_silero_model_bounds_alone_are_coarse_and_a_tone_or_noise_is_not_speech():
    # The model's own bounds come in 32 ms windows and its speech ends late (it waits for
    # a pause): the energy refinement is what brings them within 30 ms.
    pcm, begin, end = padded_voice(1, lead=0.4, trail=0.5)
    regions = silero.speech_regions(pcm, SR)
    assert regions and regions[-1][1] - end > TOLERANCE
    assert abs(silero.speech_span(pcm, SR)[1] - end) <= TOLERANCE
    rng = np.random.default_rng(0)
    n = SR
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / SR)).astype(np.float32)
    noise = (0.1 * rng.standard_normal(n)).astype(np.float32)
    for loud_but_not_speech in (tone, noise):
        assert speech_span(loud_but_not_speech, SR) is not None  # energy keeps it
        assert silero.speech_span(loud_but_not_speech, SR) is None
    assert silero.speech_span(np.zeros(n, dtype=np.int16), SR) is None
    assert silero.speech_span(np.zeros(0, dtype=np.int16), SR) is None


def test_silence_has_no_speech_and_a_steady_loud_signal_is_kept_whole():
    rng = np.random.default_rng(0)
    n = SR
    assert speech_span(np.zeros(n, dtype=np.int16), SR) is None
    assert speech_span(np.zeros(0, dtype=np.int16), SR) is None
    for db in (-80.0, -60.0, -48.0):  # hiss at several levels, float input
        assert speech_span((rng.standard_normal(n) * 10 ** (db / 20)).astype(np.float32),
                           SR) is None, db
    clicks = np.zeros(n, dtype=np.float32)
    clicks[[4000, 9000]] = 0.8  # two single-sample clicks: no 30 ms of signal
    assert speech_span(clicks, SR) is None
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / SR)).astype(np.float32)
    assert speech_span(tone, SR) == (0, n)  # no silence around it: nothing to trim


def write_wav(path: Path, pcm: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), pcm, SR, subtype="PCM_16")


def write_quiet(folder: Path, speaker: str) -> dict[str, str]:
    """quiet.wav: 2 s of -70 dBFS hiss (no speech), and its manifest row."""
    hiss = np.random.default_rng(7).standard_normal(2 * SR) * 10 ** (-70 / 20)
    write_wav(folder / "quiet.wav", np.round(hiss * 32768).astype(np.int16))
    return {"path": "quiet.wav", "id": "quiet", "speaker": speaker}


def vad_corpus(folder: Path) -> tuple[Path, dict[str, tuple[np.ndarray, int, int]]]:
    """Three padded voices and one all-silence file, listed in a manifest."""
    clips = {}
    rows = []
    for i, seed in enumerate((1, 2, 3)):
        pcm, begin, end = padded_voice(seed, lead=0.3 + 0.1 * i, trail=0.4)
        write_wav(folder / f"v{i}.wav", pcm)
        clips[f"v{i}"] = (pcm, begin, end)
        rows.append({"path": f"v{i}.wav", "id": f"v{i}", "speaker": f"s{i}"})
    rows.append(write_quiet(folder, "s0"))
    return write_manifest(folder, rows), clips


@pytest.mark.parametrize("method", METHODS)
def test_build_trims_clips_rejects_all_silence_and_counts_it_in_the_index(tmp_path, method):
    manifest, clips = vad_corpus(tmp_path / "c")
    silero._model.cache_clear()
    res = build("manifest", manifest, tmp_path / "o", vad=method, shard_size=2)
    split = tmp_path / "o" / "train"
    idx = load_index(str(split))
    assert (idx.counts.inputs, idx.counts.written, idx.counts.rejected) == (4, 3, 1)
    assert idx.counts.inputs == idx.counts.written + idx.counts.rejected
    assert [(r.input, r.stage) for r in idx.rejected] == [("quiet.wav", "filter")]
    assert idx.rejected[0].reason == f"all silence (--vad {method} found no speech in 2.000 s)"
    assert idx.preprocessing["vad"] == method
    if method == "silero":  # loaded once for the build's four clips, and its version noted
        assert silero._model.cache_info().misses == 1
        assert idx.preprocessing["vad_model"] == f"silero-vad {silero.require()}"
    else:
        assert "vad_model" not in idx.preprocessing

    samples = read_split(split)
    assert sorted(samples) == ["v0", "v1", "v2"]
    removed = 0
    for key, (pcm, begin, end) in clips.items():
        audio = samples[key]["audio.npy"]
        meta = samples[key]["json"]
        first = round(meta["offset"] * SR)  # where the kept audio starts in the file
        assert abs(first - begin) <= TOLERANCE and abs(first + len(audio) - end) <= TOLERANCE
        np.testing.assert_array_equal(audio, pcm[first:first + len(audio)])
        assert meta["num_samples"] == len(audio)
        removed += len(pcm) - len(audio)
    assert idx.extras["vad"] == {"method": method, "clips_trimmed": 3, "clips_dropped": 1,
                                 "seconds_removed": round(removed / SR, 6)}
    assert res.counts.rejected == 1

    # A rerun reuses the journaled shards, VAD counts included: the same index.
    before = (split / "index.json").read_bytes()
    again = build("manifest", manifest, tmp_path / "o", vad=method, shard_size=2)
    assert again.already_complete
    (split / "index.json").unlink()
    resumed = build("manifest", manifest, tmp_path / "o", vad=method, shard_size=2)
    assert resumed.splits["train"].shards_reused == 2
    assert (split / "index.json").read_bytes() == before


def test_without_vad_the_index_has_no_vad_entries(tmp_path):
    manifest, _ = vad_corpus(tmp_path / "c")
    build("manifest", manifest, tmp_path / "o")
    index = json.loads((tmp_path / "o" / "train" / "index.json").read_text())
    text = json.dumps(index)
    assert '"vad"' not in text
    idx = load_index(str(tmp_path / "o" / "train"))
    assert (idx.counts.written, idx.counts.rejected) == (4, 0)  # silence kept without VAD


def test_an_unknown_vad_is_refused_with_the_choices(tmp_path):
    manifest, _ = vad_corpus(tmp_path / "c")
    with pytest.raises(BuildConfigError, match="--vad 'webrtc': choose one of none, energy, "
                                               "silero"):
        build("manifest", manifest, tmp_path / "o", vad="webrtc")


def test_silero_without_the_package_names_the_install_command(tmp_path, monkeypatch):
    manifest, _ = vad_corpus(tmp_path / "c")
    # The package cannot be uninstalled from the shared test environment: a None entry in
    # sys.modules is how Python makes an import fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "silero_vad", None)
    with pytest.raises(BuildConfigError) as e:
        build("manifest", manifest, tmp_path / "o", vad="silero")
    assert str(e.value) == ("--vad silero needs the silero-vad package: "
                            "pip install 'wds-pipeline[vad]'")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------
# --vad-split-pause: one sample per speech region

REGIONS = {"energy": speech_regions, "silero": silero.split_regions}


def utterance(seed: int, duration: float) -> np.ndarray:
    """Voice ``seed``'s speech from its first syllable's onset to its last one's end (the
    silences synth_voice leaves around it cut off), so that a recording built from
    utterances has pauses of exactly the lengths put between them."""
    speech = synth_voice(seed, duration, SR, np.random.default_rng(seed))
    syllables = plan_syllables(round(duration * SR), SR, voice_params(seed),
                               np.random.default_rng(seed))
    return speech[syllables[0].start:syllables[-1].end]


def recording(layout: list[tuple[int, float, float]], *, lead: float = 0.4
              ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """int16 utterances ``(seed, duration, pause after it)`` after ``lead`` seconds of
    silence, and each utterance's known ``[begin, end)``. Pauses inside an utterance are
    the voice's own (at most 0.35 s plus the vowel fades)."""
    parts, spans, t = [np.zeros(round(lead * SR))], [], round(lead * SR)
    for seed, duration, pause in layout:
        u = utterance(seed, duration)
        spans.append((t, t + len(u)))
        parts += [u, np.zeros(round(pause * SR))]
        t += len(u) + round(pause * SR)
    x = np.concatenate(parts)
    x += np.random.default_rng(99).standard_normal(len(x)) * 5e-5  # as padded_voice's floor
    return np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16), spans


def talk_layout(seeds: tuple[int, int, int, int]) -> list[tuple[int, float, float]]:
    """Four utterances: pauses of 0.8 s, 0.2 s and 1.0 s between them, 0.5 s after."""
    return [(seeds[0], 1.6, 0.8), (seeds[1], 1.2, 0.2), (seeds[2], 1.4, 1.0),
            (seeds[3], 1.0, 0.5)]


def assert_near(found: list[tuple[int, int]], expected: list[tuple[int, int]],
                label: str) -> None:
    assert len(found) == len(expected), (label, found, expected)
    errors = [(b - eb, e - ee) for (b, e), (eb, ee) in zip(found, expected)]
    print(f"{label}: begin/end errors in samples {errors}")
    assert all(abs(db) <= TOLERANCE and abs(de) <= TOLERANCE for db, de in errors), errors


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seeds", [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12)])
def test_split_regions_follow_the_known_pauses_within_30_ms(seeds, method):
    pcm, (a, b, c, d) = recording(talk_layout(seeds))
    # 0.5 s: the 0.8 s and 1.0 s pauses split, the 0.2 s one and the voices' own do not.
    assert_near(REGIONS[method](pcm, SR, 0.5), [a, (b[0], c[1]), d], f"{method} {seeds} 0.5 s")
    # 0.9 s: only the 1.0 s pause splits.
    assert_near(REGIONS[method](pcm, SR, 0.9), [(a[0], c[1]), d], f"{method} {seeds} 0.9 s")
    # Longer than every pause: one region, the trimmed span.
    assert_near(REGIONS[method](pcm, SR, 1.5), [(a[0], d[1])], f"{method} {seeds} 1.5 s")
    if method == "energy":  # one region is exactly the trimmed span of --vad without a split
        assert speech_regions(pcm, SR, 1.5) == [speech_span(pcm, SR)]


def test_split_regions_of_silence_are_empty():
    for regions in REGIONS.values() if importlib.util.find_spec("silero_vad") else [
            speech_regions]:
        assert regions(np.zeros(SR, dtype=np.int16), SR, 0.5) == []
        assert regions(np.zeros(0, dtype=np.int16), SR, 0.5) == []


def split_corpus(folder: Path) -> tuple[Path, dict[str, tuple[np.ndarray, list]]]:
    """talk: three regions of 1 s or more at a 0.5 s pause, then a 0.34 s one (too short for
    the default --min-duration 0.5); one: a single voice; blip: only a 0.34 s utterance;
    quiet: hiss."""
    clips = {
        "talk": recording(talk_layout((1, 2, 3, 4))[:3] + [(7, 1.4, 0.8), (6, 0.6, 0.5)]),
        "one": recording([(5, 1.4, 0.6)], lead=0.3),
        "blip": recording([(6, 0.6, 0.5)]),
    }
    rows = []
    for name, (pcm, _) in clips.items():
        write_wav(folder / f"{name}.wav", pcm)
        rows.append({"path": f"{name}.wav", "id": name, "speaker": "s1"})
    rows.append(write_quiet(folder, "s1"))
    return write_manifest(folder, rows), clips


@pytest.mark.parametrize("method", METHODS)
def test_build_writes_one_sample_per_region_and_counts_them(tmp_path, method):
    manifest, clips = split_corpus(tmp_path / "c")
    res = build("manifest", manifest, tmp_path / "o", vad=method, vad_split_pause=0.5,
                shard_size=2)
    split = tmp_path / "o" / "train"
    idx = load_index(str(split))
    assert (idx.counts.inputs, idx.counts.written, idx.counts.rejected,
            idx.counts.samples) == (4, 2, 2, 4)
    assert res.counts.samples == 4
    assert idx.preprocessing["vad_split_pause"] == 0.5
    blip = REGIONS[method](clips["blip"][0], SR, 0.5)
    assert len(blip) == 1
    assert [(r.input, r.stage, r.reason) for r in idx.rejected] == [
        ("blip.wav", "filter", "no speech region within --min-duration 0.5 s (1 region(s) "
                               f"split at 0.5 s pauses, longest "
                               f"{(blip[0][1] - blip[0][0]) / SR:.3f} s)"),
        ("quiet.wav", "filter", f"all silence (--vad {method} found no speech in 2.000 s)")]

    samples = read_split(split)
    assert sorted(samples) == ["one-v0000", "talk-v0000", "talk-v0001", "talk-v0002"]
    talk, (a, b, c, d, e) = clips["talk"]
    one, (o,) = clips["one"]
    expected = {"talk-v0000": (talk, a), "talk-v0001": (talk, (b[0], c[1])),
                "talk-v0002": (talk, d), "one-v0000": (one, o)}
    removed = 0
    for key, (pcm, known) in expected.items():
        audio, meta = samples[key]["audio.npy"], samples[key]["json"]
        first = round(meta["offset"] * SR)  # the region's start in the recording
        assert_near([(first, first + len(audio))], [known], f"{method} {key}")
        np.testing.assert_array_equal(audio, pcm[first:first + len(audio)])
        assert meta["offset"] == round(first / SR, 6)
        assert (meta["key"], meta["id"], meta["vad_region"]) == (key, key[:-6], int(key[-4:]))
        assert meta["num_samples"] == len(audio) and "chunk" not in meta
    # Seconds removed: everything outside the regions found, short regions excepted.
    for name, (pcm, _) in clips.items():
        removed += len(pcm) - sum(e - b for b, e in REGIONS[method](pcm, SR, 0.5))
    assert idx.extras["vad"] == {
        "method": method, "clips_trimmed": 3, "clips_dropped": 1,
        "seconds_removed": round(removed / SR, 6), "split_pause": 0.5,
        "recordings_split": 1, "regions": 4, "regions_too_short": 2, "regions_too_long": 0}
    assert [len(REGIONS[method](pcm, SR, 0.5)) for pcm, _ in clips.values()] == [4, 1, 1]

    # A rerun and a resume report the same counts (the journal carries them).
    before = (split / "index.json").read_bytes()
    assert build("manifest", manifest, tmp_path / "o", vad=method, vad_split_pause=0.5,
                 shard_size=2).already_complete
    (split / "index.json").unlink()
    resumed = build("manifest", manifest, tmp_path / "o", vad=method, vad_split_pause=0.5,
                    shard_size=2)
    # One planned shard holds only rejects and has no file: empty, not reused (issue 19's
    # shard counts).
    assert (resumed.splits["train"].shards_reused, resumed.splits["train"].shards_empty) == (1, 1)
    assert (split / "index.json").read_bytes() == before


def test_regions_outside_max_duration_are_dropped_and_counted(tmp_path):
    manifest, clips = split_corpus(tmp_path / "c")
    talk = speech_regions(clips["talk"][0], SR, 0.5)
    long = (talk[1][1] - talk[1][0]) / SR  # the merged second and third utterances
    assert long > 2.2 and all((end - begin) / SR < 2.2 for begin, end in talk if begin != talk[1][0])
    build("manifest", manifest, tmp_path / "o", vad="energy", vad_split_pause=0.5,
          max_duration=2.2, min_duration=0.3)
    idx = load_index(str(tmp_path / "o" / "train"))
    assert sorted(read_split(tmp_path / "o" / "train")) == [
        "blip-v0000", "one-v0000", "talk-v0000", "talk-v0002", "talk-v0003"]
    vad = idx.extras["vad"]
    assert (vad["regions"], vad["regions_too_short"], vad["regions_too_long"]) == (5, 0, 1)
    assert (idx.counts.inputs, idx.counts.written, idx.counts.rejected) == (4, 3, 1)


# sha256 of shards and index.json of test_build_trims_clips...'s corpus built with --vad energy
# and shard_size 2 by the code before --vad-split-pause existed (same digest as
# test_demo_digest.shards_digest computes). Re-recorded for shard format 2 (XXH3-128 shard
# digests): both shard tars are byte-identical to format 1's; only index.json changed.
ENERGY_DIGEST = "cea6490843a22a05c286e51d38523fcf02b289e315906412ea5884ab8cdbeb76"


def test_without_split_pause_a_vad_build_is_byte_identical_to_before(tmp_path):
    from test_demo_digest import shards_digest

    manifest, _ = vad_corpus(tmp_path / "c")
    build("manifest", manifest, tmp_path / "o", vad="energy", shard_size=2)
    assert shards_digest(str(tmp_path / "o")) == (ENERGY_DIGEST, 3)


@pytest.mark.parametrize("options, message", [
    ({"vad_split_pause": 0.5}, "--vad-split-pause splits at the pauses that voice activity "
                               "detection finds: add --vad energy or --vad silero"),
    ({"vad": "energy", "vad_split_pause": 0.5, "chunk_seconds": 2.0},
     "--vad-split-pause and --chunk-seconds both cut inputs into samples: use one of them "
     "(--max-duration rejects over-long speech regions)"),
    ({"vad": "energy", "vad_split_pause": 0.0}, "--vad-split-pause must be positive, got 0.0"),
])
def test_split_pause_refuses_bad_combinations(tmp_path, options, message):
    manifest, _ = vad_corpus(tmp_path / "c")
    with pytest.raises(BuildConfigError) as e:
        build("manifest", manifest, tmp_path / "o", **options)
    assert str(e.value) == message
    assert not (tmp_path / "o").exists()


def test_cli_refuses_split_pause_without_vad(tmp_path):
    import subprocess

    manifest, _ = vad_corpus(tmp_path / "c")
    proc = subprocess.run([sys.executable, "-m", "wds_pipeline.cli", "build", "manifest",
                           str(manifest), str(tmp_path / "o"), "--vad-split-pause", "0.5"],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "--vad-split-pause splits at the pauses that voice activity detection finds: " \
           "add --vad energy or --vad silero" in proc.stderr


def test_keys_leave_room_for_the_region_suffix(tmp_path):
    folder = tmp_path / "c"
    pcm, _ = recording([(5, 1.4, 0.6)], lead=0.3)
    write_wav(folder / "a.wav", pcm)
    write_wav(folder / "b.wav", pcm)
    fits, too_long = "a" * 74, "b" * 75  # 80-character keys with "-v0000"
    manifest = write_manifest(folder, [{"path": "a.wav", "id": fits, "speaker": "s"},
                                       {"path": "b.wav", "id": too_long, "speaker": "s"}])
    build("manifest", manifest, tmp_path / "o", vad="energy", vad_split_pause=0.5)
    idx = load_index(str(tmp_path / "o" / "train"))
    assert sorted(read_split(tmp_path / "o" / "train")) == [fits + "-v0000"]
    assert [(r.input, r.reason) for r in idx.rejected] == [
        ("b.wav", f"sample key {too_long!r} longer than 74 characters (shorten the ids in "
                  "the source)")]


def test_a_key_too_long_for_a_five_digit_region_suffix_is_a_reject(tmp_path):
    rate = 8000  # 10001 bursts of 40 ms tone and 20 ms silence: 600 s, kept small at 8 kHz
    burst = np.concatenate([np.round(8000 * np.sin(2 * np.pi * 440 * np.arange(320) / rate)),
                            np.zeros(160)]).astype(np.int16)
    folder = tmp_path / "c"
    folder.mkdir()
    sf.write(str(folder / "many.wav"), np.tile(burst, 10001), rate, subtype="PCM_16")
    long_id = "m" * 74  # room for -v0000 (plan_keys), not for -v10000
    manifest = write_manifest(folder, [{"path": "many.wav", "id": long_id, "speaker": "s"},
                                       {"path": "many.wav", "id": "short", "speaker": "s"}])
    build("manifest", manifest, tmp_path / "o", vad="energy", vad_split_pause=0.015,
          sample_rate=rate, min_duration=0.01)
    idx = load_index(str(tmp_path / "o" / "train"))
    keys = set(read_split(tmp_path / "o" / "train"))
    assert keys == {f"short-v{i:04d}" for i in range(10001)}
    assert [(r.input, r.reason) for r in idx.rejected] == [
        ("many.wav", f"10001 speech regions at --vad-split-pause 0.015: key "
                     f"'{long_id}-v10000' would be longer than 80 characters; shorten the id, "
                     "use a longer pause or cut the recording")]
    assert idx.extras["vad"]["regions"] == 10001


def test_runs_within_a_span_are_the_runs_a_scan_finds():
    import random

    from wds_pipeline.audio.refine import runs_within

    rng = random.Random(7)
    for _ in range(300):
        found, pos = [], 0
        for _ in range(rng.randrange(0, 12)):
            start = pos + rng.randrange(0, 5)
            pos = start + rng.randrange(1, 6)
            found.append((start, pos))
        frame = rng.choice([1, 160, 320])
        lo, hi = sorted(rng.randrange(0, (pos + 3) * frame + 1) for _ in range(2))
        scan = [r for r in found if r[0] * frame >= lo and r[1] * frame <= hi]
        assert runs_within(found, [r[0] for r in found], [r[1] for r in found], lo, hi, frame) == scan


def test_every_vad_method_is_a_registered_backend_with_the_contract():
    import typing

    from wds_pipeline.audio.vad import BACKENDS, VadBackend, VadMethod, get_vad
    from wds_pipeline.builder.options import BuildOptions

    assert typing.get_type_hints(BuildOptions)["vad"] is VadMethod
    assert set(BACKENDS) == set(typing.get_args(VadMethod)) - {"none"} == {"energy", "silero"}
    with pytest.raises(ValueError, match="unknown voice activity detection 'none'"):
        get_vad("none")
    for name in BACKENDS:
        if name == "silero" and importlib.util.find_spec("silero_vad") is None:
            continue
        backend = get_vad(name)
        assert isinstance(backend, VadBackend) and backend.name == name
        assert backend.speech_span(np.zeros(SR, dtype=np.int16), SR) is None
        assert backend.split_regions(np.zeros(0, dtype=np.int16), SR, 0.5) == []
        model = backend.require()
        assert model is None if name == "energy" else model == f"silero-vad {silero.require()}"
