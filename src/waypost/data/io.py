"""Reading and writing tables: whole (for training) or streamed in chunks (for batch prediction).

Every failure becomes a `DataError` that names the file, because a user running
`waypost predict bundle/ big.parquet` needs to know which input was wrong, not which parser tripped.

CSV is read with pandas' C parser both whole and in chunks, so a column gets the same dtype at
training time and in batch prediction. pyarrow's streaming CSV reader fixes each column's type from
the first block and fails mid-file when a later block disagrees (an int column that turns float at
row 100,000), which is the wrong failure for a 10 GB batch job.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd

from waypost.errors import DataError

CSV_EXTENSIONS = (".csv", ".tsv", ".txt")
PARQUET_EXTENSIONS = (".parquet", ".pq")
JSONL_EXTENSIONS = (".jsonl", ".ndjson")
FEATHER_EXTENSIONS = (".feather",)
READ_EXTENSIONS = CSV_EXTENSIONS + PARQUET_EXTENSIONS + JSONL_EXTENSIONS + FEATHER_EXTENSIONS
WRITE_EXTENSIONS = (".csv", ".parquet", ".pq")

#: Bytes sampled to estimate the row count of a large CSV (exact count below EXACT_COUNT_BYTES).
_COUNT_SAMPLE_BYTES = 1 << 20
_EXACT_COUNT_BYTES = 16 << 20

__all__ = [
    "READ_EXTENSIONS",
    "WRITE_EXTENSIONS",
    "TableWriter",
    "count_rows",
    "iter_table_chunks",
    "read_table",
]


def _extension(path: Path, supported: tuple[str, ...], verb: str) -> str:
    ext = path.suffix.lower()
    if ext not in supported:
        raise DataError(
            f"cannot {verb} {str(path)!r}: unsupported file extension {ext or '(none)'!r}; "
            f"supported: {', '.join(supported)}"
        )
    return ext


def _existing_file(source: str | os.PathLike[str]) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.is_dir():
        raise DataError(f"expected a data file but {path} is a directory")
    return path


def _select(df: pd.DataFrame, columns: list[str] | None, where: str) -> pd.DataFrame:
    if columns is None:
        return df
    missing = [c for c in columns if c not in df.columns]
    if missing:
        available = [str(c) for c in df.columns[:20]]
        raise DataError(f"columns {missing} not found in {where}; available: {available}")
    return df[list(columns)]


def _csv_sep(ext: str) -> str:
    return "\t" if ext == ".tsv" else ","


def _check_file_columns(file: Path, ext: str, columns: list[str] | None) -> None:
    """Fail early, with the available names, when asked-for columns are not in the file's header."""
    if columns is None or ext in JSONL_EXTENSIONS:
        return
    try:
        if ext in CSV_EXTENSIONS:
            names = list(pd.read_csv(file, sep=_csv_sep(ext), nrows=0).columns)
        elif ext in PARQUET_EXTENSIONS:
            import pyarrow.parquet as pq

            names = pq.read_schema(file).names
        else:
            import pyarrow as pa

            with pa.memory_map(str(file)) as source:
                names = pa.ipc.open_file(source).schema.names
    except Exception:  # unreadable header: the full read reports the parser's message
        return
    _select(pd.DataFrame(columns=names), columns, str(file))


def read_table(
    source: str | os.PathLike[str] | pd.DataFrame, *, columns: list[str] | None = None
) -> pd.DataFrame:
    """Load a whole table, so that training code never branches on the file format.

    A DataFrame passes through untouched (no copy) so the Python API and the CLI share one path.
    """
    if isinstance(source, pd.DataFrame):
        df = _select(source, columns, "the DataFrame")
        where = "the DataFrame"
    else:
        path = _existing_file(source)
        ext = _extension(path, READ_EXTENSIONS, "read")
        where = str(path)
        _check_file_columns(path, ext, columns)
        try:
            if ext in CSV_EXTENSIONS:
                df = pd.read_csv(path, sep=_csv_sep(ext), usecols=columns, low_memory=False)
            elif ext in PARQUET_EXTENSIONS:
                df = pd.read_parquet(path, columns=columns)
            elif ext in JSONL_EXTENSIONS:
                df = pd.read_json(path, lines=True)
            else:
                df = pd.read_feather(path, columns=columns)
        except pd.errors.EmptyDataError:
            raise DataError(f"data file is empty: {path}") from None
        except Exception as exc:  # pandas ParserError, pyarrow ArrowInvalid, OSError ...
            raise DataError(f"could not parse {path} as {ext[1:]}: {exc}") from exc
        df = _select(df, columns, where)  # also puts the columns in the order asked for
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise DataError(f"table {where} is empty ({df.shape[0]} rows, {df.shape[1]} columns)")
    return df


def _rechunk(frames: Iterator[pd.DataFrame], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Cut (or pass) frames so that none exceeds chunk_rows: memory stays flat whatever the source."""
    for frame in frames:
        if len(frame) == 0:
            continue
        for start in range(0, len(frame), chunk_rows):
            yield frame.iloc[start : start + chunk_rows].reset_index(drop=True)


def iter_table_chunks(
    path: str | os.PathLike[str], *, chunk_rows: int = 50_000, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """Stream a table as DataFrames of at most `chunk_rows` rows, never holding the whole file.

    Row order is kept, and each chunk has a fresh 0-based index (positions in the chunk). A missing
    file, a bad extension or an unknown column fails here, before the first chunk is asked for,
    so a batch job fails before it opens its output.
    """
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be at least 1, got {chunk_rows}")
    file = _existing_file(path)
    ext = _extension(file, READ_EXTENSIONS, "read")
    _check_file_columns(file, ext, columns)
    return _stream(file, ext, chunk_rows, columns)


def _stream(file: Path, ext: str, chunk_rows: int, columns: list[str] | None) -> Iterator[pd.DataFrame]:
    yielded = False
    try:
        for frame in _rechunk(_raw_chunks(file, ext, chunk_rows, columns), chunk_rows):
            yielded = True
            yield frame
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"data file is empty: {file}") from None
    except Exception as exc:  # parser errors from pandas or pyarrow, named with the file
        raise DataError(f"could not parse {file} as {ext[1:]}: {exc}") from exc
    if not yielded:
        raise DataError(f"table {file} is empty (0 rows)")


def _raw_chunks(
    file: Path, ext: str, chunk_rows: int, columns: list[str] | None
) -> Iterator[pd.DataFrame]:
    if ext in CSV_EXTENSIONS:
        with pd.read_csv(
            file, sep=_csv_sep(ext), usecols=columns, chunksize=chunk_rows, low_memory=False
        ) as reader:
            for frame in reader:
                yield _select(frame, columns, str(file))
    elif ext in PARQUET_EXTENSIONS:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(file)
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
            yield _select(batch.to_pandas(), columns, str(file))
    elif ext in JSONL_EXTENSIONS:
        with pd.read_json(file, lines=True, chunksize=chunk_rows) as reader:
            for frame in reader:
                yield _select(frame, columns, str(file))
    else:
        import pyarrow as pa

        with pa.memory_map(str(file)) as source:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                frame = reader.get_batch(i).to_pandas()
                yield _select(frame, columns, str(file))


def count_rows(path: str | os.PathLike[str]) -> int | None:
    """Rows in a file, for progress bars: exact for Parquet/Feather, exact or estimated for CSV.

    Large CSVs get an estimate from the mean line length of the first megabyte (quoted newlines
    make even a full count approximate). None when no cheap answer exists (JSON lines).
    """
    file = _existing_file(path)
    ext = _extension(file, READ_EXTENSIONS, "read")
    try:
        if ext in PARQUET_EXTENSIONS:
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(file).metadata.num_rows)
        if ext in FEATHER_EXTENSIONS:
            import pyarrow as pa

            with pa.memory_map(str(file)) as source:
                reader = pa.ipc.open_file(source)
                return int(sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches)))
    except Exception as exc:
        raise DataError(f"could not read the row count of {file}: {exc}") from exc
    if ext not in CSV_EXTENSIONS:
        return None
    size = file.stat().st_size
    if size == 0:
        return 0
    with open(file, "rb") as fh:
        if size <= _EXACT_COUNT_BYTES:
            data = fh.read()
            lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
            return max(lines - 1, 0)
        sample = fh.read(_COUNT_SAMPLE_BYTES)
    newlines = sample.count(b"\n")
    if newlines == 0:
        return None
    return max(int(round(size / (len(sample) / newlines))) - 1, 0)


class TableWriter:
    """Append DataFrames to a CSV or Parquet file chunk by chunk; the file appears only when complete.

    Writes go to a hidden temporary file in the destination folder and are renamed into place on a
    clean `close()` (an atomic rename on one file system). A crash or an exception in the `with`
    block deletes the temporary file, so a half-written output can never be mistaken for a result.
    Every chunk must have the columns and types of the first one.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._ext = _extension(self.path, WRITE_EXTENSIONS, "write")
        if not self.path.parent.exists():
            raise DataError(f"output folder does not exist: {self.path.parent}")
        self._tmp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp"
        self._writer: Any = None
        self._sink: Any = None
        self._schema: Any = None
        self._closed = False
        self.rows_written = 0

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, df: pd.DataFrame) -> None:
        """Append one chunk (its index is not written)."""
        import pyarrow as pa

        if self._closed:
            raise DataError(f"cannot write to {self.path}: the writer is closed")
        table = pa.Table.from_pandas(df, preserve_index=False)
        if self._writer is None:
            self._open(table.schema)
        elif not table.schema.equals(self._schema, check_metadata=False):
            table = self._conform(table)
        self._writer.write_table(table)
        self.rows_written += table.num_rows

    def _open(self, schema: Any) -> None:
        self._schema = schema.remove_metadata()
        if self._ext == ".csv":
            import pyarrow.csv as pcsv

            self._sink = open(self._tmp, "wb")
            self._writer = pcsv.CSVWriter(self._sink, self._schema)
        else:
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(str(self._tmp), self._schema)

    def _conform(self, table: Any) -> Any:
        names = self._schema.names
        if table.schema.names != names:
            raise DataError(
                f"chunk written to {self.path} has columns {table.schema.names}; "
                f"expected the columns of the first chunk: {names}"
            )
        try:
            return table.cast(self._schema)
        except Exception:
            import pyarrow as pa

            for field in self._schema:
                got = table.schema.field(field.name).type
                if got != field.type and not pa.types.is_null(got):
                    raise DataError(
                        f"column {field.name!r} written to {self.path} has type {got}; "
                        f"the first chunk had {field.type}"
                    ) from None
            raise

    def close(self) -> None:
        """Finish the file and move it into place. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if self._writer is None:
            raise DataError(f"nothing was written to {self.path}: no output file created")
        try:
            self._writer.close()
            if self._sink is not None:
                self._sink.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self._remove_tmp()
            raise

    def abort(self) -> None:
        """Drop everything written so far; no output file is left behind."""
        self._closed = True
        try:
            if self._writer is not None:
                self._writer.close()
            if self._sink is not None:
                self._sink.close()
        except Exception:  # the temporary file is deleted anyway
            pass
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass
