"""Trial lists: which pairs of utterances to score, and whether each is a target trial.

VoxCeleb's lists (``veri_test2.txt``, ``list_test_all2.txt``, ``list_test_hard2.txt``, and
the older ``veri_test.txt``) are all ``label enroll_path test_path`` lines, label 1 for the
same speaker and 0 for different ones; a built VoxCeleb index carries the lines whose two
files it holds in ``extras["trials"]`` (``{list_name: [[label, enroll, test], ...]}``).
Either way a trial names its utterances by corpus path (``id10270/x6uYqmx31kE/00001.wav``),
which :func:`trial_key` turns into the sample key the builder gave that utterance, so a
trial list meets the embeddings of an index by key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import storage
from ..errors import ConfigError
from ..format import make_key
from ..sources.voxceleb import parse_trials, trial_id

__all__ = ["TrialList", "TrialsError", "load_trial_lists", "read_trial_file", "trial_key",
           "trials_from_index", "trials_from_lines"]


class TrialsError(ConfigError):
    """A trial list that cannot be used as given (malformed line, unreadable file, no trial
    left to score); the message names the file or list and the fix."""


def trial_key(path: str) -> str:
    """A trial list's ``id10270/x6uYqmx31kE/00001.wav`` -> the sample key it was built as."""
    return make_key(trial_id(path))


@dataclass(frozen=True)
class TrialList:
    """One trial list: trial i compares ``enroll[i]`` with ``test[i]`` (sample keys);
    ``labels[i]`` is 1 for a target (same-speaker) trial, 0 otherwise."""

    name: str  # veri_test2 (the file's name without its extension)
    source: str  # the file or index it was read from
    labels: np.ndarray  # (T,) int8
    enroll: np.ndarray  # (T,) str
    test: np.ndarray  # (T,) str

    def __len__(self) -> int:
        return len(self.labels)


def list_name(path_or_name: str) -> str:
    """``.../veri_test2.txt`` -> ``veri_test2``."""
    base = os.path.basename(path_or_name.rstrip("/")) or path_or_name
    return os.path.splitext(base)[0] or base


def trials_from_lines(name: str, source: str, lines: Sequence[Sequence[Any]]) -> TrialList:
    """``[[label, enroll_path, test_path], ...]`` (parsed lines, or an index's extras) as a
    :class:`TrialList` of sample keys."""
    labels = np.empty(len(lines), dtype=np.int8)
    enroll: list[str] = []
    test: list[str] = []
    keys: dict[str, str] = {}  # path -> key: a list names each utterance many times
    for i, line in enumerate(lines):
        try:
            label, a, b = line
            if int(label) not in (0, 1):
                raise ValueError(f"label {label!r}")
            labels[i] = int(label)
            for path, side in ((str(a), enroll), (str(b), test)):
                key = keys.get(path)
                if key is None:
                    key = keys[path] = trial_key(path)
                side.append(key)
        except (TypeError, ValueError) as e:
            raise TrialsError(f"{source}: trial {i + 1} {line!r} is not [label 0/1, enroll path, "
                              f"test path] ({e}); fix or remove it") from None
    return TrialList(name, source, labels, np.array(enroll, dtype=str), np.array(test, dtype=str))


def read_trial_file(url: str, **storage_options: Any) -> TrialList:
    """A trial list file (``label enroll_path test_path`` lines) on any storage."""
    try:
        text = storage.read_bytes(url, **storage_options).decode("utf-8")
    except FileNotFoundError:
        raise TrialsError(f"--trials {url}: no such file; give a trial list (veri_test2.txt) or "
                          "an index.json carrying trials") from None
    except UnicodeDecodeError as e:
        raise TrialsError(f"--trials {url}: not a text file ({e}); give a trial list of "
                          "'label enroll_path test_path' lines") from None
    try:
        lines = parse_trials(text, url)
    except ValueError as e:  # "<url> line N: expected ...; fix or remove the line"
        raise TrialsError(str(e)) from None
    if not lines:
        raise TrialsError(f"--trials {url}: no trial in the file; give a trial list of "
                          "'label enroll_path test_path' lines")
    return trials_from_lines(list_name(url), url, lines)


def trials_from_index(url: str, **storage_options: Any) -> list[TrialList]:
    """Every trial list an index carries in ``extras["trials"]``, in its order."""
    from ..index import load_index

    index = load_index(url, **storage_options)
    trials = index.extras.get("trials") or {}
    if not isinstance(trials, dict) or not any(trials.values()):
        raise TrialsError(f"--trials {url}: the index carries no trials (extras['trials']); give the "
                          "trial list file itself, or the index of a split built with its trial lists "
                          "(wds-pipeline build voxceleb ...)")
    return [trials_from_lines(list_name(name), f"{url} extras['trials'][{name!r}]", lines)
            for name, lines in trials.items() if lines]


def load_trial_lists(sources: Iterable[str], **storage_options: Any) -> list[TrialList]:
    """The trial lists of ``sources``: a ``.json`` is an index (its ``extras["trials"]``),
    anything else a trial list file. Two lists of one name are refused (their reports and
    plots would overwrite each other)."""
    out: list[TrialList] = []
    for src in sources:
        out += trials_from_index(src, **storage_options) if src.endswith(".json") \
            else [read_trial_file(src, **storage_options)]
    seen: dict[str, str] = {}
    for t in out:
        if t.name in seen:
            raise TrialsError(f"two trial lists named {t.name!r} ({seen[t.name]} and {t.source}); "
                              "give each list once (rename one file)")
        seen[t.name] = t.source
    return out
