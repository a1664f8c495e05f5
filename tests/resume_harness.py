"""One resume check for every stateful piece (the loader, the trainer).

A piece is resumable when, for every stop point, "run k units, save its state, build a
fresh piece, load the state, run the rest" yields exactly what one uninterrupted run
yields. The same stop points are used for every piece: mid-epoch, exactly at the end of
an epoch, and inside the next epoch. ``check_elastic`` covers the loader's restarts under
another worker count or world size, where the order changes but coverage must not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


S = TypeVar("S", bound=Stateful)


def stop_points(per_epoch: int) -> dict[str, int]:
    """The units after which every piece is stopped and resumed."""
    assert per_epoch >= 3, "needs at least 3 units per epoch to have a mid-epoch point"
    return {"mid-epoch": per_epoch // 2, "epoch-end": per_epoch, "next-epoch": per_epoch + per_epoch // 2}


class ResumeCase(Generic[S, T]):
    """``make()`` builds a fresh piece; ``run(piece, n)`` advances it by ``n`` units and
    returns what they produced; ``finish(piece)`` returns anything compared at the end
    (e.g. final weights); ``same(a, b)`` compares two results."""

    def __init__(self, make: Callable[[], S], run: Callable[[S, int], list[T]], total: int,
                 *, finish: Callable[[S], Any] = lambda _: None,
                 same: Callable[[Any, Any], bool] = lambda a, b: a == b) -> None:
        self.make, self.run, self.total, self.finish, self.same = make, run, total, finish, same

    def check(self, points: dict[str, int]) -> None:
        ref_piece = self.make()
        ref = self.run(ref_piece, self.total)
        ref_end = self.finish(ref_piece)
        assert len(ref) == self.total
        for name, k in points.items():
            first = self.make()
            head = self.run(first, k)
            state = first.state_dict()
            second = self.make()
            second.load_state_dict(state)
            tail = self.run(second, self.total - k)
            assert self.same(head + tail, ref), f"resume at {name} (after {k}) diverged"
            assert self.same(self.finish(second), ref_end), f"resume at {name}: final state differs"


def check_elastic(make_old: Callable[[], S], make_new: Callable[[], S],
                  epoch_items: Callable[[S], Sequence[T]], consume: Callable[[S, int], Sequence[T]],
                  k: int) -> None:
    """Stop after ``k`` units under one layout, resume under another: the epoch still covers
    every item exactly once."""
    everything = Counter(epoch_items(make_old()))
    old = make_old()
    head = list(consume(old, k))
    new = make_new()
    new.load_state_dict(old.state_dict())
    tail = list(epoch_items(new))
    assert Counter(head) + Counter(tail) == everything
