"""Classification data for ``momenta compare``: four shipped tables and any numeric CSV.

    X ∈ ℝⁿˣᵈ (float64 features),   y ∈ {0, …, k−1}ⁿ (class index)
    π = RandomState(split_seed).permutation(n)            rows shuffled once
    train = X[π][: n − n_test],   test = X[π][n − n_test :],   n_test = ⌊n / 5⌋

    val = holdout(train): per class, round(c · val_fraction) of its c training rows (a sweep's
          validation split, drawn once by RandomState(split_seed); the test rows untouched)

For iris (n = 150, split_seed = 116) that is the classic experiment's split: first 120 rows
for training, last 30 for testing. ``np.random.RandomState`` (not ``default_rng``) on purpose:
it equals the classic ``np.random.seed(116); np.random.shuffle(x)``, and NumPy freezes the
legacy RandomState streams, so the split is the same on every NumPy version.

Specs accepted by :func:`load`: ``iris``, ``wine``, ``digits``, ``breast_cancer`` (shipped in
``momenta/compare/data/``, see its README for provenance) and ``csv:PATH`` with a header row and
a ``target`` column (numbers or class names; every other column must be numeric, no NaN).
"""

from __future__ import annotations

import csv
import gzip
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from momenta.compare.errors import DataError

BUILTIN = {
    "iris": "iris.csv",
    "wine": "wine_data.csv",
    "digits": "digits.csv.gz",
    "breast_cancer": "breast_cancer.csv",
}
TEST_FRACTION = 0.2
SCALES = ("none", "standard")


@dataclass(frozen=True)
class Dataset:
    """A classification table: ``features[i]`` has class ``labels[i]`` (= ``class_names[...]``)."""

    name: str
    features: np.ndarray  # (n, d) float64
    labels: np.ndarray  # (n,) int64 in 0 … k−1
    class_names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class Split:
    """Train and test rows after the shuffle (float64 features, int64 labels)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    x_val: np.ndarray | None = None  # held out of the training rows (:func:`holdout`)
    y_val: np.ndarray | None = None


def known() -> list[str]:
    """Names accepted by :func:`load` (plus ``csv:PATH``)."""
    return [*BUILTIN, "csv:PATH"]


def load(spec: str, target: str | None = None) -> Dataset:
    """The data set named by ``spec``; ``target`` names the label column of a CSV."""
    if spec.startswith("csv:"):
        if not target:
            raise DataError(f"data {spec!r}: a CSV needs a target column (--target COLUMN)")
        return load_csv(Path(spec.removeprefix("csv:")), target)
    if target is not None:
        raise DataError(f"target {target!r} only applies to data csv:PATH, not to {spec!r}")
    if spec not in BUILTIN:
        raise DataError(f"data: unknown data set {spec!r}; known: {', '.join(known())}")
    return _load_builtin(spec)


def split(data: Dataset, seed: int = 116, test_fraction: float = TEST_FRACTION) -> Split:
    """Shuffle rows with ``RandomState(seed)``; the last ⌊n·test_fraction⌋ rows are the test set."""
    n = len(data.labels)
    n_test = int(n * test_fraction)
    if n_test < 1 or n_test >= n:
        raise DataError(f"data set {data.name!r} has {n} rows: too few to split off a test set")
    order = np.random.RandomState(seed).permutation(n)
    x, y = data.features[order], data.labels[order]
    return Split(x[: n - n_test], y[: n - n_test], x[n - n_test :], y[n - n_test :], data.n_classes)


def holdout(s: Split, fraction: float, seed: int) -> Split:
    """A validation set held out of the training rows, stratified: of each class's c rows,
    round(c·fraction) (at least 1 when c ≥ 2, never all), drawn by ``RandomState(seed)``;
    the rest stay training rows, in their order. The test rows are untouched."""
    if not 0 < fraction <= 0.5:
        raise DataError(f"val_fraction must be in (0, 0.5], got {fraction!r}")
    rng = np.random.RandomState(seed)
    val: list[int] = []
    for c in range(s.n_classes):
        rows = np.flatnonzero(s.y_train == c)
        k = min(len(rows) - 1, max(1 if len(rows) >= 2 else 0, int(round(len(rows) * fraction))))
        val += sorted(rng.choice(rows, size=k, replace=False).tolist()) if k > 0 else []
    if not val:
        raise DataError(f"training rows ({len(s.y_train)}) too few to hold out a validation set")
    taken = np.zeros(len(s.y_train), dtype=bool)
    taken[val] = True
    order = np.sort(np.array(val))
    return Split(
        s.x_train[~taken], s.y_train[~taken], s.x_test, s.y_test, s.n_classes, s.x_train[order], s.y_train[order]
    )


def standardize(s: Split) -> Split:
    """x ← (x − μ) / σ with μ, σ of the training rows (σ = 0 columns are only centred)."""
    mu = s.x_train.mean(axis=0)
    sigma = s.x_train.std(axis=0)
    sigma = np.where(sigma > 0, sigma, 1.0)
    x_train, x_test = (s.x_train - mu) / sigma, (s.x_test - mu) / sigma
    x_val = (s.x_val - mu) / sigma if s.x_val is not None else None
    return Split(x_train, s.y_train, x_test, s.y_test, s.n_classes, x_val, s.y_val)


def _load_builtin(name: str) -> Dataset:
    resource = resources.files("momenta.compare").joinpath("data", BUILTIN[name])
    raw = resource.read_bytes()
    text = (gzip.decompress(raw) if BUILTIN[name].endswith(".gz") else raw).decode("ascii")
    lines = text.splitlines()
    if name == "digits":  # no header: 64 pixels, then the digit
        class_names: tuple[str, ...] = tuple(str(d) for d in range(10))
        body = lines
    else:  # header: n_samples, n_features, class names…
        header = lines[0].split(",")
        class_names = tuple(header[2:])
        body = lines[1:]
    table = np.array([row.split(",") for row in body if row], dtype=np.float64)
    return Dataset(name, table[:, :-1], table[:, -1].astype(np.int64), class_names)


def load_csv(path: Path, target: str) -> Dataset:
    """A CSV with a header row; ``target`` is the label column, the others must be numbers.

    Errors name the file, the column and the row (data rows count from 1, after the header).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise DataError(f"data csv:{path}: cannot read the file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"data csv:{path}: not a UTF-8 text file ({e.reason})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]  # blank lines
    if not rows:
        raise DataError(f"data csv:{path}: the file is empty")
    header = [h.strip() for h in rows[0]]
    if target not in header:
        raise DataError(
            f"target {target!r}: no such column in {path}; columns: {', '.join(header)}"
        )
    t = header.index(target)
    feature_columns = [j for j in range(len(header)) if j != t]
    if not feature_columns:
        raise DataError(f"data csv:{path}: no feature columns besides the target {target!r}")
    features = np.empty((len(rows) - 1, len(feature_columns)), dtype=np.float64)
    labels: list[str] = []
    for i, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            raise DataError(
                f"{path}: row {i} has {len(row)} cells but the header has {len(header)} columns"
            )
        label = row[t].strip()
        if not label or label.lower() in {"nan", "na", "null"}:
            raise DataError(f"{path}: column {target!r}, row {i}: missing label {row[t]!r}")
        labels.append(label)
        for k, j in enumerate(feature_columns):
            features[i - 1, k] = _number(row[j], path, header[j], i)
    if not labels:
        raise DataError(f"data csv:{path}: the file has a header but no data rows")
    class_names = tuple(sorted(set(labels), key=_label_order))
    if len(class_names) < 2:
        raise DataError(f"target {target!r}: column has one class ({class_names[0]!r}); need ≥ 2")
    index = {c: k for k, c in enumerate(class_names)}
    return Dataset(f"csv:{path}", features, np.array([index[c] for c in labels]), class_names)


def _number(cell: str, path: Path, column: str, row: int) -> float:
    where = f"{path}: column {column!r}, row {row}"
    try:
        value = float(cell)
    except ValueError:
        problem = "empty cell" if not cell.strip() else f"non-numeric cell {cell!r}"
        raise DataError(f"{where}: {problem}") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {cell.strip()!r} is not a finite number (NaN or inf)")
    return value


def _label_order(label: str) -> tuple[int, float, str]:
    """Numeric labels in numeric order (2 < 10), then names alphabetically."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)
