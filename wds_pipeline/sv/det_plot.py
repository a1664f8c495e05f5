"""The DET plot of a trial list: miss rate against false-alarm rate on normal-deviate axes
(Martin et al. 1997, as NIST draws them), one curve per scoring variant, a PNG written
as the package's other figures are (:mod:`wds_pipeline.plots`: Agg, one atomic write)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..plots import figure, save_png

__all__ = ["plot_det"]

SIZE = (600, 600)  # pixels

# Axis ticks (probabilities) and the range shown: 0.1 % to 80 % on both axes.
TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)
LIMITS = (0.0007, 0.85)
# Points closer than this in normal deviates are drawn as one: a list of millions of trials
# has as many operating points, far more than a plot can show.
RESOLUTION = 0.005


def _probit(p: np.ndarray) -> np.ndarray:
    from scipy.special import ndtri

    return np.asarray(ndtri(np.clip(p, 1e-6, 1 - 1e-6)), dtype=np.float64)


def thin(p_miss: np.ndarray, p_fa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The curve in normal deviates with consecutive points closer than RESOLUTION merged
    (the curve is monotone, so equal rounded points are neighbours)."""
    x, y = _probit(p_fa), _probit(p_miss)
    cells = np.stack([np.round(x / RESOLUTION), np.round(y / RESOLUTION)], axis=1)
    keep = np.r_[True, np.any(cells[1:] != cells[:-1], axis=1)]
    keep[-1] = True
    return x[keep], y[keep]


def plot_det(title: str, curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
             figures: Mapping[str, Mapping[str, float]], url: str, **storage_options: Any) -> str:
    """The DET curves ``{variant: (p_miss, p_fa)}`` as a PNG at ``url``, each labelled with
    its ``figures`` (``eer``, ``min_dcf_0.01``) and its EER point marked; returns ``url``."""
    fig, (ax,) = figure(*SIZE)
    for name, (p_miss, p_fa) in curves.items():
        x, y = thin(p_miss, p_fa)
        f = figures[name]
        line, = ax.plot(x, y, lw=1.5, label=f"{name}: EER {100 * f['eer']:.2f}%, "
                                             f"minDCF0.01 {f['min_dcf_0.01']:.3f}")
        e = _probit(np.array([f["eer"]]))[0]
        ax.plot([e], [e], "o", color=line.get_color(), ms=5)
    lo, hi = _probit(np.array(LIMITS))
    ax.plot([lo, hi], [lo, hi], ":", color="grey", lw=0.8)  # p_miss = p_fa: where the EER lies
    ticks = _probit(np.array(TICKS))
    labels = [f"{100 * t:g}" for t in TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("false-alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.set_title(f"DET: {title}")
    ax.grid(True, lw=0.4, alpha=0.6)
    ax.legend(loc="upper right", fontsize=8)
    return save_png(fig, url, **storage_options)
