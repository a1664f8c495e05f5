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
from wds_pipeline.audio.vad import speech_span
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


def vad_corpus(folder: Path) -> tuple[Path, dict[str, tuple[np.ndarray, int, int]]]:
    """Three padded voices and one all-silence file, listed in a manifest."""
    clips = {}
    rows = []
    for i, seed in enumerate((1, 2, 3)):
        pcm, begin, end = padded_voice(seed, lead=0.3 + 0.1 * i, trail=0.4)
        write_wav(folder / f"v{i}.wav", pcm)
        clips[f"v{i}"] = (pcm, begin, end)
        rows.append({"path": f"v{i}.wav", "id": f"v{i}", "speaker": f"s{i}"})
    hiss = np.random.default_rng(7).standard_normal(2 * SR) * 10 ** (-70 / 20)
    write_wav(folder / "quiet.wav", np.round(hiss * 32768).astype(np.int16))
    rows.append({"path": "quiet.wav", "id": "quiet", "speaker": "s0"})
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
