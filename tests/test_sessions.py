"""The sessions source on generated session recordings (``wds_pipeline.synth.sessions``):
cut boundaries against the known word times, labels per mode, window overlap lists,
untimed words, bad transcripts as recorded rejects, and one decode per long recording."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from peak_rss import build_peak_rss
from test_builder import build, read_split
from test_recordings import decode_spans

from wds_pipeline.builder import BuildOptions
from wds_pipeline.index import load_index
from wds_pipeline.synth import COMMANDS, synth_sessions
from wds_pipeline.synth.sessions import AUDIO_NAME, NUMBERS

SR = 16000
SYNONYMS = {"walking": "walk"}
WORDS = dict(mode="words", synonyms="walking=walk")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("sessions")
    return root, synth_sessions(str(root), sessions=2, seconds=30.0, untimed_per_session=2)


def _build(root: Path, out: Path, **source_options):
    return build("sessions", root, out, source_options=source_options, min_duration=0.05,
                 shuffle_seed=None, shard_size=10_000)


def _timed_truth(summary: dict) -> list[tuple[str, str, float, float, str | None]]:
    return [(name, w, s, e, spk) for name, t in sorted(summary["sessions"].items())
            for (w, s, e, spk) in t["words"] if w not in NUMBERS]


def test_words_mode_cuts_each_word_at_its_known_time_with_padding(corpus, tmp_path):
    root, summary = corpus
    _build(root, tmp_path / "out", **WORDS, pad_before=0.1, pad_after=0.05, untimed="skip")
    got = read_split(tmp_path / "out" / "train")
    truth = _timed_truth(summary)
    assert len(got) == len(truth)
    recordings = {name: sf.read(str(root / name / AUDIO_NAME), dtype="int16")[0]
                  for name in summary["sessions"]}
    for (name, word, start, end, spk), (key, sample) in zip(truth, sorted(got.items())):
        meta = sample["json"]
        assert meta["session"] == name and meta["label"] == word and meta["speaker"] == spk
        assert abs(meta["offset"] - (start - 0.1)) < 0.010
        assert abs(meta["duration"] - (end - start + 0.15)) < 0.010
        assert (meta["pad_before"], meta["pad_after"]) == (0.1, 0.05)
        first = round((start - 0.1) * SR)
        np.testing.assert_array_equal(sample["audio.npy"],
                                      recordings[name][first:first + len(sample["audio.npy"])])
    idx = load_index(str(tmp_path / "out" / "train"))
    assert sorted(idx.label_map) == sorted({w for _, w, *_ in truth})
    assert set(idx.label_map) <= set(COMMANDS)


def test_vocabulary_and_synonyms_pick_the_class(corpus, tmp_path):
    root, summary = corpus
    _build(root, tmp_path / "a", mode="words", vocabulary="jump,Walk", untimed="skip")
    _build(root, tmp_path / "b", **WORDS, vocabulary="jump,Walk", untimed="skip")
    a = read_split(tmp_path / "a" / "train")
    b = read_split(tmp_path / "b" / "train")
    truth = [t for t in _timed_truth(summary) if t[1] in ("jump", "walk")]
    assert len(b) == len(truth)  # "Walking!" counts as walk only with the synonym
    assert {s["json"]["label"] for s in b.values()} == {"jump", "walk"}
    texts = {s["json"]["text"] for s in b.values()}
    assert {"walking", "Jump,"} <= {t.replace("Walking!", "walking") for t in texts}
    assert len(a) < len(b)
    extras = load_index(str(tmp_path / "b" / "train")).extras["sessions"]
    assert extras["out_of_vocabulary"] == len(_timed_truth(summary)) - len(truth)


def test_segments_mode_text_and_speaker(corpus, tmp_path):
    root, _ = corpus
    _build(root, tmp_path / "out", mode="segments")
    got = read_split(tmp_path / "out" / "train")
    docs = {n: json.loads((root / n / "audio_16k.json").read_text()) for n in
            ("session-000", "session-001")}
    expected = [(n, s) for n in sorted(docs) for s in docs[n]["segments"]]
    assert len(got) == len(expected)
    for (n, seg), sample in zip(expected, [got[k] for k in sorted(got)]):
        assert sample["json"]["text"] == seg["text"]
        assert sample["json"]["speaker"] == seg.get("speaker")
        assert abs(sample["json"]["offset"] - seg["start"]) < 1e-6
    idx = load_index(str(tmp_path / "out" / "train"))
    assert idx.label_map == {"SPEAKER_00": 0, "SPEAKER_01": 1}  # only the diarized session


def test_windows_list_overlapping_words_and_speakers(corpus, tmp_path):
    root, summary = corpus
    _build(root, tmp_path / "out", mode="windows", window_seconds=2.0, hop_seconds=0.5)
    got = read_split(tmp_path / "out" / "train")
    diarized = [s for k, s in sorted(got.items()) if s["json"]["session"] == "session-001"]
    assert len(diarized) == int((30.0 - 2.0) // 0.5) + 1
    truth = summary["sessions"]["session-001"]["words"]
    for s in diarized:
        lo = s["json"]["offset"]
        want = [(w, round(max(a, lo) - lo, 6), round(min(b, lo + 2) - lo, 6))
                for (w, a, b, _) in truth if min(b, lo + 2) > max(a, lo) and w not in NUMBERS]
        have = [(w["word"], w["start"], w["end"]) for w in s["json"]["words"]
                if not w["word"].isdigit()]
        assert [(SYNONYMS.get(w.lower().strip("!,."), w.lower().strip("!,.")), a, b)
                for w, a, b in have] == want
        assert "label" not in s["json"] and "cls" not in s
        total = sum(o["overlap"] for o in s["json"]["speakers"])
        assert total <= 2.0 + 1e-6
    assert {sp["speaker"] for s in diarized for sp in s["json"]["speakers"]} == {
        "SPEAKER_00", "SPEAKER_01"}


@pytest.mark.parametrize("untimed", ["interpolate", "skip"])
def test_untimed_words_are_interpolated_or_skipped_and_counted(corpus, tmp_path, untimed):
    root, summary = corpus
    result = _build(root, tmp_path / "out", mode="words", untimed=untimed)
    n_untimed = sum(w in NUMBERS for t in summary["sessions"].values() for (w, *_ ) in t["words"])
    assert n_untimed == 4
    idx = load_index(str(tmp_path / "out" / "train"))
    extras = idx.extras["sessions"]
    got = read_split(tmp_path / "out" / "train")
    numbers = [s["json"] for s in got.values() if s["json"]["label"] in NUMBERS]
    if untimed == "skip":
        assert (extras["untimed_skipped"], extras["untimed_interpolated"]) == (n_untimed, 0)
        assert numbers == []
        assert sum("no timestamps" in r.reason for r in idx.rejected) == n_untimed
    else:
        assert (extras["untimed_interpolated"], extras["untimed_skipped"]) == (0 + n_untimed, 0)
        assert len(numbers) == n_untimed and all(m["interpolated"] for m in numbers)
        spoken = {(n, s) for n, t in summary["sessions"].items() for (w, s, e, _) in t["words"]
                  if w in NUMBERS}
        for m in numbers:  # the gap between its neighbours holds where it was spoken
            assert any(n == m["session"] and m["word_start"] - 0.8 < s < m["word_end"]
                       for n, s in spoken)
    c = result.counts
    assert c.inputs == c.written + c.rejected


def _bad_corpus(root: Path, corpus_root: Path) -> dict[str, str]:
    """One session per kind of bad transcript; returns {session: reason fragment}."""
    good = json.loads((corpus_root / "session-000" / "audio_16k.json").read_text())
    wav = (corpus_root / "session-000" / AUDIO_NAME).read_bytes()

    def seg(i: int) -> dict:
        return json.loads(json.dumps(good["segments"][i]))

    cases: dict[str, tuple[object, str]] = {
        "truncated-json": ('{"segments": [', "not valid JSON"),
        "not-object": ([1, 2], 'expected a JSON object with a "segments" list'),
        "negative": ({"segments": [{**seg(0), "start": -1.0}]}, "negative"),
        "reversed": ({"segments": [{**seg(0), "start": 5.0, "end": 4.0}]}, "before it starts"),
        "out-of-order": ({"segments": [seg(1), seg(0)]}, "out of order"),
        "overlapping": ({"segments": [seg(0), {**seg(1), "start": seg(0)["start"] + 0.1}]},
                        "overlapping segments"),
        "beyond-end": ({"segments": [seg(0), {**seg(1), "end": 99.0}]}, "recording is"),
        "word-type": ({"segments": [{**seg(0), "words": [{"word": 3}]}]}, '"word" string'),
        "bad-time": ({"segments": [{**seg(0), "start": "soon"}]}, "not a number of seconds"),
    }
    for name, (doc, _) in cases.items():
        (root / name).mkdir(parents=True)
        (root / name / AUDIO_NAME).write_bytes(wav)
        text = doc if isinstance(doc, str) else json.dumps(doc)
        (root / name / "audio_16k.json").write_text(text)
    (root / "no-json").mkdir()
    (root / "no-json" / AUDIO_NAME).write_bytes(wav)
    (root / "no-audio").mkdir()
    (root / "no-audio" / "audio_16k.json").write_text(json.dumps(good))
    out = {n: why for n, (_, why) in cases.items()}
    out.update({"no-json": "no WhisperX transcript", "no-audio": "no audio file"})
    return out


@pytest.mark.parametrize("mode", ["segments", "words", "windows"])
def test_each_kind_of_bad_transcript_is_a_recorded_reject(corpus, tmp_path, mode):
    expected = _bad_corpus(tmp_path / "bad", corpus[0])
    (tmp_path / "bad" / "ok").symlink_to(corpus[0] / "session-000")
    result = _build(tmp_path / "bad", tmp_path / "out", mode=mode)
    idx = load_index(str(tmp_path / "out" / "train"))
    by_session = {r.reason.split(":")[0].removeprefix("session "): r for r in idx.rejected}
    assert sorted(by_session) == sorted(expected)
    for name, why in expected.items():
        assert why in by_session[name].reason, (name, by_session[name].reason)
    c = result.counts
    assert c.rejected == len(expected) and c.written > 0
    assert c.inputs == c.written + c.rejected


HOUR = 3600.0


def test_a_one_hour_session_decodes_once_in_memory_bounded_by_the_recording(
        tmp_path, monkeypatch):
    root = tmp_path / "long"
    # Pauses of 80-250 ms between words: about 5,000 words in the hour.
    summary = synth_sessions(str(root), sessions=1, seconds=HOUR, untimed_per_session=0,
                             word_gap=(0.08, 0.25))
    words = summary["sessions"]["session-000"]["words"]
    assert len(words) >= 5000
    spans = decode_spans(monkeypatch)
    # The default build options (shuffle seed, shard size, workers in-process so the
    # decodes are seen) but --min-duration: the words are 0.3-0.5 s long.
    result = build("sessions", root, tmp_path / "out", source_options={"mode": "words"},
                   min_duration=0.05)
    assert result.counts.written == len(words) and result.counts.rejected == 0
    idx = load_index(str(tmp_path / "out" / "train"))
    shards = -(-len(words) // BuildOptions().shard_size)
    assert len(idx.shards) == shards
    # One decode per shard the recording spans, each of the span its shard's words cover.
    assert [name for name, _, _ in spans] == [f"session-000/{AUDIO_NAME}"] * shards
    bounds = sorted((lo, lo + dur) for _, lo, dur in spans)
    for (_, end), (start, _) in zip(bounds, bounds[1:]):
        assert end <= start  # no part of the recording decoded twice
    for _, start, end, _ in words:  # every word inside exactly one decoded span
        assert sum(lo <= start and end <= hi for lo, hi in bounds) == 1, (start, end)
    decoded = sum(hi - lo for lo, hi in bounds)
    spoken = words[-1][2] - words[0][1]
    assert spoken - shards * 0.25 <= decoded <= spoken + shards * 0.011  # gaps, margins
    print(f"{len(words)} words, {shards} shards, {len(spans)} decodes of {decoded:.1f} s "
          f"in all from a {HOUR:.0f} s recording")
    monkeypatch.undo()
    # Peak memory a build adds to its process: the long session against a 30 s one with
    # the same code path; the difference is what the recording costs.
    short = tmp_path / "short"
    synth_sessions(str(short), sessions=1, seconds=30.0, untimed_per_session=0)
    peaks = {name: _peak_rss(src, tmp_path / f"out-{name}") for name, src in
             (("short", short), ("long", root))}
    recording = HOUR * SR * 2  # int16 bytes of the decoded recording
    largest = max(hi - lo for lo, hi in bounds) * SR * 2  # ... of the largest decoded span
    grown = peaks["long"] - peaks["short"]
    print(f"peak RSS: short {peaks['short'] / 2**20:.0f} MiB, long {peaks['long'] / 2**20:.0f}"
          f" MiB; growth {grown / 2**20:.0f} MiB for a {recording / 2**20:.0f} MiB recording "
          f"(largest decoded span {largest / 2**20:.0f} MiB) and {len(words)} words")
    # Bounded by the recording: one shard's span of it held at a time (int16, no copy per
    # word or in float32), not the whole hour and nothing per word.
    assert grown < 0.75 * recording  # measured 52 MiB of 110


def _peak_rss(root: Path, out: Path) -> int:
    return build_peak_rss(
        "import wds_pipeline.audio, wds_pipeline.builder.worker, wds_pipeline.sources.sessions\n"
        "from wds_pipeline.builder import BuildOptions, build_dataset",
        "build_dataset('sessions', sys.argv[1], sys.argv[2], source_options={'mode': 'words'}, "
        "options=BuildOptions(workers=1, progress=False, min_duration=0.05))",
        [str(root), str(out)])
