"""Layer 3: tables from CSV files, their encoding, the three tasks, their metrics, and an MLP.

Reading (:func:`read_csv`)
    Rows of strings; every row must have as many cells as the first. The first row is a header
    when, in some column, it is not a number while the cells below are, or when all its cells are
    distinct non-numbers none of which occurs again in its column (``header=`` overrides). Without
    a header the columns are named ``0, 1, ...``.
Typing (:func:`column_kind`)
    A column is numeric when every present cell is a finite number; categorical when at most half
    of them are numbers; in between, the first non-number is an error (a typo in a numeric
    column). Missing cells (empty, ``NA``, ``N/A``, ``NaN``, ``null``, ``?``, in any case) are an error unless
    ``missing="drop"``, which drops their rows.
Encoding (:class:`Encoder`)
    Numeric features are standardised, x' = (x - mean) / std, with mean and std (std 0 -> 1) from
    the training rows only (computed on x / max|x| when x² would overflow or underflow, so that
    columns of 1e300s or 1e-300s keep their information; a column that still cannot be
    standardised is a DataError); categorical features are one-hot encoded over the categories of the
    training file. The statistics are saved in the checkpoint (``Encoder.to_dict``).
Tasks
    regression: one linear output, MSE on the standardised target; binary: one logit, binary
    cross-entropy; multiclass: softmax cross-entropy. A numeric target is regression, unless it
    has two values (binary) or at most 10 integer values (multiclass); a string target is binary
    with two labels, else multiclass. A target of mostly numbers with a few non-numbers is an error
    (the rule of ``column_kind``), and class labels are printed as the file first wrote them.
Metrics (:func:`regression_metrics`, :func:`classification_metrics`)
    RMSE, MAE and R² (1 - SSE/SST, SST about the validation mean), next to the mean predictor (the
    training mean); accuracy, macro-F1 (the mean over classes of 2PR/(P+R)) and log loss, next to
    the majority class (its accuracy and F1; its log loss is that of predicting the training class
    frequencies, since a certain prediction has infinite log loss).
"""
from __future__ import annotations

import csv
import math
import re

import numpy as np

from .data import DataError
from .jit import SERIAL_WORK, serial_when
from .layers import Dense
from .layers.base import Parameterised
from .layers.dropout import Dropout
from .layers.losses import bce_with_logits, mse_loss, softmax_cross_entropy

MISSING = frozenset(["", "na", "n/a", "nan", "null", "?"])   # as pandas, but "None" may be a label
TASKS = ("regression", "binary", "multiclass")
MAX_INT_CLASSES = 10


def is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING


def parse_number(cell: str):
    """The float in ``cell``, or None if it is not a finite number."""
    try:
        v = float(cell)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


class Table:
    """Columns of strings read from a CSV file, with their names and file line numbers."""

    def __init__(self, path, names, rows, lines, has_header, unnamed=()):
        self.path = str(path)
        self.names = list(names)
        self.rows = rows            # list of lists of str
        self.lines = lines          # file line of each row (1-based, for error messages)
        self.has_header = has_header
        self.unnamed = set(unnamed)  # columns without a name in the file (no header, or an empty header cell)

    def __len__(self):
        return len(self.rows)

    def where(self, i, col=None) -> str:
        """'file, row R[, column 'c']' for messages; R is the line in the file."""
        s = f"{self.path}, row {self.lines[i]}"
        return s if col is None else f"{s}, column {self.names[col]!r}"

    def column(self, j):
        return [r[j] for r in self.rows]

    def index_of(self, spec, what="column") -> int:
        """The index of a column given by name, or by (possibly negative) position when the table
        has no header or no column of that name."""
        spec = str(spec)
        if spec in self.names:
            return self.names.index(spec)
        try:
            k = int(spec)
        except ValueError:
            k = None
        if k is not None and -len(self.names) <= k < len(self.names):
            return k % len(self.names)
        where = f"{self.path}, row 1 (the header)" if self.has_header else self.path
        shown = ", ".join(self.names[:12]) + (" ..." if len(self.names) > 12 else "")
        raise DataError(f"{where}: no {what} {spec!r}; the columns are {shown}")

    def subset(self, keep):
        return Table(self.path, self.names, [self.rows[i] for i in keep], [self.lines[i] for i in keep],
                     self.has_header, self.unnamed)


def _looks_like_header(first, rest) -> bool:
    sample = rest[:50]
    if not sample:
        return not any(parse_number(c) is not None for c in first)
    for j, cell in enumerate(first):
        col = [r[j] for r in sample if not is_missing(r[j])]
        if parse_number(cell) is None and col and all(parse_number(c) is not None for c in col):
            return True
    if any(parse_number(c) is not None or is_missing(c) for c in first):
        return False
    if len(set(first)) != len(first):
        return False
    return all(cell not in {r[j] for r in sample} for j, cell in enumerate(first))


def _quoting(delimiter):
    # Tab-separated files do not quote (IANA TSV): a text cell may start with a quotation mark.
    return csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL


def sniff_delimiter(sample: str) -> str:
    """The delimiter among , ; tab | that splits the sample's first lines into the same number of
    cells, the most cells (UCI files use ';' too); ' ' for runs of spaces; ',' otherwise."""
    lines = [l for l in sample.splitlines()[:20] if l.strip()]
    if len(lines) > 1 and not sample.endswith("\n"):
        lines = lines[:-1]   # the last line of the sample may be cut
    best, width = ",", 1
    for d in (",", ";", "\t", "|"):
        try:
            counts = {len(r) for r in csv.reader(lines, delimiter=d, quoting=_quoting(d))}
        except csv.Error:
            continue
        if len(counts) == 1 and (n := counts.pop()) > width:
            best, width = d, n
    if width == 1 and len({len(l.split()) for l in lines}) == 1 and len(lines[0].split()) > 1:
        return " "   # columns separated by runs of spaces (old UCI .data files)
    return best


class _WhitespaceReader:
    """Rows of a file whose cells are separated by runs of spaces or tabs (no quoting)."""

    def __init__(self, f):
        self.f, self.line_num = f, 0

    def __iter__(self):
        for line in self.f:
            self.line_num += 1
            yield line.split()


def read_csv(path, header=None) -> Table:
    """A :class:`Table` from a CSV file (delimiter , ; tab | or spaces, detected); DataError (one line,
    naming file and row) for an empty or unreadable file or ragged rows. ``header``: True, False
    or None (detect)."""
    path = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            delimiter = sniff_delimiter(f.read(65536))
            f.seek(0)
            reader = (csv.reader(f, delimiter=delimiter, quoting=_quoting(delimiter)) if delimiter != " "
                      else _WhitespaceReader(f))
            rows, lines = [], []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue   # blank lines
                rows.append([c.strip() for c in row])
                lines.append(reader.line_num)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{path}, row {reader.line_num}: not valid CSV ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if not rows:
        raise DataError(f"{path}: the file is empty")
    width = len(rows[0])
    for row, line in zip(rows, lines):
        if len(row) != width:
            raise DataError(f"{path}, row {line}: {len(row)} columns, but the first row has {width} (ragged rows)")
    has_header = _looks_like_header(rows[0], rows[1:]) if header is None else bool(header)
    if has_header:
        names = [c if c else str(j) for j, c in enumerate(rows[0])]
        unnamed = {j for j, c in enumerate(rows[0]) if not c}
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise DataError(f"{path}, row {lines[0]}: the header names column {dup!r} twice")
        rows, lines = rows[1:], lines[1:]
    else:
        names = [str(j) for j in range(width)]
        unnamed = set(range(width))
    if not rows:
        raise DataError(f"{path}: the file has a header but no data rows")
    return Table(path, names, rows, lines, has_header, unnamed)


def column_kind(table: Table, j: int) -> str:
    """'numeric' or 'categorical' (see the module docstring); DataError on a stray non-number."""
    present = [(i, c) for i, c in enumerate(table.column(j)) if not is_missing(c)]
    if not present:
        raise DataError(f"{table.path}, column {table.names[j]!r}: every cell is missing")
    bad = [(i, c) for i, c in present if parse_number(c) is None]
    if not bad:
        return "numeric"
    if len(bad) >= len(present) / 2:
        return "categorical"
    i, c = bad[0]
    raise DataError(f"{table.where(i, j)}: {c!r} is not a finite number, but the column is numeric")


def empty_columns(table: Table, cols) -> list:
    """The columns among ``cols`` whose every cell is missing."""
    return [j for j in cols if all(is_missing(r[j]) for r in table.rows)]


_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")


def decimal_comma_example(cells):
    """A cell such as '-1,217' if most present cells look like numbers written with a comma
    (a decimal comma, or a thousands separator), else None."""
    present = [c for c in cells if not is_missing(c)]
    hits = [c for c in present if _DECIMAL_COMMA.fullmatch(c)]
    return hits[0] if present and len(hits) > len(present) / 2 else None


def drop_missing(table: Table, cols, missing: str, advice: str = "pass --missing drop to drop such rows"):
    """The table without rows that have a missing cell in ``cols`` (``missing='drop'``), or
    DataError naming the first such cell and giving ``advice`` (``missing='error'``). Returns
    (table, rows dropped)."""
    keep = []
    for i, row in enumerate(table.rows):
        gone = [j for j in cols if is_missing(row[j])]
        if not gone:
            keep.append(i)
        elif missing != "drop":
            raise DataError(f"{table.where(i, gone[0])}: missing value {row[gone[0]]!r} ({advice})")
    if not keep:
        raise DataError(f"{table.path}: every row has a missing value")
    return table.subset(keep), len(table) - len(keep)


# ---------------------------------------------------------------------------------------------
# encoding
# ---------------------------------------------------------------------------------------------

SAFE = (1e-150, 1e150)   # |v| in this range: v² neither overflows nor underflows


def _scale(*arrays) -> float:
    """1, or max |v| over the finite values when squaring them could overflow or underflow."""
    s = max((float(np.max(np.abs(a[np.isfinite(a)]))) for a in arrays if np.any(np.isfinite(a))), default=0.0)
    return 1.0 if s == 0 or SAFE[0] <= s <= SAFE[1] else s


def mean_std(v) -> tuple:
    """(mean, std) of the values v, computed on v / max|v| when v² would overflow or underflow
    (std of 1e305s, or of 1e-300s), then scaled back: both are finite for finite v."""
    v = np.asarray(v, np.float64)
    s = _scale(v)
    u = v / s
    return float(u.mean()) * s, float(u.std()) * s


def standardise(v, mean: float, std: float) -> np.ndarray:
    """(v - mean) / std, halving both first where v - mean overflows."""
    v = np.asarray(v, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        z = (v - mean) / std
        bad = ~np.isfinite(z)
        if bad.any():
            z[bad] = (v[bad] / 2 - mean / 2) / std * 2
    return z


def _stats_of(v, where: str) -> tuple:
    mean, std = mean_std(v)
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise DataError(f"{where}: the values cannot be standardised (mean {mean:g}, std {std:g}); rescale the column")
    return mean, (std if std > 0 else 1.0)

class Encoder:
    """Features and target of a table as float arrays; fitted on the training rows."""

    def __init__(self, features, kinds, target, task, stats=None):
        self.features = list(features)   # column names
        self.kinds = list(kinds)         # 'numeric' / 'categorical' per feature
        self.target = target
        self.task = task
        self.stats = stats or {}

    @classmethod
    def fit(cls, table: Table, feat_idx, kinds, target_idx, task, train_rows, classes=None):
        stats = {"mean": {}, "std": {}, "categories": {}}
        for j, kind in zip(feat_idx, kinds):
            name = table.names[j]
            if kind == "numeric":
                v = np.array([float(table.rows[i][j]) for i in train_rows])
                stats["mean"][name], stats["std"][name] = _stats_of(v, f"{table.path}, column {name!r}")
            else:
                stats["categories"][name] = sorted({r[j] for r in table.rows})
        if task == "regression":
            y = np.array([float(table.rows[i][target_idx]) for i in train_rows])
            stats["y_mean"], stats["y_std"] = _stats_of(y, f"{table.path}, column {table.names[target_idx]!r}")
        else:
            stats["classes"] = classes
        return cls([table.names[j] for j in feat_idx], kinds, table.names[target_idx], task, stats)

    @property
    def classes(self):
        return self.stats.get("classes")

    @property
    def width(self) -> int:
        return sum(1 if k == "numeric" else len(self.stats["categories"][f])
                   for f, k in zip(self.features, self.kinds))

    def encode_x(self, table: Table, *, unknown: str = "zeros") -> np.ndarray:
        """(N, width) float64 features. ``unknown='error'``: a category not seen in training is a
        DataError naming the cell; ``'zeros'`` encodes it as all zeros."""
        X = np.zeros((len(table), self.width))
        col = 0
        for name, kind in zip(self.features, self.kinds):
            j = table.index_of(name, "feature column")
            cells = table.column(j)
            if kind == "numeric":
                mean, std = self.stats["mean"][name], self.stats["std"][name]
                v = np.empty(len(cells))
                for i, c in enumerate(cells):
                    x = parse_number(c)
                    if x is None:
                        raise DataError(f"{table.where(i, j)}: {c!r} is not a finite number, but the column is numeric")
                    v[i] = x
                X[:, col] = z = standardise(v, mean, std)
                if not np.all(np.isfinite(z)):
                    i = int(np.flatnonzero(~np.isfinite(z))[0])
                    raise DataError(f"{table.where(i, j)}: {cells[i]!r} cannot be standardised with the "
                                    f"training mean {mean:g} and std {std:g}")
                col += 1
            else:
                cats = self.stats["categories"][name]
                pos = {c: k for k, c in enumerate(cats)}
                for i, c in enumerate(cells):
                    k = pos.get(c)
                    if k is not None:
                        X[i, col + k] = 1.0
                    elif unknown == "error":
                        shown = ", ".join(map(repr, cats[:8])) + (" ..." if len(cats) > 8 else "")
                        raise DataError(f"{table.where(i, j)}: unknown category {c!r} (training saw {shown})")
                col += len(cats)
        return X

    def unknown_categories(self, table: Table) -> dict:
        """{feature: cells of ``table`` whose category the training rows did not have}, nonzero only."""
        counts = {}
        for name, kind in zip(self.features, self.kinds):
            if kind == "categorical":
                cats = set(self.stats["categories"][name])
                n = sum(c not in cats for c in table.column(table.index_of(name, "feature column")))
                if n:
                    counts[name] = n
        return counts

    def encode_y(self, table: Table, *, unknown: str = "error") -> np.ndarray:
        """Targets: standardised floats (regression) or class ids (int64)."""
        j = table.index_of(self.target, "target column")
        cells = table.column(j)
        for i, c in enumerate(cells):
            if is_missing(c):
                raise DataError(f"{table.where(i, j)}: missing target value {c!r}")
        if self.task == "regression":
            y = np.empty(len(cells))
            for i, c in enumerate(cells):
                v = parse_number(c)
                if v is None:
                    raise DataError(f"{table.where(i, j)}: {c!r} is not a finite number, but the target is numeric")
                y[i] = v
            y = standardise(y, self.stats["y_mean"], self.stats["y_std"])
            if not np.all(np.isfinite(y)):
                i = int(np.flatnonzero(~np.isfinite(y))[0])
                raise DataError(f"{table.where(i, j)}: {cells[i]!r} cannot be standardised with the training "
                                f"mean {self.stats['y_mean']:g} and std {self.stats['y_std']:g}")
            return y
        pos = {c: k for k, c in enumerate(self.classes)}
        y = np.empty(len(cells), np.int64)
        for i, c in enumerate(cells):
            key = canonical_label(c, self.stats.get("numeric_labels", False))
            if key not in pos:
                raise DataError(f"{table.where(i, j)}: label {c!r} was not among the training labels")
            y[i] = pos[key]
        return y

    def to_dict(self):
        return {"features": self.features, "kinds": self.kinds, "target": self.target,
                "task": self.task, "stats": self.stats}

    @classmethod
    def from_dict(cls, d):
        return cls(d["features"], d["kinds"], d["target"], d["task"], d["stats"])


def canonical_label(cell: str, numeric: bool) -> str:
    """Labels '1' and '1.0' are one class when the target is numeric."""
    if numeric:
        v = parse_number(cell)
        if v is not None:
            return repr(float(v))
    return cell


def detect_task(table: Table, j: int, requested=None):
    """(task, classes, numeric_labels, why) for target column j. DataError if it has one value."""
    cells = table.column(j)
    numeric = all(parse_number(c) is not None for c in cells)
    name = table.names[j]
    if requested is None and not numeric:   # the rule of column_kind: mostly numbers is a typo
        bad = [i for i, c in enumerate(cells) if parse_number(c) is None]
        if len(bad) < len(cells) / 2:
            i = bad[0]
            raise DataError(f"{table.where(i, j)}: {cells[i]!r} is not a finite number, but the target column "
                            "is numeric (a typo?); --task multiclass treats the column as labels")
    if numeric:
        vals = np.array([float(c) for c in cells])
        distinct = np.unique(vals)
        keys = [repr(float(v)) for v in distinct]
    else:
        keys = sorted(set(cells))
    if len(keys) < 2:
        raise DataError(f"{table.path}, column {name!r}: the target has one value ({cells[0]!r}) in every row; "
                        "nothing to learn")
    if requested is None:
        if numeric and len(keys) == 2:
            task, why = "binary", "two distinct values"
        elif numeric and len(keys) <= MAX_INT_CLASSES and np.all(distinct == np.round(distinct)):
            task, why = "multiclass", f"{len(keys)} integer values"
        elif numeric:
            task, why = "regression", "numbers"
        else:
            task, why = ("binary", "two labels") if len(keys) == 2 else ("multiclass", f"{len(keys)} labels")
    else:
        task, why = requested, "--task"
        if task == "regression" and not numeric:
            bad = next(i for i, c in enumerate(cells) if parse_number(c) is None)
            raise DataError(f"{table.where(bad, j)}: {cells[bad]!r} is not a number; --task regression needs a numeric target")
        if task == "binary" and len(keys) != 2:
            raise DataError(f"{table.path}, column {name!r}: --task binary needs exactly two labels, found {len(keys)}")
    classes = None if task == "regression" else keys
    return task, classes, numeric, why


def label_spellings(table: Table, j: int, classes, numeric: bool) -> list:
    """Each class's label as first written in column j ('007', not 7.0), in the order of ``classes``."""
    first = {}
    for c in table.column(j):
        first.setdefault(canonical_label(c, numeric), c)
    return [first.get(k, k) for k in classes]


def class_label(encoder: Encoder, k: int) -> str:
    """The printable label of class k: as written in the training file (``stats['labels']``), or,
    for checkpoints without it, numeric labels as they would be written (1, not 1.0)."""
    spelled = encoder.stats.get("labels")
    if spelled:
        return spelled[k]
    key = encoder.classes[k]
    if encoder.stats.get("numeric_labels"):
        v = float(key)
        return str(int(v)) if v == int(v) else repr(v)
    return key


def split_rows(n: int, y=None, fraction: float = 0.2, seed: int = 0, where: str = ""):
    """(train rows, val rows), seeded; stratified by class when ``y`` (class ids) is given: each
    class sends round(fraction·n_c) of its rows (at least one if it has two) to validation."""
    rng = np.random.default_rng(seed)
    single = 0
    if y is None:
        perm = rng.permutation(n)
        k = int(round(fraction * n))
        val = np.sort(perm[:k])
    else:
        val = []
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            k = int(round(fraction * idx.size))
            if idx.size >= 2:
                k = min(max(k, 1), idx.size - 1)
            else:
                k, single = 0, single + 1
            val.extend(idx[:k])
        val = np.sort(np.array(val, np.int64))
    train = np.setdiff1d(np.arange(n), val)
    if val.size == 0 or train.size < 2:
        why = ""
        if single:
            k = np.unique(y).size
            why = (f"; {single} of the {k} classes have a single row, which can only go to training"
                   if single > 1 else f"; 1 of the {k} classes has a single row, which can only go to training")
        raise DataError(f"{where}: {n} rows are too few to split with --val-fraction {fraction} "
                        f"({train.size} training, {val.size} validation{why}); give more rows or --val FILE")
    return train, val


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------

def regression_metrics(pred: np.ndarray, y: np.ndarray) -> dict:
    """RMSE, MAE and R², on values divided by max |v| when squaring them would overflow or
    underflow (the errors of 1e305s), so they are finite wherever pred and y are. R² is NaN
    (undefined) when the true values are all equal."""
    pred, y = np.asarray(pred, np.float64), np.asarray(y, np.float64)
    s = _scale(pred, y)
    p, t = pred / s, y / s
    err = p - t
    sst = float(np.sum((t - t.mean()) ** 2))
    return {"rmse": float(np.sqrt(np.mean(err ** 2))) * s, "mae": float(np.mean(np.abs(err))) * s,
            "r2": 1.0 - float(np.sum(err ** 2)) / sst if sst > 0 else float("nan")}


def confusion_matrix(pred: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """C[i, j] = rows of true class i predicted as j."""
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (y, pred), 1)
    return m


def classification_metrics(proba: np.ndarray, y: np.ndarray) -> dict:
    """proba (N, K) class probabilities; y (N,) class ids."""
    k = proba.shape[1]
    pred = np.argmax(proba, axis=1)
    cm = confusion_matrix(pred, y, k)
    tp = np.diag(cm).astype(np.float64)
    prec = np.divide(tp, cm.sum(0), out=np.zeros(k), where=cm.sum(0) > 0)
    rec = np.divide(tp, cm.sum(1), out=np.zeros(k), where=cm.sum(1) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(k), where=(prec + rec) > 0)
    present = (cm.sum(0) + cm.sum(1)) > 0   # as scikit-learn: classes with no true or predicted row are left out
    p = np.clip(proba[np.arange(y.size), y], 1e-15, 1.0)
    return {"accuracy": float(np.mean(pred == y)), "macro_f1": float(f1[present].mean()),
            "log_loss": float(-np.mean(np.log(p)))}


def baseline_metrics(task: str, y_train: np.ndarray, y_val: np.ndarray, k: int | None = None) -> dict:
    """The mean predictor's (regression) or the majority class's (classification) metrics."""
    if task == "regression":
        return regression_metrics(np.full(y_val.shape, mean_std(y_train)[0]), y_val)
    freq = np.bincount(y_train, minlength=k) / y_train.size
    majority = int(np.argmax(freq))
    m = classification_metrics(np.tile(freq, (y_val.size, 1)), y_val)
    onehot = np.zeros((y_val.size, k))
    onehot[:, majority] = 1.0
    m2 = classification_metrics(onehot, y_val)
    return {"accuracy": m2["accuracy"], "macro_f1": m2["macro_f1"], "log_loss": m["log_loss"]}


def task_loss(task: str, out: np.ndarray, y: np.ndarray):
    """(mean loss, ∂loss/∂out) for the model output ``out`` (B, O) and targets ``y``."""
    if task == "regression":
        return mse_loss(out, y.reshape(out.shape).astype(out.dtype))
    if task == "binary":
        return bce_with_logits(out, y.reshape(out.shape).astype(out.dtype))
    return softmax_cross_entropy(out, y)


def output_size(task: str, classes) -> int:
    return len(classes) if task == "multiclass" else 1


def probabilities(task: str, out: np.ndarray) -> np.ndarray:
    """Class probabilities (N, K) from logits (N, O); for binary, [1 - σ(z), σ(z)]."""
    out = out.astype(np.float64)
    if task == "binary":
        p = 1.0 / (1.0 + np.exp(-np.clip(out[:, 0], -700, 700)))
        return np.stack([1 - p, p], axis=1)
    z = out - out.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------

class TabularMLP(Parameterised):
    """x (B, I) ─ [Dense(act) ─ Dropout] × len(hidden) ─ Dense(O) ─> out, with the task's loss.

    Parameters ``layers.{k}.weight`` / ``layers.{k}.bias`` as :class:`~bptt.layers.MLP`. Follows
    the model protocol of :mod:`bptt.supervised`; a batch is ``{"x": (B, I), "y": (B,)}``.
    """

    def __repr__(self):
        return f"MLP({self.sizes}, {self.task})"

    def __init__(self, in_features, hidden, out_features, task, *, activation="relu", dropout=0.0,
                 dtype="float64", seed=0, rng=None):
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
        rng = rng if rng is not None else np.random.default_rng(seed)
        sizes = [in_features] + list(hidden) + [out_features]
        self.task = task
        self.sizes = sizes
        self.dense = [Dense(sizes[k], sizes[k + 1], activation if k < len(sizes) - 2 else "identity",
                            dtype=dtype, rng=rng) for k in range(len(sizes) - 1)]
        self.drops = [Dropout(dropout, dtype=dtype) for _ in hidden] if dropout > 0 else []
        self.dtype = self.dense[0].dtype
        self.params = {f"layers.{k}.{n}": d.params[n] for k, d in enumerate(self.dense) for n in ("weight", "bias")}
        self.grads = {f"layers.{k}.{n}": d.grads[n] for k, d in enumerate(self.dense) for n in ("weight", "bias")}
        self.training = True
        self._work = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))

    # -- the model protocol ---------------------------------------------------------------------
    def train(self, mode=True):
        self.training = mode
        for d in self.drops:
            d.train(mode)

    def eval(self):
        self.train(False)

    def forward(self, x, rng=None):
        """out (B, O) from features x (B, I)."""
        x = np.ascontiguousarray(x, dtype=self.dtype)
        with serial_when(x.shape[0] * self._work < SERIAL_WORK):
            last = len(self.dense) - 1
            for k, d in enumerate(self.dense):   # copies for backward: the caller's x and the output only
                x = d.run(x, own_input=k > 0, own_output=k < last)
                if k < len(self.drops):
                    x = self.drops[k].forward(x, rng)
        return x

    def backward(self, dout, input_grad: bool = False, accumulate: bool = True):
        """Accumulate the parameter gradients from ∂L/∂out (set them, with ``accumulate=False``:
        :meth:`bptt.layers.Dense.backward`); return ∂L/∂x if ``input_grad``."""
        with serial_when(dout.shape[0] * self._work < SERIAL_WORK):
            for k in range(len(self.dense) - 1, -1, -1):
                if k < len(self.drops):
                    dout = self.drops[k].backward(dout)
                dout = self.dense[k].backward(dout, input_grad=input_grad or k > 0, accumulate=accumulate)
        return dout

    sets_gradients = True   # loss_and_grad(..., accumulate=False) sets every gradient (bptt.supervised)

    def loss_and_grad(self, batch, rng=None, accumulate=True):
        with serial_when(len(batch["x"]) * self._work < SERIAL_WORK):   # the loss kernels too
            out = self.forward(batch["x"], rng)
            loss, dout = task_loss(self.task, out, batch["y"])
            self.backward(dout, accumulate=accumulate)
        return loss

    def loss(self, batch):
        with serial_when(len(batch["x"]) * self._work < SERIAL_WORK):
            return task_loss(self.task, self.forward(batch["x"]), batch["y"])[0]

    def predict(self, x, batch_size=4096):
        """Raw outputs (N, O) in evaluation mode."""
        self.eval()
        return np.concatenate([self.forward(x[s:s + batch_size]) for s in range(0, len(x), batch_size)])

    # -- gradcheck interface: the mean loss as a function of the parameters and of x ------------
    def check_forward(self, x, y):
        out = self.forward(x)
        loss, self._dout = task_loss(self.task, out, y)
        return (np.array([loss]),)

    def check_backward(self, dloss):
        return {"x": self.backward(self._dout * dloss[0], input_grad=True)}
