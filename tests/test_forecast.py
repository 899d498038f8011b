"""bptt forecast: windows and the split, scaling, baselines, season detection, bad input, the CLI
end to end, exact resume, the NaN guard and the forecaster's gradients. Tiny float64 models."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from bptt import jit
from bptt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bptt.data import DataError
from bptt.finitediff import gradcheck
from bptt.forecast import (ForecastConfig, ForecastData, ForecastTrainer, Scaler, Series,
                           demo_seasonal, detect_season, forecast_metrics, forecaster_problem,
                           gather_windows, make_split, naive_forecast, naive_scale,
                           predict_forecast, read_series_csv, seasonal_naive_forecast,
                           write_series_csv)
from bptt.train import TrainingError
from cli import main


@pytest.fixture(autouse=True)
def _restore_threads():
    before = jit.get_threads()
    yield
    jit.set_threads(before)


def series(y, cov=None):
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    c = np.zeros((len(y), 0)) if cov is None else np.asarray(cov, np.float64).reshape(len(y), -1)
    return Series(y, c, [f"y{i}" for i in range(y.shape[1])], [f"c{i}" for i in range(c.shape[1])],
                  source="test")


def small_series(n=90, seed=3):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return series(np.stack([np.sin(2 * np.pi * t / 8) + 0.1 * rng.standard_normal(n),
                            0.02 * t + np.cos(2 * np.pi * t / 8)], axis=1),
                  cov=np.cos(2 * np.pi * t / 5))


# -- windows, split, scaling ---------------------------------------------------------------------

def test_split_windows_never_reach_the_validation_part():
    sp = make_split(50, 5, 3, val_steps=10)
    assert sp.n_train == 40
    assert sp.train_origins.min() == 5 and sp.train_origins.max() + 3 == 40
    assert sp.val_origins.min() == 40 and sp.val_origins.max() + 3 == 50
    z = np.arange(50.0)[:, None]
    x = gather_windows(z, sp.train_origins, 5)
    assert x.max() < 40 and x.shape == (len(sp.train_origins), 5, 1)
    # each window's inputs are the W steps just before its origin
    assert np.array_equal(x[0, :, 0], np.arange(0, 5)) and np.array_equal(x[-1, :, 0], np.arange(32, 37))
    # changing the validation part changes no training input, target or statistic
    s = small_series()
    a = ForecastData(s, 6, 2, val_steps=20)
    s2 = series(s.targets.copy(), s.covariates.copy())
    s2.targets[-20:] += 1000.0
    s2.covariates[-20:] -= 50.0
    b = ForecastData(s2, 6, 2, val_steps=20)
    o = a.split.train_origins
    assert np.array_equal(a.inputs(o), b.inputs(o)) and np.array_equal(a.targets(o), b.targets(o))
    assert np.array_equal(a.scaler.mean, b.scaler.mean) and np.array_equal(a.naive_scale, b.naive_scale)
    assert a.season == b.season
    assert not np.array_equal(a.inputs(a.split.val_origins), b.inputs(b.split.val_origins))


def test_scaler_is_fitted_on_the_training_part_only():
    y = np.concatenate([np.linspace(0, 1, 40), np.full(10, 100.0)])
    d = ForecastData(series(y), 4, 2, val_steps=10)
    assert d.scaler.mean[0] == pytest.approx(y[:40].mean())
    assert d.scaler.std[0] == pytest.approx(y[:40].std())
    assert np.allclose(d.z[:40].mean(axis=0), 0) and np.allclose(d.z[:40].std(axis=0), 1)
    # a delta target is the change from the last input, and to_values inverts it exactly
    o = d.split.val_origins
    assert np.allclose(d.to_values(d.targets(o), o), d.truth(o))
    assert Scaler.fit(np.ones((5, 1))).std[0] == 1.0   # a constant column is not divided by zero


def test_baselines_and_metrics_on_a_hand_made_series():
    y = np.array([1., 2., 4., 3., 5., 7., 6., 8.])[:, None]
    origins = np.array([5, 6])
    assert naive_forecast(y, origins, 2)[:, :, 0].tolist() == [[5, 5], [7, 7]]
    # S = 2, K = 3: y[t-2], y[t-1], y[t-2] (from before t, one season back)
    assert seasonal_naive_forecast(y, origins, 3, 2)[:, :, 0].tolist() == [[3, 5, 3], [5, 7, 5]]
    assert seasonal_naive_forecast(y, origins, 3, 4)[:, :, 0].tolist() == [[2, 4, 3], [4, 3, 5]]
    assert naive_scale(y[:5])[0] == pytest.approx((1 + 2 + 1 + 2) / 4)
    truth = np.array([[[7.], [6.]], [[6.], [8.]]])
    m = forecast_metrics(naive_forecast(y, origins, 2), truth, np.array([1.5]))
    assert m["mae"][:, 0].tolist() == [1.5, 1.0]        # |5-7|,|7-6| ; |5-6|,|7-8|
    assert m["rmse"][0, 0] == pytest.approx(np.sqrt((4 + 1) / 2))
    assert m["mase"][:, 0].tolist() == [1.0, pytest.approx(1 / 1.5)]


def test_season_detection():
    rng = np.random.default_rng(0)
    t = np.arange(600)
    assert detect_season(0.05 * t + np.sin(2 * np.pi * t / 12) + 0.3 * rng.standard_normal(600)) == 12
    assert detect_season(rng.standard_normal(600)) == 1
    assert detect_season(0.01 * t) == 1
    s = demo_seasonal()
    assert detect_season(s.targets[:2000]) in (24, 168)


# -- reading CSVs and bad input ------------------------------------------------------------------

def test_read_csv_header_columns_covariates(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("date,a,b,temp\n2020-01-01,1,10,5\n2020-01-02,2,20,6\n\n2020-01-03,3,30,7\n")
    s = read_series_csv(p, "b,a", "temp")
    assert s.target_names == ["b", "a"] and s.covariate_names == ["temp"]
    assert s.targets.tolist() == [[10, 1], [20, 2], [30, 3]] and s.covariates[:, 0].tolist() == [5, 6, 7]
    assert read_series_csv(p).target_names == ["temp"]          # the last column by default
    q = tmp_path / "noheader.csv"
    q.write_text("2020-01-01,1.5\n2020-01-02,2.5\n")
    s = read_series_csv(q, "-1")
    assert s.target_names == ["1"] and s.targets[:, 0].tolist() == [1.5, 2.5]


BAD = [
    ("missing.csv", None, "value", "no such file"),
    ("t,value\n1,2\n", None, "price", "no target column 'price'"),
    ("t,value\n1,2\n", None, "value --covariates temp", "no covariate column 'temp'"),
    ("", None, "value", "the file is empty"),
    ("t,value\n", None, "value", "no data rows"),
    ("t,value\n1,2\n2,3,4\n", None, "value", "line 3: 3 fields where the header has 2"),
    ("t,value\n1,2\n2,abc\n", None, "value", "line 3, column 'value': 'abc' is not a number"),
    ("t,value\n1,2\n2,nan\n", None, "value", "line 3, column 'value': 'nan' is not a finite number"),
    ("t,value\n1,2\n2,\n3,4\n", None, "value", "line 3, column 'value': empty cell"),
    ("t,value\n" + "".join(f"{i},{i}\n" for i in range(20)), "--horizon 30", "value",
     "--horizon 30 is longer than the series (20 steps)"),
    ("t,value\n" + "".join(f"{i},{i}\n" for i in range(20)), "--window 25", "value",
     "--window 25 plus --horizon 1 is longer than the series"),
    ("t,value\n" + "".join(f"{i},{i}\n" for i in range(40)), "--window 30 --horizon 4", "value",
     "leave 32 for training after 8 validation steps, fewer than --window 30 plus --horizon 4"),
    ("t,value\n" + "".join(f"{i},{i}\n" for i in range(20)), "--horizon 12", "value",
     "fewer than the default window"),
    ("t,value\n1,5\n", "--horizon 1", "value",
     "--horizon 1 is as long as the series (1 step): no step is left for a window to read"),
    ("t,value\n" + "".join(f"{i},{i}\n" for i in range(200)), "--val-steps 199", "value",
     "200 steps leave 1 for training after 199 validation steps, fewer than the default window "
     "(16 steps, even shortened to 1 step) plus --horizon 1"),
    ("t,value\n" + "".join(f"{i},{i}\n" for i in range(40)), "--season 39", "value",
     "--season 39 is longer than the 32 steps before the first validation forecast"),
]


@pytest.mark.parametrize("content,extra,column,message", BAD)
def test_bad_input_is_a_one_line_error(tmp_path, content, extra, column, message):
    path = tmp_path / "s.csv"
    if content != "missing.csv":
        path.write_text(content)
    args = ["forecast", str(path), "--out", str(tmp_path / "run"), "--column"] + column.split()
    args += extra.split() if extra else []
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and r.output.startswith("Error: ")
    assert message in r.output and str(path) in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoint.bptt").exists()


def test_predict_bad_inputs(tmp_path):
    lm = tmp_path / "lm.bptt"
    save_checkpoint(lm, {"kind": "lm", "model": {}})
    with pytest.raises(CheckpointError, match="a 'lm' checkpoint, not a forecast checkpoint"):
        predict_forecast(lm, tmp_path / "x.csv", tmp_path / "o.csv")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        predict_forecast(tmp_path / "none.bptt", tmp_path / "x.csv", tmp_path / "o.csv")


# -- training, the CLI, resume -------------------------------------------------------------------

def tiny_config(**kw):
    base = dict(source="test", horizon=2, window=6, val_steps=20, cell="gru", hidden=5, layers=2,
                epochs=3, batch_size=8, lr=3e-3, patience=None, seed=4, dtype="float64")
    base.update(kw)
    return ForecastConfig(**base)


def test_resume_is_exact_and_ctrl_c_saves(tmp_path):
    s = small_series()
    whole = ForecastTrainer.fresh(tiny_config(dropout=0.2), tmp_path / "a", s)
    whole.run()
    part = ForecastTrainer.fresh(tiny_config(dropout=0.2), tmp_path / "b", s)

    def stop_mid_epoch(kind, info):     # what Ctrl-C does: finish the step, save, return
        if kind == "step" and info["step"] == 11:
            part.request_stop()

    summary = part.run(stop_mid_epoch)
    assert summary["reason"] == "interrupted" and part.step == 11 and part.trainer.pos > 0
    again = ForecastTrainer.resume(tmp_path / "b", series=s)
    assert again.step == 11
    again.run()
    assert again.step == whole.step
    for name in ("checkpoint.bptt", "best.bptt"):
        a = load_checkpoint(tmp_path / "a" / name)["model"]
        b = load_checkpoint(tmp_path / "b" / name)["model"]
        for k, v in a.items():
            assert np.array_equal(v, b[k]), (name, k)
    lines = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "val_loss" not in r] == list(range(1, whole.step + 1))
    assert all("val_mase" in r for r in lines if "val_loss" in r)
    with pytest.raises(TrainingError, match="already holds a checkpoint"):
        ForecastTrainer.fresh(tiny_config(), tmp_path / "b", s)
    changed = series(s.targets + 1.0, s.covariates)
    with pytest.raises(TrainingError, match="series differs"):
        ForecastTrainer.resume(tmp_path / "b", series=changed)
    # two targets and a covariate, by name, from a CSV: the next K = 2 values of each
    csv_path = tmp_path / "s.csv"
    write_series_csv(s, csv_path)
    pred = predict_forecast(tmp_path / "b", csv_path, tmp_path / "next.csv")
    assert pred.shape == (2, 2) and np.all(np.isfinite(pred))
    end = np.array([s.length])        # the origin just past the series: the windowing path agrees
    d = again.data                    # (the run ends with the best weights loaded, as best.bptt)
    expected = d.to_values(again.model.predict(d.inputs(end, np.float64)), end)[0]
    assert np.allclose(pred, expected, rtol=1e-12, atol=1e-12)
    assert (tmp_path / "next.csv").read_text().splitlines()[0] == "step,y0,y1"
    (tmp_path / "nocov.csv").write_text("y0,y1\n" + "1,2\n" * 10)
    with pytest.raises(DataError, match="no covariate column 'c0'"):
        predict_forecast(tmp_path / "b", tmp_path / "nocov.csv", tmp_path / "o.csv")


def test_nan_guard_keeps_the_last_good_checkpoint(tmp_path):
    s = small_series()
    t = ForecastTrainer.fresh(tiny_config(epochs=1), tmp_path / "r", s)
    t.run()
    before = (tmp_path / "r" / "checkpoint.bptt").read_bytes()
    t.model.parameters()["head.weight"][0, 0] = np.nan
    with pytest.raises(TrainingError, match="non-finite.*last good checkpoint is kept"):
        t.trainer.train_step()
    with pytest.raises(TrainingError, match="non-finite"):
        t.trainer.save()
    assert (tmp_path / "r" / "checkpoint.bptt").read_bytes() == before


def test_cli_demo_end_to_end_json_and_predict(tmp_path):
    out, js, demo = tmp_path / "run", tmp_path / "m.json", tmp_path / "demo.csv"
    png = tmp_path / "f.png"
    r = CliRunner().invoke(main, ["forecast", "--demo", "seasonal", "--demo-csv", str(demo),
                                  "--horizon", "3", "--window", "8", "--cell", "lstm", "--hidden", "4",
                                  "--epochs", "1", "--batch-size", "256", "--dtype", "float64",
                                  "--out", str(out), "--json", str(js), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "season 168 (detected)" in r.output and r.output.strip().splitlines()[-1].startswith("final: ")
    rep = json.loads(js.read_text())
    assert rep["horizon"] == 3 and rep["window"] == 8 and rep["season"] == 168
    for key in ("model", "naive", "seasonal_naive"):
        assert len(rep[key]["mae"]) == 3 and len(rep[key]["mase"]) == 3
    # the naive forecast's errors are the same whatever the model: check them independently
    s = demo_seasonal()
    y = s.targets[:, 0]
    n_train = rep["train_steps"]
    origins = np.arange(n_train, len(y) - 3 + 1)
    mae1 = np.mean(np.abs(y[origins] - y[origins - 1]))
    assert rep["naive"]["mae"][0] == pytest.approx(mae1)
    assert rep["naive"]["mase"][0] == pytest.approx(mae1 / np.mean(np.abs(np.diff(y[:n_train]))))
    # predict the 3 values after the series, and after a shorter one
    pred = predict_forecast(out, demo, tmp_path / "next.csv")
    rows = (tmp_path / "next.csv").read_text().splitlines()
    assert rows[0] == "step,value" and len(rows) == 4 and pred.shape == (3, 1)
    assert np.allclose([float(r.split(",")[1]) for r in rows[1:]], pred[:, 0])
    short = tmp_path / "short.csv"
    write_series_csv(Series(s.targets[:5], s.covariates[:5], ["value"], []), short)
    with pytest.raises(DataError, match="5 rows, fewer than the window of 8"):
        predict_forecast(out, short, tmp_path / "o.csv")
    # --resume with more epochs continues the run
    r = CliRunner().invoke(main, ["forecast", "--resume", "--out", str(out), "--epochs", "2"])
    assert r.exit_code == 0, r.output
    assert "resuming" in r.output and "final: epoch 2 " in r.output


def test_forecaster_gradients_float64():
    for cell, dropout in (("lstm", 0.0), ("gru", 0.3)):     # with dropout: fixed masks
        model, inputs = forecaster_problem(cell, dropout=dropout, hidden=4, window=4)
        report = gradcheck(model, inputs, max_checks=40)
        assert report.passed, report.table()
    # a deliberately broken gradient is caught
    model, inputs = forecaster_problem("rnn", layers=1)
    real = model.backward

    def broken(dpred):
        dx = real(dpred)
        model.grads["head.bias"] *= 1.01
        return dx
    model.backward = broken
    report = gradcheck(model, inputs, max_checks=40)
    assert not report.passed and [r.name for r in report.failures()] == ["head.bias"]


def test_gradcheck_cli_covers_the_forecaster_and_plot_needs_matplotlib(monkeypatch, tmp_path):
    r = CliRunner().invoke(main, ["gradcheck", "--model", "forecaster", "--hidden", "3"])
    assert r.exit_code == 0 and "head.bias" in r.output and "FAIL" not in r.output, r.output
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    r = CliRunner().invoke(main, ["forecast", "--demo", "seasonal", "--out", str(tmp_path / "r"),
                                  "--plot", str(tmp_path / "f.png")])
    assert r.exit_code == 1 and "pip install 'bptt[plot]'" in r.output
    assert not (tmp_path / "r").exists()


# -- robustness: blank cells, huge and tiny values, resume, delimiters, messages -----------------

def sales_csv(path, n=48, scale=1.0, sep=",", header="sales", fmt=repr, extra=None):
    """A one-column (or ``extra``-prefixed) seasonal series of n steps, values times ``scale``."""
    t = np.arange(n)
    y = (10 + 3 * np.sin(2 * np.pi * t / 6) + 0.3 * np.random.default_rng(0).standard_normal(n)) * scale
    lines = [header] + [(f"{extra(i)}{sep}" if extra else "") + fmt(float(v)) for i, v in enumerate(y)]
    path.write_text("\n".join(lines) + "\n")
    return y


FAST = ["--epochs", "1", "--hidden", "3", "--batch-size", "64", "--dtype", "float64"]


def test_blank_line_in_a_one_column_series_is_an_empty_cell(tmp_path):
    p = tmp_path / "s.csv"
    sales_csv(p)
    lines = p.read_text().splitlines()
    for blank in ("", '""', "   "):
        gap = tmp_path / "gap.csv"
        gap.write_text("\n".join(lines[:3] + [blank] + lines[4:]) + "\n\n\n")
        with pytest.raises(DataError, match=r"gap.csv, line 4, column 'sales': empty cell"):
            read_series_csv(gap)
    r = CliRunner().invoke(main, ["forecast", str(gap), "--out", str(tmp_path / "r")] + FAST)
    assert r.exit_code == 1 and r.output.startswith("Error: ")
    assert "line 4, column 'sales': empty cell" in r.output
    assert len(r.output.strip().splitlines()) == 1
    # trailing (and leading) blank lines are not part of the series
    padded = tmp_path / "padded.csv"
    padded.write_text("\n" + "\n".join(lines) + "\n\n  \n\n")
    assert read_series_csv(padded).length == read_series_csv(p).length == 48
    # predict reads the same way
    r = CliRunner().invoke(main, ["forecast", str(p), "--out", str(tmp_path / "run")] + FAST)
    assert r.exit_code == 0, r.output
    with pytest.raises(DataError, match="line 4, column 'sales': empty cell"):
        predict_forecast(tmp_path / "run", gap, tmp_path / "o.csv")


def test_json_report_has_no_infinity():
    from bptt.commands.common import json_safe as _finite
    assert _finite({"a": [float("inf"), -float("inf"), float("nan"), 1.5], "b": 2}) == \
        {"a": [None, None, None, 1.5], "b": 2}


def test_huge_and_tiny_values_scale_without_overflow(tmp_path):
    base = sales_csv(tmp_path / "s.csv")
    reports = {}
    for name, scale in (("s", 1.0), ("huge", 1e300), ("tiny", 1e-300)):
        if scale != 1.0:
            sales_csv(tmp_path / f"{name}.csv", scale=scale)
        js = tmp_path / f"{name}.json"
        r = CliRunner().invoke(main, ["forecast", str(tmp_path / f"{name}.csv"), "--horizon", "2",
                                      "--window", "6", "--out", str(tmp_path / name), "--json", str(js)]
                               + FAST)
        assert r.exit_code == 0 and "Traceback" not in r.output, r.output
        assert "nan" not in r.output and "inf" not in r.output, r.output
        reports[name] = json.loads(js.read_text())
        if scale != 1.0:
            pred = predict_forecast(tmp_path / name, tmp_path / f"{name}.csv", tmp_path / "o.csv")
            assert np.all(np.isfinite(pred)) and np.all(np.abs(pred / scale) < 100)
    for name, scale in (("huge", 1e300), ("tiny", 1e-300)):
        a, b = reports["s"], reports[name]
        assert b["season"] == a["season"]
        for key in ("model", "naive", "seasonal_naive"):
            for m in ("mae_mean", "rmse_mean"):
                assert b[key][m] / scale == pytest.approx(a[key][m], rel=1e-6), (name, key, m)
            assert b[key]["mase_mean"] == pytest.approx(a[key]["mase_mean"], rel=1e-6)
    sc = Scaler.fit(base[:, None] * 1e300)
    assert np.all(np.isfinite(sc.mean)) and np.all(np.isfinite(sc.std))
    plain = Scaler.fit(base[:, None]).transform(base[:, None])
    assert np.allclose(sc.transform(base[:, None] * 1e300), plain)
    # a column that no scaling can hold: tiny in the training part, huge in the validation part
    y = np.concatenate([base[:38] * 1e-300, base[38:] * 1e300])
    with pytest.raises(DataError, match="column 'y0' cannot be scaled"):
        ForecastData(series(y), 4, 1, val_steps=10)


def test_metrics_of_huge_errors_are_finite():
    m = forecast_metrics(np.full((3, 1, 1), 1e300), np.full((3, 1, 1), -1e300), np.array([1e299]))
    assert m["rmse"][0, 0] == pytest.approx(2e300) and m["mae"][0, 0] == pytest.approx(2e300)
    assert m["mase"][0, 0] == pytest.approx(20)
    assert naive_scale(np.array([[8e307], [-8e307], [8e307]]))[0] == pytest.approx(1.6e308)
    assert detect_season(1e300 * np.sin(2 * np.pi * np.arange(120) / 12)) == 12
    assert detect_season(1e-300 * np.sin(2 * np.pi * np.arange(120) / 12)) == 12


def test_resume_refuses_changed_options_and_says_when_a_run_is_finished(tmp_path):
    p = tmp_path / "s.csv"
    sales_csv(p, header="date,sales,temp", extra=lambda i: f"d{i}", fmt=lambda v: f"{v},{v / 2}")
    out = str(tmp_path / "run")
    cmd = ["forecast", str(p), "--column", " sales", "--covariates", "temp", "--header", "--horizon", "2",
           "--window", "5", "--season", "6", "--val-steps", "8", "--val-fraction", "0.2", "--target",
           "level", "--cell", "gru", "--hidden", "3", "--layers", "1", "--dropout", "0", "--batch-size",
           "64", "--lr", "0.01", "--optimizer", "adam", "--weight-decay", "0", "--clip", "0",
           "--patience", "0", "--seed", "1", "--dtype", "float64", "--out", out]
    r = CliRunner().invoke(main, cmd + ["--epochs", "1"])
    assert r.exit_code == 0, r.output
    ckpt = (tmp_path / "run" / "checkpoint.bptt").read_bytes()
    # every option as it was: resumes (a larger --epochs is a new total)
    r = CliRunner().invoke(main, cmd + ["--epochs", "2", "--resume"])
    assert r.exit_code == 0 and "resuming" in r.output and "final: epoch 2 " in r.output, r.output
    ckpt = (tmp_path / "run" / "checkpoint.bptt").read_bytes()
    # so does a bare --resume that names only the options it may change, or the detected ones
    r = CliRunner().invoke(main, ["forecast", "--resume", "--out", out, "--epochs", "3", "--window", "5"])
    assert r.exit_code == 0 and "final: epoch 3 " in r.output, r.output
    ckpt = (tmp_path / "run" / "checkpoint.bptt").read_bytes()
    # changed options: one line naming each, nothing trained
    r = CliRunner().invoke(main, ["forecast", "--resume", "--out", out, "--epochs", "4", "--horizon", "5",
                                  "--cell", "lstm", "--window", "4", "--column", "temp"])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    for part in ("--horizon 5 (the run's: 2)", "--cell lstm (the run's: gru)", "--window 4 (the run's: 5)",
                 "--column temp (the run's: sales)"):
        assert part in r.output, r.output
    assert (tmp_path / "run" / "checkpoint.bptt").read_bytes() == ckpt
    # a run whose epochs are done says so
    r = CliRunner().invoke(main, cmd + ["--epochs", "3", "--resume"])
    assert r.exit_code == 0 and "final: epoch 3 " in r.output, r.output    # trains nothing, reports again
    assert "the run already finished: its 3 epochs are done" in r.output and "larger --epochs" in r.output
    assert (tmp_path / "run" / "checkpoint.bptt").read_bytes() == ckpt
    # and so does one that early stopping ended (SGD with a vanishing rate: no better loss)
    stop = ["forecast", str(p), "--column", "sales", "--window", "5", "--val-steps", "8", "--hidden", "3",
            "--optimizer", "sgd", "--lr", "1e-300", "--patience", "1", "--epochs", "6", "--batch-size",
            "64", "--dtype", "float64", "--out", str(tmp_path / "stop")]
    r = CliRunner().invoke(main, stop)
    assert r.exit_code == 0 and "early stopping" in r.output, r.output
    r = CliRunner().invoke(main, stop + ["--resume", "--epochs", "10"])
    assert r.exit_code == 0 and "the run already finished: early stopping ended it" in r.output, r.output


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_delimiter_is_detected(tmp_path, sep):
    p = tmp_path / "s.csv"
    y = sales_csv(p, n=30, sep=sep, header=f"date{sep}sales", extra=lambda i: f"d{i}")
    s = read_series_csv(p, "sales")
    assert s.target_names == ["sales"] and np.array_equal(s.targets[:, 0], y)
    r = CliRunner().invoke(main, ["forecast", str(p), "--column", "sales", "--window", "4",
                                  "--out", str(tmp_path / "r")] + FAST)
    assert r.exit_code == 0 and "forecasting sales from" in r.output, r.output


def test_notes_on_a_shortened_window_and_few_training_windows(tmp_path):
    p = tmp_path / "s.csv"
    sales_csv(p, n=12)
    r = CliRunner().invoke(main, ["forecast", str(p), "--out", str(tmp_path / "r")] + FAST)
    assert r.exit_code == 0, r.output
    assert "1 training and 2 validation windows" in r.output
    assert "note: the default window (16 steps) is shortened to 9 to fit the 10 training steps" in r.output
    assert "note: only 1 training window " in r.output
    sales_csv(p, n=48)
    r = CliRunner().invoke(main, ["forecast", str(p), "--window", "8", "--out", str(tmp_path / "r2")] + FAST)
    assert r.exit_code == 0 and "note:" not in r.output, r.output


def test_mase_is_averaged_over_the_series_where_it_is_defined(tmp_path):
    from bptt.forecast import summarize
    mase = np.array([[1.0, np.nan], [3.0, np.nan]])
    m = summarize({"model": {"mae": np.ones((2, 2)), "rmse": np.ones((2, 2)), "mase": mase}})["model"]
    assert m["mase"] == [1.0, 3.0] and m["mase_mean"] == 2.0
    assert m["mase_series"] == 1 and m["n_series"] == 2
    p = tmp_path / "s.csv"
    y = sales_csv(p, n=40)
    p.write_text("a,b\n" + "".join(f"{float(v)!r},7\n" for v in y))
    r = CliRunner().invoke(main, ["forecast", str(p), "--column", "a,b", "--window", "4",
                                  "--out", str(tmp_path / "r")] + FAST)
    assert r.exit_code == 0, r.output
    assert "MASE over the 1 of 2 whose training part is not constant" in r.output
    assert "(over 1 of 2 series)" in r.output and "MASE n/a" not in r.output
    # one constant series: MASE undefined, printed n/a in the epoch line as in the table
    p.write_text("b\n" + "7\n" * 40)
    r = CliRunner().invoke(main, ["forecast", str(p), "--window", "4", "--out", str(tmp_path / "c")] + FAST)
    assert r.exit_code == 0, r.output
    assert "MASE n/a" in r.output and "nan" not in r.output


def test_json_and_plot_paths_are_checked_before_training(tmp_path):
    import importlib.util
    plot = [("--plot", "x.png")] if importlib.util.find_spec("matplotlib") else []   # else --plot is refused first
    for option, name in [("--json", "x.json")] + plot:
        r = CliRunner().invoke(main, ["forecast", "--demo", "seasonal", "--horizon", "2", "--epochs", "1",
                                      option, str(tmp_path / "no" / name), "--out", str(tmp_path / "o")])
        assert r.exit_code == 1 and f"{option} " in r.output and "does not exist" in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
