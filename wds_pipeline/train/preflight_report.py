"""A preflight report: pass / warn / fail checks, each with its fix, and the figures measured
(``train/preflight.py`` runs the checks; ``train/preflight_banks.py`` adds the augment
block's)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class PreflightReport:
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def add(self, name: str, status: Status, detail: str, fix: str = "") -> None:
        self.checks.append(Check(name, status, detail, fix))

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks], "figures": self.figures}

    def to_text(self) -> str:
        width = max((len(c.name) for c in self.checks), default=10)
        lines = ["preflight:"]
        for c in self.checks:
            line = f"  {c.status.upper():4}  {c.name:<{width}}  {c.detail}"
            if c.fix and c.status != "pass":
                line += f"\n        fix: {c.fix}"
            lines.append(line)
        return "\n".join(lines)
