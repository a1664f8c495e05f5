"""What a training run reports: :class:`TrainSummary` and the per-epoch rates in it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainSummary:
    epochs: int
    steps: int
    samples: int
    seconds: float
    samples_per_s: float
    data_wait_fraction: float
    valid: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    resumed_from: str | None = None
    checkpoint_dir: str = ""
    last_checkpoint: str | None = None
    metrics_file: str = ""
    tensorboard_dir: str | None = None
    num_classes: int = 0
    ranks: int = 1
    weights_digest: str = ""
    metrics_failures: dict[str, int] = field(default_factory=dict)  # writes lost, per sink

    def to_text(self) -> str:
        valid = ", ".join(f"{k} {v:.4f}" for k, v in sorted(self.valid.items())) or "none"
        lines = [
            f"trained {self.epochs} epoch(s), {self.steps} optimizer steps, {self.samples} samples "
            f"in {self.seconds:.1f} s ({self.samples_per_s:.1f} samples/s, data-wait "
            f"{100 * self.data_wait_fraction:.1f}%), {self.num_classes} classes"
            + (f", {self.ranks} ranks with identical weights (sha256 {self.weights_digest[:12]})"
               if self.ranks > 1 else ""),
            f"validation: {valid}",
            f"checkpoints: {self.checkpoint_dir} (latest {self.last_checkpoint})",
            f"metrics: {self.metrics_file}"
            + (f"; TensorBoard: tensorboard --logdir {self.tensorboard_dir}" if self.tensorboard_dir else ""),
        ]
        if self.metrics_failures:
            lines.append("metrics not written (storage errors; training went on): " + ", ".join(
                f"{n} {sink}" for sink, n in sorted(self.metrics_failures.items())))
        if self.resumed_from:
            lines.insert(1, f"resumed from {self.resumed_from}")
        return "\n".join(lines)


def epoch_rates(acc: dict[str, float]) -> dict[str, float]:
    t = acc["time"]
    return {"samples": acc["samples"], "seconds": t,
            "samples_per_s": acc["samples"] / t if t else 0.0,
            "data_wait": acc["wait"] / t if t else 0.0,
            "first_batch_wait_s": max(0.0, acc["first_wait"])}
