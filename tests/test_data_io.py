"""Reading, streaming and atomically writing tables, on the 10,000-row ISLR Default set."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from waypost.data.io import TableWriter, count_rows, iter_table_chunks, read_table
from waypost.errors import DataError
from waypost.scenarios.datasets import load_dataset


@pytest.fixture(scope="module")
def default() -> pd.DataFrame:
    return load_dataset("islr_default")


def _write(df: pd.DataFrame, path: Path) -> Path:
    ext = path.suffix
    if ext == ".csv":
        df.to_csv(path, index=False)
    elif ext == ".tsv":
        df.to_csv(path, index=False, sep="\t")
    elif ext == ".parquet":
        df.to_parquet(path, index=False)
    elif ext == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif ext == ".feather":
        df.to_feather(path)
    return path


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".parquet", ".jsonl", ".feather"])
def test_round_trip(default: pd.DataFrame, tmp_path: Path, ext: str) -> None:
    path = _write(default, tmp_path / f"default{ext}")
    back = read_table(path)
    pd.testing.assert_frame_equal(back, default, check_exact=False, rtol=1e-12)
    assert list(read_table(str(path), columns=["income", "default"]).columns) == ["income", "default"]


def test_dataframe_passes_through(default: pd.DataFrame) -> None:
    assert read_table(default) is default
    with pytest.raises(DataError, match=r"columns \['salary'\] not found in the DataFrame"):
        read_table(default, columns=["salary"])


@pytest.mark.parametrize("ext", [".csv", ".parquet", ".jsonl", ".feather"])
def test_chunks_cover_the_table(default: pd.DataFrame, tmp_path: Path, ext: str) -> None:
    path = _write(default, tmp_path / f"default{ext}")
    chunks = list(iter_table_chunks(path, chunk_rows=3000))
    assert all(len(c) <= 3000 for c in chunks) and len(chunks) >= 4
    whole = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(whole, default, check_exact=False, rtol=1e-12)
    picked = next(iter_table_chunks(path, chunk_rows=500, columns=["balance", "default"]))
    assert list(picked.columns) == ["balance", "default"] and len(picked) == 500


def test_parquet_row_groups_larger_than_chunks_are_cut(default: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "one_group.parquet"
    default.to_parquet(path, index=False, row_group_size=10_000)
    sizes = [len(c) for c in iter_table_chunks(path, chunk_rows=4096)]
    assert sizes == [4096, 4096, 1808]


def test_count_rows(default: pd.DataFrame, tmp_path: Path) -> None:
    assert count_rows(_write(default, tmp_path / "d.parquet")) == 10_000
    assert count_rows(_write(default, tmp_path / "d.csv")) == 10_000
    assert count_rows(_write(default, tmp_path / "d.feather")) == 10_000
    assert count_rows(_write(default, tmp_path / "d.jsonl")) is None


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_table_writer(default: pd.DataFrame, tmp_path: Path, ext: str) -> None:
    out = tmp_path / f"preds{ext}"
    with TableWriter(out) as writer:
        for chunk in iter_table_chunks(_write(default, tmp_path / f"in{ext}"), chunk_rows=2500):
            writer.write(chunk)
            assert not out.exists()  # only the finished file appears
    assert writer.rows_written == 10_000
    pd.testing.assert_frame_equal(read_table(out), default, check_exact=False, rtol=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"in{ext}", f"preds{ext}"])


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_table_writer_leaves_nothing_on_error(default: pd.DataFrame, tmp_path: Path, ext: str) -> None:
    with pytest.raises(RuntimeError, match="model crashed"):
        with TableWriter(tmp_path / f"preds{ext}") as writer:
            writer.write(default.iloc[:100])
            raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []


def test_table_writer_checks(default: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"preds\.xlsx.*unsupported file extension '\.xlsx'; supported: \.csv"):
        TableWriter(tmp_path / "preds.xlsx")
    with pytest.raises(DataError, match="has columns"):
        with TableWriter(tmp_path / "p.parquet") as writer:
            writer.write(default.iloc[:10])
            writer.write(default.iloc[10:20, :2])
    assert list(tmp_path.iterdir()) == []


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=f"data file not found: {missing}"):
        read_table(missing)
    with pytest.raises(DataError, match=f"data file not found: {missing}"):
        iter_table_chunks(missing)  # fails on the call, before any chunk is asked for
    odd = tmp_path / "table.xls"
    odd.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"table\.xls.*unsupported file extension '\.xls'; supported: \.csv, \.tsv"):
        read_table(odd)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match=r"could not parse .*broken\.parquet as parquet"):
        read_table(broken)
    with pytest.raises(DataError, match=r"could not parse .*broken\.parquet"):
        list(iter_table_chunks(broken))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty.*empty\.csv|empty\.csv.*empty"):
        read_table(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b\n")
    with pytest.raises(DataError, match=r"header\.csv is empty \(0 rows"):
        read_table(header_only)
    with pytest.raises(DataError, match=r"header\.csv is empty"):
        list(iter_table_chunks(header_only))


def test_csv_chunks_survive_type_changes(tmp_path: Path) -> None:
    # ints for 6,000 rows, then a float: pyarrow's streaming reader would fail mid-file here
    path = tmp_path / "drift.csv"
    values = [str(i) for i in range(6000)] + ["1.5"] + [str(i) for i in range(3000)]
    path.write_text("x,y\n" + "\n".join(f"{v},r{i % 7}" for i, v in enumerate(values)) + "\n")
    chunks = list(iter_table_chunks(path, chunk_rows=2000))
    assert sum(len(c) for c in chunks) == 9001
    assert pd.concat(chunks)["x"].sum() == pytest.approx(sum(range(6000)) + 1.5 + sum(range(3000)))


def test_malformed_csv_and_missing_columns(default: pd.DataFrame, tmp_path: Path) -> None:
    bad = tmp_path / "ragged.csv"
    bad.write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(DataError, match=r"could not parse .*ragged\.csv as csv: .*Expected 2 fields"):
        read_table(bad)
    for ext in (".csv", ".parquet", ".feather"):
        path = _write(default, tmp_path / f"d{ext}")
        expected = rf"columns \['salary'\] not found in .*d\{ext}; available: \['default', 'student'"
        with pytest.raises(DataError, match=expected):
            read_table(path, columns=["salary", "income"])
        with pytest.raises(DataError, match=expected):
            iter_table_chunks(path, columns=["salary"])


def test_table_writer_with_nothing_written(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothing was written to .*empty\.csv"):
        with TableWriter(tmp_path / "empty.csv"):
            pass
    assert list(tmp_path.iterdir()) == []
