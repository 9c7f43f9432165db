"""Reading a CSV trace (arrived_at, num_prefill_tokens, num_decode_tokens): once per process.

Why it looks like this: a production trace can have 10M rows, and every env reset in every worker
replays it. So a file is parsed once per process (cached by path, mtime and size), only the trace
columns, as numbers, in bounded chunks into arrays sized once from the line count (float64 times,
int32 lengths: 16 bytes a row); a replay only slices them. A file that does not parse as numbers
is re-read as text, so the error still names the first bad row, column and value.
"""

from __future__ import annotations

import math
import os
import stat
from collections import OrderedDict
from typing import Any, NamedTuple, Optional

import numpy as np
import pandas as pd

__all__ = ["TraceError", "TraceFile", "read_trace_file", "clear_trace_cache", "check_path", "TRACE_COLUMNS",
           "MAX_LENGTH"]

TRACE_COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")  # arrived_at is optional
MAX_LENGTH = int(np.iinfo(np.int32).max)  # lengths are stored as int32
_CHUNK_ROWS = 500_000  # bounds the parser's working memory, not the result
_CACHED_FILES = 2


class TraceError(ValueError):
    """A trace file or replay option is unusable; one line naming the key, or the file and row/column."""


class TraceFile(NamedTuple):
    """A parsed trace file (read-only arrays); arrived_at is None for a length-only trace."""

    path: str
    arrived_at: Optional[np.ndarray]
    num_prefill_tokens: np.ndarray
    num_decode_tokens: np.ndarray


class _NotNumeric(Exception):
    """The fast numeric parse failed; re-read as text to name the bad cell."""


_CACHE: "OrderedDict[tuple, TraceFile]" = OrderedDict()


def check_path(path: str) -> tuple:
    """The cache key (real path, mtime, size) of an existing regular file."""
    try:
        st = os.stat(path)
    except OSError:
        raise TraceError(f"trace workload: 'path' file not found: {path}") from None
    if not stat.S_ISREG(st.st_mode):
        raise TraceError(f"trace workload: 'path' is not a file: {path}")
    return os.path.realpath(path), st.st_mtime_ns, st.st_size


def read_trace_file(path: str | os.PathLike) -> TraceFile:
    """The parsed file, from this process's cache unless the file changed (mtime or size)."""
    path = os.fspath(path)
    key = check_path(path)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    parsed = _parse_csv(path)
    _CACHE[key] = parsed
    while len(_CACHE) > _CACHED_FILES:
        _CACHE.popitem(last=False)
    return parsed


def clear_trace_cache() -> None:
    _CACHE.clear()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _pandas(path: str, **kw: Any):
    try:
        return pd.read_csv(path, skipinitialspace=True, **kw)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise TraceError(f"{path}: cannot parse CSV: {_one_line(e)}") from None


def _parse_csv(path: str) -> TraceFile:
    header = {str(c).strip(): c for c in _pandas(path, nrows=0).columns}
    missing = [c for c in TRACE_COLUMNS[1:] if c not in header]
    if missing:
        raise TraceError(f"{path}: missing column(s) {missing}; found columns {list(header)}")
    names = [c for c in TRACE_COLUMNS if c in header]
    try:
        cols = _fill(path, header, names, as_text=False)
    except _NotNumeric:
        cols = _fill(path, header, names, as_text=True)
    if len(cols["num_prefill_tokens"]) == 0:
        raise TraceError(f"{path}: trace has no data rows")
    return TraceFile(path, cols.get("arrived_at"), cols["num_prefill_tokens"], cols["num_decode_tokens"])


def _count_lines(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            n += block.count(b"\n")
    return n + 1


def _fill(path: str, header: dict, names: list[str], as_text: bool) -> dict[str, np.ndarray]:
    """Parse the columns chunk by chunk into arrays sized once from the line count."""
    capacity = _count_lines(path)  # >= data rows (the header and blank lines are lines too)
    out = {c: np.empty(capacity, np.float64 if c == "arrived_at" else np.int32) for c in names}
    kw: dict[str, Any] = {"dtype": str, "keep_default_na": False} if as_text else {
        "dtype": {header[c]: np.float64 for c in names}}
    n, last_time = 0, None
    with _pandas(path, usecols=[header[c] for c in names], chunksize=_CHUNK_ROWS, **kw) as chunks:
        try:
            for chunk in chunks:
                vals = _check_chunk(path, chunk.rename(columns=lambda c: str(c).strip()), names, n,
                                    last_time, as_text)
                m = len(chunk)
                if n + m > capacity:  # a line ending numpy did not count (a lone "\r")
                    capacity = max(2 * capacity, n + m)
                    out = {c: np.resize(a, capacity) for c, a in out.items()}
                for c in names:
                    out[c][n:n + m] = vals[c]
                n += m
                if "arrived_at" in vals and m:
                    last_time = float(vals["arrived_at"][-1])
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise TraceError(f"{path}: cannot parse CSV: {_one_line(e)}") from None
        except ValueError as e:
            if as_text or isinstance(e, TraceError):
                raise
            raise _NotNumeric() from None
    for c in names:
        a = out[c][:n] if n >= 0.99 * capacity else out[c][:n].copy()
        a.setflags(write=False)
        out[c] = a
    return out


def _check_chunk(path: str, chunk: pd.DataFrame, names: list[str], offset: int,
                 last_time: Optional[float], as_text: bool) -> dict[str, np.ndarray]:
    """Numeric, validated columns of one chunk; a bad cell raises naming its row (1 = first data row).

    Parsed as numbers, a missing or non-numeric cell raises `_NotNumeric` (the text re-read names it)."""
    vals: dict[str, np.ndarray] = {}
    for c in names:
        raw = chunk[c].str.strip() if as_text else None
        v = (pd.to_numeric(raw, errors="coerce") if as_text else chunk[c]).to_numpy(dtype=np.float64)
        checks = [(~np.isfinite(v), "non-numeric value")]
        if c == "arrived_at":
            prev = np.concatenate([[-math.inf if last_time is None else last_time], v[:-1]])
            checks += [(v < 0, "negative time"), (v < prev, "times not sorted, earlier than the previous row")]
        else:
            checks.append(((v < 1) | (v > MAX_LENGTH) | (v != np.floor(v)),
                           f"length must be an integer in [1, {MAX_LENGTH}]"))
        for bad, what in checks:
            if bad.any():
                i = int(np.argmax(bad))
                if raw is None and what == "non-numeric value":
                    raise _NotNumeric()
                shown = repr(raw.iloc[i]) if raw is not None else np.format_float_positional(v[i], trim="-")
                raise TraceError(f"{path}: row {offset + i + 1}, column '{c}': {what}, got {shown}")
        vals[c] = v
    return vals
