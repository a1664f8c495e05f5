"""Segments that share a recording are cut from one decode of it, with the samples a
decode of each segment alone gives (manifest rows on one file with offset/duration)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_builder import build, read_split, signal_wave, write_manifest

from wds_pipeline import audio
from wds_pipeline.builder import BuildOptions
from wds_pipeline.builder.plan import WorkerConfig, make_plans
from wds_pipeline.index import load_index
from wds_pipeline.records import SourceRecord, SourceScan
from wds_pipeline.synth import to_pcm16, write_m4a


def count_decodes(monkeypatch) -> list[str]:
    """The names of the decodes the builder makes from now on, in order (the real decoder
    runs; the wrapper only records the ``name`` each call passes)."""
    calls: list[str] = []
    _watch_decoder(monkeypatch, lambda kw: calls.append(kw.get("name")))
    return calls


def decode_spans(monkeypatch) -> list[tuple[str, float, float | None]]:
    """``(name, offset, duration)`` of each decode the builder makes from now on, in order."""
    spans: list[tuple[str, float, float | None]] = []
    _watch_decoder(monkeypatch, lambda kw: spans.append(
        (kw.get("name"), kw.get("offset", 0.0), kw.get("duration"))))
    return spans


def _watch_decoder(monkeypatch, record) -> None:
    real = sys.modules["wds_pipeline.audio.decode"].decode_audio

    def watched(src, **kw):
        record(kw)
        return real(src, **kw)

    # Both names the builder reaches the decoder by: the package's and load_and_preprocess's.
    monkeypatch.setattr(audio, "decode_audio", watched)
    monkeypatch.setattr(sys.modules["wds_pipeline.audio.preprocess"], "decode_audio", watched)


def _segments(n: int, step: float = 0.37, dur: float = 0.29) -> list[tuple[float, float]]:
    return [(round(i * step, 3), dur) for i in range(n)]


@pytest.mark.parametrize("fmt_, sr", [("wav", 44100), ("flac", 16000), ("mp3", 16000),
                                      ("m4a", 16000), ("m4a", 44100)])
def test_segments_of_one_file_decode_once_and_equal_decoding_each_alone(
        tmp_path: Path, fmt_: str, sr: int, monkeypatch):
    path = tmp_path / f"long.{fmt_}"
    if fmt_ == "m4a":
        # AAC in MP4. A lone segment seeks to a pre-roll point before it and discards the
        # warm-up; the container's edit list removes the encoder's priming samples in both
        # paths, so the cuts must still equal the lone decodes sample for sample.
        write_m4a(str(path), to_pcm16(signal_wave(12.0, sr)), sr)
    else:
        sf.write(str(path), signal_wave(12.0, sr), sr, format=fmt_.upper())
    segs = _segments(30)
    rows = [{"path": path.name, "offset": o, "duration": d, "id": f"seg-{i:03d}"}
            for i, (o, d) in enumerate(segs)]
    # A segment past the end of the file: rejected with the reason a lone decode gives.
    rows.append({"path": path.name, "offset": 20.0, "duration": 0.5, "id": "seg-late"})
    manifest = write_manifest(tmp_path, rows)
    calls = count_decodes(monkeypatch)
    build("manifest", manifest, tmp_path / "out", shard_size=100, min_duration=0.1)
    # One decode of the span the shard covers, one for the segment past its end.
    assert calls == [path.name, f"{path.name}#seg-late"]
    got = read_split(tmp_path / "out" / "train")
    assert sorted(got) == [f"seg-{i:03d}" for i in range(len(segs))]
    cfg = audio.PreprocessConfig(sample_rate=16000)
    monkeypatch.undo()
    for i, (o, d) in enumerate(segs):
        alone = audio.load_and_preprocess(str(path), cfg, offset=o, duration=d)
        np.testing.assert_array_equal(got[f"seg-{i:03d}"]["audio.npy"], alone)
    if fmt_ == "m4a":
        # ... and both are where the written audio is: no priming delay is left in either
        # (a shift of one 1024-sample AAC frame would bring the SNR below 0 dB).
        written = audio.finish(to_pcm16(signal_wave(12.0, sr))[:, None], sr, cfg)
        for i, (o, _) in enumerate(segs):
            cut = got[f"seg-{i:03d}"]["audio.npy"].astype(np.float64)
            ref = written[round(o * 16000):][:len(cut)].astype(np.float64)
            snr = 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - cut) ** 2))
            assert snr > 20.0, (o, snr)
    idx = load_index(str(tmp_path / "out" / "train"))
    [late] = idx.rejected
    assert late.input == f"long.{fmt_}#seg-late"
    assert "at or past the end of the audio" in late.reason


def test_recording_spread_over_shards_is_decoded_once_per_shard(tmp_path: Path, monkeypatch):
    sf.write(str(tmp_path / "a.wav"), signal_wave(6.0, 16000), 16000)
    sf.write(str(tmp_path / "b.wav"), signal_wave(6.0, 16000, seed=1), 16000)
    rows = [{"path": name, "offset": o, "duration": d, "id": f"{name[0]}-{i:02d}"}
            for name in ("a.wav", "b.wav") for i, (o, d) in enumerate(_segments(10, 0.5, 0.4))]
    calls = count_decodes(monkeypatch)
    manifest = write_manifest(tmp_path, rows)
    build("manifest", manifest, tmp_path / "out", shard_size=6, min_duration=0.1,
          shuffle_seed=None)
    # shards: a00-a05 | a06-a09 b00-b01 | b02-b07 | b08-b09
    assert calls == ["a.wav", "a.wav", "b.wav", "b.wav", "b.wav"]
    # Shuffled, each shard still decodes each recording it cuts from at most once (a
    # recording with a single segment in a shard decodes just that segment).
    calls.clear()
    build("manifest", manifest, tmp_path / "shuffled", shard_size=6, min_duration=0.1)
    assert len(calls) <= 2 * 4 and len(calls) < len(rows)
    assert read_split(tmp_path / "shuffled" / "train").keys() == read_split(
        tmp_path / "out" / "train").keys()


def _plan(records, *, seed, keep, shard_size=4) -> list[list[str]]:
    """Record ids per shard of the plan of ``records`` (one split)."""
    options = BuildOptions(shuffle_seed=seed, shard_size=shard_size)
    worker = WorkerConfig(preprocess=None, audio_field="audio.npy", zstd_level=3, fbank=None,
                          min_duration=0.0, max_duration=None, chunk_seconds=None,
                          min_chunk_seconds=0.0)
    [plan] = make_plans(SourceScan(records), source="sessions", root="/corpus", out="/out",
                        options=options, source_options={}, worker=worker, preprocessing={},
                        staging_dir=lambda url: "/tmp", keep_recordings_together=keep)
    return [[p.record.id for p in task.inputs] for task in plan.shards]


def test_planner_keeps_a_recordings_segments_together_and_shuffles_whole_recordings():
    # Ids interleave the recordings (w-000-rec-a, w-000-rec-b, ...): id order alone would
    # put every recording in nearly every shard.
    sizes = {"rec-a": 3, "rec-b": 7, "rec-c": 5, "rec-d": 1, "rec-e": 6, "rec-f": 4}
    records = [SourceRecord(id=f"w-{j:03d}-{rec}", path=f"/corpus/{rec}.wav", offset=j * 0.5,
                            duration=0.4, label="x")
               for rec, n in sizes.items() for j in range(n)]
    by_id = sorted(r.id for r in records)

    def recordings(order: list[str]) -> list[str]:
        """The recordings in the order their segments come, each once if consecutive."""
        return [rid.split("-", 2)[2] for i, rid in enumerate(order)
                if i == 0 or rid.split("-", 2)[2] != order[i - 1].split("-", 2)[2]]

    for seed in (None, 0, 1, 7):
        shards = _plan(records, seed=seed, keep=True)
        assert all(len(s) <= 4 for s in shards) and all(len(s) == 4 for s in shards[:-1])
        order = [rid for shard in shards for rid in shard]
        assert sorted(order) == by_id
        recs = recordings(order)
        assert sorted(recs) == sorted(sizes)  # each recording's segments consecutive ...
        for rec in recs:  # ... in id order
            mine = [rid for rid in order if rid.endswith(rec)]
            assert mine == sorted(mine)
        assert _plan(records, seed=seed, keep=True) == shards  # the same plan for the seed
        if seed is None:
            assert recs == sorted(sizes)  # in order of their first ids
        else:
            assert recs != sorted(sizes)  # the seed moved whole recordings
    assert recordings(sum(_plan(records, seed=0, keep=True), [])) != recordings(
        sum(_plan(records, seed=1, keep=True), []))

    # Other sources: the id-sorted inputs shuffled one by one, as before.
    for seed in (None, 0, 7):
        expected = list(by_id)
        if seed is not None:
            random.Random(seed).shuffle(expected)
        got = _plan(records, seed=seed, keep=False)
        assert sum(got, []) == expected
