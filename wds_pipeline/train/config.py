"""The trainer's configuration: YAML blocks ``data``, ``loader``, ``model``, ``optim``,
``checkpoint``, ``run`` and the optional ``augment`` (:mod:`.augment`) and ``loss``
(:class:`LossConfig`, :mod:`.losses`), each read into a typed dataclass.

An unknown key, a wrong type or an impossible value is a :class:`ConfigError` naming the
key and the file; ``--set block.key=value`` overrides any value (read as YAML).
``configs/demo.yaml``, ``configs/local.yaml`` and ``configs/colab.yaml`` are examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..loader import LoaderConfig
from ..transforms import TransformSpec
from ..typedconfig import (
    ConfigError,
    at_least,
    check_options,
    convert,
    from_mapping,
    set_dotted,
    to_mapping,
)
from .augment import AugmentConfig
from .checkpoint import lower_is_better

DEFAULT_MODEL = "wds_pipeline.train.models:speaker_tdnn"


def _positive(name: str, value: float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


@dataclass(frozen=True)
class DataConfig:
    train: tuple[str, ...]  # index URLs (several: one label space by class name)
    valid: tuple[str, ...] = ()  # held-out indexes: accuracy, and EER where an index has trials
    valid_batch_size: int = 16
    valid_max_seconds: float | None = 20.0  # longer validation utterances are cropped
    # A noisy copy of the validation data, scored beside the clean one (valid_noisy_accuracy,
    # valid_noisy_eer): an augment block of batch transforms (noise, reverb, gain) drawn with a
    # fixed seed per sample, so every validation of every run sees the same noisy copy.
    valid_noisy: AugmentConfig | None = None

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError("train: give at least one index.json URL")
        _positive("valid_batch_size", self.valid_batch_size)
        _positive("valid_max_seconds", self.valid_max_seconds)
        if self.valid_noisy is not None:
            specs = self.valid_noisy.specs()
            if specs.sample or specs.feature:
                raise ValueError("valid_noisy: only noise, reverb and gain make the noisy copy "
                                 "(speed and spec_augment change the model's input, not the recording); drop them")
            if not specs.batch:
                raise ValueError("valid_noisy: configure noise, reverb or gain (e.g. noise: {probability: 1.0})")


@dataclass(frozen=True)
class ModelConfig:
    """``factory`` is ``"package.module:function"``, called as
    ``function(num_classes=..., sample_rate=..., **options)`` and returning an
    ``nn.Module`` whose ``forward(waveform, lengths)`` gives logits (and, for EER, an
    ``embed(waveform, lengths)``). In YAML every key but ``factory`` goes to ``options``."""

    factory: str = DEFAULT_MODEL
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if ":" not in self.factory:
            raise ValueError(f"factory must be 'package.module:function', got {self.factory!r}")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-3  # AdamW peak learning rate
    weight_decay: float = 1e-4
    warmup_steps: int = 50  # linear warm-up, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.05
    grad_accum: int = 1  # batches per optimizer step
    grad_clip: float | None = 5.0  # max global gradient norm

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        _positive("weight_decay", self.weight_decay, allow_zero=True)
        _positive("warmup_steps", self.warmup_steps, allow_zero=True)
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        _positive("grad_accum", self.grad_accum)
        _positive("grad_clip", self.grad_clip)


@dataclass(frozen=True)
class LossConfig:
    """``ce``: cross-entropy on the classifier's logits. ``aam``: AAM-softmax (ArcFace's
    additive angular margin, WeSpeaker's defaults): the classifier becomes a cosine classifier
    and the target's cosine cos(theta) becomes cos(theta + margin), all scaled by ``scale``.
    The margin is 0 for ``margin_hold_epochs``, then rises to ``margin`` over
    ``margin_warmup_epochs`` (linearly, or as WeSpeaker's ``exp`` curve), a pure function of
    the position in training (:func:`.losses.margin_at`)."""

    name: Literal["ce", "aam"] = "ce"
    scale: float = 32.0  # s
    margin: float = at_least(0.0, 0.2)  # m, radians
    easy_margin: bool = False  # keep cos(theta) where cos(theta) <= 0 (else the continuous fallback)
    margin_hold_epochs: float = at_least(0.0, 0.0)
    margin_warmup_epochs: float = at_least(0.0, 0.0)
    margin_increase: Literal["linear", "exp"] = "linear"

    def __post_init__(self) -> None:
        check_options(self)
        _positive("scale", self.scale)
        if self.margin >= math.pi / 2:
            raise ValueError(f"margin must be < pi/2 radians, got {self.margin} (WeSpeaker uses 0.2)")

    def fingerprint(self) -> dict[str, Any]:
        """The checkpoint fingerprint's ``loss`` entry: none for ``ce``, so checkpoints written
        before the block existed resume."""
        return {} if self.name == "ce" else {"loss": to_mapping(self)}


@dataclass(frozen=True)
class CheckpointConfig:
    dir: str | None = None  # any fsspec URL; default <run.out_dir>/checkpoints
    every_steps: int = 200  # optimizer steps between checkpoints (also one per epoch)
    keep_last: int = 2
    keep_best: int = 1
    metric: str = "valid_accuracy"  # for keep_best
    mode: Literal["max", "min"] = "max"
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _positive("every_steps", self.every_steps)
        _positive("keep_last", self.keep_last)
        _positive("keep_best", self.keep_best, allow_zero=True)
        if self.keep_best and self.mode == "max" and lower_is_better(self.metric):
            raise ValueError(f"mode: max would keep the worst checkpoints by {self.metric} (lower is better): "
                             "set checkpoint.mode: min")


@dataclass(frozen=True)
class RunConfig:
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (the LR schedule still spans epochs)
    out_dir: str = "runs/train"  # metrics.jsonl, TensorBoard events (local or a Drive folder)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 on CUDA
    seed: int = 0
    log_every: int = 20  # optimizer steps between log lines
    tensorboard: bool = True  # when the tensorboard package is installed
    preflight: bool = True  # run the preflight checks before training
    preflight_batches: int = 10  # batches timed by the loader-vs-model check
    resume: bool = True  # continue from the latest valid checkpoint in checkpoint.dir
    num_threads: int | None = None  # torch intra-op threads (None: torch's default)
    keys_log: str | None = None  # append every batch's sample keys here (audits, tests)
    progress: bool = True  # tqdm bar

    def __post_init__(self) -> None:
        _positive("epochs", self.epochs)
        _positive("max_steps", self.max_steps)
        _positive("log_every", self.log_every)
        _positive("preflight_batches", self.preflight_batches)
        _positive("num_threads", self.num_threads)
        if self.device != "auto" and not (
            self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")
        ):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    run: RunConfig = field(default_factory=RunConfig)
    # Batch transforms on the device, in order: a YAML list of {name, params} (wds_pipeline.transforms).
    batch_transforms: tuple[TransformSpec, ...] = ()
    augment: AugmentConfig | None = None  # None: no augmentation block
    loss: LossConfig = field(default_factory=LossConfig)
    source: str = "<config>"  # the file it came from, for messages

    @property
    def checkpoint_dir(self) -> str:
        from ..storage.urls import join_url

        return self.checkpoint.dir or join_url(self.run.out_dir, "checkpoints")

    def to_dict(self) -> dict[str, Any]:
        d = to_mapping(self)
        d.pop("source")
        return d

    def with_run(self, **changes: Any) -> TrainConfig:
        return replace(self, run=replace(self.run, **changes))


def loader_config(cfg: TrainConfig) -> LoaderConfig:
    """The training loader's config: ``loader``, with the augment block's sample transform
    (speed) first in its ``sample_transforms``."""
    speed = cfg.augment.specs().sample if cfg.augment is not None else ()
    if not speed:
        return cfg.loader
    return replace(cfg.loader, sample_transforms=speed + tuple(cfg.loader.sample_transforms))


BLOCKS = ("data", "loader", "model", "optim", "checkpoint", "run")
OPTIONAL_BLOCKS = ("batch_transforms", "augment", "loss")

def check_model(model: ModelConfig, source: str) -> None:
    """The factory loads and takes every option given (when its signature says which)."""
    from .models import load_factory, unknown_model_option

    try:
        fn = load_factory(model.factory)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    bad = unknown_model_option(fn, model.options)
    if bad is not None:
        raise ConfigError(f"{source}: model.{bad[0]}: not an option of {model.factory}; valid options: "
                          + (", ".join(bad[1]) or "none"))


def parse_config(doc: Any, source: str = "<config>") -> TrainConfig:
    """A mapping (a YAML document) -> TrainConfig; errors name the key and ``source``."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping with blocks {', '.join(BLOCKS)}")
    unknown = sorted(set(doc) - set(BLOCKS) - set(OPTIONAL_BLOCKS))
    if unknown:
        raise ConfigError(f"{source}: unknown block {unknown[0]!r}; valid blocks: "
                          f"{', '.join(BLOCKS + OPTIONAL_BLOCKS)}")
    if "data" not in doc:
        raise ConfigError(f"{source}: missing block 'data' (data.train: the training index URL)")
    blocks: dict[str, dict[str, Any]] = {}
    for k in BLOCKS:
        v = doc.get(k)
        if v is not None and not isinstance(v, dict):
            raise ConfigError(f"{source}: {k}: expected a mapping of options, got {v!r}")
        blocks[k] = v or {}
    model = dict(blocks["model"])
    model_cfg = from_mapping(ModelConfig, {"factory": model.pop("factory", DEFAULT_MODEL),
                                           "options": model}, f"{source}: model")
    check_model(model_cfg, source)
    return TrainConfig(
        data=from_mapping(DataConfig, blocks["data"], f"{source}: data"),
        # The loader's own parser: this block gives the loader load_yaml_config gives.
        loader=LoaderConfig.from_dict(blocks["loader"], f"{source}: loader"),
        model=model_cfg,
        optim=from_mapping(OptimConfig, blocks["optim"], f"{source}: optim"),
        checkpoint=from_mapping(CheckpointConfig, blocks["checkpoint"], f"{source}: checkpoint"),
        run=from_mapping(RunConfig, blocks["run"], f"{source}: run"),
        batch_transforms=convert(tuple[TransformSpec, ...], doc.get("batch_transforms") or (),
                                 f"{source}: batch_transforms"),
        augment=convert(AugmentConfig | None, doc.get("augment"), f"{source}: augment"),
        loss=from_mapping(LossConfig, doc.get("loss") or {}, f"{source}: loss"),
        source=source,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def load_config(path: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config and apply ``block.key=value`` overrides."""
    import yaml

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; --config takes a YAML file (e.g. configs/local.yaml)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r}); "
                          "save the config as UTF-8") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({_one_line(str(e))})") from None
    doc = doc or {}
    for assignment in overrides:
        set_dotted(doc, assignment)
    return parse_config(doc, path)
