"""Every write of file contents goes through the storage layer (issue 19, "Done when").

A raw file's ``write`` may store only a prefix of what it is given (a nearly full disk, a
FUSE mount), and ``writelines``/a bare ``f.write`` ignore that: a truncated file was
published under its final name. The one path: ``storage.write_all`` for contents,
``storage.write_bytes_atomic``/``storage.commit_file`` to publish (temp file, fsync,
rename). This test reads the package's source and refuses, outside
``wds_pipeline/storage/``, any file opened for writing, any ``writelines``, and any
library call that writes a file by itself (``json.dump`` to a file, ``np.save``,
``torch.save`` or ``soundfile.write`` to a path, ``Path.write_text``, ``shutil.copy``,
``os.write``...). Writing into an in-memory buffer (``io.BytesIO``/``io.StringIO``) is
fine: its bytes are then written through the storage layer. Each exception is listed in
ALLOWED with the reason it is safe.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "wds_pipeline"
STORAGE = "storage/"  # the storage layer itself: the one place that opens files to write

# (file relative to wds_pipeline/, enclosing function) -> why its write is safe.
ALLOWED: dict[tuple[str, str], str] = {
    ("readpath/eviction.py", "BoundedCacheFiles._reserve"):
        "creates the cache's sparse temp file (truncate, no contents written): a reservation",
    ("readpath/download.py", "fetch_into"):
        "the cache's own temp file: each block through storage.write_all (HashingWriter), "
        "fsync, verified, then renamed into data/ by _ensure; a full disk drops the entry",
    ("builder/staging.py", "staged_shard"):
        "the staged temp shard: every byte through storage.write_all (ShardWriter's "
        "HashingWriter), published only by storage.commit_file (fsync, rename)",
    ("testing.py", "write_synthetic_dataset"):
        "synthetic test shards, written as the builder writes them: a temp file through "
        "storage.write_all, published by storage.commit_file",
    ("train/metrics.py", "AppendFile.append"):
        "an append-only log (metrics.jsonl, TensorBoard events): each record through "
        "storage.write_all, a record cut short by a failure is cut off on the next append",
    ("train/trainer.py", "Trainer._fit"):
        "run.keys_log, a debugging log of the keys of each batch: a buffered text file "
        "(Python's buffered writer retries short writes and raises on ENOSPC); appended, "
        "never published by rename",
}

OPEN_FUNCS = {"open", "io.open", "os.fdopen", "builtins.open"}
WRITE_MODE_CHARS = set("wax+")
OS_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}
# Calls that write a file by themselves, by dotted name (the target is the given argument).
SELF_WRITING = {
    "json.dump": 1, "yaml.dump": 1, "yaml.safe_dump": 1, "pickle.dump": 1,
    "np.save": 0, "np.savez": 0, "np.savez_compressed": 0, "numpy.save": 0,
    "torch.save": 1, "sf.write": 0, "soundfile.write": 0,
}
ALWAYS_REFUSED = {"os.write", "os.pwrite", "os.writev", "os.pwritev", "shutil.copy",
                  "shutil.copy2", "shutil.copyfile", "shutil.copyfileobj", "shutil.move"}
REFUSED_METHODS = {"writelines", "write_text", "write_bytes", "tofile"}
MEMORY_BUFFERS = {"io.BytesIO", "io.StringIO", "BytesIO", "StringIO"}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def literal_mode(call: ast.Call) -> str | None:
    """The mode string of an open-like call, "" when it has none (read), None if unknown."""
    mode: ast.AST | None = call.args[1] if len(call.args) > 1 else None
    for kw in call.keywords:
        if kw.arg == "mode":
            mode = kw.value
    if mode is None:
        return ""
    if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
        return mode.value
    return None


class Finder(ast.NodeVisitor):
    def __init__(self, rel: str) -> None:
        self.rel = rel
        self.scope: list[str] = []
        self.buffers: list[set[str]] = [set()]  # names bound to in-memory buffers, per function
        self.found: list[tuple[str, str, int, str]] = []

    def _func(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.buffers.append(set())
        self.generic_visit(node)
        self.buffers.pop()
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _func

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_Assign(self, node: ast.Assign) -> None:
        if isinstance(node.value, ast.Call) and dotted(node.value.func) in MEMORY_BUFFERS:
            for t in node.targets:
                if isinstance(t, ast.Name):
                    self.buffers[-1].add(t.id)
        self.generic_visit(node)

    def _in_memory(self, arg: ast.AST) -> bool:
        if isinstance(arg, ast.Call) and dotted(arg.func) in MEMORY_BUFFERS:
            return True
        return isinstance(arg, ast.Name) and arg.id in self.buffers[-1]

    def _flag(self, node: ast.AST, what: str) -> None:
        func = ".".join(self.scope) or "<module>"
        self.found.append((self.rel, func, node.lineno, what))

    def visit_Call(self, node: ast.Call) -> None:
        name = dotted(node.func)
        attr = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        outside = not self.rel.startswith(STORAGE)
        if name in OPEN_FUNCS or (attr == "open" and name != "os.open"):
            mode = literal_mode(node)
            target = node.args[0] if node.args else None
            # open() with a mode not written out could write; another object's .open (an
            # fsspec filesystem's, av's) counts when its mode is a literal that writes.
            unknown = mode is None and name in OPEN_FUNCS
            writes = unknown or bool(mode and WRITE_MODE_CHARS & set(mode))
            if outside and writes and not (target is not None and self._in_memory(target)):
                self._flag(node, f"{name}(..., mode={mode!r})")
        elif name == "os.open" and outside and len(node.args) > 1:
            flags = {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
            if flags & OS_WRITE_FLAGS:
                self._flag(node, f"os.open(..., {sorted(flags & OS_WRITE_FLAGS)})")
        elif name in SELF_WRITING:
            i = SELF_WRITING[name]
            target = node.args[i] if len(node.args) > i else None
            if target is not None and not self._in_memory(target):
                self._flag(node, f"{name} to a file")
        elif name in ALWAYS_REFUSED:
            self._flag(node, name)
        elif attr in REFUSED_METHODS:
            self._flag(node, f".{attr}()")
        self.generic_visit(node)


def findings() -> Iterator[tuple[str, str, int, str]]:
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        finder = Finder(rel)
        finder.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        yield from finder.found


def test_every_file_write_goes_through_the_storage_layer():
    bad = [f"wds_pipeline/{rel}:{line} in {func}: {what}"
           for rel, func, line, what in findings() if (rel, func) not in ALLOWED]
    assert not bad, ("writes outside the storage layer (use storage.write_all to write, "
                     "storage.write_bytes_atomic / storage.commit_file to publish; or add "
                     "the place to ALLOWED with the reason it is safe):\n" + "\n".join(bad))


def test_the_checker_sees_each_kind_of_write(tmp_path):
    # The rule is only as good as what it sees: each of these must be found.
    src = '''
import io, json, os, shutil
import numpy as np
def f(path, fs, data):
    with open(path, "w") as a: a.write("x")
    b = open(path, mode="ab")
    c = os.fdopen(3, "r+b")
    d = fs.open(path, "wb")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    json.dump({}, a)
    np.save(path, data)
    a.writelines(["x"])
    os.write(fd, b"x")
    shutil.copyfile(path, path)
    buf = io.BytesIO()
    np.save(buf, data)          # fine: in memory
    json.dump({}, io.StringIO())  # fine: in memory
    open(path, "rb")            # fine: a read
'''
    finder = Finder("somewhere.py")
    finder.visit(ast.parse(src))
    whats = [what for _, _, _, what in finder.found]
    assert whats == [
        "open(..., mode='w')", "open(..., mode='ab')", "os.fdopen(..., mode='r+b')",
        "fs.open(..., mode='wb')", "os.open(..., ['O_CREAT', 'O_WRONLY'])",
        "json.dump to a file", "np.save to a file", ".writelines()", "os.write",
        "shutil.copyfile",
    ]
