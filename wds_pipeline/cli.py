"""``wds-pipeline``: build, inspect and verify speech shards; synthesise corpora; run the demo.

Exit status: 0 ok, 1 failure (verify mismatch, nothing written, rejects with
--strict, a shard that failed to build), 2 usage error (bad options, missing
source, OUT holding a different dataset without --overwrite), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from .option_table import OptionTable


MAIN_EPILOG = """\
examples:
  wds-pipeline demo --workdir demo                       # everything below on a synthetic corpus
  wds-pipeline synth librispeech corpus/LibriSpeech
  wds-pipeline build librispeech corpus/LibriSpeech shards --workers 2
  wds-pipeline inspect shards
  wds-pipeline verify shards
  wds-pipeline preflight --config configs/local.yaml     # data, storage, speed, memory checks
  wds-pipeline train --config configs/local.yaml         # train; rerun to resume

`wds-pipeline COMMAND --help` shows each command's options and examples.
"""

BUILD_EPILOG = """\
examples:
  wds-pipeline build librispeech /data/LibriSpeech shards --parts train-clean-100,dev-clean
  wds-pipeline build voxceleb /data/voxceleb shards/vox --kaldi-split --fbank --workers 8
  wds-pipeline build manifest clips.csv gs://bucket/shards --codec flac --shard-size 500
  wds-pipeline build librispeech /data/LibriSpeech shards --config configs/build_librispeech.yaml

Output: OUT/<split>/shard-000000.tar ... and OUT/<split>/index.json (written last).
Rerunning the same command resumes an interrupted build (finished shards are verified
and kept) or reports "already complete". OUT holding a different dataset is refused
unless --overwrite is given. --config FILE.yaml takes the same options (names with
'_' or '-'); flags on the command line win.
"""

INSPECT_EPILOG = """\
examples:
  wds-pipeline inspect shards                      # every split under the dataset root
  wds-pipeline inspect shards/train-clean-100      # one split folder
  wds-pipeline inspect gs://bucket/shards/train/index.json
  wds-pipeline inspect shards --plot shards.png    # duration + samples-per-class histograms

--plot FILE.png writes one PNG of two panels, one histogram per split in each: sample
durations (from the index) and how many classes (speakers, labels) have N samples (from
each sample's cls member: tar headers and labels are read, never the audio). A folder
instead of FILE.png gets FOLDER/dataset.png. Needs matplotlib.
"""

VERIFY_EPILOG = """\
examples:
  wds-pipeline verify shards                      # re-hash + decode everything
  wds-pipeline verify shards/dev-clean --no-decode

Checks per shard: exists, size and digest (XXH3-128; sha256 in format 1) as in the index, tar headers intact, sample
count, byte offsets and frame counts as in the index, every field decodes, class labels
are ids of the index's label_map, keys valid and unique in the split. Exit 1 with a
per-shard report on any mismatch; exit 2 with one line naming the file and key for an
index that is not what wds-pipeline writes, or whose shard URLs leave the dataset folder
(as the loader, verify refuses those unless --allow-external-shards).
"""

SYNTH_EPILOG = """\
examples:
  wds-pipeline synth librispeech corpus/LibriSpeech --speakers 8 --seed 1
  wds-pipeline synth voxceleb corpus/voxceleb --vox1-speakers 6 --vox2-speakers 4
  wds-pipeline synth musan corpus/musan --clips 2            # then: build musan ...
  wds-pipeline synth rirs corpus/RIRS_NOISES --rooms 2      # then: build rirs ...
"""

DEMO_EPILOG = """\
examples:
  wds-pipeline demo --workdir demo
  wds-pipeline demo --workdir demo --no-augment     # the same model trained on clean audio

Synthesises small LibriSpeech-, VoxCeleb-, MUSAN- and RIRS_NOISES-layout corpora in
DIR/corpus, builds shards in DIR/shards (plus a speaker-ID train/valid split from a
manifest), inspects and verifies them, streams one epoch, runs the preflight checks and
trains a speaker model with augmentation (speed, reverb, noise, SpecAugment; CPU, or the
GPU when present), then prints a summary: validation accuracy and EER, clean and on a
noisy copy. Rerunning reuses the corpus, finds the shards complete and resumes training
from its last checkpoint.
"""


EXTERNAL_HELP = ("read shard URLs that leave the dataset folder (absolute paths, other URLs, "
                 "'..'); refused by default, as by the loader: only for an index you trust")


def build_option_table(source: str) -> OptionTable:
    """The flags and --config keys of `build SOURCE`: BuildOptions' and the source's Options."""
    from .builder import BuildOptions
    from .option_table import OptionTable
    from .sources import get_source

    module = get_source(source)
    return OptionTable((BuildOptions, None), (module.Options, f"{source} options"),
                       defaults=module.BUILD_DEFAULTS)


def make_parser() -> argparse.ArgumentParser:
    from .sources import SOURCES, get_source

    parser = argparse.ArgumentParser(prog="wds-pipeline", description=__doc__,
                                     epilog=MAIN_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from .version import __version__

    parser.add_argument("--version", action="version", version=f"wds-pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    b = sub.add_parser("build", help="build shards from a corpus", epilog=BUILD_EPILOG,
                       formatter_class=raw, description="Build WebDataset shards of "
                       "preprocessed int16 audio from a corpus.")
    bsub = b.add_subparsers(dest="source", required=True, metavar="SOURCE")
    for name in sorted(SOURCES):
        doc = (get_source(name).__doc__ or "").strip()
        sp = bsub.add_parser(name, help=doc.splitlines()[0], epilog=BUILD_EPILOG,
                             formatter_class=raw, description=doc)
        sp.add_argument("src", metavar="SRC", help="corpus root (manifest: the manifest file)")
        sp.add_argument("out", metavar="OUT", help="output root (local path, Drive folder, gs://...)")
        sp.add_argument("--config", metavar="FILE.yaml", default=None,
                        help="options from YAML (the flags' names, '_' or '-'); "
                             "command-line flags win")
        table = build_option_table(name)
        table.add_to(sp)
        sp.set_defaults(handler=cmd_build, option_table=table)

    p = sub.add_parser("inspect", help="summarise a built dataset", epilog=INSPECT_EPILOG,
                       formatter_class=raw)
    p.add_argument("out", metavar="OUT", help="dataset root, split folder or index.json URL")
    p.add_argument("--examples", type=int, default=3, help="sample keys to show (default 3)")
    p.add_argument("--rejects", type=int, default=5, help="reject reasons to show (default 5)")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="also draw duration and samples-per-class histograms into one PNG "
                        "(a folder: FOLDER/dataset.png)")
    p.add_argument("--allow-external-shards", action="store_true", help=EXTERNAL_HELP)
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser("verify", help="re-hash and decode every shard", epilog=VERIFY_EPILOG,
                       formatter_class=raw)
    p.add_argument("out", metavar="OUT", help="dataset root, split folder or index.json URL")
    p.add_argument("--no-decode", action="store_true",
                   help="skip decoding fields (hash, tar structure and counts only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--allow-external-shards", action="store_true", help=EXTERNAL_HELP)
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("synth", help="write a synthetic corpus in a real layout",
                       epilog=SYNTH_EPILOG, formatter_class=raw)
    ssub = p.add_subparsers(dest="corpus", required=True, metavar="CORPUS")
    # Each corpus's flags store under its synth function's keyword names (dest=...):
    # cmd_synth passes them on as they are, through the registry synth.CORPORA.
    sl = ssub.add_parser("librispeech", help="LibriSpeech layout (FLAC + trans.txt)",
                         epilog=SYNTH_EPILOG, formatter_class=raw)
    sl.add_argument("dir", metavar="DIR", help="plays the role of the LibriSpeech folder")
    sl.add_argument("--speakers", type=int, default=8)
    sl.add_argument("--chapters", dest="chapters_per_speaker", type=int, metavar="N", default=2,
                    help="chapters per speaker")
    sl.add_argument("--utterances", dest="utterances_per_chapter", type=int, metavar="N", default=4,
                    help="utterances per chapter")
    sl.add_argument("--parts", type=_comma_list, default="train-clean-100,dev-clean",
                    help="comma-separated parts")
    sv = ssub.add_parser("voxceleb", help="VoxCeleb1 (wav) + VoxCeleb2 (m4a) layout",
                         epilog=SYNTH_EPILOG, formatter_class=raw)
    sv.add_argument("dir", metavar="DIR", help="will hold voxceleb1/ and voxceleb2/")
    sv.add_argument("--vox1-speakers", type=int, default=6)
    sv.add_argument("--vox2-speakers", type=int, default=4)
    sv.add_argument("--vox1-test-speakers", type=int, default=2)
    sv.add_argument("--videos", dest="videos_per_speaker", type=int, metavar="N", default=2,
                    help="videos per speaker")
    sv.add_argument("--utterances", dest="utterances_per_video", type=int, metavar="N", default=3,
                    help="utterances per video")
    for sp in (sl, sv):
        sp.add_argument("--min-seconds", type=float, default=1.0)
        sp.add_argument("--max-seconds", type=float, default=15.0)
    ss = ssub.add_parser("sessions", help="session recordings with WhisperX JSON (command "
                         "words at known times; every other session diarized)",
                         epilog=SYNTH_EPILOG, formatter_class=raw)
    ss.add_argument("dir", metavar="DIR", help="will hold session-000/, session-001/, ...")
    ss.add_argument("--sessions", type=int, default=2)
    ss.add_argument("--seconds", type=float, default=30.0, help="length of each recording")
    ss.add_argument("--untimed", dest="untimed_per_session", type=int, metavar="N", default=2,
                    help="words per session left without timestamps (spoken numbers)")
    sm, sr = (ssub.add_parser(name, help=what, epilog=SYNTH_EPILOG, formatter_class=raw)
              for name, what in (
                  ("musan", "MUSAN layout (music/, noise/, speech/ subsets with ANNOTATIONS): "
                   "coloured noise, tones, synthetic voices"),
                  ("rirs", "RIRS_NOISES layout: simulated and real RIRs (known RT60 and direct "
                   "path) with rir_list, noises with noise_list")))
    sm.add_argument("dir", metavar="DIR", help="plays the role of the musan folder")
    sm.add_argument("--seconds", type=float, default=3.0, help="length of each clip")
    sr.add_argument("dir", metavar="DIR", help="plays the role of the RIRS_NOISES folder")
    for sp, flag, dest, default in ((sm, "--clips", "clips_per_subset", 2),
                                    (sr, "--rooms", "rooms_per_size", 1),
                                    (sr, "--rirs-per-room", "rirs_per_room", 2),
                                    (sr, "--real-rirs", "real_rirs", 2),
                                    (sr, "--isotropic-noises", "isotropic_noises", 1),
                                    (sr, "--pointsource-noises", "pointsource_noises", 2)):
        sp.add_argument(flag, dest=dest, type=int, metavar="N", default=default,
                        help=f"{dest.replace('_', ' ')} (default {default})")
    for sp in (sl, sv, ss, sm, sr):
        sp.add_argument("--seed", type=int, default=0)
        sp.set_defaults(handler=cmd_synth)

    p = sub.add_parser("demo", help="synth -> build -> verify -> preflight -> train, end to end",
                       epilog=DEMO_EPILOG, formatter_class=raw)
    p.add_argument("--workdir", default="demo", help="folder for corpus/ and shards/ (default demo)")
    p.add_argument("--workers", type=int, default=None, help="build workers (default CPU count)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default: the demo config's run.epochs)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="train without augmentation (into <workdir>/run-clean: compare its validation, clean "
                        "and noisy, with the augmented run's)")
    p.set_defaults(handler=cmd_demo)

    from .sv.score_cli import add_score_command
    from .train.cli import add_commands as add_train_commands
    from .train.embed_cli import add_commands as add_embed_commands
    from .train.plots import add_command as add_plot_command

    add_train_commands(sub, raw)
    add_plot_command(sub, raw)
    add_embed_commands(sub, raw)
    add_score_command(sub, raw)
    return parser


# ---------------------------------------------------------------------------
# build


def _load_config(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise SystemExit(_usage(f"--config {path}: no such file"))
    except yaml.YAMLError as e:
        raise SystemExit(_usage(f"--config {path}: not valid YAML ({e})"))
    if not isinstance(data, dict):
        raise SystemExit(_usage(f"--config {path}: expected a mapping of option: value"))
    return data


def _usage(msg: str) -> int:
    print(f"wds-pipeline: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def build_options_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """(BuildOptions, the source's Options): defaults, then --config's YAML, then the flags
    given. A bad YAML key or value exits with a usage error naming the file."""
    from .errors import ConfigError

    config: dict[str, Any] = {}
    if args.config:
        config = _load_config(args.config)
        declared = config.pop("source", None)
        if declared is not None and declared != args.source:
            raise SystemExit(_usage(f"--config {args.config} is for source {declared!r}, "
                                    f"not {args.source!r}"))
    try:
        options, source_options = args.option_table.build(args, config,
                                                          where=f"--config {args.config}")
    except ConfigError as e:
        raise SystemExit(_usage(str(e))) from None
    return options, source_options


def cmd_build(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .builder import BuildConfigError, BuildError, build_dataset

    options, source_options = build_options_from_args(args)
    try:
        result = build_dataset(args.source, args.src, args.out, options=options,
                               source_options=source_options)
    except BuildConfigError as e:
        return _usage(str(e))
    except (BuildError, OSError) as e:
        print(f"wds-pipeline: build failed: {e}", file=sys.stderr)
        return EXIT_FAIL
    for s in result.splits.values():
        c = s.counts
        print(f"{s.split}: {c.inputs} inputs, {c.written} written, {c.rejected} rejected, "
              f"{c.samples} samples, {s.duration / 3600:.3f} hours, {s.shards_text()} "
              f"-> {s.index_url}")
    print(result.summary())
    if result.counts.rejected:
        print(f"rejected inputs and reasons are listed in each index.json "
              f"(wds-pipeline inspect {args.out})")
    code = result.exit_code(options.strict)
    if result.counts.written == 0:
        print(f"wds-pipeline: nothing was written: {result.all_rejected}", file=sys.stderr)
    elif code:
        print(f"wds-pipeline: --strict: {result.counts.rejected} inputs rejected", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------
# inspect / verify / synth


def _read_dataset(command: Callable[[], int]) -> int:
    """Run an inspect or verify ``command``: an index that is not what wds-pipeline writes,
    or whose shard URLs leave the dataset folder, is a usage error (the fix is another OUT
    or --allow-external-shards); a missing or unreadable dataset a one-line failure."""
    from .index import ExternalShardsError, IndexFormatError

    try:
        return command()
    except (IndexFormatError, ExternalShardsError) as e:
        return _usage(str(e))
    except (FileNotFoundError, ValueError) as e:
        print(f"wds-pipeline: {e}", file=sys.stderr)
        return EXIT_FAIL


def cmd_inspect(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .verify import inspect_dataset

    if args.plot:
        from .plots import require_matplotlib

        require_matplotlib()  # before reading anything

    def inspect() -> int:
        summaries = inspect_dataset(args.out, examples=args.examples,
                                    allow_external_shards=args.allow_external_shards)
        print("\n\n".join(s.to_text(max_rejects=args.rejects) for s in summaries))
        if args.plot:
            from .plots import plot_dataset
            from .storage.urls import join_url

            url = args.plot if args.plot.endswith(".png") else join_url(args.plot, "dataset.png")
            print(f"plot: {plot_dataset([s.index for s in summaries], url)}")
        return EXIT_OK

    return _read_dataset(inspect)


def cmd_verify(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .verify import verify_dataset

    def verify() -> int:
        report = verify_dataset(args.out, decode=not args.no_decode,
                                progress=not args.no_progress,
                                allow_external_shards=args.allow_external_shards)
        print(report.to_text())
        return EXIT_OK if report.ok else EXIT_FAIL

    return _read_dataset(verify)


def _comma_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def cmd_synth(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import synth

    # The corpus's own flags (make_parser names them for its function's keywords).
    kwargs = {k: v for k, v in vars(args).items()
              if k not in ("command", "corpus", "dir", "handler")}
    try:
        summary = synth.CORPORA[args.corpus](args.dir, **kwargs)
    except ValueError as e:
        return _usage(str(e))
    print(f"wrote {summary['files']} files, {summary['seconds'] / 3600:.3f} hours, "
          f"splits {summary['splits']} under {args.dir}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .demo import run_demo

    return run_demo(args.workdir, workers=args.workers, epochs=args.epochs, augment=args.augment)


# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace, argparse.ArgumentParser], int] = args.handler
    from .errors import ConfigError, WdsPipelineError

    try:
        return handler(args, parser)
    except ConfigError as e:  # the command as given cannot run: change it
        return _usage(str(e))
    except WdsPipelineError as e:  # every message names the file and the fix: no traceback
        print(f"wds-pipeline: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print("\nwds-pipeline: interrupted; rerun the same command to resume (finished shards "
              "are kept)", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
