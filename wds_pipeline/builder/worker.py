"""Shard worker: decode, preprocess and write one whole shard, then publish it.

Segments that share a recording are cut from one decode of it (:mod:`.recordings`).

``process_shard`` is a top-level function of plain picklable dataclasses so it
runs the same in-process, under ``fork`` or under ``spawn``. One shard is one
task: the IPC per shard is its input list out and a small result back, never
audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# audio and storage at module level: the fork server preloads this module, so
# workers start with soundfile/soxr/fsspec already imported.
from .. import audio, storage  # noqa: F401 (storage: preloaded, see above)
from .. import format as fmt
from ..audio.vad import VadBackend, get_vad
from ..index import BuildCounts, ShardInfo, VadCounts
from ..records import ALL_SILENCE, NO_CHUNK, NO_REGION, TOO_LONG, TOO_SHORT, UNDECODABLE, Reject
from ..shard_writer import ShardWriter
from .plan import PlannedInput, ShardTask, WorkerConfig
from .recordings import ShardRecordings, source_reader
from .staging import ShardOutcome, journal_shard, staged_shard

# Errors that mean "this input is bad", not "the builder is broken": libsndfile
# raises RuntimeError subclasses, PyAV OSError/ValueError subclasses.
_INPUT_ERRORS = (ValueError, OSError, RuntimeError, EOFError)


@dataclass
class _Sample:
    key: str
    fields: dict[str, bytes]
    frames: int


def _samples_for(p: PlannedInput, x: np.ndarray, cfg: WorkerConfig,
                 lead: int = 0, region: int | None = None) -> list[_Sample]:
    """``lead``: samples (at the output rate) that VAD trimmed off the start of ``x``.
    ``region``: the index of the speech region ``x`` is (``--vad-split-pause``)."""
    rate = cfg.sample_rate
    pcm = x  # int16 mono at the target rate (audio.load_and_preprocess)
    if cfg.chunk_seconds is not None:
        pieces = [(start, piece) for start, piece in
                  audio.chunk(pcm, rate, cfg.chunk_seconds, cfg.min_chunk_seconds)]
    else:
        pieces = [(0, pcm)]
    rec = p.record
    samples = []
    for ci, (start, piece) in enumerate(pieces):
        piece = np.ascontiguousarray(piece, dtype=np.int16)
        key = f"{p.key}-c{ci:04d}" if cfg.chunk_seconds is not None else p.key
        if region is not None:  # never with chunks (BuildOptions.validate)
            key = f"{p.key}-v{region:04d}"
        meta = dict(rec.extra)  # source extras first: the core keys below win on a clash
        meta.update({
            "id": rec.id,
            "key": key,
            "speaker": rec.speaker,
            "text": rec.text,
            "duration": round(len(piece) / rate, 6),
            "sample_rate": rate,
            "num_samples": len(piece),
            "source": p.rel.split("#", 1)[0],
            "offset": round(float(rec.offset) + (lead + start) / rate, 6),
            "dataset": rec.dataset,
            "split": rec.split,
        })
        if rec.label:  # None (the speaker is the class) and NO_LABEL write no label
            meta["label"] = rec.label
        if cfg.chunk_seconds is not None:
            meta["chunk"] = ci
        if region is not None:
            meta["vad_region"] = region
        if cfg.audio_field == fmt.AUDIO_NPY_ZST:
            audio_bytes = fmt.zstd_compress(fmt.encode_npy(piece), cfg.zstd_level)
        else:
            audio_bytes = fmt.encode_audio(piece, rate, cfg.audio_field)
        fields = {cfg.audio_field: audio_bytes, fmt.JSON: fmt.encode_json(meta)}
        if p.label is not None:
            fields[fmt.CLS] = fmt.encode_cls(p.label)
        if cfg.fbank is not None:
            from ..features import fbank_numpy

            feats: bytes = fmt.encode_npy(np.asarray(fbank_numpy(piece, cfg.fbank), dtype=np.float16))
            if cfg.fbank_field == fmt.FBANK_ZST:
                feats = fmt.zstd_compress(feats, cfg.zstd_level)
            fields[cfg.fbank_field] = feats
        samples.append(_Sample(key, fields, len(piece)))
    return samples


def _all_silence(p: PlannedInput, x: np.ndarray, cfg: WorkerConfig, vad: VadCounts) -> Reject:
    """The reject of an input in which voice activity detection found no speech, counted."""
    vad.clips_dropped += 1
    return Reject(p.rel, f"{ALL_SILENCE.phrase} {cfg.vad} found no speech in "
                         f"{len(x) / cfg.sample_rate:.3f} s)", "filter")


def _region_samples(p: PlannedInput, x: np.ndarray, cfg: WorkerConfig, backend: VadBackend,
                    pause: float, vad: VadCounts) -> tuple[list[_Sample], Reject | None]:
    """``--vad-split-pause``: one sample per speech region of ``x``. A region outside
    --min-duration/--max-duration is dropped and counted; the input is a reject only
    when no region is left (inputs = written + rejected counts inputs, not regions)."""
    rate = cfg.sample_rate
    regions = backend.split_regions(x, rate, pause)
    if not regions:
        return [], _all_silence(p, x, cfg, vad)
    last_key = f"{p.key}-v{len(regions) - 1:04d}"
    if len(last_key) > fmt.MAX_KEY_LENGTH:  # planned with room for 4 digits, not 5
        return [], Reject(p.rel, f"{len(regions)} speech regions at --vad-split-pause "
                                 f"{pause:g}: key {last_key!r} would be longer than "
                                 f"{fmt.MAX_KEY_LENGTH} characters; shorten the id, use a "
                                 "longer pause or cut the recording", "filter")
    removed = len(x) - sum(end - begin for begin, end in regions)
    if removed:
        vad.clips_trimmed += 1
        vad.samples_removed += removed
    if len(regions) > 1:
        vad.recordings_split += 1
    samples: list[_Sample] = []
    for i, (begin, end) in enumerate(regions):
        dur = (end - begin) / rate
        if dur < cfg.min_duration:
            vad.regions_too_short += 1
        elif cfg.max_duration is not None and dur > cfg.max_duration:
            vad.regions_too_long += 1
        else:  # keys keep the region's index: a dropped region leaves a gap, not a shift
            samples += _samples_for(p, x[begin:end], cfg, begin, region=i)
    vad.regions += len(samples)
    if not samples:
        longest = max(end - begin for begin, end in regions) / rate
        limits = f"--min-duration {cfg.min_duration:g} s"
        if cfg.max_duration is not None:
            limits += f" and --max-duration {cfg.max_duration:g} s"
        return [], Reject(p.rel, f"{NO_REGION.phrase} {limits} ({len(regions)} "
                                 f"region(s) split at {pause:g} s pauses, longest "
                                 f"{longest:.3f} s)", "filter")
    return samples, None


def _input_samples(p: PlannedInput, cfg: WorkerConfig, recordings: ShardRecordings,
                   backend: VadBackend | None, vad: VadCounts
                   ) -> tuple[list[_Sample], Reject | None]:
    """The samples of one input, or the reason it became none. ``backend``: the voice
    activity detection of ``cfg.vad`` (None without)."""
    try:
        x = recordings.segment(p)
    except FileNotFoundError:
        return [], Reject(p.rel, "file disappeared after the scan (no such file)", "decode")
    except _INPUT_ERRORS as e:
        reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
        return [], Reject(p.rel, f"{UNDECODABLE.phrase}: {reason}", "decode")
    if backend is not None and cfg.vad_split_pause is not None:
        return _region_samples(p, x, cfg, backend, cfg.vad_split_pause, vad)
    if backend is not None:
        span = backend.speech_span(x, cfg.sample_rate)
        if span is None:
            return [], _all_silence(p, x, cfg, vad)
        removed = len(x) - (span[1] - span[0])
        if removed:
            vad.clips_trimmed += 1
            vad.samples_removed += removed
            x = x[span[0]:span[1]]
        lead = span[0]
    else:
        lead = 0
    dur = len(x) / cfg.sample_rate
    if dur < cfg.min_duration:
        return [], Reject(p.rel, f"{TOO_SHORT.phrase} ({dur:.3f} s < "
                                 f"{cfg.min_duration:g} s after preprocessing)", "filter")
    if cfg.max_duration is not None and dur > cfg.max_duration:
        return [], Reject(p.rel, f"{TOO_LONG.phrase} ({dur:.3f} s > "
                                 f"{cfg.max_duration:g} s)", "filter")
    samples = _samples_for(p, x, cfg, lead)
    if not samples:
        return [], Reject(p.rel, f"{NO_CHUNK.phrase} {cfg.min_chunk_seconds:g} s "
                                 f"({dur:.3f} s with --chunk-seconds {cfg.chunk_seconds:g})",
                          "filter")
    return samples, None


def process_shard(task: ShardTask) -> ShardOutcome:
    """Build one shard: write a staged temp tar, publish it atomically, journal it."""
    cfg = task.worker
    rejects: list[Reject] = []
    counts = BuildCounts(inputs=len(task.inputs))
    vad = VadCounts()
    # Looked up once per shard; a backend's own imports (torch for silero) only here.
    backend = get_vad(cfg.vad) if cfg.vad_enabled else None
    info: ShardInfo | None = None
    with staged_shard(task) as staged:
        writer = ShardWriter(staged.file)
        recordings = ShardRecordings(task.inputs, cfg, task.storage_options,
                                     source_reader(task))
        for p in task.inputs:
            samples, reject = _input_samples(p, cfg, recordings, backend, vad)
            if reject is not None:
                rejects.append(reject)
                continue
            for s in samples:
                writer.write_sample(s.key, s.fields, s.frames)
            counts.written += 1
            counts.samples += len(samples)
        writer.close()
        staged.file.close()
        # The commit fsyncs the temp file before renaming it (storage.commit_file), and
        # resume re-hashes every journaled shard against the journal's digest anyway.
        counts.rejected = len(rejects)
        if writer.nsamples:
            info = writer.info(task.name, cfg.sample_rate)
            staged.commit()
    counts.check()
    outcome = ShardOutcome(task.split, task.index, info, sorted(rejects), counts,
                           vad=vad if cfg.vad_enabled else None)
    journal_shard(task, outcome)
    return outcome
