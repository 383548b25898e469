"""Guess each column's kind and say why, so `waypost init` can write a config a person can audit.

Each kind recognises its own columns (`Kind.recognise(profile) -> reason | None`); this module
profiles a column once (dtype, distinct count, value samples, all cheap) and asks the kinds in
their `recognise_order` (flags, then media, dates, text, categories and numbers). What no kind
owns is here: dropping columns that carry nothing (all missing, constant, identifiers). Kinds
recognised ahead of their modules (sequence, audio, video: issues #13 and #15) are listed in
`_PENDING`; the plan drops them with "no <kind> encoder in this version".

Every threshold is a module constant next to the rule that uses it: a wrong guess should be
explainable from the reason string and fixable in waypost.yaml.
"""
from __future__ import annotations

import numbers
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from waypost.errors import DataError

#: Values inspected for date / media / object statistics and for token statistics (evenly spaced,
#: so sorted data is fair).
OBJECT_SAMPLE = 200
TEXT_SAMPLE = 1000
#: Share of sampled values that must be of one media type (extension or magic bytes), or lists.
MEDIA_MIN_FRACTION = 0.90
#: Strings that are all distinct and this short (mean tokens) are identifiers, not features.
ID_MAX_TOKENS = 2.0
#: Below this many non-missing values "all distinct" says nothing, so only the name can mark an ID.
ID_MIN_ROWS = 20

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

__all__ = ["ColumnDecision", "ColumnProfile", "Schema", "infer_column", "infer_schema"]


@dataclass(frozen=True)
class ColumnDecision:
    """One column's kind (None = dropped) and the sentence that justifies it."""

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
        """name -> kind of the kept features: what the preprocessors and the config want."""
        return {name: d.type for name, d in self.features.items() if d.type is not None}

    def describe(self) -> list[str]:
        """One line per column, for `waypost init` output and logs."""
        lines = [f"{name}: {d.type} ({d.reason})" for name, d in self.features.items()]
        lines += [f"{name}: dropped ({reason})" for name, reason in self.dropped.items()]
        return lines


def sample(values: pd.Series, n: int) -> pd.Series:
    """`n` evenly spaced values (all of them when there are fewer)."""
    if len(values) <= n:
        return values
    idx = np.linspace(0, len(values) - 1, n).round().astype(np.int64)
    return values.iloc[idx]


def short(value: object, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_integer_valued(values: pd.Series) -> bool:
    if pd.api.types.is_integer_dtype(values.dtype):
        return True
    if pd.api.types.is_float_dtype(values.dtype):
        arr = values.to_numpy(dtype=np.float64)
        return bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))
    return False


def _all_numbers(values: pd.Series) -> bool:
    return bool(values.map(lambda v: isinstance(v, numbers.Number) and not isinstance(v, (bool, np.bool_))).all())


def _suffix(value: str) -> str:
    dot = value.rfind(".")
    return value[dot:] if dot >= 0 else ""


def sniff(blob: bytes) -> tuple[str, str] | None:
    """(kind, format) from a file's first bytes, None when no known media format starts it."""
    from waypost.runtime.images import sniff_image_bytes  # Pillow, only when a column holds bytes

    image = sniff_image_bytes(blob)
    if image is not None:
        return "image", image
    for magic, offset, kind, fmt in _MAGIC:
        if blob[offset : offset + len(magic)] == magic:
            return kind, fmt
    return None


@dataclass
class ColumnProfile:
    """What the kinds' rules read about one column, each statistic computed at most once.

    `form` is the shape of the values: "objects" (arrays, lists or bytes in an object column),
    "bool", "categorical", "datetime", "numeric" (a numeric dtype, or Python numbers in an object
    column), "strings", or "other".
    """

    name: str
    values: pd.Series  # the non-missing values (numbers in an object column already converted)
    n_missing: int
    form: str

    @classmethod
    def of(cls, series: pd.Series, name: str | None = None) -> ColumnProfile:
        col = str(name if name is not None else series.name)
        values = series.dropna()
        n_missing = int(len(series) - len(values))
        dtype = values.dtype
        form = "other"
        if len(values) and dtype == object and isinstance(values.iloc[0], (list, tuple, np.ndarray, bytes, bytearray, memoryview)):
            form = "objects"
        elif pd.api.types.is_bool_dtype(dtype):
            form = "bool"
        elif isinstance(dtype, pd.CategoricalDtype):
            form = "categorical"
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            form = "datetime"
        elif pd.api.types.is_numeric_dtype(dtype):
            form = "numeric"
        elif dtype == object and len(values) and _all_numbers(sample(values, TEXT_SAMPLE)) and _all_numbers(values):
            # Python numbers in an object column (JSON input, mixed int/None); numeric strings are
            # not numbers here: pandas' readers already parse numeric columns, so a string column
            # that looks numeric is usually a code ("02139").
            values, form = pd.to_numeric(values), "numeric"
        elif dtype == object or pd.api.types.is_string_dtype(dtype):
            form = "strings"
        return cls(col, values, n_missing, form)

    @property
    def n(self) -> int:
        return len(self.values)

    @cached_property
    def n_distinct(self) -> int | None:
        """Distinct values; None when they are unhashable (dicts, sets ...)."""
        try:
            return int(self.values.nunique())
        except TypeError:
            return None

    @cached_property
    def object_sample(self) -> pd.Series:
        return sample(self.values, OBJECT_SAMPLE)

    @cached_property
    def strings(self) -> pd.Series:
        return self.values.astype(str)

    @cached_property
    def string_sample(self) -> pd.Series:
        return sample(self.strings, OBJECT_SAMPLE)

    @cached_property
    def mean_tokens(self) -> float:
        return float(sample(self.strings, TEXT_SAMPLE).str.split().str.len().mean())

    @cached_property
    def integer_valued(self) -> bool:
        return is_integer_valued(self.values)

    @cached_property
    def id_name(self) -> bool:
        name = self.name.strip()
        return bool(_ID_NAME.match(name) or _ID_NAME_CAMEL.match(name))

    @cached_property
    def _media_bytes(self) -> list[tuple[str, str]]:
        blobs = [bytes(v[:16]) for v in self.object_sample if isinstance(v, (bytes, bytearray, memoryview))]
        return [k for k in map(sniff, blobs) if k is not None]

    def media_bytes(self, kind: str) -> str | None:
        """The reason when the sampled values are bytes of `kind`'s formats, else None."""
        found = [fmt for k, fmt in self._media_bytes if k == kind]
        if found and len(found) >= MEDIA_MIN_FRACTION * len(self.object_sample):
            return f"bytes values with {max(set(found), key=found.count)} magic bytes"
        return None

    def media_paths(self, extensions: tuple[str, ...]) -> str | None:
        """The reason when the sampled strings are file paths ending in `extensions`, else None."""
        if self.form != "strings":
            return None
        lowered = self.string_sample.str.strip().str.lower()
        hit = lowered.str.endswith(extensions)
        if hit.mean() < MEDIA_MIN_FRACTION:
            return None
        found = sorted({_suffix(v) for v in lowered[hit]})
        return f"file paths ending in {', '.join(found)} ({hit.mean():.0%} of sampled values)"

    def date_share(self) -> float:
        """Share of sampled strings that look like (digit + date separator) and parse as dates."""
        strings = self.string_sample
        shaped = strings.str.contains(r"\d") & strings.str.contains(_DATE_SEP) & (strings.str.len() >= 6)
        if shaped.mean() < MEDIA_MIN_FRACTION:
            return float(shaped.mean())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                parsed = pd.to_datetime(strings[shaped], errors="coerce", format="mixed", utc=True)
            except (ValueError, TypeError, OverflowError):
                return 0.0
        return float(parsed.notna().sum() / len(strings))


def _media(kind: str, extensions: tuple[str, ...]) -> Callable[[ColumnProfile], str | None]:
    def recognise(p: ColumnProfile) -> str | None:
        return p.media_bytes(kind) if p.form == "objects" else p.media_paths(extensions)

    return recognise


def _sequence(p: ColumnProfile) -> str | None:
    if p.form != "objects":
        return None
    lengths = [len(v) for v in p.object_sample if isinstance(v, (list, tuple, np.ndarray))]
    if lengths and len(lengths) >= MEDIA_MIN_FRACTION * len(p.object_sample):
        return f"list values, mean length {np.mean(lengths):.1f}"
    return None


#: kinds recognised before their modules exist: (order, name, rule)
_PENDING: tuple[tuple[int, str, Callable[[ColumnProfile], str | None]], ...] = (
    (11, "sequence", _sequence),
    (12, "audio", _media("audio", AUDIO_EXTENSIONS)),
    (13, "video", _media("video", VIDEO_EXTENSIONS)),
)


def _row_number_like(values: pd.Series) -> bool:
    """All distinct integers that are a shuffled or sorted 0..n-1 or 1..n: a saved row index."""
    arr = np.sort(values.to_numpy(dtype=np.float64))
    start = arr[0]
    return bool(start in (0.0, 1.0) and arr[-1] - start == len(arr) - 1)


def _carries_nothing(p: ColumnProfile) -> str | None:
    """Why a column of plain values is dropped before any kind sees it: unhashable values or one
    value; None when it may be a feature. (Object columns go to the media kinds first.)"""
    if p.form == "objects":
        return None
    if p.n_distinct is None:
        return f"unsupported values of type {type(p.values.iloc[0]).__name__}"
    if p.n_distinct == 1:
        return f"constant: every value is {short(p.values.iloc[0])!r}"
    return None


def _unknown_objects(p: ColumnProfile) -> str | None:
    """Why an object column that no media kind took is dropped."""
    if p.form != "objects":
        return None
    if isinstance(p.values.iloc[0], (bytes, bytearray, memoryview)):
        return "bytes values of no recognised media format"
    return f"unsupported values of type {type(p.values.iloc[0]).__name__}"


def _identifier(p: ColumnProfile) -> str | None:
    """Identifiers: all-distinct integers with an ID name or forming a row number; all-distinct short
    strings. Checked after flags and dates, which may be all distinct too."""
    if p.form == "numeric" and p.n_distinct == p.n and p.integer_valued:
        if p.id_name:
            return f"ID-like: {p.n_distinct} distinct integers and an ID-like name"
        if p.n >= ID_MIN_ROWS and _row_number_like(p.values):
            return f"ID-like: distinct integers {int(p.values.min())}..{int(p.values.max())}, a row number"
    if p.form == "strings" and p.n_distinct == p.n and p.mean_tokens < ID_MAX_TOKENS and (p.n >= ID_MIN_ROWS or p.id_name):
        return f"ID-like: every value is distinct ({p.n}) and short ({p.mean_tokens:.1f} tokens on average)"
    return None


#: where the drop rules sit among the kinds' `recognise_order` (binary 8, media kinds 10-13,
#: datetime 30, text 40, category 50, numeric 60)
_DROP_ORDER, _OBJECTS_ORDER, _IDENTIFIER_ORDER = 5, 15, 35


def _rules() -> list[tuple[int, str | None, Callable[[ColumnProfile], str | None]]]:
    """Every registered kind's rule and the pending kinds', with the drop rules (kind None), in order."""
    from waypost.kinds import get_kind, kind_names

    rules: list[tuple[int, str | None, Callable[[ColumnProfile], str | None]]] = [
        (_DROP_ORDER, None, _carries_nothing), (_OBJECTS_ORDER, None, _unknown_objects),
        (_IDENTIFIER_ORDER, None, _identifier), *_PENDING]
    for name in kind_names():
        kind = get_kind(name)
        rules.append((kind.recognise_order, name, kind.recognise))
    return sorted(rules, key=lambda r: r[0])


def infer_column(series: pd.Series, name: str | None = None) -> ColumnDecision:
    """Pick one kind for a column (or drop it) from its dtype and a sample of its values."""
    p = ColumnProfile.of(series, name)
    if p.n == 0:
        return ColumnDecision(p.name, None, "all values missing")
    for _, kind, rule in _rules():
        reason = rule(p)
        if reason is not None:
            return ColumnDecision(p.name, kind, reason)
    return ColumnDecision(p.name, None, f"unsupported dtype {series.dtype}")


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
