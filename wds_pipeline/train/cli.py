"""``wds-pipeline train`` and ``wds-pipeline preflight``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import TYPE_CHECKING

from ..errors import EXIT_INTERRUPTED, ConfigError

if TYPE_CHECKING:  # the config imports the loader, and so torch: not for `build --help`
    from .config import TrainConfig

TRAIN_EPILOG = """\
examples:
  wds-pipeline train --config configs/demo.yaml
  wds-pipeline train --config configs/colab.yaml --set optim.lr=0.001 --set loader.num_workers=2
  wds-pipeline train --config configs/local.yaml --dry-run        # 2 steps on a scratch dir
  wds-pipeline train --config configs/local.yaml --max-steps 50   # a short smoke run

Rerunning the same command after a crash or a Colab disconnect resumes from the latest
valid checkpoint in checkpoint.dir (exactly: same batches, same weights).
"""

PREFLIGHT_EPILOG = """\
examples:
  wds-pipeline preflight --config configs/colab.yaml
  wds-pipeline preflight --config configs/local.yaml --json

Exit 1 when any check fails; each line says how to fix it.
"""


def add_commands(sub, raw) -> None:
    p = sub.add_parser("train", help="train a speaker/keyword model from shards", epilog=TRAIN_EPILOG,
                       formatter_class=raw)
    _common(p)
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    p.add_argument("--dry-run", action="store_true",
                   help="preflight + 2 optimizer steps + validation in a scratch folder; no resume")
    p.add_argument("--no-preflight", action="store_true", help="skip the preflight checks")
    p.add_argument("--force", action="store_true",
                   help="resume weights even if the checkpoint was made for other data/settings")
    p.add_argument("--wait-for-lock", type=_seconds, default=0.0, metavar="SECONDS",
                   help="when another run holds checkpoint.dir, wait up to SECONDS for it (default: "
                        "refuse at once, naming it)")
    p.set_defaults(handler=cmd_train)
    p = sub.add_parser("preflight", help="check data, storage, speed and memory before training",
                       epilog=PREFLIGHT_EPILOG, formatter_class=raw)
    _common(p)
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(handler=cmd_preflight)


def _common(p: argparse.ArgumentParser) -> None:
    # dest differs from "config": the build command's --config means build options.
    p.add_argument("--config", dest="train_config", required=True, metavar="FILE.yaml",
                   help="training config (blocks data, loader, model, optim, checkpoint, run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=0.001 (repeatable)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _load(args: argparse.Namespace) -> TrainConfig:
    from .config import load_config

    overrides = list(args.overrides)
    if getattr(args, "max_steps", None):
        overrides.append(f"run.max_steps={args.max_steps}")
    return load_config(args.train_config, overrides)


def cmd_train(args, parser) -> int:
    from ..errors import ResumeMismatch
    from .checkpoint import CheckpointError
    from .preflight import run_preflight
    from .trainer import Trainer

    cfg: TrainConfig | None = None
    trainer: Trainer | None = None
    try:
        cfg = _load(args)
        if args.dry_run:
            scratch = tempfile.mkdtemp(prefix="wds-dry-run-")
            cfg = cfg.with_run(max_steps=cfg.run.max_steps or 2, resume=False, out_dir=scratch)
            from dataclasses import replace

            cfg = replace(cfg, checkpoint=replace(cfg.checkpoint, dir=f"{scratch}/checkpoints"))
            print(f"dry run in {scratch}", file=sys.stderr)
        if cfg.run.preflight and not args.no_preflight:
            report = run_preflight(cfg)
            print(report.to_text(), file=sys.stderr)
            if not report.ok:
                print("preflight failed: fix the lines marked FAIL (or pass --no-preflight)", file=sys.stderr)
                return 1
        trainer = Trainer(cfg, force=args.force, wait_for_lock=args.wait_for_lock)
        try:
            summary = trainer.fit()
        finally:
            trainer.close()
    except (ConfigError, ResumeMismatch, CheckpointError) as e:  # the command as given cannot run
        # CheckpointError: every checkpoint damaged, or the folder held by another run; the
        # message names the files and the fix, one line.
        print(f"wds-pipeline train: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:  # data or storage: the message names the file
        print(f"wds-pipeline train: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nwds-pipeline train: interrupted; {_kept(cfg, trainer)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if trainer.dist.is_main:
        print(summary.to_text())
        from .plots import write_training_plots  # <out_dir>/plots/*.png; never fails the run

        write_training_plots(summary.metrics_file, cfg.run.out_dir)
    return 0


def _kept(cfg: TrainConfig | None, trainer) -> str:
    """What an interrupted train leaves behind, and how to go on from it."""
    if cfg is None:
        return "training had not started"
    if trainer is None:
        return f"training had not started; {cfg.checkpoint_dir} is as it was"
    latest = trainer.last_checkpoint
    try:  # the folder itself: Ctrl-C may land inside a save, after its commit
        found = trainer.checkpoints.list()
        latest = found[-1].url if found else latest
    except Exception:  # the message must not fail: the trainer's own record will do
        pass
    if latest:
        return f"the last checkpoint is kept ({latest}); rerun the same command to resume from it"
    return (f"no checkpoint was written yet in {cfg.checkpoint_dir}; rerun the same command to start "
            "again")


def cmd_preflight(args, parser) -> int:
    from .preflight import run_preflight

    try:
        cfg = _load(args)
    except (ConfigError, ValueError) as e:
        print(f"wds-pipeline preflight: {e}", file=sys.stderr)
        return 2
    try:
        report = run_preflight(cfg)
    except ConfigError as e:  # found once the model is built (a factory taking **kwargs)
        print(f"wds-pipeline preflight: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.to_text())
    return 0 if report.ok else 1
