"""Data sets of ``momenta compare``: the four shipped tables, the split, CSV validation."""

from __future__ import annotations

import numpy as np
import pytest

from momenta.compare import data
from momenta.compare.errors import DataError


@pytest.mark.parametrize(
    ("name", "rows", "features", "classes"),
    [
        ("iris", 150, 4, 3),
        ("wine", 178, 13, 3),
        ("breast_cancer", 569, 30, 2),
        ("digits", 1797, 64, 10),
    ],
)
def test_builtin_data_sets(name, rows, features, classes):
    d = data.load(name)
    assert d.features.shape == (rows, features) and d.features.dtype == np.float64
    assert d.labels.shape == (rows,) and d.labels.dtype == np.int64
    assert d.n_classes == classes
    assert sorted(set(d.labels.tolist())) == list(range(classes))
    assert np.all(np.isfinite(d.features))


def test_iris_is_fishers_table():
    d = data.load("iris")
    assert d.class_names == ("setosa", "versicolor", "virginica")
    np.testing.assert_array_equal(d.features[0], [5.1, 3.5, 1.4, 0.2])
    assert np.bincount(d.labels).tolist() == [50, 50, 50]
    np.testing.assert_allclose(
        d.features.mean(axis=0), [5.843333, 3.057333, 3.758, 1.199333], atol=1e-6
    )


def test_iris_split_is_the_classic_one():
    """RandomState(116) = the classic np.random.seed(116); np.random.shuffle(x)."""
    d = data.load("iris")
    s = data.split(d, 116)
    assert s.x_train.shape == (120, 4) and s.x_test.shape == (30, 4)
    x = d.features.copy()
    np.random.RandomState(116).shuffle(x)
    np.testing.assert_array_equal(np.vstack([s.x_train, s.x_test]), x)
    y = d.labels.copy()
    np.random.RandomState(116).shuffle(y)
    np.testing.assert_array_equal(np.concatenate([s.y_train, s.y_test]), y)
    assert not np.array_equal(data.split(d, 117).y_test, s.y_test)


def test_standardize_uses_training_statistics():
    s = data.standardize(data.split(data.load("wine"), 116))
    np.testing.assert_allclose(s.x_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(s.x_train.std(axis=0), 1, atol=1e-12)
    assert np.abs(s.x_test.mean(axis=0)).max() > 1e-3  # test rows: not their own statistics


def test_unknown_data_set_lists_the_known_ones():
    with pytest.raises(DataError, match=r"unknown data set 'mnist'; known: iris, wine, digits"):
        data.load("mnist")


def test_target_only_for_csv():
    with pytest.raises(DataError, match="only applies to data csv:PATH"):
        data.load("iris", target="species")


def write(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return f"csv:{path}"


def test_csv_with_class_names(tmp_path):
    spec = write(tmp_path, "a,b,label\n1,2,cat\n3,4,dog\n5,6,cat\n7,8,dog\n9,10,cat\n\n")
    d = data.load(spec, target="label")
    assert d.class_names == ("cat", "dog")
    assert d.labels.tolist() == [0, 1, 0, 1, 0]
    np.testing.assert_array_equal(d.features[:, 1], [2, 4, 6, 8, 10])


def test_csv_target_in_the_middle_and_numeric_labels_in_numeric_order(tmp_path):
    spec = write(tmp_path, "x,y,z\n1,10,2\n3,2,4\n5,10,6\n7,2,8\n9,10,0\n")
    d = data.load(spec, target="y")
    assert d.class_names == ("2", "10")
    assert d.labels.tolist() == [1, 0, 1, 0, 1]
    np.testing.assert_array_equal(d.features[0], [1, 2])


def test_csv_needs_target(tmp_path):
    with pytest.raises(DataError, match="needs a target column"):
        data.load(write(tmp_path, "a,b\n1,2\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b,c\n1,2,0\n", r"target 'label': no such column in .*d.csv; columns: a, b, c"),
        ("a,label\n1,0\n2,1\nx1,0\n", r"column 'a', row 3: non-numeric cell 'x1'"),
        ("a,label\n1,0\nnan,1\n", r"column 'a', row 2: 'nan' is not a finite number"),
        ("a,b,label\n1,2,0\n3,inf,1\n", r"column 'b', row 2: 'inf' is not a finite number"),
        ("a,b,label\n1,2,0\n3,,1\n", r"column 'b', row 2: empty cell"),
        ("a,label\n1,0\n2\n", r"row 2 has 1 cells but the header has 2 columns"),
        ("a,label\n1,0\n2,NaN\n", r"column 'label', row 2: missing label 'NaN'"),
        ("a,label\n1,0\n2,0\n", r"target 'label': column has one class \('0'\)"),
        ("a,label\n", r"header but no data rows"),
        ("", r"the file is empty"),
    ],
)
def test_csv_errors_name_column_and_row(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        data.load(write(tmp_path, text), target="label")


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"cannot read the file \(No such file"):
        data.load(f"csv:{tmp_path / 'missing.csv'}", target="y")


def test_too_few_rows_to_split(tmp_path):
    d = data.load(write(tmp_path, "a,label\n1,0\n2,1\n3,0\n"), target="label")
    with pytest.raises(DataError, match="3 rows: too few"):
        data.split(d)
