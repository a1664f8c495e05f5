"""`wds-pipeline build` as a careless user runs it (issue 19, points 5, 16 and the shard
count message): a manifest with a stray quote, OUT on top of the corpus, a byte budget that
leaves planned shards empty. Each runs the console script in a subprocess and checks the
exit status, the exact one-line error and that nothing was written or lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_run import cli, cli_many
from test_builder import build, synth_libri, tree_bytes, write_audio, write_manifest

# ---------------------------------------------------------------------------
# Point 5: a stray quote in a CSV manifest


def clips(folder: Path, n: int = 5) -> list[str]:
    for i in range(n):
        write_audio(folder / "audio" / f"u{i}.wav", 0.6, seed=i)
    return [f"audio/u{i}.wav" for i in range(n)]


FIX = ("close the quote, or write a quote inside a quoted value as two (\"\"), or leave the "
       "value unquoted")


def test_a_stray_quote_in_a_manifest_is_a_one_line_error_not_swallowed_rows(tmp_path):
    paths = clips(tmp_path)
    texts = ["one", '"two', "three", "four", "five"]  # line 3 opens a quote, never closed
    never = tmp_path / "never.csv"
    never.write_text("path,text\n" + "".join(f"{p},{t}\n" for p, t in zip(paths, texts)))
    # Closed on a later row: the rows between are text of line 3's value.
    closed = tmp_path / "closed.csv"
    closed.write_text("path,text\n" + "".join(
        f"{p},{t}\n" for p, t in zip(paths, ["one", '"two', "three", 'four"', "five"])))
    runs = cli_many([["build", "manifest", m, tmp_path / f"out-{m.stem}", "--workers", "1",
                      "--no-progress"] for m in (never, closed)])
    expected = [
        (f"manifest source at {never}: manifest {never} line 3: a quoted value opened in this "
         f"row is never closed (the file ends inside it, at line 6); {FIX}"),
        (f"manifest source at {closed}: manifest {closed} line 3: a quoted value opened in this "
         f"row runs on to line 5, swallowing line 4 ('audio/u2.wav,three'), which reads as a "
         f"row of its own; {FIX}"),
    ]
    for m, run, message in zip((never, closed), runs, expected):
        assert (run.returncode, run.stdout, run.stderr) == \
            (2, "", f"wds-pipeline: error: {message}\n")
        assert not (tmp_path / f"out-{m.stem}").exists()


def test_a_value_spanning_lines_that_holds_no_rows_is_still_read(tmp_path):
    paths = clips(tmp_path)
    csv_path = tmp_path / "ok.csv"
    csv_path.write_text("path,text\n" + "".join(
        f"{p},{t}\n" for p, t in zip(paths, ["one", '"two,\nstill two"', "three", "", "five"])))
    result = build("manifest", csv_path, tmp_path / "out")
    c = result.splits["train"].counts
    assert (c.inputs, c.written, c.rejected) == (5, 5, 0)


# ---------------------------------------------------------------------------
# Point 16: OUT on top of the corpus


@pytest.fixture(scope="module")
def libri(tmp_path_factory) -> Path:
    return synth_libri(tmp_path_factory.mktemp("corpus") / "LibriSpeech")


def test_out_on_the_corpus_is_refused_before_anything_is_written(libri, tmp_path):
    before = tree_bytes(libri)
    link = tmp_path / "link"
    link.symlink_to(libri)
    tail = ("the librispeech corpus SRC {src}: the build would write its shards and _build/ "
            "into the corpus and a rerun would read them as inputs; choose another OUT, e.g. "
            "a folder beside SRC or inside it (SRC/shards)")
    part = libri / "dev-clean"
    cases = [  # (SRC, OUT, the error before the tail)
        (libri, libri, f"OUT {libri} is "),
        (libri, link, f"OUT {link} is "),  # the same folder through a symlink
        # SRC one part of the corpus, OUT its parent: OUT/dev-clean is SRC itself
        (part, libri, f"OUT {libri} would write the split folder {part}, which is "),
    ]
    runs = cli_many([["build", "librispeech", src, out, "--workers", "1", "--no-progress"]
                     for src, out, _ in cases])
    for (src, out, head), run in zip(cases, runs):
        assert (run.returncode, run.stdout, run.stderr) == \
            (2, "", f"wds-pipeline: error: {head}{tail.format(src=src)}\n"), (src, out)
    assert tree_bytes(libri) == before


def test_a_corpus_inside_out_but_outside_its_split_folders_is_fine(libri, tmp_path):
    # SRC inside OUT but in no split folder: the build never writes into SRC.
    out = tmp_path / "out"
    src = out / "corpus" / "LibriSpeech"
    shutil.copytree(libri, src)
    result = build("librispeech", src, out, source_options={"parts": "dev-clean"})
    c = result.splits["dev-clean"].counts
    assert c.written > 0 and c.inputs == c.written + c.rejected
    assert tree_bytes(src) == tree_bytes(libri)


# ---------------------------------------------------------------------------
# "32 shards (33 built)": a planned shard whose every input was rejected


def test_shard_counts_add_up_when_a_planned_shard_has_only_rejected_inputs(tmp_path):
    paths = clips(tmp_path, 4)
    (tmp_path / "audio" / "u4.wav").write_bytes(b"")  # probed as 0 s; rejected when read
    manifest = write_manifest(tmp_path, [{"path": p} for p in paths + ["audio/u4.wav"]])
    out = tmp_path / "out"
    run = cli("build", "manifest", manifest, out, "--max-shard-bytes", "1KB", "--workers", "1",
              "--no-progress")
    assert run.returncode == 0, run.stderr
    tars = sorted(p.name for p in (out / "train").glob("*.tar"))
    index = json.loads((out / "train" / "index.json").read_text())
    assert len(tars) == len(index["shardlist"]) == 4
    shards = ("4 shards (4 built, 0 reused), 1 planned shard not written (every input "
              "rejected)")
    assert run.stdout.splitlines()[:2] == [
        f"train: 5 inputs, 4 written, 1 rejected, 4 samples, 0.001 hours, {shards} -> "
        f"{out / 'train' / 'index.json'}",
        f"5 inputs, 4 written, 1 rejected; 4 samples, 0.001 hours, {shards}",
    ]
    rerun = cli("build", "manifest", manifest, out, "--max-shard-bytes", "1KB", "--workers",
                "1", "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert "4 shards (0 built, 4 reused); already complete" in rerun.stdout
