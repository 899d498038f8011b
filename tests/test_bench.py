"""`bptt bench`: the report's structure, the correctness gate and the options. No time is asserted:
speed is measured by the benchmark, never tested (STYLE.md)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from bptt import benchmark as bm
from bptt import jit
from cli import main

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--repeat", "2", "--min-time", "0", "--warmup", "1", "--no-extras"]


@pytest.fixture(autouse=True)
def _restore_threads():
    before = jit.get_threads(), torch.get_num_threads()
    yield
    jit.set_threads(before[0])
    torch.set_num_threads(before[1])


def run(*args):
    return CliRunner().invoke(main, ["bench", *args])


def test_quick_rnn_writes_a_complete_report(tmp_path):
    out = tmp_path / "out.json"
    r = run("--quick", "--cells", "rnn", *FAST, "--json", str(out))
    assert r.exit_code == 0, r.output
    assert "teach (1,25,65,100)" in r.output and "char (50,50,65,128)" in r.output
    report = json.loads(out.read_text())
    m = report["machine"]
    for key in ("cpu", "cores", "threads", "date", "numpy", "numba", "torch", "torch_threads"):
        assert key in m
    assert m["threads"] == m["torch_threads"]
    assert report["peak_source"] == "measured" and report["peak_gflops"] > 0
    assert report["peak_1_thread_gflops"] > 0 and m["core_scaling"] > 0
    assert report["command"].startswith("bptt bench --cells rnn --shapes teach,char")
    assert [(row["cell"], row["shape"]) for row in report["rows"]] == [("rnn", "teach"), ("rnn", "char")]
    for row in report["rows"]:
        assert row["check"]["passed"] and row["check"]["max_rel_err"] <= 1e-3
        assert {"out", "dx", "dh0", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"} <= set(row["check"]["errors"])
        assert row["flops"] == 3 * 2 * row["T"] * row["B"] * 1 * row["H"] * (row["I"] + row["H"])
        for key in ("bptt_ms", "torch_ms", "ratio", "bptt_gflops", "torch_gflops", "bptt_pct_peak"):
            assert row[key] > 0
        assert row["bptt"]["n"] == 2 and row["torch"]["n"] == 2   # --min-time 0: exactly --repeat
        assert row["ratio"] == pytest.approx(row["torch_ms"] / row["bptt_ms"])
        assert row["memory"]["peak_mb"] >= row["memory"]["params_grads_mb"] > 0
        assert all(isinstance(v, bool) for v in row["targets"].values())
        assert row["all_targets_met"] == all(row["targets"].values())
    assert set(report["rows"][0]["targets"]) == {"ratio_ge_1", "ratio_ge_10"}  # teach
    assert set(report["rows"][1]["targets"]) == {"ratio_ge_1"}                 # char
    assert report["all_correct"] is True
    assert report["all_targets_met"] == all(row["all_targets_met"] for row in report["rows"])
    assert report["extras"] == {}


@pytest.mark.parametrize("repeat, min_time", [(1, 0.0), (2, 0.0), (7, 0.0), (3, 1.0), (10, 2.0)])
def test_slices_add_up_to_the_repeat_and_the_time(repeat, min_time):
    parts = bm.slices(repeat, min_time)
    assert 1 <= len(parts) <= bm.ROUNDS
    assert sum(r for r, _ in parts) == repeat and all(r >= 0 for r, _ in parts)
    assert sum(m for _, m in parts) == pytest.approx(min_time)
    if min_time > 0:
        assert len(parts) == bm.ROUNDS
    else:
        assert all(r >= 1 for r, _ in parts)


def test_frameworks_are_timed_in_alternating_slices(monkeypatch, tmp_path):
    calls = []

    def answer(framework, request):
        calls.append((framework, request["what"]))
        return {"times": [0.001] * request["repeat"]} if request["what"] == "slice" else {}

    monkeypatch.setattr(bm, "_answer", answer)
    timers = bm._Timers(1, True, str(tmp_path))
    cfg = bm.BenchConfig(repeat=8, min_time=0.0)
    timed = timers.time("cell", {}, {}, cfg)
    assert calls[:2] == [("bptt", "setup"), ("torch", "setup")]
    assert calls[-2:] == [("bptt", "done"), ("torch", "done")]
    order = [fw for fw, what in calls if what == "slice"]
    assert order == ["bptt", "torch", "torch", "bptt", "bptt", "torch", "torch", "bptt"]
    assert len(timed["bptt"]["times"]) == len(timed["torch"]["times"]) == 8


def test_targets_apply_by_shape_and_need_a_passing_check():
    def row(shape, ratio, gflops, passed=True):
        return {"shape": shape, "ratio": ratio, "bptt_gflops": gflops, "check": {"passed": passed}}
    assert bm._targets(row("teach", 12.0, 1.0)) == {"ratio_ge_1": True, "ratio_ge_10": True}
    assert bm._targets(row("teach", 5.0, 1.0)) == {"ratio_ge_1": True, "ratio_ge_10": False}
    assert bm._targets(row("fastrnns", 2.0, 149.0)) == {"ratio_ge_1": True, "gflops_ge_150": False}
    assert bm._targets(row("deepbench", 0.5, 300.0)) == {"ratio_ge_1": False, "gflops_ge_150": True}
    assert bm._targets(row("custom", 1.0, 0.1)) == {"ratio_ge_1": True}
    assert bm._targets(row("deepbench", 9.0, 900.0, passed=False)) == {"ratio_ge_1": False, "gflops_ge_150": False}


def test_a_broken_gradient_fails_the_row_and_the_exit_code(monkeypatch):
    build = bm.build_bptt

    def broken(kind, spec, data):
        step, results = build(kind, spec, data)
        return step, lambda: {**results(), "weight_hh_l0": results()["weight_hh_l0"] * 1.01}

    monkeypatch.setattr(bm, "build_bptt", broken)
    r = run("--shapes", "none", "--shape", "2,3,4,5", "--cells", "rnn", "--in-process", "--peak", "100", *FAST)
    assert r.exit_code == 1, r.output
    assert "FAIL" in r.output and "CORRECTNESS CHECK FAILED" in r.output and "weight_hh_l0" in r.output


def test_check_compares_every_gradient_of_the_lstm():
    spec = {"cell": "lstm", "B": 2, "T": 3, "I": 4, "H": 5}
    check = bm.check_job("cell", spec, bm.make_data("cell", spec, seed=1))
    assert check["passed"], check
    assert {"out", "dx", "dh0", "dc0", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"} == set(check["errors"])


@pytest.mark.parametrize("kind", ["char_lm", "mlp"])
def test_extras_agree_with_torch(kind):
    spec = {"char_lm": {"V": 7, "E": 3, "H": 4, "B": 2, "T": 3}, "mlp": {"sizes": [6, 5, 3], "B": 4}}[kind]
    check = bm.check_job(kind, spec, bm.make_data(kind, spec, seed=2))
    assert check["passed"], check
    assert "loss" in check["errors"] and len(check["errors"]) > 3


@pytest.mark.parametrize("args, message", [
    (["--cells", "rnn,tcn"], "--cells must be"),
    (["--shape", "1,2,3"], "--shape must be four positive integers"),
    (["--shape", "1,2,0,4"], "--shape must be four positive integers"),
    (["--shapes", "teach,huge"], "--shapes must be"),
    (["--quick", "--shapes", "char"], "cannot be combined"),
    (["--shapes", "none"], "no shapes to run"),
    (["--threads", "999"], "--threads must be at most"),
    (["--json", "/nonexistent-dir/x.json"], "does not exist"),
])
def test_bad_options_are_one_line_errors(args, message):
    r = run(*args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_without_torch_the_error_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    r = run("--quick")
    assert r.exit_code == 1
    assert r.output.strip() == "Error: bptt bench needs torch: pip install 'bptt[bench]'"


def test_help_documents_every_option_with_its_default():
    r = run("--help")
    assert r.exit_code == 0
    for opt in ("--cells", "--shapes", "--shape", "--repeat", "--min-time", "--warmup", "--threads",
                "--peak", "--json", "--quick", "--no-extras", "--in-process", "--seed"):
        assert opt in r.output
    assert r.output.count("default") >= 13


def test_script_forwards_to_the_command():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_vs_torch.py"), "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--no-extras" in r.stdout and "bench_vs_torch.py" in r.stdout


def test_flops_and_shapes():
    assert bm.step_flops("lstm", 64, 100, 512, 512) == 3 * 2 * 100 * 64 * 4 * 512 * 1024
    assert bm.SHAPES["deepbench"] == (32, 25, 1024, 1024)
    assert bm.parse_shape(" 8, 20,32 ,64") == (8, 20, 32, 64)


def test_rel_err_flags_nan_and_shape_mismatch():
    a = np.ones(3)
    assert bm.rel_err(a, a) == 0.0
    assert np.isnan(bm.rel_err(np.array([np.nan, 1, 1]), a))
    assert bm.rel_err(np.ones(2), a) == float("inf")
