"""PNG figures, and the dataset histograms of ``wds-pipeline inspect --plot``.

Figures are drawn on matplotlib's Agg canvas without pyplot (no global figure state, no
display: the same on a server, in a notebook kernel or in a DataLoader's process) at a
fixed size in pixels, and written through :mod:`~wds_pipeline.storage` as one atomic
write (local, Drive or ``gs://``): a reader never sees half a PNG.

The dataset histograms read no audio: durations are the index's per-sample frame counts,
and the class of each sample is its ``cls`` member, found by walking the shard's tar
headers (the audio payloads are skipped by seeking) and reading those few bytes.
"""

from __future__ import annotations

import io
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from . import format as fmt
from . import storage
from .errors import ConfigError
from .format.keys import split_member_name
from .format.tar import iter_tar_members
from .index import DatasetIndex

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
DATASET_SIZE = (1200, 450)  # pixels: two panels side by side
NO_CLASS = "(no class)"


def require_matplotlib() -> None:
    """Raise a one-line :class:`ConfigError` naming the install when matplotlib is absent."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install matplotlib (or "
                          "pip install 'wds-pipeline[train]')") from None


def figure(width_px: int, height_px: int, panels: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure of exactly ``width_px`` x ``height_px`` pixels with ``panels`` axes in a row."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, panels, squeeze=False)[0])


def save_png(fig: Figure, url: str, **storage_options: Any) -> str:
    """Render ``fig`` to PNG and publish it at ``url`` in one atomic write; returns ``url``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # no bbox_inches: the size asked is the size
    storage.write_bytes_atomic(url, buf.getvalue(), **storage_options)
    return url


def whole_numbers(*axes: Axes, axis: str = "y") -> None:
    """Integer ticks on one axis ("x" or "y") of ``axes``: counts, epochs."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def _count_bins(values: list[int]) -> list[float] | int:
    """One bin per whole count when the counts span at most 50 values, else 50 bins."""
    lo, hi = min(values), max(values)
    return [n - 0.5 for n in range(lo, hi + 2)] if hi - lo < 50 else 50


def durations(index: DatasetIndex) -> list[float]:
    """Seconds of every sample, from the index's frame counts."""
    rate = float(index.sample_rate)
    return [int(n) / rate for s in index.shards for n in s.sample_frames]


def class_counts(index: DatasetIndex, *, progress: bool = True,
                 **storage_options: Any) -> Counter[str]:
    """Samples per class name (``NO_CLASS``: samples without a ``cls`` member), from each
    sample's ``cls`` bytes: tar headers and labels are read, audio payloads skipped."""
    names = {v: k for k, v in index.label_map.items()}
    counts: Counter[str] = Counter()
    if not names:  # a dataset without classes: no shard need be opened
        counts[NO_CLASS] = index.num_samples
        return counts
    for i in tqdm(range(len(index.shards)), desc="classes", unit="shard", file=sys.stderr,
                  disable=not progress):
        url = index.shard_url(i)
        labelled = 0
        with storage.open_read(url, **storage_options) as f:
            for member, _ in iter_tar_members(f, source=url, read_data=False):  # type: ignore[arg-type]
                if split_member_name(member.name)[1] != fmt.CLS:
                    continue
                here = f.tell()
                f.seek(member.data_offset)
                label = fmt.decode_field(fmt.CLS, f.read(member.size))
                f.seek(here)
                counts[names.get(label, str(label))] += 1
                labelled += 1
        if index.shards[i].nsamples > labelled:
            counts[NO_CLASS] += index.shards[i].nsamples - labelled
    return counts


def plot_dataset(indexes: Sequence[DatasetIndex], url: str, *, progress: bool = True,
                 **storage_options: Any) -> str:
    """One PNG, two panels, one histogram per split in each: sample durations (seconds)
    and samples per class (how many speakers/labels have N samples). Returns ``url``."""
    fig, (left, right) = figure(*DATASET_SIZE, panels=2)
    for ix in indexes:
        name = ix.split or ix.name
        secs = durations(ix)
        if secs:
            left.hist(secs, bins=min(50, max(1, len(set(secs)))), histtype="step", linewidth=1.5,
                      label=f"{name}: {len(secs)} samples, {sum(secs) / 3600:.2f} h")
        counts = class_counts(ix, progress=progress, **storage_options)
        unlabelled = counts.pop(NO_CLASS, 0)
        if counts:
            per_class = list(counts.values())
            note = f", {unlabelled} without a class" if unlabelled else ""
            right.hist(per_class, bins=_count_bins(per_class), histtype="step", linewidth=1.5,
                       label=f"{name}: {len(per_class)} classes{note}")
    left.set(title="sample durations", xlabel="duration (s)", ylabel="samples")
    right.set(title="samples per class (speaker / label)", xlabel="samples in the class",
              ylabel="classes")
    whole_numbers(left, right)
    for ax in (left, right):
        if ax.has_data():
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no samples" if ax is left else "no class labels",
                    ha="center", va="center", transform=ax.transAxes)
    return save_png(fig, url, **storage_options)
