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
from bptt.benchmark import problems, report, runner, workers
from cli import main

pytestmark = pytest.mark.jit   # bench times the compiled kernels

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
    host = jit.host_isa()
    r = run("--quick", "--cells", "rnn", "--isa", host, *FAST, "--json", str(out))
    assert r.exit_code == 0, r.output
    assert "teach (1,25,65,100)" in r.output and "char (50,50,65,128)" in r.output
    assert f"ISA: bptt {host} ({jit.vector_floats(host)} float32 lanes; from --isa" in r.output
    report = json.loads(out.read_text())
    m = report["machine"]
    for key in ("cpu", "cores", "threads", "date", "numpy", "numba", "torch", "torch_threads", "host_isa"):
        assert key in m
    assert m["threads"] == m["torch_threads"]
    assert report["peak_source"] == "measured" and report["peak_gflops"] > 0
    assert report["peak_1_thread_gflops"] > 0 and m["core_scaling"] > 0
    assert report["peak_isa"] == host and report["peak_vector_floats"] == jit.vector_floats(host)
    assert report["peak_chains"] >= 12
    if m["threads"] > 1:   # a cache line's round trip between the two threads, at the start and after each row
        assert m["handoff_ns"] > 0
        assert all(row["handoff_ns_before"] > 0 and row["handoff_ns"] > 0 for row in report["rows"])
        assert "hand-off: a cache line's round trip between bptt's two threads" in r.output
    else:
        assert m["handoff_ns"] is None
    isa = report["isa"]
    assert isa["bptt"] == host and isa["source"] == "--isa" and isa["torch_restricted_to"] == host
    assert isa["torch_env"] == bm.TORCH_ISA_ENV[host] and isa["targets_apply"] is (host != "generic")
    assert report["command"].startswith("bptt bench --cells rnn --shapes teach,char")
    assert f"--isa {host}" in report["command"]
    assert [(row["cell"], row["shape"]) for row in report["rows"]] == [("rnn", "teach"), ("rnn", "char")]
    for row in report["rows"]:
        assert row["check"]["passed"] and row["check"]["max_rel_err"] <= 1e-3
        assert {"out", "dx", "dh0", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"} <= set(row["check"]["errors"])
        assert row["flops"] == 3 * 2 * row["T"] * row["B"] * 1 * row["H"] * (row["I"] + row["H"])
        for key in ("bptt_ms", "torch_ms", "ratio", "bptt_gflops", "torch_gflops", "bptt_pct_peak"):
            assert row[key] > 0
        assert row["bptt"]["n"] == 2 and row["torch"]["n"] == 2   # --min-time 0: exactly --repeat
        assert row["ratio"] == pytest.approx(row["torch_ms"] / row["bptt_ms"])
        assert len(row["ratio_rounds"]) == 2 and all(v > 0 for v in row["ratio_rounds"])   # --repeat 2: 2 rounds
        assert row["memory"]["peak_mb"] >= row["memory"]["params_grads_mb"] > 0
        assert all(isinstance(v, bool) for v in row["targets"].values())
    teach, char = report["rows"]
    if isa["targets_apply"]:
        assert set(teach["targets"]) == {"ratio_ge_1", "ratio_ge_3"}
        assert set(char["targets"]) == {"ratio_ge_1"}
        assert teach["all_targets_met"] == all(teach["targets"].values())
    # torch's RNN char step, timed again in a process that imported neither bptt nor numba
    assert "torch_plain" not in teach
    plain = char["torch_plain"]
    assert plain["imported"] == [] and plain["n"] == 2 and plain["torch_threads"] == m["threads"]
    assert plain["worker_over_plain"] == pytest.approx(char["torch_ms"] / plain["median_ms"])
    assert plain["pairs"][0]["ratio"] == plain["worker_over_plain"]
    assert 1 <= len(plain["pairs"]) <= 1 + bm.PLAIN_RECHECKS
    assert char["torch_worker_slowed"] is plain["slowed"] is (min(p["ratio"] for p in plain["pairs"]) > bm.TORCH_SLOWED)
    check = report["torch_worker_check"]
    assert check["rows"] == ["rnn char"] and check["slowed"] is char["torch_worker_slowed"]
    assert report["all_correct"] is True
    if isa["targets_apply"]:
        assert report["all_targets_met"] == (all(row["all_targets_met"] for row in report["rows"])
                                             and not check["slowed"])
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

    monkeypatch.setattr(workers, "_answer", answer)
    timers = workers._Timers(1, True, str(tmp_path))
    cfg = bm.BenchConfig(repeat=8, min_time=0.0)
    timed = timers.time("cell", {}, {}, cfg)
    assert calls[:2] == [("bptt", "setup"), ("torch", "setup")]
    assert calls[-2:] == [("bptt", "done"), ("torch", "done")]
    order = [fw for fw, what in calls if what == "slice"]
    assert order == ["bptt", "torch", "torch", "bptt", "bptt", "torch", "torch", "bptt"]
    assert len(timed["bptt"]["times"]) == len(timed["torch"]["times"]) == 8


def test_targets_apply_by_shape_and_need_a_passing_check():
    def row(shape, ratio, pct, passed=True):
        return {"shape": shape, "ratio": ratio, "bptt_pct_peak": pct, "check": {"passed": passed}}
    targets = bm.evaluate_targets
    assert targets(row("teach", 3.0, 1.0)) == {"ratio_ge_1": True, "ratio_ge_3": True}
    assert targets(row("teach", 2.9, 1.0)) == {"ratio_ge_1": True, "ratio_ge_3": False}
    assert targets(row("char", 0.99, 90.0)) == {"ratio_ge_1": False}
    assert targets(row("fastrnns", 2.0, 54.9)) == {"ratio_ge_1": True, "peak_ge_55": False}
    assert targets(row("deepbench", 0.5, 55.0)) == {"ratio_ge_1": False, "peak_ge_55": True}
    assert targets(row("deepbench", 1.5, None)) == {"ratio_ge_1": True, "peak_ge_55": False}
    assert targets(row("custom", 1.0, 0.1)) == {"ratio_ge_1": True}
    assert targets(row("deepbench", 9.0, 90.0, passed=False)) == {"ratio_ge_1": False, "peak_ge_55": False}
    # the extras, by name: torch / bptt >= 1 too
    for name in bm.EXTRAS:
        assert targets({"name": name, "ratio": 1.2, "check": {"passed": True}}) == {"ratio_ge_1": True}
        assert targets({"name": name, "ratio": 0.8, "check": {"passed": True}}) == {"ratio_ge_1": False}
    # the generic ISA is for correctness: no speed target
    assert targets(row("teach", 0.1, 1.0), isa="generic") == {}
    # nor in one process, where the two OpenMP pools compete (--in-process: for diagnosis)
    assert targets(row("teach", 700.0, 1.0), in_process=True) == {}


def test_a_slowed_torch_worker_flags_the_row_and_fails_the_targets(monkeypatch):
    # the plain process "ran" far faster than the worker: the worker was slowed
    monkeypatch.setattr(runner, "PLAIN_CHECK", (("rnn", "custom"),))
    monkeypatch.setattr(runner, "plain_torch_times",
                        lambda *a, **k: {"times": [1e-9, 1e-9], "torch_threads": 1, "imported": []})
    r = run("--shapes", "none", "--shape", "2,3,4,5", "--cells", "rnn", "--in-process", "--peak", "100", *FAST)
    assert r.exit_code == 0, r.output
    # timed --in-process no speed target applies (all_targets_met: null); the flag still shows
    assert "TORCH WORKER SLOWED" in r.output and "all_targets_met: null" in r.output
    assert "--in-process times both frameworks in this process" in r.output
    assert "slower than a plain torch process" in r.output


def test_a_torch_worker_slow_in_one_pair_only_is_timed_again_and_not_flagged(monkeypatch):
    # the first plain process "ran" far faster than the worker (a quick spell after a slow one);
    # timed again, worker and plain process agree: noise, not a worker bptt slowed
    calls = []

    def plain(*a, **k):
        calls.append(1)
        return {"times": [1e-9, 1e-9] if len(calls) == 1 else [10.0, 10.0], "torch_threads": 1, "imported": []}

    monkeypatch.setattr(runner, "PLAIN_CHECK", (("rnn", "custom"),))
    monkeypatch.setattr(runner, "plain_torch_times", plain)
    r = run("--shapes", "none", "--shape", "2,3,4,5", "--cells", "rnn", "--in-process", "--peak", "100", *FAST)
    assert r.exit_code == 0, r.output
    assert "TORCH WORKER SLOWED" not in r.output and "timed again" in r.output and len(calls) == 2


def test_a_broken_gradient_fails_the_row_and_the_exit_code(monkeypatch):
    build = bm.build_bptt

    def broken(kind, spec, data):
        step, results = build(kind, spec, data)
        return step, lambda: {**results(), "weight_hh_l0": results()["weight_hh_l0"] * 1.01}

    monkeypatch.setattr(problems, "build_bptt", broken)
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
    (["--isa", "sse"], "Invalid value for '--isa'"),
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
                "--peak", "--json", "--quick", "--no-extras", "--in-process", "--seed", "--isa"):
        assert opt in r.output
    assert r.output.count("default") >= 14
    for text in ("ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "generic is for correctness", "plain process"):
        assert text in " ".join(r.output.split())


def test_script_forwards_to_the_command():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_vs_torch.py"), "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--no-extras" in r.stdout and "bench_vs_torch.py" in r.stdout


def test_flops_and_shapes():
    assert bm.step_flops("lstm", 64, 100, 512, 512) == 3 * 2 * 100 * 64 * 4 * 512 * 1024
    assert bm.SHAPES["deepbench"] == (32, 25, 1024, 1024)
    # the MLP's step: 3 products a layer but the first layer's dx, which neither framework computes
    from bptt.benchmark.problems import job_flops
    assert job_flops("mlp", {"sizes": [784, 512, 10], "B": 128}) == \
        2 * 128 * (784 * 512 + 512 * 10) + 2 * 128 * (784 * 512 + 512 * 10) + 2 * 128 * 512 * 10
    assert bm.parse_shape(" 8, 20,32 ,64") == (8, 20, 32, 64)


def test_rel_err_flags_nan_and_shape_mismatch():
    a = np.ones(3)
    assert bm.rel_err(a, a) == 0.0
    assert np.isnan(bm.rel_err(np.array([np.nan, 1, 1]), a))
    assert bm.rel_err(np.ones(2), a) == float("inf")


def test_an_isa_the_cpu_cannot_run_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(jit, "host_isa", lambda features=None: "generic")
    for isa in ("avx2", "avx512"):
        r = run("--isa", isa, "--quick", *FAST)
        assert r.exit_code == 2 and "Traceback" not in r.output
        assert r.output.strip() == (f"Error: --isa {isa}: this CPU cannot run it (its widest is generic); "
                                    "use generic")
    assert bm.check_isa("generic") == "generic" and bm.check_isa(None) is None


def test_in_process_refuses_another_isa_than_its_own():
    others = [i for i in jit.ISAS[jit.ISAS.index(jit.host_isa()):] if i != jit.ISA]
    if not others:
        pytest.skip("this CPU runs one ISA only")
    other = others[0]
    r = run("--isa", other, "--in-process", "--quick", *FAST)
    assert r.exit_code == 2 and "--in-process" in r.output and "Traceback" not in r.output


def test_the_torch_worker_gets_no_bptt_settings_and_the_isa_limits(monkeypatch):
    monkeypatch.setenv("BPTT_THREADS", "1")
    monkeypatch.setenv("BPTT_ISA", jit.host_isa())
    env = bm.worker_env("torch", 2, "avx2")
    assert "BPTT_THREADS" not in env and "BPTT_ISA" not in env
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["DNNL_MAX_CPU_ISA"] == "AVX2"
    assert env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert bm.TORCH_ISA_ENV["avx512"]["DNNL_MAX_CPU_ISA"] == "AVX512_CORE"
    assert bm.TORCH_ISA_ENV["generic"] == {"ATEN_CPU_CAPABILITY": "default", "DNNL_MAX_CPU_ISA": "SSE41",
                                           "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    plain = workers.plain_env(2, "avx2")
    assert "BPTT_THREADS" not in plain and plain["ATEN_CPU_CAPABILITY"] == "avx2"
    bptt_env = bm.worker_env("bptt", 2, "generic")
    assert bptt_env["BPTT_THREADS"] == "2" and bptt_env["BPTT_ISA"] == "generic"
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert "ATEN_CPU_CAPABILITY" not in bm.worker_env("torch", 2, None)   # without --isa, torch picks its own


def test_compile_times_run_on_the_isa_being_benchmarked(monkeypatch, tmp_path):
    monkeypatch.delenv("BPTT_ISA", raising=False)
    env = bm.compile_env(2, str(tmp_path), "generic")
    assert env["BPTT_ISA"] == "generic" and env["BPTT_THREADS"] == "2" and env["NUMBA_CACHE_DIR"] == str(tmp_path)
    assert "BPTT_ISA" not in bm.compile_env(2, str(tmp_path))
    monkeypatch.setenv("BPTT_ISA", "avx2")
    assert bm.compile_env(2, str(tmp_path))["BPTT_ISA"] == "avx2"   # inherited when not given


def test_importing_bptt_starts_no_thread_pool_beside_torch():
    """A process started with BPTT_THREADS=2 imports bptt, then runs a torch RNN step built as the
    bench's torch worker builds it: Numba's threading layer must not have been started."""
    code = (
        "import bptt\n"
        "from bptt import jit\n"
        "from bptt.benchmark import build_torch, make_data\n"
        "spec = {'cell': 'rnn', 'B': 4, 'T': 5, 'I': 6, 'H': 7}\n"
        "step, results = build_torch('cell', spec, make_data('cell', spec, 0))\n"
        "step(); step()\n"
        "assert results()['dx'].shape == (4, 5, 6)\n"
        "print(jit.get_threads(), jit.pool_started())\n")
    env = dict(os.environ, BPTT_THREADS="2", NUMBA_NUM_THREADS="2", OMP_NUM_THREADS="2")
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "False"], "importing bptt started Numba's thread pool"


def test_the_generic_isa_is_reported_as_correctness_only():
    rep = {"isa": {"bptt": "generic", "source": "--isa", "host": "avx2", "vector_floats": 4,
                   "torch_restricted_to": "generic", "torch_cpu_capability": "DEFAULT",
                   "torch_env": bm.TORCH_ISA_ENV["generic"], "targets_apply": False},
           "rows": [], "extras": {}, "all_targets_met": None}
    lines = report._isa_lines(rep)
    assert lines[0].startswith("ISA: bptt generic (4 float32 lanes; from --isa")
    assert "held to generic (ATEN_CPU_CAPABILITY=default, DNNL_MAX_CPU_ISA=SSE41" in lines[0]
    assert "for correctness, not timed against torch" in lines[1]
    assert "no speed targets on the generic ISA" in bm.format_summary(rep)


def test_round_ratios_pair_each_slice_of_bptt_with_the_torch_slice_beside_it():
    bptt = [[1.0, 1.0, 3.0], [2.0], [0.5, 0.5]]
    torch_ = [[2.0], [2.0, 2.0, 1.0], [1.0, 1.0]]
    assert runner.round_ratios(bptt, torch_) == [2.0, 1.0, 2.0]
    assert report.rounds_text([2.0, 1.0, 2.0]) == "1.00-2.00"
    assert report.rounds_text([]) == "-" and report.rounds_text(None) == "-"


def test_handoff_round_trips_need_two_threads_and_slow_ones_are_named():
    from bptt.benchmark.report import handoff_text
    from bptt.kernels.handoff import round_trip_ns
    jit.set_threads(2)
    ns = round_trip_ns(n=200, tries=1)
    # two jobs side by side took turns 200 times. No bound on the time: under `pytest -n 2` on
    # two cores the other worker's process shares the cores, and a turn can then wait for a
    # scheduler slice (1.3 ms a round trip was seen in CI, against 60-350 ns alone).
    assert ns is not None and 0 < ns < float("inf")
    jit.set_threads(1)
    assert round_trip_ns(n=200) is None      # in order, each would wait for the other for ever
    rows = [{"cell": "lstm", "shape": s, "handoff_ns": v} for s, v in (("teach", 60.0), ("char", 310.0))]
    mlp = {"name": "mlp", "check": {}, "handoff_ns_before": 330.0, "handoff_ns": 70.0}   # slow before it
    text = handoff_text({"rows": rows, "extras": {"mlp": mlp}})
    assert "took 60-330 ns" in text and "around lstm char 310, mlp 330 ns" in text and "teach 60" not in text
    quiet = handoff_text({"rows": rows[:1], "extras": {}})
    assert "took 60 ns" in quiet and "quickest or more" not in quiet
    assert handoff_text({"rows": [dict(rows[0], handoff_ns=None)], "extras": {}}) == ""
