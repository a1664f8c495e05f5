"""``wds-pipeline preflight``: the checks worth a minute before a long GPU job.

Each check is pass / warn / fail with the fix on the same line. ``train`` runs them
first (``--no-preflight`` skips) and stops on any fail.
"""

from __future__ import annotations

import os
import shutil
import time

import torch

from .. import storage
from ..format import AUDIO_FLAC
from ..index import DatasetIndex, load_index
from .config import TrainConfig
from .doctor import loader_fixes, slow_shards
from .preflight_banks import check_bank_indexes
from .preflight_embed import check_embedding
from .preflight_report import PreflightReport

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus")
MIN_LOADER_MARGIN = 1.2  # the loader must deliver 1.2x what the model consumes


def run_preflight(cfg: TrainConfig) -> PreflightReport:
    r = PreflightReport()
    _check_backends(r)
    train, indexes = _check_indexes(r, cfg)
    check_bank_indexes(r, cfg, train)  # the augment block's noise and RIR corpora
    if indexes:
        _check_cache(r, cfg, indexes)
    _check_checkpoint_dir(r, cfg)
    if train and all(c.status != "fail" for c in r.checks):
        _check_rates_and_memory(r, cfg, train)
    return r


def _check_backends(r: PreflightReport) -> None:
    missing = []
    for module, what in (("soundfile", "WAV/FLAC"), ("miniaudio", "fast FLAC"), ("av", "M4A/MP3"),
                         ("soxr", "resampling")):
        try:
            __import__(module)
        except Exception as e:  # a broken native library raises OSError, not ImportError
            missing.append(f"{module} ({what}: {type(e).__name__})")
    if missing:
        r.add("audio backends", "fail", "missing: " + ", ".join(missing),
              "pip install wds-pipeline (it depends on soundfile, miniaudio, av, soxr)")
    else:
        r.add("audio backends", "pass", "soundfile, miniaudio, av, soxr")


def _per_file_audio(url: str) -> str | None:
    """If ``url`` is per-file audio (a folder of audio files, an audio file or a manifest)
    rather than shards, a description of it."""
    if storage.is_remote(url) or not os.path.exists(url):
        return None
    if os.path.isfile(url):
        if url.endswith(AUDIO_SUFFIXES):
            return "an audio file"
        if url.endswith((".csv", ".jsonl")):
            return "a manifest of audio files"
        return None
    if os.path.exists(os.path.join(url, "index.json")):
        return None
    for _, _, files in os.walk(url):
        if any(f.lower().endswith(AUDIO_SUFFIXES) for f in files):
            return "a folder of audio files"
    return None


def _build_command(url: str, what: str) -> str:
    src = "manifest" if what.startswith("a manifest") else "<librispeech|voxceleb|manifest>"
    return f"wds-pipeline build {src} {url} /content/shards  (then train on /content/shards/<split>)"


def _check_indexes(r: PreflightReport, cfg: TrainConfig) -> tuple[list[DatasetIndex], list[DatasetIndex]]:
    """The training indexes (all of them, or none when one is unusable) and every index that
    loaded; read once, then handed to the loaders the later checks build."""
    so = cfg.loader.storage_options
    found: list[DatasetIndex] = []
    train: list[DatasetIndex] = []
    for role, urls in (("train", cfg.data.train), ("valid", cfg.data.valid)):
        for url in urls:
            name = f"{role} data"
            what = _per_file_audio(url)
            if what is not None:
                fuse = storage.is_fuse_path(url)
                r.add(name, "fail",
                      f"{url} is {what}{' on a FUSE mount (Drive)' if fuse else ''}: one open per "
                      "clip starves the GPU" + (" (50-200 ms per open on Drive)" if fuse else ""),
                      "convert it to shards once: " + _build_command(url, what))
                continue
            try:
                index = load_index(url, **so)
            except (OSError, ValueError) as e:
                r.add(name, "fail", f"{url}: {e}", "check the path; build with `wds-pipeline build`")
                continue
            problems = _shard_problems(index, so)
            if problems:
                r.add(name, "fail", f"{url}: " + "; ".join(problems[:3])
                      + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""),
                      f"wds-pipeline verify {storage_dir(url)}, then rerun the build to repair")
                continue
            hours = index.total_duration / 3600
            r.add(name, "pass", f"{url}: {index.num_samples} samples, {len(index.shards)} shards, "
                  f"{hours:.2f} h, {len(index.label_map)} classes")
            found.append(index)
            if role == "train":
                train.append(index)
    if len(train) != len(cfg.data.train):
        train = []
    if train:
        _check_sample_decodes(r, cfg, train)
    return train, found


def storage_dir(url: str) -> str:
    return url[: -len("/index.json")] if url.endswith("/index.json") else url


def _shard_problems(index: DatasetIndex, so: dict) -> list[str]:
    """Every shard present with the size the index records (one listing per folder, not one
    stat per shard: each costs a round trip on Drive or GCS)."""
    if not index.shards:
        return ["index lists no shards"]
    listings: dict[str, dict[str, int] | None] = {}
    problems = []
    for i, shard in enumerate(index.shards):
        folder, _, name = index.shard_url(i).rpartition("/")
        if folder not in listings:
            try:
                fs, path = storage.url_to_fs(folder, **so)
                listings[folder] = {e["name"].rstrip("/").rpartition("/")[2]: int(e.get("size") or 0)
                                    for e in fs.ls(path, detail=True)}
            except OSError as e:
                problems.append(f"cannot list {folder}: {e}")
                listings[folder] = None
        listing = listings[folder]
        if listing is None:
            continue
        size = listing.get(name)
        if size is None:
            problems.append(f"{folder}/{name} is missing")
        elif size != shard.filesize:
            problems.append(f"{folder}/{name} has {size} bytes, the index says {shard.filesize}")
    return problems


def _check_sample_decodes(r: PreflightReport, cfg: TrainConfig, train: list[DatasetIndex]) -> None:
    from ..loader import StreamingLoader

    try:
        loader = StreamingLoader(train, cfg.loader, num_workers=0, batch_size=2,
                                 max_batch_seconds=None, persistent_workers=False, rank=0, world_size=1)
        batch = next(iter(loader))
        shape = tuple(batch.waveform.shape) if batch.waveform is not None else ()
        r.add("sample decodes", "pass", f"first batch: keys {batch.keys}, shape {shape}")
    except Exception as e:  # report, don't crash: this is the check
        r.add("sample decodes", "fail", f"{type(e).__name__}: {e}",
              "run `wds-pipeline verify` on the dataset and rebuild what it reports")


def _check_cache(r: PreflightReport, cfg: TrainConfig, indexes: list[DatasetIndex]) -> None:
    from ..readpath import default_cache_dir, default_cache_policy

    lc = cfg.loader
    slow = slow_shards(cfg)
    if not slow:
        r.add("shard cache", "pass", "training shards are on local disk: no cache needed")
        return
    if lc.cache_dir is False:
        r.add("shard cache", "warn", f"{slow[0]} is remote/FUSE and loader.cache_dir is false: every "
              "epoch re-reads the link", "set loader.cache_dir to a folder on local disk (/content/cache)")
        return
    cache = lc.cache_dir or default_cache_dir()
    if default_cache_policy(cache):
        r.add("shard cache", "warn", f"cache folder {cache} is itself on a remote/FUSE mount",
              "put loader.cache_dir on local disk (/content/cache)")
        return
    need = sum(s.filesize for i in indexes for s in i.shards)
    if lc.cache_limit:
        need = min(need, lc.cache_limit)
    probe = cache
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe.rstrip("/")) or "/"
    free = shutil.disk_usage(probe).free
    r.figures["cache_free_bytes"] = float(free)
    r.figures["cache_need_bytes"] = float(need)
    if free < need:
        r.add("shard cache", "warn", f"{cache}: {free / 1e9:.1f} GB free, the shards need {need / 1e9:.1f} GB: "
              "the cache will evict and epoch 2+ re-reads the link",
              "free disk space or set loader.cache_limit below the free space")
    else:
        r.add("shard cache", "pass", f"{cache}: {free / 1e9:.1f} GB free for {need / 1e9:.2f} GB of shards")


def _check_checkpoint_dir(r: PreflightReport, cfg: TrainConfig) -> None:
    url = cfg.checkpoint_dir
    so = cfg.checkpoint.storage_options
    probe = f"{url.rstrip('/')}/.preflight-{os.getpid()}"
    try:
        storage.makedirs(url, **so)
        payload = os.urandom(64)
        storage.write_bytes_atomic(probe, payload, **so)  # temp file + rename (one upload on GCS)
        ok = storage.read_bytes(probe, **so) == payload
        storage.remove(probe, **so)
    except OSError as e:
        r.add("checkpoint dir", "fail", f"{url}: cannot write and rename there ({e})",
              "point checkpoint.dir at a writable folder (a Drive folder or gs://bucket/run)")
        return
    if not ok:
        r.add("checkpoint dir", "fail", f"{url}: a file read back differs from what was written",
              "use another checkpoint.dir")
    else:
        r.add("checkpoint dir", "pass", f"{url}: writable, atomic rename works")


def _synthetic_batch(cfg: TrainConfig, sample_rate: int, typical_seconds: float, batch_size: int):
    seconds = cfg.loader.crop_seconds or typical_seconds
    frames = max(1, int(seconds * sample_rate))
    g = torch.Generator().manual_seed(0)
    wave = torch.randint(-8000, 8000, (batch_size, frames), dtype=torch.int16, generator=g)
    return wave, torch.full((batch_size,), frames, dtype=torch.int64)


def _configured_batch(cfg: TrainConfig, typical_seconds: float) -> int:
    lc = cfg.loader
    if lc.batch_size:
        return lc.batch_size
    seconds = lc.crop_seconds or typical_seconds
    return max(1, int((lc.max_batch_seconds or 60) / max(seconds, 1e-3)))


def _check_rates_and_memory(r: PreflightReport, cfg: TrainConfig, train: list[DatasetIndex]) -> None:
    from ..loader import StreamingLoader
    from .config import loader_config
    from .models import build_model
    from .trainer import resolve_device, resolve_precision

    # The training loader's config: with the augment block's speed perturbation, timed too.
    loader = StreamingLoader(train, loader_config(cfg), persistent_workers=True)
    total = sum(i.total_duration for i in loader.indexes)
    typical = total / max(1, loader.num_samples)
    device = resolve_device(cfg.run.device)
    amp = resolve_precision(cfg.run.precision, device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        r.add("GPU", "pass", f"{props.name}, {props.total_memory / 2**30:.1f} GiB, "
              f"autocast {amp if amp else 'fp32'}")
    else:
        r.add("GPU", "warn", "no CUDA device: training runs on the CPU",
              "on Colab: Runtime > Change runtime type > GPU")
    model = build_model(cfg.model.factory, dict(cfg.model.options), num_classes=max(1, loader.num_classes),
                        sample_rate=loader.sample_rate, where=cfg.source).to(device)
    check_embedding(r, cfg, model, device, amp)  # the embedding path (validation, `embed`) on the device
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch_size = _configured_batch(cfg, typical)
    fits = _fits(model, opt, cfg, loader.sample_rate, typical, batch_size, device, amp)
    if device.type == "cuda" and not fits:
        lo, hi = 0, batch_size
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _fits(model, opt, cfg, loader.sample_rate, typical, mid, device, amp) else (lo, mid)
        r.add("GPU memory", "fail", f"a batch of {batch_size} does not fit in GPU memory; {lo} does",
              f"--set loader.batch_size={lo} and raise optim.grad_accum to keep the effective batch")
        return
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        r.figures["gpu_peak_bytes"] = float(peak)
        r.add("GPU memory", "pass", f"batch {batch_size}: peak {peak / 2**30:.2f} GiB")
    model_rate = _model_rate(model, opt, cfg, loader.sample_rate, typical, batch_size, device, amp)
    with loader:  # its persistent workers stop once timed (loader.close())
        loader_rate = _loader_rate(loader, cfg.run.preflight_batches)
    r.figures.update(model_batches_per_s=model_rate, loader_batches_per_s=loader_rate)
    detail = (f"loader {loader_rate:.1f} batches/s vs model {model_rate:.1f} batches/s "
              f"({loader_rate / model_rate:.2f}x)")
    if loader_rate < MIN_LOADER_MARGIN * model_rate:
        r.add("loader vs model", "fail", detail + f", below the {MIN_LOADER_MARGIN}x margin: the GPU would wait",
              _slow_loader_cause(cfg, loader))
    else:
        r.add("loader vs model", "pass", detail)


def _fits(model, opt, cfg, sr, typical, batch_size, device, amp) -> bool:
    try:
        _train_step(model, opt, cfg, sr, typical, batch_size, device, amp)
        return True
    except torch.cuda.OutOfMemoryError:
        opt.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return False


def _train_step(model, opt, cfg, sr, typical, batch_size, device, amp) -> None:
    wave, lengths = _synthetic_batch(cfg, sr, typical, batch_size)
    wave, lengths = wave.to(device), lengths.to(device)
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        logits = model(wave, lengths)
        loss = logits.float().logsumexp(-1).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _model_rate(model, opt, cfg, sr, typical, batch_size, device, amp, steps: int = 3) -> float:
    """Optimizer steps per second on synthetic batches of the configured shape."""
    _train_step(model, opt, cfg, sr, typical, batch_size, device, amp)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        _train_step(model, opt, cfg, sr, typical, batch_size, device, amp)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - t0)


def _loader_rate(loader, batches: int, min_seconds: float = 1.0) -> float:
    """Batches per second once batches flow: timed from the first batch over at least
    ``batches`` more and ``min_seconds``, through further epochs when one is shorter (the
    workers persist, as in training). A handful of batches right after start-up measured
    worker start-up instead, and on a fast GPU failed the demo's own preflight."""
    n = 0
    t0 = None
    while True:
        got = False
        for _ in loader:
            got = True
            now = time.perf_counter()
            if t0 is None:
                t0 = now
                continue
            n += 1
            if n >= batches and now - t0 >= min_seconds:
                return n / (now - t0)
        if not got:  # an empty epoch: no more batches will come
            return n / (time.perf_counter() - t0) if t0 is not None and n else float("inf")


def _slow_loader_cause(cfg: TrainConfig, loader) -> str:
    """The likeliest cause of a slow loader, read from the config (preflight has not trained
    yet); the fix texts are the input doctor's, which later names the cause it measures."""
    lc = cfg.loader
    slow = bool(slow_shards(cfg))
    fields = [i.audio_field for i in loader.indexes]
    fixes = loader_fixes(lc, slow_storage=slow, audio_fields=fields)
    if slow and lc.cache_dir is False:
        return fixes["link"]
    if lc.num_workers == 0:
        return fixes["workers"]
    if AUDIO_FLAC in fields or "fbank" in lc.fields:
        return fixes["decoding"]
    if slow:
        return fixes["link"]
    return "raise loader.num_workers, or use a larger batch so each step does more work"