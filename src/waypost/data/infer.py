"""Guess each column's type and say why, so `waypost init` can write a config a person can audit.

The rules are cheap (dtype, distinct counts, a sample of values) and every threshold is a module
constant: a wrong guess should be explainable from the reason string and fixable in waypost.yaml.
"""
from __future__ import annotations

import numbers
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from waypost.errors import DataError

#: Values inspected for datetime / media / token statistics (evenly spaced, so sorted data is fair).
DATETIME_SAMPLE = 200
TEXT_SAMPLE = 1000
#: Share of sampled strings that must parse as dates for a datetime column.
DATETIME_MIN_FRACTION = 0.95
#: Share of sampled values that must end in a media extension (or carry media magic bytes).
MEDIA_MIN_FRACTION = 0.90
#: Free text: at least this many whitespace tokens on average and this share of distinct values ...
TEXT_MIN_TOKENS = 3.0
TEXT_MIN_DISTINCT = 0.5
#: ... or this many tokens on average, whatever the distinct share (long repeated templates).
TEXT_LONG_TOKENS = 5.0
#: Strings that are all distinct and this short (mean tokens) are identifiers, not features.
ID_MAX_TOKENS = 2.0
#: Below this many non-missing values "all distinct" says nothing, so only the name can mark an ID.
ID_MIN_ROWS = 20
#: Category columns above this distinct share get a note about the unknown bucket.
HIGH_CARDINALITY = 0.5
#: Target rules: integer-valued targets with at most this many classes, making up at most this
#: share of the rows, are classes; otherwise the target is a quantity (regression).
TARGET_MAX_CLASSES = 20
TARGET_MAX_CLASS_FRACTION = 0.05

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg", ".m4a")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")

#: Names that mark an identifier: id, ids, index, uuid, rownames, row_id, "Unnamed: 0" (a saved
#: pandas index), id as a word (user_id, id_str, in_reply_to_user_id_str) and camelCase userId.
_ID_NAME = re.compile(
    r"^(index|idx|uuid|guid|rownames?|row_?(num|number)|unnamed: ?\d+|(.*[_ .-])?ids?([_ .-].*)?)$",
    re.IGNORECASE,
)
_ID_NAME_CAMEL = re.compile(r"^.*[a-z0-9](Id|ID)$")
_DATE_SEP = re.compile(r"[-/:]|\d\.\d{1,2}\.\d")

__all__ = ["ColumnDecision", "Schema", "infer_column", "infer_schema", "infer_task"]


@dataclass(frozen=True)
class ColumnDecision:
    """One column's type (None = dropped) and the sentence that justifies it."""

    name: str
    type: str | None
    reason: str


@dataclass
class Schema:
    """The kept features in column order, and every dropped column with why it was dropped."""

    features: dict[str, ColumnDecision] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def types(self) -> dict[str, str]:
        """name -> type of the kept features: what `TabularPreprocessor` and the config want."""
        return {name: d.type for name, d in self.features.items() if d.type is not None}

    def describe(self) -> list[str]:
        """One line per column, for `waypost init` output and logs."""
        lines = [f"{name}: {d.type} ({d.reason})" for name, d in self.features.items()]
        lines += [f"{name}: dropped ({reason})" for name, reason in self.dropped.items()]
        return lines


def _sample(values: pd.Series, n: int) -> pd.Series:
    if len(values) <= n:
        return values
    idx = np.linspace(0, len(values) - 1, n).round().astype(np.int64)
    return values.iloc[idx]


def _is_id_name(name: str) -> bool:
    return bool(_ID_NAME.match(name.strip()) or _ID_NAME_CAMEL.match(name.strip()))


def _short(value: object, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: audio and video magic bytes; images go through `waypost.runtime.images.sniff_image_bytes`, the
#: same check the loader and the server apply, so inference never calls "image" what they refuse
_MAGIC: tuple[tuple[bytes, int, str, str], ...] = (
    (b"WAVE", 8, "audio", "WAVE"),
    (b"fLaC", 0, "audio", "FLAC"),
    (b"OggS", 0, "audio", "OGG"),
    (b"ID3", 0, "audio", "MP3"),
    (b"\xff\xfb", 0, "audio", "MP3"),
    (b"ftypM4A", 4, "audio", "M4A"),
    (b"ftyp", 4, "video", "MP4"),
    (b"\x1aE\xdf\xa3", 0, "video", "Matroska/WebM"),
    (b"AVI ", 8, "video", "AVI"),
)


def _sniff(blob: bytes) -> tuple[str, str] | None:
    from waypost.runtime.images import sniff_image_bytes  # Pillow, only when a column holds bytes

    image = sniff_image_bytes(blob)
    if image is not None:
        return "image", image
    for magic, offset, kind, fmt in _MAGIC:
        if blob[offset : offset + len(magic)] == magic:
            return kind, fmt
    return None


def _infer_objects(name: str, sample: pd.Series) -> ColumnDecision | None:
    """Decide from the Python objects themselves: sequences, arrays and raw media bytes."""
    first = sample.iloc[0]
    if isinstance(first, np.ndarray) and first.ndim >= 2:
        shapes = {np.shape(v) for v in sample if isinstance(v, np.ndarray)}
        shape = next(iter(shapes)) if len(shapes) == 1 else "varying shapes"
        return ColumnDecision(name, "image", f"{first.ndim}-d array values ({shape})")
    if isinstance(first, (list, tuple, np.ndarray)):
        lengths = [len(v) for v in sample if isinstance(v, (list, tuple, np.ndarray))]
        if len(lengths) >= MEDIA_MIN_FRACTION * len(sample):
            return ColumnDecision(name, "sequence", f"list values, mean length {np.mean(lengths):.1f}")
    if isinstance(first, (bytes, bytearray, memoryview)):
        kinds = [_sniff(bytes(v[:16])) for v in sample if isinstance(v, (bytes, bytearray, memoryview))]
        found = [k for k in kinds if k is not None]
        if found and len(found) >= MEDIA_MIN_FRACTION * len(sample):
            kind, fmt = max(set(found), key=found.count)
            return ColumnDecision(name, kind, f"bytes values with {fmt} magic bytes")
        return ColumnDecision(name, None, "bytes values of no recognised media format")
    return None


def _media_from_paths(name: str, strings: pd.Series) -> ColumnDecision | None:
    lowered = strings.str.strip().str.lower()
    for kind, exts in (("image", IMAGE_EXTENSIONS), ("audio", AUDIO_EXTENSIONS), ("video", VIDEO_EXTENSIONS)):
        hit = lowered.str.endswith(exts)
        if hit.mean() >= MEDIA_MIN_FRACTION:
            found = sorted({_suffix(v) for v in lowered[hit]})
            return ColumnDecision(name, kind, f"file paths ending in {', '.join(found)} ({hit.mean():.0%} of sampled values)")
    return None


def _suffix(value: str) -> str:
    dot = value.rfind(".")
    return value[dot:] if dot >= 0 else ""


def _looks_like_dates(strings: pd.Series) -> float:
    """Share of sampled strings that look like (digit + date separator) and parse as dates."""
    shaped = strings.str.contains(r"\d") & strings.str.contains(_DATE_SEP) & (strings.str.len() >= 6)
    if shaped.mean() < DATETIME_MIN_FRACTION:
        return float(shaped.mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parsed = pd.to_datetime(strings[shaped], errors="coerce", format="mixed", utc=True)
        except (ValueError, TypeError, OverflowError):
            return 0.0
    return float(parsed.notna().sum() / len(strings))


def _all_numbers(values: pd.Series) -> bool:
    return bool(values.map(lambda v: isinstance(v, numbers.Number) and not isinstance(v, (bool, np.bool_))).all())


def _is_integer_valued(values: pd.Series) -> bool:
    if pd.api.types.is_integer_dtype(values.dtype):
        return True
    if pd.api.types.is_float_dtype(values.dtype):
        arr = values.to_numpy(dtype=np.float64)
        return bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))
    return False


def _row_number_like(values: pd.Series) -> bool:
    """All distinct integers that are a shuffled or sorted 0..n-1 or 1..n: a saved row index."""
    arr = np.sort(values.to_numpy(dtype=np.float64))
    start = arr[0]
    return bool(start in (0.0, 1.0) and arr[-1] - start == len(arr) - 1)


def _infer_numeric(name: str, values: pd.Series, n_missing: int, n_distinct: int) -> ColumnDecision:
    dtype = str(values.dtype)
    if n_distinct == len(values) and _is_integer_valued(values):
        if _is_id_name(name):
            return ColumnDecision(name, None, f"ID-like: {n_distinct} distinct integers and an ID-like name")
        if len(values) >= ID_MIN_ROWS and _row_number_like(values):
            return ColumnDecision(name, None, f"ID-like: distinct integers {int(values.min())}..{int(values.max())}, a row number")
    if _is_id_name(name) and _is_integer_valued(values):
        # user_id, store_id: repeated integer codes of entities; their size means nothing.
        return ColumnDecision(name, "category", f"integer codes with an ID-like name: {n_distinct} distinct values, {n_missing} missing")
    return ColumnDecision(name, "numeric", f"{dtype}, {n_distinct} distinct values, {n_missing} missing")


def _infer_strings(name: str, values: pd.Series, n_missing: int, n_distinct: int) -> ColumnDecision:
    n = len(values)
    strings = values.astype(str)
    date_sample = _sample(strings, DATETIME_SAMPLE)
    media = _media_from_paths(name, date_sample)
    if media is not None:
        return media
    date_share = _looks_like_dates(date_sample)
    if date_share >= DATETIME_MIN_FRACTION:
        return ColumnDecision(name, "datetime", f"strings that parse as dates ({date_share:.0%} of sampled values), e.g. {_short(date_sample.iloc[0])!r}")
    tokens = float(_sample(strings, TEXT_SAMPLE).str.split().str.len().mean())
    distinct = n_distinct / n
    if n_distinct == n and tokens < ID_MAX_TOKENS and (n >= ID_MIN_ROWS or _is_id_name(name)):
        return ColumnDecision(name, None, f"ID-like: every value is distinct ({n}) and short ({tokens:.1f} tokens on average)")
    if (tokens >= TEXT_MIN_TOKENS and distinct >= TEXT_MIN_DISTINCT) or tokens >= TEXT_LONG_TOKENS:
        return ColumnDecision(name, "text", f"free text: {tokens:.1f} tokens on average, {distinct:.0%} distinct")
    reason = f"{n_distinct} distinct values, {n_missing} missing"
    if distinct > HIGH_CARDINALITY:
        reason += f"; high cardinality ({distinct:.0%} distinct): rare values share the unknown bucket"
    return ColumnDecision(name, "category", reason)


def infer_column(series: pd.Series, name: str | None = None) -> ColumnDecision:
    """Pick one feature type for a column (or drop it) from its dtype and a sample of its values."""
    col = str(name if name is not None else series.name)
    values = series.dropna()
    n_missing = int(len(series) - len(values))
    if len(values) == 0:
        return ColumnDecision(col, None, "all values missing")
    if values.dtype == object:
        decision = _infer_objects(col, _sample(values, DATETIME_SAMPLE))
        if decision is not None:
            return decision
    try:
        n_distinct = int(values.nunique())
    except TypeError:  # unhashable values that are not sequences (dicts, sets ...)
        return ColumnDecision(col, None, f"unsupported values of type {type(values.iloc[0]).__name__}")
    if n_distinct == 1:
        return ColumnDecision(col, None, f"constant: every value is {_short(values.iloc[0])!r}")
    if pd.api.types.is_bool_dtype(values.dtype) or n_distinct == 2:
        shown = ", ".join(repr(_short(v, 20)) for v in sorted(values.unique(), key=str))
        return ColumnDecision(col, "binary", f"2 distinct values ({shown}), {n_missing} missing")
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return ColumnDecision(col, "category", f"categorical dtype, {n_distinct} distinct values, {n_missing} missing")
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return ColumnDecision(col, "datetime", f"{dtype} values, {n_missing} missing")
    if pd.api.types.is_numeric_dtype(dtype):
        return _infer_numeric(col, values, n_missing, n_distinct)
    if dtype == object:
        # Python numbers in an object column (JSON input, mixed int/None); numeric strings are not
        # numbers here: pandas' readers already parse numeric columns, so a string column that
        # looks numeric is usually a code ("02139").
        if _all_numbers(_sample(values, TEXT_SAMPLE)) and _all_numbers(values):
            return _infer_numeric(col, pd.to_numeric(values), n_missing, n_distinct)
    if dtype == object or pd.api.types.is_string_dtype(dtype):
        return _infer_strings(col, values, n_missing, n_distinct)
    return ColumnDecision(col, None, f"unsupported dtype {dtype}")


def infer_schema(df: pd.DataFrame, target: str | None) -> Schema:
    """Infer every column except the target, in the frame's column order."""
    names = list(df.columns)
    bad = [c for c in names if not isinstance(c, str)]
    if bad:
        raise DataError(
            f"column names must be strings; got {bad[:5]!r}: rename them, e.g. df.columns = df.columns.astype(str)"
        )
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise DataError(f"duplicate column names {duplicated}: each column needs a unique name")
    if target is not None and target not in df.columns:
        raise DataError(f"target column {target!r} not found; available columns: {names[:20]}")
    schema = Schema()
    for col in names:
        if col == target:
            continue
        decision = infer_column(df[col], col)
        if decision.type is None:
            schema.dropped[col] = decision.reason
        else:
            schema.features[col] = decision
    return schema


def _kind_of_target(dtype: object) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    return "string"


def infer_task(y: pd.Series, name: str) -> tuple[str, str]:
    """binary, multiclass or regression from the target's values, with the reason."""
    values = y.dropna()
    if len(values) == 0:
        raise DataError(f"target column {name!r} has no values: every row is missing")
    try:
        n_classes = int(values.nunique())
    except TypeError:
        raise DataError(f"target column {name!r} holds unhashable values like {_short(values.iloc[0])!r}; expected labels or numbers") from None
    if n_classes == 1:
        raise DataError(f"target column {name!r} has a single class {_short(values.iloc[0])!r}: nothing to learn; expected at least 2 distinct values")
    dtype = values.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        raise DataError(f"target column {name!r} holds dates; expected labels or numbers")
    numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    if not numeric:
        kind = _kind_of_target(dtype)
        task = "binary" if n_classes == 2 else "multiclass"
        return task, f"target {name!r} has {n_classes} classes ({kind}) -> {task}"
    if not _is_integer_valued(values):
        return "regression", f"target {name!r} is {dtype} with non-integer values -> regression"
    share = n_classes / len(values)
    if n_classes == 2 or (n_classes <= TARGET_MAX_CLASSES and share <= TARGET_MAX_CLASS_FRACTION):
        task = "binary" if n_classes == 2 else "multiclass"
        return task, f"target {name!r} has {n_classes} distinct integer values ({share:.1%} of rows) -> {task}"
    return "regression", (
        f"target {name!r} has {n_classes} distinct integer values ({share:.1%} of rows; classes need "
        f"<= {TARGET_MAX_CLASSES} and <= {TARGET_MAX_CLASS_FRACTION:.0%}) -> regression"
    )
