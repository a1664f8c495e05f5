"""Preflight of the ``augment`` block's noise and RIR indexes, from the indexes alone.

Before a long job, each corpus a configured transform draws from (``augment.noise_index``
for ``noise``, ``augment.rir_index`` for ``reverb``) is checked: its index reads, its
sample rate is the training data's, it has every category the transforms ask for
(``augment.noise``'s kinds, ``augment.rir_categories``), and ``augment.bank_bytes`` holds a
clip of each (after ``max_clip_seconds``). Nothing is decoded: the index records each
clip's frames and the label map its categories. Each failure is one line naming the key
and the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..index import DatasetIndex, load_index
from .bank_plan import index_frames, max_frames, padded_bytes

if TYPE_CHECKING:
    from .config import TrainConfig
    from .preflight_report import PreflightReport

BUILD = {"noise_index": "wds-pipeline build musan <musan folder> <out>",
         "rir_index": "wds-pipeline build rirs <RIRS_NOISES folder> <out>"}
CHECK_NAME = {"noise_index": "noise index", "rir_index": "RIR index"}


def check_bank_indexes(r: PreflightReport, cfg: TrainConfig, train: list[DatasetIndex]) -> None:
    """One check per bank the block reads (pass, or one fail line per problem)."""
    a = cfg.augment
    if a is None:
        return
    banks = []
    if a.noise is not None and a.noise_index:
        banks.append(("noise_index", a.noise_index, sorted({k.category for k in a.noise.kinds}),
                      "drop them from augment.noise.kinds, or build a corpus that has them"))
    if a.reverb is not None and a.rir_index:
        banks.append(("rir_index", a.rir_index, sorted(set(a.rir_categories)),
                      "set augment.rir_categories to some of the corpus's categories"))
    rate = train[0].sample_rate if train else None
    for key, url, wanted, category_fix in banks:
        name, where = CHECK_NAME[key], f"augment.{key} {url}"
        try:
            index = load_index(url, **cfg.loader.storage_options)
        except (OSError, ValueError) as e:
            r.add(name, "fail", f"{where}: cannot read it ({e})", f"check the URL, or build the corpus: {BUILD[key]}")
            continue
        problems = []
        if rate is not None and index.sample_rate != rate:
            problems.append((f"{where}: its clips are at {index.sample_rate} Hz, the training data at {rate} Hz",
                             f"rebuild the corpus with --sample-rate {rate}: {BUILD[key]} --sample-rate {rate}"))
        missing = [c for c in wanted if c not in index.label_map]
        if missing:
            problems.append((f"{where}: no clips of categories {missing}; it has "
                             f"{', '.join(sorted(index.label_map)) or 'no categories'}", category_fix))
        cut = max_frames(a.max_clip_seconds, index.sample_rate)
        frames = index_frames(index, cut)
        shortest = int(frames.min()) if frames is not None and len(frames) else 0
        need = padded_bytes(len(wanted), shortest)
        if need > a.bank_bytes:
            problems.append((f"{where}: augment.bank_bytes={a.bank_bytes} holds no clip of each of its {len(wanted)} "
                             f"categories: the shortest clip has {shortest} frames after max_clip_seconds "
                             f"(one of each, float32: {need} bytes)",
                             f"raise augment.bank_bytes to at least {need} or lower augment.max_clip_seconds"))
        for detail, fix in problems:
            r.add(name, "fail", detail, fix)
        if not problems:
            r.add(name, "pass", f"{where}: {index.num_samples} clips, with the categories {', '.join(wanted)}; "
                  + _fit_note(frames, a.bank_bytes, a.bank_refresh_batches))


def _fit_note(frames: np.ndarray | None, budget: int, every: int | None) -> str:
    if frames is None:
        return "its index does not record clip lengths (an old build): the bank's share is known once read"
    if padded_bytes(len(frames), int(frames.max(initial=0))) <= budget:
        return "the whole corpus fits augment.bank_bytes: read once"
    return ("larger than augment.bank_bytes: a subset at a time, a new one "
            + (f"every {every} batches" if every else "each epoch"))
