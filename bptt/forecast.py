"""Layer 3: forecasting time series with a recurrent network read over windows.

The problem
-----------
A CSV holds N time steps (rows) of S target series (``columns``) and C optional covariates
(``covariates``, inputs only). From the W steps ``t-W .. t-1`` (every target and covariate,
scaled) the model predicts the K targets ``t .. t+K-1`` of every series: one output of K·S values.

    window (B, W, I = S + C) ─ RNN/LSTM/GRU × L ─> last hidden state (B, H) ─ Dense(H, K·S) ─> (B, K, S)
    loss = mean squared error on scaled values

Scaling and the split (no leak from the validation part)
--------------------------------------------------------
The last V steps of the series are the validation part (``val_steps``, or ``round(val_fraction·N)``,
at least K). The training part is the first N - V steps; every statistic (the scaler's mean and
standard deviation, the MASE scale, the detected season) comes from it alone, and a training window
(inputs and targets) lies inside it entirely. Validation windows are the forecast origins ``t`` in
``[N-V, N-K]``: their targets are validation values, their inputs the W true values before ``t``
(which may be earlier validation values: a rolling-origin evaluation, as a forecaster running in
production sees). Training windows are shuffled among themselves, never across the split.

By default (``target="delta"``) the network predicts each future value as a change from the last
observed one, ``z[t+k] - z[t-1]`` in scaled units: a network that outputs zeros is the naive
forecast, and a trend that leaves the training range stays inside what the network has seen.
``target="level"`` predicts ``z[t+k]`` itself.

Metrics and baselines
---------------------
For each horizon step k = 1..K and series: MAE, RMSE and MASE (the MAE divided by the in-sample
MAE of the naive one-step forecast on the training part, ``mean |y_i - y_{i-1}|``), for the
model, the naive last-value forecast ``ŷ[t+k-1] = y[t-1]`` and the seasonal-naive forecast
``ŷ[t+k-1] = y[t+k-1 - S·(⌊(k-1)/S⌋ + 1)]`` (the value one season before, from before ``t``).

Season detection (:func:`detect_season`): the training part of each target, minus its
least-squares line, gives an autocorrelation r(l) (the usual biased estimator); the mean over the
targets is searched for lags 2 ≤ l ≤ n/2 where r has a local maximum (r(l-1) < r(l) ≥ r(l+1)) of
at least 0.2; the largest such r wins. None found: S = 1 (seasonal naive is then the naive forecast).

Training and use
----------------
:class:`ForecastTrainer` trains through :class:`bptt.supervised.SupervisedTrainer` (seeded epochs
of shuffled training windows, a validation each epoch, early stopping, ``best.bptt``,
``metrics.jsonl``, exact resume, Ctrl-C, the NaN guard): a dataset row is a window's origin, and
:class:`WindowModel` builds the batch's windows. A checkpoint of kind ``"forecast"`` holds what
:func:`predict_forecast` needs to forecast the K steps after the end of any series with the same
columns: the model's configuration and weights, the scaler, the column names, W, K and the target
mode.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import SavedConfig
from .data import DataError
from .layers import Dense, mse_loss
from .layers.base import Parameterised, as_dtype
from .layers.recurrent import GRU, LSTM, RNN

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
TARGET_MODES = ("delta", "level")
SEASON_MIN_ACF = 0.2
DEMOS = ("seasonal",)


# ---------------------------------------------------------------------------------------------
# reading a series
# ---------------------------------------------------------------------------------------------

@dataclass
class Series:
    """Targets (N, S) and covariates (N, C), float64, with their column names."""
    targets: np.ndarray
    covariates: np.ndarray
    target_names: list
    covariate_names: list
    source: str = ""

    @property
    def length(self) -> int:
        return int(self.targets.shape[0])

    def values(self) -> np.ndarray:
        """Every input column, targets first: (N, S + C)."""
        return np.concatenate([self.targets, self.covariates], axis=1)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def split_names(spec) -> list:
    """'a,b' or ['a', 'b'] -> ['a', 'b'] (blank entries dropped)."""
    if spec is None:
        return []
    if isinstance(spec, str):
        spec = spec.split(",")
    return [str(s).strip() for s in spec if str(s).strip()]


def _resolve(path, header, spec, what):
    """The column index of ``spec`` (a header name, or an integer index, -1 the last)."""
    if spec in header:
        return header.index(spec)
    try:
        k = int(spec)
    except ValueError:
        k = None
    if k is not None and -len(header) <= k < len(header):
        return k % len(header)
    shown = ", ".join(header[:12]) + (", ..." if len(header) > 12 else "")
    raise DataError(f"{path}: no {what} column {spec!r} (columns: {shown})")


def _is_blank(row) -> bool:
    return not row or all(not c.strip() for c in row)


def read_series_csv(path, columns=None, covariates=None, header=None) -> Series:
    """Read the target ``columns`` (default: the last column) and the ``covariates`` of a CSV.

    The delimiter (, ; tab | or runs of spaces) is detected as ``bptt fit`` does
    (:func:`bptt.tabular.sniff_delimiter`). A header row is detected when some column of the first
    row is not a number while the second row's is (``header=True/False`` overrides). Without one,
    columns are named 0, 1, ...; a column may always be given by its index (-1 the last). Other
    columns (a date, say) are not read. Blank lines before the first row and after the last are
    skipped; inside a file of several columns too, but in a file of one column a blank line inside
    the series is an empty cell (a missing value would shift every later step). DataError, one
    line naming the file, the line and the column, for a missing file or column, an empty file, a
    ragged row, an empty, non-numeric, NaN or infinite cell.
    """
    from .tabular import sniff_delimiter
    path = str(path)
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such file")
    if p.is_dir():
        raise DataError(f"{path}: is a directory, not a CSV file")
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            delimiter = sniff_delimiter(f.read(65536))
            f.seek(0)
            if delimiter == " ":            # columns separated by runs of spaces: no quoting
                for line_num, line in enumerate(f, 1):
                    rows.append((line_num, line.split()))
            else:                           # tab-separated files do not quote (IANA TSV)
                reader = csv.reader(f, delimiter=delimiter,
                                    quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
                for row in reader:
                    rows.append((reader.line_num, [c.strip() for c in row]))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    filled = [i for i, (_, row) in enumerate(rows) if not _is_blank(row)]
    if not filled:
        raise DataError(f"{path}: the file is empty")
    rows = rows[filled[0]:filled[-1] + 1]          # blank lines before and after: none of the series
    one_column = len(rows[0][1]) == 1
    # in a one-column file a blank line is an empty cell; in a wider one, a line left blank
    rows = [(line, [""] if _is_blank(row) else row) for line, row in rows
            if one_column or not _is_blank(row)]
    first = rows[0][1]
    if header is None:
        filled_rows = [row for _, row in rows if not _is_blank(row)]
        if len(filled_rows) == 1:
            header = not any(_is_number(c) for c in first)
        else:
            second = filled_rows[1]
            header = any(not _is_number(a) and b != "" and _is_number(b)
                         for a, b in zip(first, second))
    if header:
        names = first
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise DataError(f"{path}, line {rows[0][0]}: the header names column {dup!r} twice")
        body = rows[1:]
    else:
        names = [str(i) for i in range(len(first))]
        body = rows
    ncol = len(names)
    for line, row in body:
        if len(row) != ncol:
            raise DataError(f"{path}, line {line}: {len(row)} fields where the "
                            f"{'header' if header else 'first row'} has {ncol} (a ragged row)")
    if not body:
        raise DataError(f"{path}: the file has a header but no data rows")
    tspec = split_names(columns) or ["-1"]
    cspec = split_names(covariates)
    tidx = [_resolve(path, names, s, "target") for s in tspec]
    cidx = [_resolve(path, names, s, "covariate") for s in cspec]
    if len(set(tidx)) != len(tidx) or len(set(cidx)) != len(cidx):
        raise DataError(f"{path}: a column is listed twice in --column or --covariates")
    both = set(tidx) & set(cidx)
    if both:
        raise DataError(f"{path}: column {names[both.pop()]!r} is both a target and a covariate")

    def numbers(idx):
        out = np.empty((len(body), len(idx)), np.float64)
        for j, k in enumerate(idx):
            for i, (line, row) in enumerate(body):
                cell = row[k]
                where = f"{path}, line {line}, column {names[k]!r}"
                if cell == "":
                    raise DataError(f"{where}: empty cell (a time series needs every value)")
                try:
                    v = float(cell)
                except ValueError:
                    raise DataError(f"{where}: {cell[:40]!r} is not a number") from None
                if not math.isfinite(v):
                    raise DataError(f"{where}: {cell!r} is not a finite number")
                out[i, j] = v
        return out

    return Series(numbers(tidx), numbers(cidx), [names[k] for k in tidx], [names[k] for k in cidx],
                  source=path)


# ---------------------------------------------------------------------------------------------
# built-in data
# ---------------------------------------------------------------------------------------------

def demo_seasonal(n: int = 2688, seed: int = 0) -> Series:
    """A synthetic hourly series: level 20, linear trend 0.004/step, a daily (24-step) cycle of two
    harmonics, a weekly (168-step) sinusoid, and AR(1) noise e_t = 0.8·e_{t-1} + 0.4·ε_t,
    ε ~ N(0, 1) seeded by ``seed``. The default length is 16 weeks. Deterministic."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    daily = 2.0 * np.sin(2 * np.pi * t / 24) + 0.7 * np.sin(4 * np.pi * t / 24 + 1.0)
    weekly = 1.5 * np.sin(2 * np.pi * t / 168 + 0.5)
    eps = rng.standard_normal(n)
    noise = np.empty(n)
    e = 0.0
    for i in range(n):
        e = 0.8 * e + 0.4 * eps[i]
        noise[i] = e
    y = 20.0 + 0.004 * t + daily + weekly + noise
    return Series(y[:, None], np.zeros((n, 0)), ["value"], [], source="demo:seasonal")


def demo_series(name: str) -> Series:
    if name != "seasonal":
        raise ValueError(f"demo must be one of {', '.join(DEMOS)}; got {name!r}")
    return demo_seasonal()


def write_series_csv(series: Series, path) -> None:
    """The series as a CSV with a header: ``t``, the targets, then the covariates."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["t"] + series.target_names + series.covariate_names)
        vals = series.values()
        for i in range(series.length):
            w.writerow([i] + [repr(float(v)) for v in vals[i]])


# ---------------------------------------------------------------------------------------------
# statistics of the training part
# ---------------------------------------------------------------------------------------------

def max_abs(values: np.ndarray) -> np.ndarray:
    """max |v| per column of (N, C); 1 for an empty or all-zero column (what divides safely)."""
    a = np.max(np.abs(values), axis=0) if values.shape[0] else np.ones(values.shape[1:])
    return np.where(a > 0, a, 1.0)


@dataclass
class Scaler:
    """Per-column standardisation z = (v - mean) / std, fitted on the training part only.

    The statistics are taken of v / max|v| and scaled back (mean = m·a, std = s·a with |m|, s ≤ 1),
    so that neither overflows for values near 1e308 nor underflows for values near 1e-300. A
    constant column (s ≤ 1e-12) is divided by max|v| instead: z stays the relative change."""
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        a = max_abs(values)
        u = values / a
        m, sd = u.mean(axis=0), u.std(axis=0)
        return cls(m * a, np.where(sd > 1e-12, sd, 1.0) * a)

    def transform(self, values):
        # v/std - mean/std rather than (v - mean)/std: the difference of two values near the
        # largest float may overflow, each quotient does not
        return values / self.std - self.mean / self.std

    def inverse(self, z, cols=slice(None)):
        return z * self.std[cols] + self.mean[cols]

    def to_dict(self):
        return {"mean": self.mean.astype(np.float64), "std": self.std.astype(np.float64)}

    @classmethod
    def from_dict(cls, d):
        return cls(np.asarray(d["mean"], np.float64), np.asarray(d["std"], np.float64))


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """r(l) for l = 0..n-1 of a 1-D series: Σ_i x̃_i·x̃_{i+l} / Σ_i x̃_i², x̃ = x - mean (biased)."""
    x = np.asarray(x, np.float64) - np.mean(x)
    n = x.size
    denom = float(np.dot(x, x))
    if n == 0 or denom == 0:
        return np.zeros(n)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(x, size)
    return np.fft.irfft(f * np.conj(f), size)[:n] / denom


def detect_season(train: np.ndarray, min_acf: float = SEASON_MIN_ACF) -> int:
    """The season of ``train`` (n,) or (n, S) by the rule in the module docstring; 1 if none."""
    y = np.asarray(train, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    n = y.shape[0]
    if n < 8:
        return 1
    y = y / max_abs(y)          # r(l) does not depend on the scale; squares of 1e±300 do
    t = np.arange(n, dtype=np.float64)
    A = np.stack([np.ones(n), t], axis=1)
    r = np.zeros(n)
    for s in range(y.shape[1]):
        coef, *_ = np.linalg.lstsq(A, y[:, s], rcond=None)
        resid = y[:, s] - A @ coef
        spread = float(np.sum((y[:, s] - y[:, s].mean()) ** 2))
        if float(np.dot(resid, resid)) > 1e-12 * spread:   # not a straight line plus rounding
            r += autocorrelation(resid)
    r /= y.shape[1]
    best, best_r = 1, min_acf
    for lag in range(2, n // 2 + 1):
        if lag + 1 < n and r[lag - 1] < r[lag] >= r[lag + 1] and r[lag] >= best_r:
            best, best_r = lag, r[lag]
    return best


def naive_scale(train: np.ndarray) -> np.ndarray:
    """MASE's scale per series: the in-sample MAE of the naive one-step forecast, (S,).
    (Of train / max|train|, scaled back: a difference of two huge values does not overflow.)"""
    a = max_abs(train)
    return np.mean(np.abs(np.diff(train / a, axis=0)), axis=0) * a


# ---------------------------------------------------------------------------------------------
# windows and baselines
# ---------------------------------------------------------------------------------------------

@dataclass
class Split:
    """Indices of the windows. A window with origin t reads inputs t-W..t-1, predicts t..t+K-1."""
    n: int
    window: int
    horizon: int
    n_train: int                 # the training part is steps [0, n_train)
    train_origins: np.ndarray    # every t with t-W >= 0 and t+K <= n_train
    val_origins: np.ndarray      # every t in [n_train, n-K]


def make_split(n: int, window: int, horizon: int, *, val_fraction: float = 0.2,
               val_steps: int | None = None, source: str = "the series",
               window_label: str | None = None) -> Split:
    """The training and validation windows of a series of ``n`` steps (see the module docstring).
    DataError if the series is too short for the window, the horizon and the split.
    ``window_label`` names the window in messages (default ``--window W``)."""
    W, K = int(window), int(horizon)
    if W < 1 or K < 1:
        raise ValueError(f"window and horizon must be positive, got window={W}, horizon={K}")
    wl = window_label or f"--window {W}"
    if K > n:
        raise DataError(f"{source}: --horizon {K} is longer than the series ({steps(n)})")
    if K == n:
        raise DataError(f"{source}: --horizon {K} is as long as the series ({steps(n)}): no step is "
                        f"left for a window to read")
    if W + K > n:
        raise DataError(f"{source}: {wl} plus --horizon {K} is longer than the series ({steps(n)})")
    if val_steps is None:
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        V = max(K, int(round(val_fraction * n)))
    else:
        V = int(val_steps)
        if V < K:
            raise DataError(f"{source}: --val-steps {V} is shorter than --horizon {K}: no validation "
                            f"window fits")
    n_train = n - V
    if n_train < W + K:
        raise DataError(f"{source}: {steps(n)} leave {n_train} for training after {V} validation "
                        f"step{'s' if V != 1 else ''}, fewer than {wl} plus --horizon {K}; use a "
                        f"shorter window or horizon, or fewer validation steps")
    return Split(n, W, K, n_train, np.arange(W, n_train - K + 1, dtype=np.int64),
                 np.arange(n_train, n - K + 1, dtype=np.int64))


def steps(n: int) -> str:
    """'1 step', '2 steps'."""
    return f"{n} step" if n == 1 else f"{n} steps"


def gather_windows(z: np.ndarray, origins: np.ndarray, window: int) -> np.ndarray:
    """Inputs (B, W, I): rows origins[b]-W .. origins[b]-1 of z (N, I)."""
    return z[origins[:, None] + np.arange(-window, 0)[None, :]]


def gather_targets(y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """Targets (B, K, S): rows origins[b] .. origins[b]+K-1 of y (N, S)."""
    return y[origins[:, None] + np.arange(horizon)[None, :]]


def naive_forecast(y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """(B, K, S): the last value before each origin, repeated."""
    return np.repeat(y[origins - 1][:, None, :], horizon, axis=1)


def seasonal_naive_forecast(y: np.ndarray, origins: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """(B, K, S): ŷ[t+k] = y[t+k - S·(⌊k/S⌋ + 1)] for k = 0..K-1, always a value before t."""
    S = int(season)
    k = np.arange(horizon)
    idx = origins[:, None] + (k - S * (k // S + 1))[None, :]
    if idx.size and idx.min() < 0:
        raise DataError(f"the season {S} is longer than the history before the first forecast")
    return y[idx]


def forecast_metrics(pred: np.ndarray, truth: np.ndarray, scale: np.ndarray) -> dict:
    """MAE, RMSE and MASE per horizon step and series, each (K, S), from (B, K, S) arrays."""
    err = pred - truth
    mae = np.mean(np.abs(err), axis=0)
    # RMSE = m·sqrt(mean((e/m)²)), m = max|e|: e² of a 1e300 error would overflow
    m = np.max(np.abs(err), axis=0) if err.shape[0] else np.ones(err.shape[1:])
    m = np.where((m > 0) & np.isfinite(m), m, 1.0)
    rmse = m * np.sqrt(np.mean((err / m) ** 2, axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        mase = np.where(scale > 0, mae / np.where(scale > 0, scale, 1.0), np.nan)
    return {"mae": mae, "rmse": rmse, "mase": mase}


def _mean_defined(x: np.ndarray, defined: np.ndarray, axis=None) -> np.ndarray:
    """The mean of x (K, S) over the series where ``defined`` (S,) holds; NaN if none."""
    if not defined.any():
        return np.full(x.shape[0], np.nan) if axis == 1 else np.float64(np.nan)
    return np.mean(x[:, defined], axis=axis)


def summarize(metrics: dict) -> dict:
    """Per horizon step (lists of K, averaged over the series) and overall (averaged over both).
    MASE is averaged over the series where it is defined (a training part that is not constant);
    ``mase_series`` counts them, out of ``n_series``."""
    out = {}
    for name, m in metrics.items():
        defined = ~np.isnan(m["mase"]).any(axis=0)     # NaN: the series' MASE scale is 0
        per_step = {k: m[k].mean(axis=1) for k in ("mae", "rmse")}
        per_step["mase"] = _mean_defined(m["mase"], defined, axis=1)
        out[name] = {k: [float(v) for v in per_step[k]] for k in ("mae", "rmse", "mase")}
        out[name].update({f"{k}_mean": float(np.mean(m[k])) for k in ("mae", "rmse")})
        out[name]["mase_mean"] = float(_mean_defined(m["mase"], defined))
        out[name]["mase_series"], out[name]["n_series"] = int(defined.sum()), int(defined.size)
    return out


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------

@dataclass
class ForecastModelConfig(SavedConfig):
    """What a forecaster is, saved in every checkpoint."""
    input_size: int
    horizon: int
    n_series: int
    cell: str = "lstm"
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.0
    dtype: str = "float32"
    seed: int = 0


class Forecaster(Parameterised):
    """Stacked RNN/LSTM/GRU over a window, then a dense head from the last hidden state to the K·S
    outputs. Parameters ``rnn.weight_ih_l0`` ..., ``head.weight``, ``head.bias``.

    ``forward(x, rng=None)`` maps x (B, W, I) to (B, K·S); ``backward(dpred)`` accumulates every
    gradient and returns dx (B, W, I). The gradient of the last state reaches the recurrent layer
    as ``dout`` with only its last time step non-zero. With ``dropout`` p > 0, as the language
    model: inverted dropout between stacked layers (torch's ``dropout=``) and on the last hidden
    state before the head, on only when a generator ``rng`` is given to draw the masks.
    """

    def __init__(self, config: ForecastModelConfig):
        from .layers.dropout import Dropout
        from .model import DroppedStack
        if config.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {config.cell!r}")
        for name in ("input_size", "horizon", "n_series", "hidden", "layers"):
            v = getattr(config, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        p = float(config.dropout)
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {config.dropout!r}")
        self.config = config
        self.dtype = as_dtype(config.dtype)
        rng = np.random.default_rng(config.seed)
        if p > 0 and config.layers > 1:
            self.rnn = DroppedStack(CELLS[config.cell], config.input_size, config.hidden,
                                    config.layers, p, dtype=self.dtype, rng=rng)
        else:
            self.rnn = CELLS[config.cell](config.input_size, config.hidden, num_layers=config.layers,
                                          dtype=self.dtype, rng=rng)
        self.out_features = config.horizon * config.n_series
        self.head = Dense(config.hidden, self.out_features, dtype=self.dtype, rng=rng)
        self.drop = Dropout(p, dtype=self.dtype) if p > 0 else None
        self.parts = {"rnn": self.rnn, "head": self.head}
        self.params = {f"{p}.{k}": v for p, part in self.parts.items() for k, v in part.params.items()}
        self.grads = {f"{p}.{k}": v for p, part in self.parts.items() for k, v in part.grads.items()}
        self._shape = None

    def __repr__(self):
        c = self.config
        return (f"Forecaster({c.cell}, input_size={c.input_size}, hidden={c.hidden}, layers={c.layers}, "
                f"horizon={c.horizon}, n_series={c.n_series}, dropout={c.dropout}, dtype={self.dtype.name})")

    # -- forward / backward -------------------------------------------------------------------
    def forward(self, x: np.ndarray, rng=None) -> np.ndarray:
        if hasattr(self.rnn, "cells"):      # a DroppedStack: dropout between the layers
            out, _ = self.rnn.forward(x, None, rng)
        else:
            out, _ = self.rnn.forward(x)
        self._shape = out.shape
        last = np.ascontiguousarray(out[:, -1, :])
        if self.drop is not None:
            self.drop.train(rng is not None)
            last = self.drop.forward(last, rng)
        return self.head.forward(last)

    def backward(self, dpred: np.ndarray) -> np.ndarray:
        if self._shape is None:
            raise RuntimeError("Forecaster.backward called before forward")
        dlast = self.head.backward(dpred)
        if self.drop is not None:
            dlast = self.drop.backward(dlast)
        dout = np.zeros(self._shape, self.dtype)
        dout[:, -1, :] = dlast
        return self.rnn.backward(dout)

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray, rng=None) -> float:
        """Forward, mean squared error against y (B, K·S), backward (gradients accumulate)."""
        pred = self.forward(x, rng)
        loss, dpred = mse_loss(pred, y)
        self.backward(dpred)
        return loss

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        loss, _ = mse_loss(self.forward(x), y)
        return loss

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(B, K·S) in batches, forward only, dropout off."""
        outs = [self.forward(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]
        return np.concatenate(outs, axis=0) if outs else np.zeros((0, self.out_features), self.dtype)

    # -- gradcheck interface: dropout (if any) uses the same masks on every forward ---------------
    check_dropout_seed = None

    def check_forward(self, x):
        rng = None if self.check_dropout_seed is None else np.random.default_rng(self.check_dropout_seed)
        return (self.forward(x, rng),)

    def check_backward(self, dpred):
        return {"x": self.backward(dpred)}


def forecaster_problem(cell: str = "lstm", *, seed: int = 0, batch: int = 3, window: int = 5,
                       input_size: int = 2, hidden: int = 6, layers: int = 2, horizon: int = 3,
                       n_series: int = 2, dropout: float = 0.0):
    """A float64 forecaster and a seeded window batch, for :func:`bptt.finitediff.gradcheck`.
    With dropout, every forward of the check draws the same masks (a fixed seed)."""
    model = Forecaster(ForecastModelConfig(input_size=input_size, horizon=horizon, n_series=n_series,
                                           cell=cell, hidden=hidden, layers=layers, dropout=dropout,
                                           dtype="float64", seed=seed))
    if dropout > 0:
        model.check_dropout_seed = seed + 2
    rng = np.random.default_rng(seed + 1)
    return model, {"x": rng.standard_normal((batch, window, input_size))}


# ---------------------------------------------------------------------------------------------
# a series made ready for training: split, scaler, season, windows
# ---------------------------------------------------------------------------------------------

class ForecastData:
    """A series with its split, the scaler and the MASE scale fitted on the training part, and
    the season (given, or detected on the training part).

    ``inputs(origins)`` gives the scaled windows (B, W, I); ``targets(origins)`` the scaled
    training targets (B, K·S) (changes from the last value with ``target_mode="delta"``);
    ``to_values(out, origins)`` turns the network's (B, K·S) back into (B, K, S) in the series' units.
    """

    def __init__(self, series: Series, window: int, horizon: int, *, val_fraction: float = 0.2,
                 val_steps: int | None = None, season: int | None = None, target_mode: str = "delta",
                 scaler: Scaler | None = None, window_label: str | None = None):
        if target_mode not in TARGET_MODES:
            raise ValueError(f"target_mode must be one of {', '.join(TARGET_MODES)}; got {target_mode!r}")
        self.series = series
        self.window, self.horizon = int(window), int(horizon)
        self.target_mode = target_mode
        self.split = make_split(series.length, window, horizon, val_fraction=val_fraction,
                                val_steps=val_steps, source=series.source or "the series",
                                window_label=window_label)
        n_train = self.split.n_train
        values = series.values()
        self.scaler = scaler if scaler is not None else Scaler.fit(values[:n_train])
        self.z = scaled_values(self.scaler, values, series)
        self.n_series = series.targets.shape[1]
        self.input_size = values.shape[1]
        self.y = series.targets
        self.naive_scale = naive_scale(series.targets[:n_train])
        if season is None:
            season = detect_season(series.targets[:n_train])
            self.season_detected = True
        else:
            self.season_detected = False
        season = int(season)
        if season < 1:
            raise ValueError(f"season must be a positive integer, got {season}")
        if season > self.split.val_origins[0]:
            raise DataError(f"{series.source or 'the series'}: --season {season} is longer than the "
                            f"{self.split.val_origins[0]} steps before the first validation forecast")
        self.season = season

    def inputs(self, origins: np.ndarray, dtype=np.float64) -> np.ndarray:
        return gather_windows(self.z, origins, self.window).astype(dtype, copy=False)

    def targets(self, origins: np.ndarray, dtype=np.float64) -> np.ndarray:
        zy = self.z[:, :self.n_series]
        t = gather_targets(zy, origins, self.horizon)
        if self.target_mode == "delta":
            t = t - zy[origins - 1][:, None, :]
        return np.ascontiguousarray(t.reshape(len(origins), -1), dtype=dtype)

    def to_values(self, out: np.ndarray, origins: np.ndarray) -> np.ndarray:
        S = self.n_series
        z = np.asarray(out, np.float64).reshape(len(origins), self.horizon, S)
        if self.target_mode == "delta":
            z = z + self.z[origins - 1, :S][:, None, :]
        return self.scaler.inverse(z, slice(0, S))

    def truth(self, origins: np.ndarray) -> np.ndarray:
        return gather_targets(self.y, origins, self.horizon)

    def baselines(self, origins: np.ndarray) -> dict:
        return {"naive": naive_forecast(self.y, origins, self.horizon),
                "seasonal_naive": seasonal_naive_forecast(self.y, origins, self.horizon, self.season)}


Z_LIMIT = 1e30   # |z| beyond this is no input a network can use (and float32 ends near 3.4e38)


def scaled_values(scaler: Scaler, values: np.ndarray, series: Series) -> np.ndarray:
    """scaler.transform(values), (N, I); DataError naming the first column (targets, then
    covariates) whose scaled values are not finite or beyond ``Z_LIMIT``: values so far outside
    the training part's range that no network input can hold them."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        z = scaler.transform(values)
    bad = ~np.all(np.isfinite(z) & (np.abs(z) < Z_LIMIT), axis=0) if z.shape[0] else np.zeros(0, bool)
    if bad.any():
        j = int(np.argmax(bad))
        name = (list(series.target_names) + list(series.covariate_names))[j]
        col = values[:, j]
        raise DataError(f"{series.source or 'the series'}: column {name!r} cannot be scaled: its "
                        f"values ({col.min():.3g} to {col.max():.3g}) are too far from the training "
                        f"part's mean {scaler.mean[j]:.3g} for its standard deviation "
                        f"{scaler.std[j]:.3g}")
    return z


def evaluate_forecast(model: Forecaster, data: ForecastData, origins=None, batch_size: int = 256) -> dict:
    """Metrics (K, S) arrays of the model and of both baselines on the validation windows, and
    the model's validation loss (MSE on scaled values)."""
    origins = data.split.val_origins if origins is None else origins
    out = model.predict(data.inputs(origins, model.dtype), batch_size)
    loss, _ = mse_loss(np.asarray(out, np.float64), data.targets(origins))
    preds = {"model": data.to_values(out, origins), **data.baselines(origins)}
    truth = data.truth(origins)
    metrics = {k: forecast_metrics(p, truth, data.naive_scale) for k, p in preds.items()}
    return {"loss": loss, "metrics": metrics, "pred": preds["model"], "truth": truth}


# ---------------------------------------------------------------------------------------------
# training: bptt.supervised's trainer over the training windows
# ---------------------------------------------------------------------------------------------

KIND = "forecast"
BEST_NAME = "best.bptt"
CHECKPOINT_NAME = "checkpoint.bptt"
PREDICT_KEYS = ("model_config", "model", "forecast.target_names", "forecast.covariate_names",
                "forecast.window", "forecast.horizon", "forecast.target_mode", "forecast.scaler")
MAX_DEFAULT_WINDOW = 256


@dataclass
class ForecastConfig(SavedConfig):
    """Every option of a forecasting run. Saved in the checkpoint (``forecast_config``)."""
    source: str | None = None        # the CSV file, or None for ``demo``
    demo: str | None = None
    columns: list = field(default_factory=list)
    covariates: list = field(default_factory=list)
    header: bool | None = None
    horizon: int = 1
    window: int | None = None        # None: see default_window
    season: int | None = None        # None: detected on the training part
    val_fraction: float = 0.2
    val_steps: int | None = None
    target: str = "delta"
    cell: str = "lstm"
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.0
    epochs: float | None = 100
    minutes: float | None = None
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float | None = None
    clip: float | None = 1.0
    patience: int | None = 10
    seed: int = 0
    dtype: str = "float32"

    def validate(self):
        for name in ("horizon", "hidden", "layers", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("window", "season", "val_steps", "patience"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {self.cell!r}")
        if self.target not in TARGET_MODES:
            raise ValueError(f"target must be one of {', '.join(TARGET_MODES)}; got {self.target!r}")
        if (self.source is None) == (self.demo is None):
            raise ValueError("give a series: a CSV file or a demo")
        self.supervised().validate()

    def supervised(self):
        from .supervised import SupervisedConfig
        return SupervisedConfig(epochs=self.epochs, minutes=self.minutes, batch_size=self.batch_size,
                                lr=self.lr, optimizer=self.optimizer, weight_decay=self.weight_decay,
                                clip=self.clip, patience=self.patience, seed=self.seed)


def default_window(horizon: int, season: int, n_train: int | None = None) -> int:
    """The window when none is given: one season (if one is found), at least 2·K and 16 steps,
    at most 256, and short enough to leave K training targets (unless ``n_train`` is None)."""
    w = min(max(season if season > 1 else 0, 2 * horizon, 16), MAX_DEFAULT_WINDOW)
    return w if n_train is None else max(1, min(w, n_train - horizon))


FEW_TRAIN_WINDOWS = 10


def load_series(config: ForecastConfig) -> Series:
    if config.demo is not None:
        return demo_series(config.demo)
    return read_series_csv(config.source, config.columns, config.covariates, config.header)


def series_fingerprint(series: Series) -> str:
    import hashlib
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(series.values(), np.float64).tobytes())
    h.update(repr((series.target_names, series.covariate_names)).encode())
    return h.hexdigest()[:16]


def load_forecast_checkpoint(path, required=PREDICT_KEYS) -> dict:
    """A forecast checkpoint's payload; a run folder means its best.bptt (the weights of the best
    validation loss), or checkpoint.bptt before any validation. CheckpointError (one line) if the
    file is bad, of another kind, or lacks an entry."""
    from .checkpoint import CheckpointError, load_checkpoint
    path = Path(path)
    if path.is_dir():
        path = path / BEST_NAME if (path / BEST_NAME).exists() else path / CHECKPOINT_NAME
    ckpt = load_checkpoint(path, required=())
    if ckpt.get("kind") != KIND:
        kind = ckpt.get("kind")
        raise CheckpointError(f"{path}: a {kind!r} checkpoint, not a forecast checkpoint"
                              if kind else f"{path}: not a forecast checkpoint")
    return load_checkpoint(path, required=required)


class WindowModel:
    """The :mod:`bptt.supervised` model protocol over a :class:`ForecastData`: a dataset row is a
    window's origin (``{"origin": (N,)}``), turned into scaled inputs and targets per batch, so
    that no (N, W, I) copy of the windows is ever made."""

    def __init__(self, model: Forecaster, data: ForecastData):
        self.model, self.data = model, data
        self.training = True

    def parameters(self):
        return self.model.parameters()

    def gradients(self):
        return self.model.gradients()

    def zero_grad(self):
        self.model.zero_grad()

    def state_dict(self):
        return self.model.state_dict()

    def load_state(self, state):
        self.model.load_state(state)

    def train(self):
        self.training = True

    def eval(self):
        self.training = False

    def _xy(self, batch):
        o = np.asarray(batch["origin"], np.int64)
        return self.data.inputs(o, self.model.dtype), self.data.targets(o, self.model.dtype)

    def loss_and_grad(self, batch, rng) -> float:
        x, y = self._xy(batch)
        return self.model.loss_and_grad(x, y, rng if self.training else None)

    def loss(self, batch) -> float:
        x, y = self._xy(batch)
        return self.model.loss(x, y)


class ForecastTrainer:
    """A forecasting run in ``out_dir``: the series made into windows (:class:`ForecastData`), the
    :class:`Forecaster`, and :class:`bptt.supervised.SupervisedTrainer`, which trains it (seeded
    epochs of shuffled training windows, early stopping on the validation loss, best.bptt,
    metrics.jsonl, exact resume, Ctrl-C, the NaN guard). The checkpoint also holds what
    :func:`predict_forecast` needs: the model's configuration, the scaler, the columns, W and K.
    """

    def __init__(self, config: ForecastConfig, out_dir, series: Series | None = None,
                 checkpoint: dict | None = None):
        from .supervised import SupervisedTrainer
        config.validate()
        self.config = c = config
        self.out_dir = Path(out_dir)
        self.series = series if series is not None else load_series(config)
        self.fingerprint = series_fingerprint(self.series)
        if checkpoint is not None and checkpoint["forecast"]["fingerprint"] != self.fingerprint:
            from .train import TrainingError
            raise TrainingError("the series differs from the one this run was trained on; resume "
                                "with the same file and columns")
        # the season and the default window come from the training part, which needs V only
        n = self.series.length
        V = c.val_steps if c.val_steps is not None else max(c.horizon, int(round(c.val_fraction * n)))
        window, label, self.notes = c.window, None, []
        if checkpoint is not None:
            window = int(checkpoint["forecast"]["window"])
        elif window is None:
            season = c.season or (detect_season(self.series.targets[:n - V]) if n > V else 1)
            usual = default_window(c.horizon, season)
            window = default_window(c.horizon, season, n - V)
            label = f"the default window ({steps(window)})"
            if window < usual:
                label = f"the default window ({steps(usual)}, even shortened to {steps(window)})"
                self.notes.append(f"note: the default window ({steps(usual)}) is shortened to "
                                  f"{window} to fit the {n - V} training steps; pass --window to choose")
        self.data = d = ForecastData(self.series, window, c.horizon, val_fraction=c.val_fraction,
                                     val_steps=c.val_steps, season=c.season, target_mode=c.target,
                                     window_label=label)
        nw = len(d.split.train_origins)
        if nw < FEW_TRAIN_WINDOWS:
            self.notes.append(f"note: only {nw} training window{'s' if nw != 1 else ''} (the "
                              f"{d.split.n_train} training steps minus the window, {d.window}, and "
                              f"the horizon, {d.horizon}): too few to learn much from; use a longer "
                              f"series, a shorter --window, or fewer validation steps")
        self.model_config = ForecastModelConfig(input_size=d.input_size, horizon=c.horizon,
                                                n_series=d.n_series, cell=c.cell, hidden=c.hidden,
                                                layers=c.layers, dropout=c.dropout, dtype=c.dtype,
                                                seed=c.seed)
        self.model = Forecaster(self.model_config)
        self.window_model = WindowModel(self.model, d)
        extra = {"forecast_config": c.to_dict(), "model_config": self.model_config.to_dict(),
                 "forecast": {"fingerprint": self.fingerprint,
                              "target_names": list(self.series.target_names),
                              "covariate_names": list(self.series.covariate_names),
                              "window": d.window, "horizon": d.horizon, "target_mode": d.target_mode,
                              "season": d.season, "season_detected": d.season_detected,
                              "scaler": d.scaler.to_dict(), "naive_scale": d.naive_scale.copy(),
                              "n": d.split.n, "n_train": d.split.n_train,
                              "source": self.series.source}}
        self.trainer = SupervisedTrainer(self.window_model, {"origin": d.split.train_origins},
                                         {"origin": d.split.val_origins}, c.supervised(), self.out_dir,
                                         kind=KIND, extra=extra, metrics_fn=self._val_metrics,
                                         checkpoint=checkpoint)

    def _val_metrics(self, window_model) -> dict:
        ev = evaluate_forecast(self.model, self.data)
        s = summarize({"model": ev["metrics"]["model"]})["model"]
        return {"val_mae": s["mae_mean"], "val_rmse": s["rmse_mean"], "val_mase": s["mase_mean"]}

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def fresh(cls, config: ForecastConfig, out_dir, series: Series | None = None):
        from .train import TrainingError
        if (Path(out_dir) / CHECKPOINT_NAME).exists():
            raise TrainingError(f"{out_dir} already holds a checkpoint; pass --resume to continue it, "
                                f"or choose another --out folder")
        return cls(config, out_dir, series)

    @staticmethod
    def load_run(out_dir) -> tuple:
        """(config, checkpoint) of the run in ``out_dir``: what it was started with, to resume it.
        CheckpointError (one line) if the checkpoint lacks an entry."""
        from .checkpoint import CheckpointError
        from .supervised import SupervisedTrainer
        ckpt = SupervisedTrainer.load(out_dir, kind=KIND)
        try:
            config = ForecastConfig.from_dict(ckpt["forecast_config"])
            ckpt["forecast"]["fingerprint"], ckpt["forecast"]["window"], ckpt["forecast"]["season"]
            ckpt["forecast"]["target_names"], ckpt["forecast"]["covariate_names"]
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{Path(out_dir) / CHECKPOINT_NAME}: checkpoint content is "
                                  f"inconsistent ({e})") from None
        return config, ckpt

    @classmethod
    def resume(cls, out_dir, *, epochs=None, minutes=None, series: Series | None = None,
               source: str | None = None, checkpoint: tuple | None = None):
        """Continue the run in ``out_dir``; ``epochs`` is the new total. The series is read again
        from the file (or demo) the run was made from, or ``source``, or ``series``.
        ``checkpoint``: what :meth:`load_run` returned, if it was called already."""
        config, ckpt = checkpoint if checkpoint is not None else cls.load_run(out_dir)
        if source is not None:
            config.source, config.demo = source, None
        if epochs is not None:
            config.epochs = epochs
        config.minutes = minutes
        ckpt["supervised"]["epochs"], ckpt["supervised"]["minutes"] = config.epochs, minutes
        return cls(config, out_dir, series, checkpoint=ckpt)

    def finished(self) -> str | None:
        """Why the run has nothing left to train (early stopping ended it, or its epochs are
        done) and what to do instead, in a line; None if it has."""
        t, c = self.trainer, self.trainer.config
        best = f"its best weights are in {self.out_dir / BEST_NAME}"
        if c.patience is not None and t.bad_vals >= c.patience:
            return (f"early stopping ended it at epoch {self.epoch:.3g} (no better validation loss "
                    f"in {c.patience} validations; the best was at step {t.best_step}); {best}. "
                    f"To train more, start a new run in another --out")
        if t.step >= t.total_steps:
            return (f"its {c.epochs:g} epochs are done (step {t.step}); {best}. To train on, pass "
                    f"a larger --epochs (a total), or start a new run in another --out")
        return None

    # -- the trainer's state, for reports -------------------------------------------------------
    @property
    def step(self) -> int:
        return self.trainer.step

    @property
    def epoch(self) -> float:
        t = self.trainer
        return t.epoch + t.pos / t.n_train

    @property
    def batches_per_epoch(self) -> int:
        return self.trainer.steps_per_epoch

    @property
    def total_steps(self) -> int:
        return self.trainer.total_steps

    def request_stop(self) -> None:
        """Finish the current step, then validate, save and return (what Ctrl-C does)."""
        self.trainer.request_stop()

    def run(self, on_event=None) -> dict:
        """Train (see :class:`bptt.supervised.SupervisedTrainer`), then load the best weights and
        return the trainer's summary with :meth:`final_report`'s entries."""
        summary = self.trainer.run(on_event)
        self.trainer.restore_best()
        return {**summary, **self.final_report()}

    def final_report(self) -> dict:
        """Metrics of the model's current weights and of both baselines on the validation windows."""
        ev = evaluate_forecast(self.model, self.data)
        d = self.data
        per_series = {name: {k: {m: [float(v) for v in ev["metrics"][k][m][:, s]]
                                 for m in ("mae", "rmse", "mase")} for k in ev["metrics"]}
                      for s, name in enumerate(self.series.target_names)}
        return {"val_loss": ev["loss"], "metrics": summarize(ev["metrics"]), "per_series": per_series,
                "season": d.season, "season_detected": d.season_detected, "window": d.window,
                "horizon": d.horizon, "n": d.split.n, "n_train": d.split.n_train,
                "train_windows": len(d.split.train_origins),
                "val_windows": len(d.split.val_origins), "pred": ev["pred"], "truth": ev["truth"]}


# ---------------------------------------------------------------------------------------------
# using a trained forecaster
# ---------------------------------------------------------------------------------------------

def load_forecaster(checkpoint_path):
    """(model, payload) from a forecast checkpoint, or a run folder's best weights."""
    from .checkpoint import CheckpointError
    ckpt = load_forecast_checkpoint(checkpoint_path)
    try:
        model = Forecaster(ForecastModelConfig.from_dict(ckpt["model_config"]))
        model.load_state(ckpt["model"])
        Scaler.from_dict(ckpt["forecast"]["scaler"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{checkpoint_path}: checkpoint content is inconsistent ({e})") from None
    return model, ckpt


def forecast_next(model: Forecaster, ckpt: dict, series: Series) -> np.ndarray:
    """The K values (K, S) after the end of ``series``, from its last W steps."""
    d = ckpt["forecast"]
    W, K = int(d["window"]), int(d["horizon"])
    if series.length < W:
        raise DataError(f"{series.source or 'the series'}: {series.length} rows, fewer than the "
                        f"window of {W} steps this forecaster reads")
    scaler = Scaler.from_dict(d["scaler"])
    z = scaled_values(scaler, series.values()[-W:], series)
    out = model.forward(np.ascontiguousarray(z[None], dtype=model.dtype))
    S = series.targets.shape[1]
    pred = np.asarray(out, np.float64).reshape(K, S)
    if d["target_mode"] == "delta":
        pred = pred + z[-1, :S]
    return scaler.inverse(pred, slice(0, S))


def predict_forecast(checkpoint_path, csv_path, out_path) -> np.ndarray:
    """Write the K values after the end of the series in ``csv_path`` to ``out_path`` as CSV:
    a column ``step`` (1..K), then one column per target series. Returns the (K, S) array.

    The CSV must have the columns the forecaster was trained on (targets and covariates, found by
    name, or by index for a file without a header) and at least ``window`` rows; errors are one
    line (DataError, CheckpointError)."""
    model, ckpt = load_forecaster(checkpoint_path)
    d = ckpt["forecast"]
    series = read_series_csv(csv_path, d["target_names"], d["covariate_names"])
    pred = forecast_next(model, ckpt, series)
    out_path = Path(out_path)
    if out_path.is_dir():
        raise DataError(f"{out_path}: is a directory; give a file name for the predictions")
    try:
        with open(out_path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["step"] + list(d["target_names"]))
            for k in range(pred.shape[0]):
                w.writerow([k + 1] + [repr(float(v)) for v in pred[k]])
    except OSError as e:
        raise DataError(f"{out_path}: cannot write ({e.strerror or e})") from None
    return pred


def plot_forecast(report: dict, series: Series, out_path) -> str:
    """A PNG per the run's validation part, one panel per target: the history, the validation
    truth, and the model's forecasts from origins K steps apart (each a K-step forecast, so the
    line shows what the model predicts K steps ahead, not only one). Needs matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n_train, K, W = report["n_train"], report["horizon"], report["window"]
    pred = report["pred"]                     # (n_val_windows, K, S), origin n_train + i
    S = series.targets.shape[1]
    start = max(0, n_train - max(3 * W, 4 * K, 200))
    fig, axes = plt.subplots(S, 1, figsize=(10, 3.2 * S), dpi=100, squeeze=False)
    for s in range(S):
        ax = axes[s, 0]
        y = series.targets[:, s]
        ax.plot(np.arange(start, n_train), y[start:n_train], color="0.35", lw=0.9, label="history")
        ax.plot(np.arange(n_train, series.length), y[n_train:], color="tab:green", lw=0.9,
                label="validation truth")
        for j, i in enumerate(range(0, pred.shape[0], K)):
            t = n_train + i
            ax.plot(np.arange(t, t + K), pred[i, :, s], color="tab:red", lw=1.2,
                    label=f"forecast ({K} steps from each origin)" if j == 0 else None)
        ax.axvline(n_train, color="0.6", ls="--", lw=0.8)
        ax.set_title(f"{series.target_names[s]}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel("time step")
    fig.tight_layout()
    fig.savefig(str(out_path))
    plt.close(fig)
    return str(out_path)
