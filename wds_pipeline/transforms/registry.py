"""Transform registries: a name -> the module and class that implement it, and the
``{name, params}`` config items that pick from one."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..typedconfig import from_mapping


@dataclass(frozen=True)
class TransformSpec:
    """One configured transform: its registered ``name`` and its ``params`` (the fields of
    its dataclass; omitted ones keep their defaults)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}


def as_specs(items: Sequence[TransformSpec | Mapping[str, Any]] | None) -> tuple[TransformSpec, ...]:
    """Config items (``TransformSpec`` or ``{"name": ..., "params": {...}}`` mappings, as
    YAML gives them) as a tuple of ``TransformSpec``."""
    out = []
    for i, item in enumerate(items or ()):
        if isinstance(item, TransformSpec):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(from_mapping(TransformSpec, dict(item), f"transform [{i}]"))
        else:
            raise ConfigError(f"transform [{i}]: expected a mapping {{name: ..., params: {{...}}}}, "
                              f"got {item!r}")
    return tuple(out)


class Registry:
    """Transform names of one stage -> ``"module:Class"``, imported on first use."""

    def __init__(self, kind: str, entries: Mapping[str, str]) -> None:
        self.kind = kind  # "sample" or "batch": named in messages
        self.entries = dict(entries)

    @property
    def names(self) -> list[str]:
        return sorted(self.entries)

    def build(self, spec: TransformSpec, where: str) -> Any:
        """The transform ``spec`` names, built from its params; a ConfigError naming
        ``where`` and the valid names (or the transform's valid params)."""
        target = self.entries.get(spec.name)
        if target is None:
            raise ConfigError(f"{where}: unknown {self.kind} transform {spec.name!r}; valid names: "
                              + ", ".join(self.names))
        module, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"{target}: a {self.kind} transform is a dataclass whose fields are its params")
        return from_mapping(cls, dict(spec.params), f"{where} ({spec.name}) params")

    def build_all(self, specs: Sequence[TransformSpec], where: str) -> tuple[Any, ...]:
        return tuple(self.build(s, f"{where}[{i}]") for i, s in enumerate(specs))
