"""Reading a trace file once per process: a CSV (arrived_at, num_prefill_tokens, num_decode_tokens), a
session CSV (a session_id column: multi-turn chats), or a Mooncake JSONL (prefix block hashes).

Why it looks like this: a production trace can have 10M rows, and every env reset in every worker
replays it. So a file is parsed once per process (cached by path, mtime, size and format), only the
trace columns, as numbers, in bounded chunks into arrays sized once from the line count (float64
times, int32 lengths: 16 bytes a row); a replay only slices them. A file that does not parse as
numbers is re-read as text, so the error still names the first bad row, column and value.

Formats (`format`: auto picks jsonl for a `.jsonl` file, else csv):

* csv: the columns above (arrived_at optional: a length-only trace). With a `session_id` column it is a
  *session trace*: rows are chat turns, in order within each session, and `num_new_tokens` replaces
  num_prefill_tokens: a turn's prompt is its session's previous prompts and outputs plus its new tokens,
  and its prefix hashes (blocks of PREFIX_BLOCK_TOKENS) say so.
* jsonl: the Mooncake trace format (Qin et al., FAST'25; kvcache-ai/Mooncake): one JSON object a line,
  `timestamp` (ms), `input_length`, `output_length`, `hash_ids` (one id per 512-token block of the
  prompt, equal ids = the same prefix), replayed as seconds with the ids as prefix hashes.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections import OrderedDict
from typing import Any, NamedTuple, Optional

import numpy as np
import pandas as pd

from vidur_ppo.sim.prefix_hash import PREFIX_BLOCK_TOKENS, block_hashes, key_of, mix

__all__ = ["TraceError", "TraceFile", "read_trace_file", "clear_trace_cache", "check_path", "TRACE_COLUMNS",
           "MAX_LENGTH", "FORMATS", "SESSION_COLUMNS", "MOONCAKE_KEYS", "MOONCAKE_BLOCK_TOKENS"]

TRACE_COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")  # arrived_at is optional
#: a session trace's columns (arrived_at optional); rows of a session are its turns, in order
SESSION_COLUMNS = ("arrived_at", "session_id", "num_new_tokens", "num_decode_tokens")
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length", "hash_ids")  # timestamp in ms
MOONCAKE_BLOCK_TOKENS = 512  # the Mooncake traces' hash_ids blocks
FORMATS = ("auto", "csv", "jsonl")  # auto: jsonl for a .jsonl file, else csv
MAX_LENGTH = int(np.iinfo(np.int32).max)  # lengths are stored as int32
_CHUNK_ROWS = 500_000  # bounds the parser's working memory, not the result
_CACHED_FILES = 2


class TraceError(ValueError):
    """A trace file or replay option is unusable; one line naming the key, or the file and row/column."""


class TraceFile(NamedTuple):
    """A parsed trace file (read-only arrays); arrived_at is None for a length-only trace, prefix_hashes
    (per row, as `Trace.prefix_hashes`) None for a file without them."""

    path: str
    arrived_at: Optional[np.ndarray]
    num_prefill_tokens: np.ndarray
    num_decode_tokens: np.ndarray
    prefix_hashes: Optional[tuple] = None
    prefix_block_tokens: int = PREFIX_BLOCK_TOKENS


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


def file_format(path: str, format: str = "auto") -> str:
    """csv or jsonl: `format`, or for auto the file's suffix."""
    if format not in FORMATS:
        raise TraceError(f"trace workload: 'format' must be one of {list(FORMATS)}, got {format!r}")
    if format == "auto":
        return "jsonl" if str(path).lower().endswith(".jsonl") else "csv"
    return format


def read_trace_file(path: str | os.PathLike, format: str = "auto") -> TraceFile:
    """The parsed file, from this process's cache unless the file changed (mtime or size)."""
    path = os.fspath(path)
    fmt = file_format(path, format)
    key = (*check_path(path), fmt)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    parsed = _parse_jsonl(path) if fmt == "jsonl" else _parse_csv(path)
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
    sessions = "session_id" in header
    lengths = ("num_new_tokens", "num_decode_tokens") if sessions else TRACE_COLUMNS[1:]
    missing = [c for c in lengths if c not in header]
    if missing:
        what = " (a session trace, with a session_id column, gives each turn's new prompt tokens)" if sessions else ""
        raise TraceError(f"{path}: missing column(s) {missing}{what}; found columns {list(header)}")
    if sessions and "num_prefill_tokens" in header:
        raise TraceError(f"{path}: a session trace (session_id column) takes 'num_new_tokens', the turn's new "
                         "prompt tokens (its prompt is the session's history plus them), not 'num_prefill_tokens'")
    names = [c for c in ("arrived_at", *lengths) if c in header]
    try:
        cols = _fill(path, header, names, as_text=False)
    except _NotNumeric:
        cols = _fill(path, header, names, as_text=True)
    if len(cols["num_decode_tokens"]) == 0:
        raise TraceError(f"{path}: trace has no data rows")
    if sessions:
        return _sessions(path, header["session_id"], cols)
    return TraceFile(path, cols.get("arrived_at"), cols["num_prefill_tokens"], cols["num_decode_tokens"])


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _sessions(path: str, id_column: Any, cols: dict[str, np.ndarray]) -> TraceFile:
    """A session trace's prompts (history + new tokens) and prefix hashes: turn k of a session is the
    segments [new_1, out_1, ..., new_k], segment j of session s named mix(key of s, j), so a turn shares
    every earlier turn's prompt and output blocks with the turns after it, and nothing across sessions."""
    ids = _pandas(path, usecols=[id_column], dtype=str, keep_default_na=False)[id_column].str.strip().to_numpy()
    empty = np.flatnonzero(ids == "")
    if empty.size:
        raise TraceError(f"{path}: row {int(empty[0]) + 1}, column 'session_id': empty session id")
    new, out = cols["num_new_tokens"].astype(np.int64), cols["num_decode_tokens"].astype(np.int64)
    codes, names = pd.factorize(ids)
    by_session = pd.Series(new + out).groupby(codes)
    prompt = by_session.cumsum().to_numpy() - out
    over = np.flatnonzero(prompt > MAX_LENGTH)
    if over.size:
        raise TraceError(f"{path}: row {int(over[0]) + 1}: the turn's prompt (its session's history plus "
                         f"num_new_tokens) is {int(prompt[over[0]])} tokens, over {MAX_LENGTH}")
    g = PREFIX_BLOCK_TOKENS
    hashes: list = [None] * len(prompt)
    for code, rows in pd.Series(np.arange(len(prompt))).groupby(codes):
        rows = rows.to_numpy()
        lens = np.column_stack([new[rows], out[rows]]).reshape(-1)[:-1]  # new_1, out_1, ..., new_K
        seg_ids = mix(key_of(names[code]), np.arange(len(lens)))
        session = block_hashes(seg_ids, lens, g)  # every turn's blocks are a prefix of these
        for r in rows:
            hashes[r] = _read_only(session[: prompt[r] // g])
    return TraceFile(path, cols.get("arrived_at"), _read_only(prompt.astype(np.int32)), cols["num_decode_tokens"],
                     tuple(hashes), g)


def _jsonl_value(path: str, line: int, key: str, value: Any, lo: float, hi: float, integer: bool) -> float:
    """A number of a JSONL line in [lo, hi] (an integer if asked); one-line error naming line and key."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and lo <= value <= hi and (not integer or float(value).is_integer()))
    if not ok:
        what = f"an integer in [{int(lo)}, {int(hi)}]" if integer else f"a number >= {lo:g}"
        raise TraceError(f"{path}: line {line}, key '{key}': must be {what}, got {value!r}")
    return value


def _parse_jsonl(path: str) -> TraceFile:
    """A Mooncake JSONL trace: times ms -> s, hash_ids as int64 prefix hashes of 512-token blocks."""
    g, times, prompts, outputs, hashes = MOONCAKE_BLOCK_TOKENS, [], [], [], []
    big = int(np.iinfo(np.int64).max)
    try:
        with open(path, encoding="utf-8") as f:
            for line, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as e:
                    raise TraceError(f"{path}: line {line}: not JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise TraceError(f"{path}: line {line}: must be a JSON object with keys {list(MOONCAKE_KEYS)}")
                missing = [k for k in MOONCAKE_KEYS if k not in row]
                if missing:
                    raise TraceError(f"{path}: line {line}: missing key(s) {missing}; a Mooncake trace line has "
                                     f"{list(MOONCAKE_KEYS)} (timestamp in ms)")
                t = _jsonl_value(path, line, "timestamp", row["timestamp"], 0.0, math.inf, False) / 1000.0
                if times and t < times[-1]:
                    raise TraceError(f"{path}: line {line}, key 'timestamp': times not sorted, earlier than the "
                                     f"previous line, got {row['timestamp']!r}")
                p = int(_jsonl_value(path, line, "input_length", row["input_length"], 1, MAX_LENGTH, True))
                d = int(_jsonl_value(path, line, "output_length", row["output_length"], 1, MAX_LENGTH, True))
                ids = row["hash_ids"]
                if not isinstance(ids, list) or len(ids) > -(-p // g):
                    raise TraceError(f"{path}: line {line}, key 'hash_ids': must be a list of at most "
                                     f"ceil(input_length / {g}) = {-(-p // g)} block ids, got "
                                     f"{ids if not isinstance(ids, list) else f'{len(ids)} ids'!r}")
                bad = next((h for h in ids if type(h) is not int or not 0 <= h <= big), None)
                if bad is not None:
                    raise TraceError(f"{path}: line {line}, key 'hash_ids': block ids must be integers in "
                                     f"[0, {big}], got {bad!r}")
                times.append(t)
                prompts.append(p)
                outputs.append(d)
                hashes.append(_read_only(np.array(ids, dtype=np.int64)))
    except UnicodeDecodeError as e:
        raise TraceError(f"{path}: cannot read as UTF-8 JSONL: {_one_line(e)}") from None
    if not times:
        raise TraceError(f"{path}: trace has no data rows")
    return TraceFile(path, _read_only(np.array(times)), _read_only(np.array(prompts, np.int32)),
                     _read_only(np.array(outputs, np.int32)), tuple(hashes), g)


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
