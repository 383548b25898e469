"""Batch scoring of DataFrame chunks by a bundle (onnxruntime) or a model directory (torch).

Both give the same output columns: `prediction`, then `proba_<label>` per class, after any kept
input columns, so downstream jobs do not care which one produced the file.

`batch_job` is what `waypost predict` runs: a table is streamed in chunks of rows, and a folder of
images (any depth, class subfolders or not) in chunks of paths, so memory stays flat whatever the
input's size. Image models default to small chunks (`IMAGE_CHUNK_ROWS`): the runtime decodes a
whole chunk into one float32 array, and 50,000 photos at 224 px would be 30 GB.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from waypost.errors import DataError, ModelFileError

DEFAULT_CHUNK_ROWS = 50_000
IMAGE_CHUNK_ROWS = 256  # 256 x 3 x 224 x 224 float32 = 154 MB per chunk


class BundleScorer:
    """Scores chunks with a bundle; `issues` adds up, over every chunk, the input values the model
    took other than as sent ({"unseen" | "clipped": {column: count}}) and `skipped` lists the bad
    images skipped under `on_bad_image="skip"`."""

    kind = "bundle, onnxruntime"

    def __init__(self, path: Path) -> None:
        import waypost.runtime as rt

        self.bundle = rt.load(path)
        self.classes = self.bundle.classes
        self.features: dict[str, str] = dict(self.bundle.features)
        self.issues: dict[str, dict[str, int]] = {}
        self.skipped: list[str] = []

    def _infer(self, chunk: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, dict[str, dict[str, int]]]:
        from waypost.deploy.bundle import records_from_frame

        missing = [c for c in self.bundle.features if c not in chunk.columns]
        if missing:
            raise DataError(f"missing columns at predict time: {missing}")
        out = self.bundle.infer(records_from_frame(chunk, list(self.bundle.features)))
        counts = {issue: {c: int(np.count_nonzero(m)) for c, m in cols.items()} for issue, cols in out["issues"].items()}
        return out["prediction"], out["proba"], counts

    def score(self, chunk: pd.DataFrame, keep: list[str], proba: bool) -> pd.DataFrame:
        prediction, probs, issues = self._infer(chunk)
        for issue, columns in issues.items():
            totals = self.issues.setdefault(issue, {})
            for column, count in columns.items():
                totals[column] = totals.get(column, 0) + count
        return _frame(chunk, keep, prediction, probs if proba else None, self.classes)

    def score_skipping(self, chunk: pd.DataFrame, keep: list[str], proba: bool, image: str) -> pd.DataFrame:
        """`score`, row by row after a chunk failed: rows whose image cannot be read are left out and
        remembered in `skipped` (bad images are rare, so the slow path is taken rarely)."""
        frames = []
        for i in range(len(chunk)):
            row = chunk.iloc[i : i + 1]
            try:
                frames.append(self.score(row, keep, proba))
            except DataError as exc:
                self.skipped.append(f"{row[image].iloc[0]}: {exc}")
        if not frames:
            return _frame(chunk.iloc[:0], keep, np.empty(0, dtype=object),
                          np.empty((0, len(self.classes or []))) if proba else None, self.classes)
        return pd.concat(frames, ignore_index=True)


class PredictorScorer(BundleScorer):
    kind = "model directory, torch"

    def __init__(self, path: Path) -> None:
        from waypost.predictor import Predictor
        from waypost.tasks import get_task

        self.predictor = Predictor.load(path)
        self._task = get_task(self.predictor.task_)
        self.classes = self.predictor.classes_ if self._task.is_classification else None
        self.features = dict(self.predictor.features_)
        self.issues, self.skipped = {}, []

    def _infer(self, chunk: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, dict[str, dict[str, int]]]:
        if not self._task.is_classification:
            return self.predictor.predict(chunk), None, self.predictor.input_issues_
        probs = self.predictor.predict_proba(chunk).to_numpy()
        return (self._task.decode(probs, self.predictor.target_encoder_.to_state())["prediction"], probs,
                self.predictor.input_issues_)


def issues_summary(issues: dict[str, dict[str, int]]) -> str:
    """One line for the CLI: "2 unseen category values (island: 2); 1 number clipped to the training
    range (body_mass_g: 1)", or "" when there were none."""
    words = {"unseen": ("unseen category value", "s", "predicted as the unknown category"),
             "clipped": ("value outside the training range", "s", "clipped to it")}
    parts = []
    for issue, columns in issues.items():
        total = sum(columns.values())
        noun, plural, what = words.get(issue, (issue, "", ""))
        detail = ", ".join(f"{c}: {n}" for c, n in sorted(columns.items(), key=lambda kv: -kv[1]))
        parts.append(f"{total} {noun}{plural if total != 1 else ''} ({detail}), {what}")
    return "; ".join(parts)


def _frame(chunk: pd.DataFrame, keep: list[str], prediction: np.ndarray, probs: np.ndarray | None,
           classes: list[Any] | None) -> pd.DataFrame:
    out = {c: chunk[c].to_numpy() for c in keep}
    out["prediction"] = prediction
    if probs is not None and classes is not None:
        for i, label in enumerate(classes):
            out[f"proba_{label}"] = probs[:, i]
    return pd.DataFrame(out)


def load_scorer(path: str | Path) -> BundleScorer:
    path = Path(path)
    from waypost.persistence import MANIFEST
    from waypost.runtime.bundle import is_bundle

    if is_bundle(path):
        return BundleScorer(path)
    if (path / MANIFEST).is_file():
        return PredictorScorer(path)
    raise ModelFileError(f"{path} is neither a bundle (waypost.json) nor a model directory (waypost_model.json)")


def _image_column(scorer: BundleScorer, folder: Path) -> str:
    """The model's one image column, or a DataError saying why a folder cannot feed this model."""
    from waypost.kinds import get_kind

    images = [c for c, t in scorer.features.items() if get_kind(t).media]
    if not images:
        raise DataError(
            f"{folder} is a folder, but this model's features are tabular ({', '.join(scorer.features)}): "
            "pass a CSV or Parquet table; folders of images are for image models"
        )
    others = [c for c in scorer.features if c != images[0]]
    if others:
        raise DataError(
            f"this model reads {others} besides the image column {images[0]!r}, and a folder holds only "
            f"images: pass a table whose {images[0]!r} column holds image paths, with those columns beside it"
        )
    return images[0]


def _folder_job(scorer: BundleScorer, folder: Path, chunk_rows: int, keep: list[str],
                proba: bool, on_bad_image: str) -> tuple[int, Iterator[pd.DataFrame]]:
    """One row per image under `folder`, in `list_images`' order, streamed (`iter_images`)."""
    from waypost.data.image_folder import IMAGE_EXTENSIONS, iter_images

    column = _image_column(scorer, folder)
    if keep:
        raise DataError("--keep copies table columns; a folder of images has none (the output has a path column)")
    root = folder.expanduser()
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    root = root.resolve()
    total = sum(1 for _ in iter_images(root, IMAGE_EXTENSIONS))  # a second walk, for the progress bar: paths are not kept
    if total == 0:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {root}")

    def chunks() -> Iterator[pd.DataFrame]:
        files = iter_images(root, IMAGE_EXTENSIONS)
        while paths := list(itertools.islice(files, chunk_rows)):
            yield pd.DataFrame({column: pd.Series(paths, dtype=object)})

    return total, _scored(scorer, chunks(), [column], proba, rename={column: "path"}, on_bad_image=on_bad_image)


_ROW = re.compile(r"^row (\d+)")


def _scored(scorer: BundleScorer, chunks: Iterator[pd.DataFrame], keep: list[str], proba: bool,
            rename: dict[str, str] | None = None, on_bad_image: str = "error") -> Iterator[pd.DataFrame]:
    """Score chunk by chunk. The runtime numbers rows within its chunk; a "row N" in an error is
    shifted to the row of the whole input, so the user can find it. With `on_bad_image="skip"`, a
    chunk that fails is scored row by row and the rows whose image cannot be read are skipped."""
    from waypost.kinds import get_kind

    images = [c for c, t in scorer.features.items() if get_kind(t).media]
    start = 0
    for chunk in chunks:
        try:
            out = scorer.score(chunk, keep=keep, proba=proba)
        except DataError as exc:
            if images and on_bad_image == "skip":
                out = scorer.score_skipping(chunk, keep, proba, images[0])
            else:
                msg = str(exc)
                if images and "--on-bad-image" not in msg:
                    msg += " (pass --on-bad-image skip to skip bad images)"
                if start and (m := _ROW.match(msg)):
                    msg = f"row {int(m.group(1)) + start}{msg[m.end():]}"
                raise DataError(msg) from None
        start += len(chunk)
        yield out.rename(columns=rename) if rename else out


def batch_job(scorer: BundleScorer, data: str | Path, *, chunk_rows: int | None = None, keep: list[str] | None = None,
              proba: bool = True, on_bad_image: str = "error") -> tuple[int | None, Iterator[pd.DataFrame]]:
    """(row count for the progress bar, or None; scored chunks) for a table file or a folder of images.

    A folder gives one row per image: `path` (absolute), `prediction`, `proba_<label>`. Bad input
    (a missing file, a folder for a tabular model) fails here, before the caller opens its output;
    a corrupt image fails at its chunk with a DataError naming its path.
    """
    data = Path(data)
    keep = list(keep or [])
    if chunk_rows is None:
        from waypost.kinds import get_kind

        has_images = any(get_kind(t).media for t in scorer.features.values())
        chunk_rows = IMAGE_CHUNK_ROWS if has_images else DEFAULT_CHUNK_ROWS
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if on_bad_image not in ("error", "skip"):
        raise DataError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    if data.is_dir():
        return _folder_job(scorer, data, chunk_rows, keep, proba, on_bad_image)
    from waypost.data.io import count_rows, iter_table_chunks

    chunks = iter_table_chunks(data, chunk_rows=chunk_rows)  # checks the file now, not at the first chunk
    total = count_rows(data)
    return total, _scored(scorer, chunks, keep, proba, on_bad_image=on_bad_image)
