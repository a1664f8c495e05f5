"""``wds-pipeline embed`` and ``wds-pipeline average``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..errors import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ConfigError, WdsPipelineError

EMBED_EPILOG = """\
examples:
  wds-pipeline embed --checkpoint runs/ecapa/checkpoints shards/vox1_test/index.json emb/vox1_test
  wds-pipeline embed --checkpoint runs/ecapa/avg.pt gs://bucket/shards/vox2_dev/index.json gs://bucket/emb/vox2_dev
  wds-pipeline embed --checkpoint runs/ecapa/checkpoints/ckpt-000120000.pt shards/test emb/test --chunk-seconds 3

CHECKPOINT: a checkpoint folder (its newest valid checkpoint), one ckpt-*.pt of it, or a
file `wds-pipeline average` wrote. Output: OUT/part-NNNNNN.npz (keys, speakers, float32
vectors; one part per input shard, each with a sidecar) and OUT/embeddings.json (written
last). The vectors are the model's embed() output, not L2-normalised (scoring normalises).
Rerunning the same command after a crash keeps the parts already committed (their sha256
verified) and computes the rest; OUT holding another run's embeddings is refused unless
--overwrite. Read them with wds_pipeline.sv.embeddings.load_embeddings(OUT).
"""

AVERAGE_EPILOG = """\
examples:
  wds-pipeline average --checkpoints runs/ecapa/checkpoints --last 10 --out runs/ecapa/avg10.pt
  wds-pipeline embed --checkpoint runs/ecapa/avg10.pt shards/vox1_test emb/vox1_test_avg10

Averages the float weights of the newest N valid checkpoints of a run (integer buffers
such as BatchNorm's num_batches_tracked from the newest), as WeSpeaker and NeMo do before
evaluation. Keep enough checkpoints for it with checkpoint.keep_last.
"""


def add_commands(sub, raw) -> None:
    p = sub.add_parser("embed", help="embeddings of every utterance of an index, from a checkpoint",
                       epilog=EMBED_EPILOG, formatter_class=raw)
    p.add_argument("index", metavar="INDEX_URL", help="dataset split (its folder or index.json; any storage)")
    p.add_argument("out", metavar="OUT_URL", help="embeddings folder (local, Drive folder, gs://...)")
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="checkpoint folder, one ckpt-*.pt, or an averaged .pt")
    p.add_argument("--chunk-seconds", type=float, default=None, metavar="S",
                   help="embed chunks of S seconds and take their mean (default: whole utterances)")
    p.add_argument("--batch-seconds", type=float, default=200.0, metavar="N",
                   help="padded audio seconds per model batch (default 200; a longer utterance runs alone)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16", "auto"),
                   help="autocast dtype on the device (default fp32)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="loader workers reading ahead (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace another run's embeddings in OUT_URL")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(handler=cmd_embed)
    p = sub.add_parser("average", help="average the weights of a run's last N checkpoints",
                       epilog=AVERAGE_EPILOG, formatter_class=raw)
    p.add_argument("--checkpoints", required=True, metavar="DIR", help="the run's checkpoint folder")
    p.add_argument("--last", required=True, type=int, metavar="N", help="how many of the newest checkpoints")
    p.add_argument("--out", required=True, metavar="FILE", help="the averaged checkpoint (.pt, any storage)")
    p.set_defaults(handler=cmd_average)


def _run(command: str, work: Callable[[], int]) -> int:
    """One-line errors: 2 for a command that cannot run as given, 1 for data or storage."""
    try:
        return work()
    except ConfigError as e:
        print(f"wds-pipeline {command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (WdsPipelineError, ValueError, OSError) as e:
        print(f"wds-pipeline {command}: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print(f"\nwds-pipeline {command}: interrupted; rerun the same command to go on", file=sys.stderr)
        return EXIT_INTERRUPTED


def cmd_embed(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    def work() -> int:
        from .embed import EmbedOptions, embed_index

        options = EmbedOptions(chunk_seconds=args.chunk_seconds, batch_seconds=args.batch_seconds,
                               device=args.device, precision=args.precision, num_workers=args.workers,
                               overwrite=args.overwrite, progress=args.progress)
        result = embed_index(args.checkpoint, args.index, args.out, options)
        print(result.summary())
        return EXIT_OK

    return _run("embed", work)


def cmd_average(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    def work() -> int:
        from .average import average_checkpoints

        result = average_checkpoints(args.checkpoints, args.last, args.out,
                                     log=lambda m: print(m, file=sys.stderr))
        print(result.summary())
        return EXIT_OK

    return _run("average", work)
