"""Random access to shards that are whole files on this machine (local shards, complete
cached copies of remote ones).

Such a shard is memory-mapped once and its samples are located from their tar headers
(:class:`SampleTable`); a batch is then gathered straight from the page cache into the
batch buffer. Streams (a shard still downloading, a remote file read without a cache) go
through the shuffle buffer instead (``dataset.py``): there a sample must be copied out of
the bytes read before the next read reuses them. Here the file's pages are the buffer, so
a held sample is two integers, not a copy: less memory traffic per sample, and a fresh
worker touches no shuffle slab before its first batch.

Tables are kept between epochs (:class:`TableCache`), keyed by the file's identity, so a
later epoch parses no tar header again.
"""

from __future__ import annotations

import mmap
import os
from collections import OrderedDict

import numpy as np

from .. import format as fmt
from ..format.checksum import crc32
from .blocks import READ_BLOCK, sample_blocks
from .daemon import DaemonQueue

# Samples whose locations are kept across epochs, per worker: about 200 bytes each.
TABLE_CACHE_SAMPLES = 250_000

class SampleTable:
    """Where each sample of one shard file lies, filled for the spans read so far.

    Columnar: per field, each sample's payload offset in the file and size (-1: absent),
    so a block of regular headers is located with a few numpy operations. ``errors[i]``
    says why sample ``i`` cannot be read (the rest of its shard from a damaged block on,
    as a stream would stop there too)."""

    def __init__(self, n: int, stamp: tuple[int, int, int]) -> None:
        self.stamp = stamp  # (size, mtime_ns, inode) of the file it describes
        self.n = n
        self.located = np.zeros(n, dtype=bool)
        # Where the numpy path (locate_regular) found each key's header; -1: the member parser.
        self.key_pos = np.full(n, -1, dtype=np.int64)
        self.keys: dict[int, str] = {}  # each located sample's key, from either path
        self.columns: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.errors: dict[int, str] = {}
        # Plain 1-D int16 .npy audio: where its PCM starts in the file and its frame count
        # (-1: read it through the decoder); the class label parsed (NO_LABEL: parse it there).
        self.pcm_off = np.full(n, -1, dtype=np.int64)
        self.pcm_frames = np.zeros(n, dtype=np.int64)
        self.label = np.full(n, NOT_PARSED, dtype=np.int64)
        # Samples whose bytes matched their crc32 from the index in this process: each is
        # checked the first time it is gathered, not every epoch (the table lives as long as
        # the file keeps its stamp; a rewrite gets a fresh table, hence a fresh check).
        self.verified = bytearray(n)
        # Samples whose check is queued on the verifier thread (verifier.RangeChecks) of
        # process ``pending_pid``: in a forked copy no thread of its own will ever clear them.
        self.pending = bytearray(n)
        self.pending_pid = os.getpid()

    def column(self, field: str) -> tuple[np.ndarray, np.ndarray]:
        col = self.columns.get(field)
        if col is None:
            col = self.columns[field] = (np.full(self.n, -1, dtype=np.int64), np.zeros(self.n, dtype=np.int64))
        return col


class TableCache:
    """Sample tables of the shard files a worker has mapped, least recently used dropped
    first once they describe more than ``limit`` samples."""

    def __init__(self, limit: int = TABLE_CACHE_SAMPLES) -> None:
        self.limit = limit
        self._tables: OrderedDict[str, SampleTable] = OrderedDict()
        self._samples = 0

    def get(self, url: str, stamp: tuple[int, int, int], n: int) -> SampleTable:
        table = self._tables.get(url)
        if table is not None and table.stamp == stamp and table.n == n:
            self._tables.move_to_end(url)
            return table
        if table is not None:
            self._drop(url)
        table = SampleTable(n, stamp)
        self._tables[url] = table
        self._samples += n
        while self._samples > self.limit and len(self._tables) > 1:
            self._drop(next(iter(self._tables)))
        return table

    def _drop(self, url: str) -> None:
        self._samples -= self._tables.pop(url).n


class MappedShard:
    """One shard file mapped read-only, with the table of its samples."""

    def __init__(self, fd: int, url: str, table: SampleTable) -> None:
        self.url = url
        self.table = table
        size = self.size = table.stamp[0]
        self._mmap = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
        self.view = memoryview(self._mmap) if self._mmap is not None else memoryview(b"")
        self.raw = np.frombuffer(self.view, dtype=np.uint8)
        self.pcm = np.frombuffer(self.view, dtype=np.int16, count=size // 2)  # see SampleTable.pcm_off

    def locate(self, offsets: np.ndarray, a: int, b: int, index_size: int | None) -> None:
        """Fill the table for samples [a, b), block by block as a stream would read them.

        A damaged block raises :class:`~wds_pipeline.format.ShardFormatError` naming the
        shard; samples of earlier blocks stay located."""
        table = self.table
        if table.located[a:b].all():
            return
        # Never past the file's end now: a page of the mapping beyond it is a SIGBUS.
        size = min(len(self.view), self.file_size())
        ends = np.append(np.asarray(offsets[1:], dtype=np.int64), index_size if index_size else len(self.view))
        # The whole run at once when it is regular and intact (numpy calls per member
        # position, not per block); block by block otherwise, to stop where a stream would.
        if ends[b - 1] <= size and not table.located[a:b].any():
            starts = np.asarray(offsets[a:b], dtype=np.int64)
            if locate_regular(self.raw, table, starts, ends[a:b], a, self.url):
                return
        for j, k in sample_blocks(offsets, ends, a, b, READ_BLOCK):
            start = offsets[j]
            end = int(ends[k - 1])
            if end > size:
                raise fmt.ShardFormatError(
                    f"{self.url}: truncated: {size} bytes on disk, the index needs {end}; "
                    "the shard is incomplete or does not match its index"
                )
            if not table.located[j:k].all():
                starts = np.asarray(offsets[j:k], dtype=np.int64)
                if not locate_regular(self.raw, table, starts, ends[j:k], j, self.url):
                    self._locate_block(start, end, j, k)

    def _locate_block(self, start: int, end: int, j: int, k: int) -> None:
        """Any tar layout (long names, pax headers, other writers' members), member by
        member; the precise error for a damaged block comes from here."""
        members = fmt.buffer_members(self.view[start:end], base=start, source=self.url)
        table = self.table
        found: list[tuple[str, list[tuple[str, int, int]]]] = []
        for name, data, size in members:
            key, field_name = fmt.split_member_name(name)
            if not found or found[-1][0] != key:
                found.append((key, []))
            found[-1][1].append((field_name, start + data, size))
        if len(found) != k - j:
            raise fmt.ShardFormatError(
                f"{self.url}: found {len(found)} samples at byte {start} where the "
                f"index lists {k - j}; the shard does not match its index"
            )
        for i, (key, spans) in enumerate(found, start=j):
            table.keys[i] = key
            for field_name, off, size in spans:
                offs, sizes = table.column(field_name)
                offs[i], sizes[i] = off, size
        table.located[j:k] = True

    def release(self, start: int, end: int) -> None:
        """Drop this process's mapping of the whole pages in bytes [start, end) once their
        samples are in batches: the pages stay in the page cache, but no longer count in
        this worker's RSS, which would otherwise grow with every sample of every shard
        still mapped (twice the old shuffle buffer's footprint in the loader benchmark).
        Read again, they fault back in from the page cache."""
        if self._mmap is None:
            return
        start = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
        end = min(end, len(self._mmap))
        end -= end % mmap.PAGESIZE
        if end > start:
            self._mmap.madvise(mmap.MADV_DONTNEED, start, end - start)

    def close(self) -> bool:
        """Unmap the file now. False, with the mapping left to go when its last view does,
        while a view of it is still alive (a sample's array, a slice a crc32 is reading):
        Python refuses to unmap memory that something still points into, so this never
        pulls pages from under a reader. Only for a shard nothing will read again: its
        views are released either way."""
        self.raw = self.pcm = np.empty(0, dtype=np.uint8)  # this object's own views of the mapping
        try:
            self.view.release()
            if self._mmap is not None:
                self._mmap.close()
        except BufferError:
            return False
        return True

    def file_size(self) -> int:
        """The file's size now (fstat of the mapping's own descriptor). Smaller than
        :attr:`size` when the file was truncated after it was mapped: touching a page of
        the mapping past the new end kills the process with SIGBUS, so whoever reads
        the mapping checks the bytes it is about to touch against this first."""
        return self._mmap.size() if self._mmap is not None else 0

    def end(self, offsets: np.ndarray, i: int) -> int:
        """Where sample ``i``'s bytes end (its crc32 span): the next sample's offset, or
        for the last sample the end of its last member's blocks (from the table, which
        located it)."""
        if i + 1 < len(offsets):
            return int(offsets[i + 1])
        end = int(offsets[i])
        for offs, sizes in self.table.columns.values():
            off = int(offs[i])
            if off >= 0:
                end = max(end, off + -(-int(sizes[i]) // fmt.BLOCK) * fmt.BLOCK)
        return end

    def crc_problem(self, offsets: np.ndarray, crcs: np.ndarray, i: int) -> str | None:
        """Sample ``i``'s bytes against its crc32 from the index (once per table): None
        when they match, else what is wrong, naming the shard, sample and key. The caller
        has checked that the file still holds the sample's bytes (:meth:`file_size`)."""
        start, end = offsets[i], self.end(offsets, i)
        got = crc32(self.view[start:end])
        if got == crcs[i]:
            self.table.verified[i] = 1
            return None
        return (
            f"{self.url}: sample {i} (key {self.key(i)!r} in its header, bytes {start}-{end}) has crc32 "
            f"{got}, the index says {crcs[i]}: the shard's bytes differ from those indexed "
            "(damaged on the storage, or the file was replaced or changed since the build); "
            "restore the shard, or rebuild it and its index (wds-pipeline verify checks every shard)"
        )

    def fail(self, a: int, b: int, reason: str) -> None:
        """Samples [a, b) not yet located cannot be read (on_corrupt_shard='skip')."""
        for i in np.flatnonzero(~self.table.located[a:b]):
            self.table.errors[a + int(i)] = reason

    def key(self, i: int) -> str:
        return self.table.keys[i]  # decoded as the sample was located

    def fields(self, i: int) -> dict[str, memoryview]:
        """Sample ``i``'s payloads by field: zero-copy views of the mapped file."""
        view = self.view
        out = {}
        for name, (offs, sizes) in self.table.columns.items():
            off = int(offs[i])
            if off >= 0:
                out[name] = view[off : off + int(sizes[i])]
        return out


class Unmapper:
    """Unmaps the shards a loader is done with on a thread of its own (one per process).

    Unmapping a shard whose pages were read tears down a page-table entry per 4 KB: ~1.6 ms
    per 49 MB shard on the benchmark VM, 10-13 ms of a ``num_workers=0`` epoch over 8 shards,
    paid on the loader's thread between two batches when the last reference went. Handed
    here, it runs beside the loop: measured, 8 such closes on this thread slowed a
    pure-Python loop on the main one by 0.3 ms, against 9.7 ms when closed inline. A shard is
    handed over only after the batch that last read it is collated, so normally nothing
    still views it; if something does, ``close`` leaves it mapped and it goes with its last
    view, as before."""

    def __init__(self) -> None:
        self._shards: DaemonQueue[MappedShard] = DaemonQueue(_close, "wds-unmap")

    def retire(self, shards: list[MappedShard]) -> None:
        """Unmap ``shards`` (which no one will read again) soon, on the thread; empties the list."""
        for m in shards:
            self._shards.put(m)
        shards.clear()


def _close(m: MappedShard) -> None:
    m.close()  # looked up per call, as for any method call on the shard


UNMAPPER = Unmapper()

_NAME = np.arange(100)
_MAX_MEMBERS = 64  # per sample; more is not a shard this format writes


def _leading_digits(rows: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
    """(value, count) of the leading digits in ``base`` (8 or 10) of each row of bytes."""
    d = rows.astype(np.int64) - 48
    is_digit = (d >= 0) & (d < base)
    count = np.where(is_digit.all(axis=1), d.shape[1], is_digit.argmin(axis=1))
    if len(count) and (count == count[0]).all():
        # Every row as wide (a writer's fixed-width fields): one product with the place
        # values, not a mask per digit (most of a fresh shard's locate time).
        width = int(count[0])
        return d[:, :width] @ (np.int64(base) ** np.arange(width - 1, -1, -1, dtype=np.int64)), count
    inside = np.arange(d.shape[1]) < count[:, None]
    powers = np.where(inside, count[:, None] - 1 - np.arange(d.shape[1]), 0)
    return (np.where(inside, d, 0) * (np.int64(base) ** powers)).sum(axis=1), count


def _octal(fields: np.ndarray) -> np.ndarray | None:
    """Numeric header fields (one row each): octal digits, then only NULs or spaces.
    None when any row is otherwise (base-256 sizes, leading spaces): the member-by-member
    parser reads those."""
    value, count = _leading_digits(fields, 8)
    if len(count) and (count == count[0]).all():  # fixed-width fields: a slice, not a mask
        rest = fields[:, int(count[0]) :]
    else:
        rest = fields[np.arange(fields.shape[1]) >= count[:, None]]
    if (count == 0).any() or ((rest != 0) & (rest != 32)).any():
        return None
    return value


def locate_regular(raw: np.ndarray, table: SampleTable, starts: np.ndarray, ends: np.ndarray,
                   j: int, source: str) -> bool:
    """Locate samples ``j, j+1, ...`` (headers at ``starts``, bytes up to ``ends``) with
    numpy, one member of every sample at a time, when every header is a plain ustar one
    (regular file, short name without a folder, octal size, valid checksum) and every
    sample's members fill its bytes exactly. False, with nothing written, on anything
    else: the member-by-member parser then handles it, or names the damage."""
    n = len(starts)
    if (starts % fmt.BLOCK).any():
        return False  # headers sit on 512-byte blocks in any tar
    pos = starts.copy()
    last = ends[-1] >= len(raw)  # the shard's last sample: end blocks follow it
    # The file as rows of 512-byte blocks: a header is one row (a row gather, not a
    # fancy index per byte).
    blocks = raw[: len(raw) // fmt.BLOCK * fmt.BLOCK].reshape(-1, fmt.BLOCK)
    members: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    active = np.ones(n, dtype=bool)
    key_len = None
    first_names = None
    for _ in range(_MAX_MEMBERS):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        p = pos[idx]
        if (p + fmt.BLOCK > len(raw)).any():
            return False
        headers = blocks[p // fmt.BLOCK]
        zero = ~headers.any(axis=1)
        if zero.any():  # end-of-archive blocks: only right after the shard's last sample
            if not (last and zero.sum() == 1 and idx[zero][0] == n - 1 and members):
                return False
            active[n - 1] = False
            keep = ~zero
            idx, p, headers = idx[keep], p[keep], headers[keep]
            if not len(idx):
                break
        size = _octal(headers[:, 124:136])
        checksum = _octal(headers[:, 148:156])
        if size is None or checksum is None:
            return False
        typeflag = headers[:, 156]
        if ((typeflag != 48) & (typeflag != 0)).any() or headers[:, 345].any():
            return False  # not a regular file, or a ustar prefix (folder) in the name
        # uint32 sums (512 bytes of at most 255 cannot overflow): half the time of int64's.
        computed = (headers.sum(axis=1, dtype=np.uint32).astype(np.int64)
                    - headers[:, 148:156].sum(axis=1, dtype=np.uint32) + 256)
        if (checksum != computed).any():
            return False
        names = headers[:, :100]
        length = np.where(names.all(axis=1), 100, (names == 0).argmax(axis=1))
        # Only the columns up to the longest name: names are mostly far shorter than 100.
        width = int(length.max())
        names = names[:, :width]
        dot_mask = (names == 46) & (_NAME[:width] < length[:, None])
        has_dot = dot_mask.any(axis=1)
        in_name = _NAME[:width] < length[:, None]
        if not has_dot.all() or ((names == 47) & in_name).any() or ((names >= 128) & in_name).any():
            return False  # a member without a field, in a folder, or a name beyond ASCII
        dot = dot_mask.argmax(axis=1)
        if first_names is None:
            if len(idx) != n:
                return False
            key_len, first_names = dot, names
        else:
            # A key ends before both names' widths (dot < length <= width for each).
            kw = min(width, first_names.shape[1])
            if key_len is None or ((dot != key_len[idx]) | ((names[:, :kw] != first_names[idx, :kw])
                                                            & (_NAME[:kw] < dot[:, None])).any(axis=1)).any():
                return False  # members of one sample must share its key
        members.append((idx, p + fmt.BLOCK, size, dot, names, length))
        nxt = p + fmt.BLOCK + (size + fmt.BLOCK - 1) // fmt.BLOCK * fmt.BLOCK
        over = nxt > ends[idx]
        if over.any():
            return False
        pos[idx] = nxt
        done = nxt == ends[idx]
        active[idx[done]] = False
    else:
        return False
    if active.any() or key_len is None or first_names is None:
        return False
    for idx, data, size, dot, names, length in members:
        # One field name per distinct suffix: usually a single one per member position.
        cols = _NAME[: names.shape[1]]
        suffix = np.where((cols > dot[:, None]) & (cols < length[:, None]), names, 0).astype(np.uint8)
        same = (suffix == suffix[0]).all(axis=1)
        groups = [(suffix[0], same)]
        if not same.all():  # members in another order in some samples: group them by name
            rest = np.flatnonzero(~same)
            by_name: dict[bytes, list[int]] = {}
            for r in rest.tolist():
                by_name.setdefault(suffix[r].tobytes(), []).append(r)
            for rows in by_name.values():
                sel = np.zeros(len(idx), dtype=bool)
                sel[rows] = True
                groups.append((suffix[rows[0]], sel))
        for row, sel in groups:
            offs, sizes = table.column(bytes(row[row != 0]).decode("utf-8", "replace"))
            offs[idx[sel] + j] = data[sel]
            sizes[idx[sel] + j] = size[sel]
    table.key_pos[j : j + n] = starts
    # Every key decoded at once (ASCII, checked above), not one bytes() and decode() per
    # sample as it is gathered: 'S' items end at their first NUL, the end of the key here.
    width = int(key_len.max())
    keys: list[str] = [""] * n
    if width:
        key_bytes = np.where(_NAME[:width] < key_len[:, None], first_names[:, :width], 0).astype(np.uint8)
        keys = key_bytes.view(f"S{width}").ravel().astype(f"U{width}").tolist()
    table.keys.update(zip(range(j, j + n), keys))
    _index_pcm(raw, table, j, n)
    _index_labels(raw, table, j, n)
    table.located[j : j + n] = True
    return True


NOT_PARSED = -2  # SampleTable.label of a sample whose class label the decoder must read
_NPY_V1 = np.frombuffer(b"\x93NUMPY\x01\x00", dtype=np.uint8)
_I2_DICT = np.frombuffer(b"{'descr': '<i2', 'fortran_order': False, 'shape': (", dtype=np.uint8)
_SHAPE = 10 + len(_I2_DICT)  # where the frame count's digits start in the payload
_HEAD = np.arange(_SHAPE + 14)


def _heads(raw: np.ndarray, offs: np.ndarray, width: int) -> np.ndarray:
    """The first ``width`` bytes at each of ``offs`` (each + ``width`` within ``raw``), one
    row each. A member's data starts on a 512-byte block, so where every offset does and the
    rows stay inside their blocks, a gather of whole blocks: 9.5 us for 500 samples against
    59 us for one index per byte."""
    if width <= fmt.BLOCK and not (offs % fmt.BLOCK).any() and (offs + fmt.BLOCK <= len(raw)).all():
        return raw[: len(raw) // fmt.BLOCK * fmt.BLOCK].reshape(-1, fmt.BLOCK)[offs // fmt.BLOCK, :width]
    return raw[offs[:, None] + np.arange(width)]


def _index_pcm(raw: np.ndarray, table: SampleTable, j: int, n: int) -> None:
    """Samples j..j+n whose audio.npy is version 1.0, '<i2', C order, 1-D, its shape equal
    to its byte count: record where the PCM starts, so a batch takes a slice of the mapped
    file instead of decoding the member (checked as strictly as the decoder does)."""
    col = table.columns.get(fmt.AUDIO_NPY)
    if col is None:
        return
    offs, sizes = col[0][j : j + n], col[1][j : j + n]
    rows = np.flatnonzero((offs >= 0) & (offs + len(_HEAD) <= len(raw)))
    if not len(rows):
        return
    off, size = offs[rows], sizes[rows]
    head = _heads(raw, off, len(_HEAD))
    hlen = head[:, 8].astype(np.int64) + 256 * head[:, 9].astype(np.int64)
    frames, count = _leading_digits(head[:, _SHAPE:], 10)
    after = head[np.arange(len(rows)), np.minimum(_SHAPE + count, len(_HEAD) - 2)]
    close = head[np.arange(len(rows)), np.minimum(_SHAPE + count + 1, len(_HEAD) - 1)]
    data = size - 10 - hlen
    ok = ((head[:, :8] == _NPY_V1).all(axis=1) & (head[:, 10:_SHAPE] == _I2_DICT).all(axis=1)
          & (count > 0) & (after == 44) & (close == 41) & (data >= 0) & (data == 2 * frames)
          & ((off + 10 + hlen) % 2 == 0))
    table.pcm_off[j + rows[ok]] = off[ok] + 10 + hlen[ok]
    table.pcm_frames[j + rows[ok]] = frames[ok]


def _index_labels(raw: np.ndarray, table: SampleTable, j: int, n: int) -> None:
    """Class labels written as plain decimal digits (``cls``), parsed for samples j..j+n;
    -1 where a sample has no ``cls``, as the decoder gives."""
    col = table.columns.get(fmt.CLS)
    if col is None:
        table.label[j : j + n] = -1
        return
    offs, sizes = col[0][j : j + n], col[1][j : j + n]
    table.label[j : j + n] = np.where(offs < 0, -1, NOT_PARSED)
    rows = np.flatnonzero((offs >= 0) & (sizes > 0) & (sizes <= 18) & (offs + 18 <= len(raw)))
    if not len(rows):
        return
    value, count = _leading_digits(_heads(raw, offs[rows], 18), 10)
    ok = count == sizes[rows]
    table.label[j + rows[ok]] = value[ok]


def file_stamp(fd: int) -> tuple[int, int, int]:
    st = os.fstat(fd)
    return st.st_size, st.st_mtime_ns, st.st_ino
