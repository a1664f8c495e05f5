"""wds_pipeline's loader, old against new: ``peers.py --baseline REV``.

The working tree's wds_pipeline ("new") and that of git revision REV ("old", its files
unpacked with ``git archive`` under the data folder) read the same generated sets, written
once by the working tree's writer (the shard format is the same on both sides). Two
wds_pipelines cannot share a process, so each side is a long-lived child process that
imports its own (its root first on ``sys.path`` and ``PYTHONPATH``, checked by the file
the package was imported from) and runs what it is asked, one run at a time; the children
run the same measuring code (peers.py's ``run``: two epochs of a fresh loader, epoch 1
with construction on the clock, every key exactly once), so only the library differs.

Interleaved: per repeat, set, worker count and format, old and new run back to back, the
one that goes first alternating. An untimed pass per side and format first checks every
array against the source. Reported per column (set/workers/epoch) and format: the median
samples/s of each side and the median over repeats of new/old in the same repeat (paired
ratios), and the columns more than 5% slower.

    .venv/bin/python benchmarks/peers.py --baseline c2f772d           # ~12 min on 2 cores
    .venv/bin/python benchmarks/peers.py --baseline c2f772d --quick   # smoke run
    python benchmarks/peers_baseline.py --serve ROOT                  # a child (internal)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
from collections import Counter
from typing import IO, Any

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
FORMATS = ("wds_pipeline", "wds_pipeline-int16")  # float32 default, waveform_dtype="int16"
SLOWER = 0.95  # "no column more than 5% slower" (issue 20)


# ------------------------------------------------------------------ the sides


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", REPO, *args], check=True, capture_output=True, text=True).stdout.strip()


def unpack(rev: str, data_dir: str) -> tuple[str, str]:
    """(root, commit): REV's files in a folder of their own (reused when already there).
    ``git archive`` reads the object store only: no worktree is registered, nothing in
    the shared checkout is touched."""
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    root = os.path.join(data_dir, f"tree-{sha[:12]}")
    if not os.path.exists(os.path.join(root, ".unpacked")):
        shutil.rmtree(root, ignore_errors=True)
        tar = subprocess.run(["git", "-C", REPO, "archive", sha], check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            t.extractall(root, filter="data")
        open(os.path.join(root, ".unpacked"), "w").close()
    return root, sha


class Side:
    """One child process with one wds_pipeline imported, answering JSON requests."""

    def __init__(self, label: str, root: str) -> None:
        self.label = label
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", root],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._answer()

    def ask(self, **request: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def _answer(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.label} side's process exited (status {self.proc.wait()}); "
                               "its error is above")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve(root: str) -> int:
    """A child: imports the wds_pipeline under ``root``, then answers one request a line.
    Replies go to the original stdout; anything else printing there goes to stderr."""
    root = os.path.abspath(root)
    sys.path.insert(0, root)
    import wds_pipeline  # before peers, whose _common puts the working tree first on sys.path

    where = os.path.dirname(os.path.dirname(os.path.abspath(wds_pipeline.__file__)))
    if where != root:
        print(f"wds_pipeline imported from {where}, not {root}", file=sys.stderr)
        return 2
    import peers  # the measuring code: the working tree's, the same on both sides

    sys.path.insert(0, root)  # ahead of that working tree again, for any later import
    reply: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    reply.write(json.dumps({"wds_pipeline": wds_pipeline.__file__}) + "\n")
    sets: dict[str, Any] = {}
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "sets":
            sets = req["sets"]
            out: Any = None
        elif req["op"] == "digests":
            out = peers.digests(req["fmt"], req["path"])
        else:  # "run"
            s = sets[req["set"]]
            # No memory sampler: its start-up per run would double the run's length here.
            out = peers.run(req["fmt"], req["path"], req["workers"], Counter(s["keys"]), s["frames"], memory=False)
        reply.write(json.dumps(out, default=float) + "\n")
    return 0


# ------------------------------------------------------------------ measuring


def old_vs_new(args: argparse.Namespace) -> int:
    """peers.py --baseline: see the module's docstring. ``args`` are peers.py's."""
    import peers
    from _common import machine, write_json

    os.makedirs(args.data_dir, exist_ok=True)
    old_root, old_sha = unpack(args.baseline, args.data_dir)
    workers = [int(w) for w in args.workers.split(",")]
    formats = [f for f in args.formats.split(",") if f in FORMATS] or list(FORMATS)
    sets = {"clips": args.clips, "utts": args.utts}
    setup: dict[str, Any] = {
        **machine(), "batch": peers.BATCH, "workers": workers, "repeats": args.repeats, "formats": formats,
        "sets": {"clips": f"{args.clips} x 3 s", "utts": f"{args.utts} x 1-15 s"},
        "new": {"root": REPO, "head": git("rev-parse", "HEAD"),
                "uncommitted": git("status", "--porcelain", "--", "wds_pipeline") != ""},
        "old": {"root": old_root, "rev": args.baseline, "commit": old_sha},
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "reported": "median samples/s per side; new/old = median over repeats of the paired ratio",
    }
    refs, info, paths = {}, {}, {}
    for name, n in sets.items():
        paths[name] = os.path.join(args.data_dir, f"{name}-{n}")
        shutil.rmtree(paths[name], ignore_errors=True)
        peers.write_wds_pipeline(name, n, paths[name])
        refs[name] = {k: peers.digest(a) for k, a, _ in peers.samples(name, n)}
        info[name] = {"keys": list(refs[name]),
                      "frames": sum(len(a) for _, a, _ in peers.samples(name, n))}
    sides = {"new": Side("new", REPO), "old": Side("old", old_root)}
    try:
        for label, side in sides.items():
            setup[label]["wds_pipeline"] = side.info["wds_pipeline"]
            side.ask(op="sets", sets=info)
        print("setup:", setup, flush=True)
        checks = {f"{name}/{fmt}/{label}": peers.compare_digests(
                      side.ask(op="digests", fmt=fmt, path=paths[name]), refs[name])
                  for name in sets for fmt in formats for label, side in sides.items()}
        for key, why in checks.items():
            print(f"arrays {key}: {why or 'identical'}", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {}
        turn = 0
        for rep in range(args.repeats):
            for name in sets:
                for w in workers:
                    for fmt in formats:
                        # Alternate per loader AND per repeat: with an even number of
                        # loaders per repeat, turn alone gave each loader one fixed order.
                        order = ("new", "old") if (turn + rep) % 2 == 0 else ("old", "new")
                        turn += 1
                        for label in order:
                            r = sides[label].ask(op="run", fmt=fmt, path=paths[name], workers=w, set=name)
                            runs.setdefault(f"{name}/w{w}/{fmt}/{label}", []).append(r)
                        print(f"rep {rep} {name}/w{w}/{fmt}: " + ", ".join(
                            f"{label} ep{e} {runs[f'{name}/w{w}/{fmt}/{label}'][-1][f'epoch{e}']['samples_per_s'] or 0:,.0f}/s"
                            for label in order for e in (1, 2)), flush=True)
    finally:
        for side in sides.values():
            side.close()
    table = summarize(runs, checks, formats, sets, workers)
    slower = [f"{col} {fmt} {c['new_over_old']:.3f}x" for col, cells in table.items() for fmt, c in cells.items()
              if c["new_over_old"] is None or c["new_over_old"] < SLOWER]
    result = {"setup": {**setup, "load_after": [round(x, 2) for x in os.getloadavg()]},
              "array_checks": checks, "table": table, "slower_than_5_percent": slower, "runs": runs}
    write_json(args.json_out, result)
    print_table(table, formats, setup)
    print(f"columns more than 5% slower: {', '.join(slower) if slower else 'none'}")
    print(f"wrote {args.json_out}")
    return 0


def summarize(runs: dict[str, list[dict[str, Any]]], checks: dict[str, str | None], formats: list[str],
              sets: dict[str, int], workers: list[int]) -> dict[str, dict[str, Any]]:
    """Per column (set, workers, epoch) and format: each side's median samples/s and the
    median over repeats of new/old in the same repeat (None where a check failed)."""
    table: dict[str, dict[str, Any]] = {}
    for name in sets:
        for w in workers:
            for e in (1, 2):
                col: dict[str, Any] = {}
                for fmt in formats:
                    rates = {label: [r[f"epoch{e}"]["samples_per_s"] for r in runs[f"{name}/w{w}/{fmt}/{label}"]]
                             for label in ("new", "old")}
                    bad = [checks[f"{name}/{fmt}/{label}"] for label in rates if checks[f"{name}/{fmt}/{label}"]]
                    if bad or any(x is None for xs in rates.values() for x in xs):
                        col[fmt] = {"new": None, "old": None, "new_over_old": None,
                                    "why": "; ".join(str(b) for b in bad) or "a timed epoch lost or repeated keys"}
                        continue
                    ratios = [n / o for n, o in zip(rates["new"], rates["old"])]
                    col[fmt] = {"new": statistics.median(rates["new"]), "old": statistics.median(rates["old"]),
                                "new_over_old": statistics.median(ratios),
                                "ratio_range": [min(ratios), max(ratios)]}
                table[f"{name}/w{w}/epoch{e}"] = col
    return table


def print_table(table: dict[str, dict[str, Any]], formats: list[str], setup: dict[str, Any]) -> None:
    new, old = setup["new"], setup["old"]
    print(f"\nnew = working tree at {new['head'][:9]}{' + uncommitted changes' if new['uncommitted'] else ''}; "
          f"old = {old['rev']} ({old['commit'][:9]}); {setup['repeats']} interleaved repeats; "
          f"samples/s medians; new/old = median of paired ratios")
    print(f"| {'column':16} | " + " | ".join(f"{f} new | old | new/old" for f in formats) + " |")
    print("|---|" + "---:|---:|---:|" * len(formats))
    for col, cells in table.items():
        row = []
        for f in formats:
            c = cells[f]
            row.append("n/a | n/a | n/a" if c["new_over_old"] is None else
                       f"{c['new']:,.0f} | {c['old']:,.0f} | {c['new_over_old']:.3f}x")
        print(f"| {col:16} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="a child of peers.py --baseline (internal)")
    ap.add_argument("--serve", metavar="ROOT", required=True)
    raise SystemExit(serve(ap.parse_args().serve))
