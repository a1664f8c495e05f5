"""``LoaderState``: the loader's resume position as a typed, versioned, bounded object.

A checkpoint stores ``LoaderState.to_dict()`` (plain ints, strings and lists, so
``torch.load(..., weights_only=True)`` reads it back). Its size does not grow with the
number of samples seen: skipped keys are counted, and only the most recent
``MAX_SKIPPED_KEYS`` are kept by name for the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

MAX_SKIPPED_KEYS = 100


@dataclass(frozen=True)
class LoaderState:
    """Where an epoch stands: ``epoch`` and how many of its batches this rank consumed.

    ``plan`` fingerprints the datasets and every setting that shapes an epoch, so a
    state is only applied to a loader that would plan the same epoch. ``world_size`` and
    ``num_workers`` are the layout it was saved under (elastic resume replays it), and
    ``prior_stages`` the earlier layouts of the same epoch, as (world, workers, batches).
    """

    VERSION: ClassVar[int] = 2

    epoch: int
    batches_yielded: int
    plan: dict[str, Any]
    world_size: int
    num_workers: int
    prior_stages: tuple[tuple[int, int, int], ...] = ()
    skipped_count: int = 0
    skipped_recent: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.VERSION,
            "epoch": self.epoch,
            "batches_yielded": self.batches_yielded,
            "plan": self.plan,
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "prior_stages": [list(s) for s in self.prior_stages],
            "skipped_count": self.skipped_count,
            "skipped_recent": list(self.skipped_recent),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoaderState:
        version = d.get("version")
        if version == 1:  # before skipped keys were bounded: the list itself
            skipped = [str(k) for k in d.get("skipped", [])]
            d = {**d, "skipped_count": len(skipped), "skipped_recent": skipped[-MAX_SKIPPED_KEYS:]}
        elif version != cls.VERSION:
            raise ValueError(
                f"loader state version {version} is not supported (this wds_pipeline reads "
                f"versions 1 and {cls.VERSION}); resume with the wds_pipeline that saved it"
            )
        try:
            return cls(
                epoch=int(d["epoch"]),
                batches_yielded=int(d["batches_yielded"]),
                plan=dict(d["plan"]),
                world_size=int(d["world_size"]),
                num_workers=int(d["num_workers"]),
                prior_stages=tuple(
                    (int(s[0]), int(s[1]), int(s[2])) for s in d.get("prior_stages", [])
                ),
                skipped_count=int(d.get("skipped_count", 0)),
                skipped_recent=tuple(str(k) for k in d.get("skipped_recent", [])),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(f"malformed loader state ({e!r}); was it saved by state_dict()?") from e
