"""bptt sweep: the trial list, the spec, the command-line errors, and one small sweep on a local
Ray whose trials must equal, bit for bit, the same `bptt train --threads 1` runs alone."""
import csv
import json
import math
import os

import numpy as np
import pytest
from click.testing import CliRunner

from bptt import jit
from bptt.sweep import SweepError, SweepSpec, load_spec, make_trials, option_args
from bptt.sweep_trial import MetricsTail, last_line
from cli import main

TINY = ["--hidden", "16", "--embed-dim", "8", "--steps", "20", "--val-every", "10", "--seq-len", "16",
        "--batch-size", "4", "--val-tokens", "2000"]


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_trials_are_the_grid_crossed_with_seeded_draws():
    spec = SweepSpec(grid={"cell": ["lstm", "gru"], "lr": ["1e-3", "2e-3", "5e-3"]},
                     loguniform={"weight_decay": [1e-5, 1e-2]}, uniform={"hidden": [8, 64]},
                     choice={"layers": [1, 2]}, samples=3, seed=7)
    trials = make_trials(spec)
    assert len(trials) == 2 * 3 * 3 and [t["id"] for t in trials[:2]] == ["t000", "t001"]
    assert {(t["params"]["cell"], t["params"]["lr"]) for t in trials} == {
        (c, l) for c in ("lstm", "gru") for l in ("1e-3", "2e-3", "5e-3")}
    for t in trials:
        p = t["params"]
        assert 1e-5 <= p["weight_decay"] <= 1e-2 and isinstance(p["weight_decay"], float)
        assert 8 <= p["hidden"] <= 64 and isinstance(p["hidden"], int)   # integer bounds: integers
        assert p["layers"] in (1, 2)
    draws = {(t["params"]["weight_decay"], t["params"]["hidden"]) for t in trials}
    assert len(draws) == 3   # one draw per sample, shared by its grid cells
    assert make_trials(spec) == trials   # the same spec and seed: the same trials
    spec.seed = 8
    assert make_trials(spec) != trials


def test_samples_without_random_draws_repeat_the_grid_with_seeds_counting_up():
    spec = SweepSpec(grid={"lr": ["1e-3", "2e-3"]}, samples=3, args=["--seed", "5"])
    seeds = [(t["params"]["lr"], t["params"]["seed"]) for t in make_trials(spec)]
    assert seeds == [("1e-3", 5), ("2e-3", 5), ("1e-3", 6), ("2e-3", 6), ("1e-3", 7), ("2e-3", 7)]


@pytest.mark.parametrize("kw, msg", [
    (dict(grid={"lr": []}), "give a list"),
    (dict(uniform={"lr": [1.0]}), "two bounds"),
    (dict(loguniform={"lr": [0.0, 1.0]}), "must be positive"),
    (dict(uniform={"lr": [2.0, 1.0]}), "low must be below high"),
    (dict(uniform={"lr": ["a", 1.0]}), "not a number"),
    (dict(grid={"lr": [1]}, choice={"lr": [1]}), "given twice"),
    (dict(command="eval"), "command must be one of"),
    (dict(samples=0), "samples must be"),
])
def test_bad_specs_are_one_line_errors(kw, msg):
    with pytest.raises(SweepError, match=msg):
        make_trials(SweepSpec(**kw))


def test_option_args():
    assert option_args("embed_dim", 32) == ["--embed-dim", "32"]
    assert float(option_args("lr", 0.1 + 0.2)[1]) == 0.1 + 0.2   # the exact float goes through
    assert option_args("bidirectional", True) == ["--bidirectional"]


def test_toml_spec(tmp_path):
    pytest.importorskip("tomllib")   # Python 3.11+; on 3.10 a spec is a one-line error
    p = tmp_path / "s.toml"
    p.write_text('command = "train"\nsamples = 2\nargs = ["--steps", "20"]\n[grid]\ncell = ["lstm", "gru"]\n'
                 '[loguniform]\nlr = [1e-4, 1e-2]\n[fixed]\nhidden = 16\n')
    d = load_spec(p)
    assert d["grid"] == {"cell": ["lstm", "gru"]} and d["fixed"] == {"hidden": 16}
    assert len(make_trials(SweepSpec(**{k: v for k, v in d.items() if k != "fixed"}))) == 4
    p.write_text('[grid]\nlr = [1\n')
    with pytest.raises(SweepError, match="not valid TOML"):
        load_spec(p)
    p.write_text('gird = 3\n')
    with pytest.raises(SweepError, match="unknown entries gird"):
        load_spec(p)


def test_metrics_tail_reads_only_complete_new_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.new_records() == []
    path.write_text('{"step": 1}\n{"step": 2, "val_lo')
    assert tail.new_records() == [{"step": 1}]
    with open(path, "a") as f:
        f.write('ss": 3.5}\n')
    assert tail.new_records() == [{"step": 2, "val_loss": 3.5}]
    path.write_text('{"step": 1}\n')   # trimmed by a resume: read again from the start
    assert tail.new_records() == [{"step": 1}]
    (tmp_path / "log").write_text("a\nstep 3/9 [#--]\rstep 4/9 [##-]\n\n")
    assert last_line(tmp_path / "log") == "step 4/9 [##-]"


def test_command_line_errors_come_before_ray_starts(tmp_path):
    out = str(tmp_path / "sw")
    for args, fixed, msg in [(["--grid", "lr"], [], "NAME=VALUE"),
                             (["--grid", "hiden=8,16"], [], "has no option --hiden"),
                             (["--grid", "out=a,b"], [], "cannot be swept"),
                             (["--grid", "lr=1e-3,-1"], [], "trial t001 (lr=-1)"),
                             (["--grid", "lr=1e-3"], ["--resume"], "cannot be a fixed option"),
                             (["--resume"], [], "holds no sweep to resume")]:
        r = run("sweep", *args, "--out", out, "--", *fixed)
        assert r.exit_code != 0 and msg in r.output, (args, r.output)
        assert "Traceback" not in r.output
    assert not os.path.exists(os.path.join(out, "sweep.json"))


def test_without_ray_the_command_says_how_to_install_it(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("ray") else real(name, *a))
    r = run("sweep", "--grid", "lr=1e-3")
    assert r.exit_code == 1 and r.output.strip() == 'Error: bptt sweep needs Ray Tune: pip install "bptt[sweep]"'


# ---------------------------------------------------------------------------------------------
# One small sweep on a local Ray (the CI sweep: 2 trials of a tiny model, 20 steps)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    base = tmp_path_factory.mktemp("sweep")
    text = base / "corpus.txt"
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    text.write_text(" ".join(words[i] for i in rng.integers(0, len(words), 4000)) + "\n")
    out = base / "sw"
    r = run("sweep", "--grid", "lr=1e-3,5e-3", "--out", str(out), "--json", str(base / "r.json"),
            "--", str(text), *TINY)
    return base, out, text, r


def _arrays(path):
    from bptt.checkpoint import load_checkpoint
    return load_checkpoint(path)["model"]


def test_sweep_runs_trials_and_writes_results(swept):
    base, out, text, r = swept
    assert r.exit_code == 0, r.output
    assert "t000" in r.output and ("best: t001" in r.output or "best: t000" in r.output)
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [row["status"] for row in rows] == ["done", "done"] and {row["lr"] for row in rows} == {"1e-3", "5e-3"}
    losses = [float(row["best_val_loss"]) for row in rows]
    assert losses == sorted(losses) and all(math.isfinite(v) for v in losses)
    assert all(row["steps"] == "20" for row in rows)
    best = json.loads((base / "r.json").read_text())["best"]
    assert os.path.realpath(out / "best") == os.path.realpath(out / "trials" / best["id"] / "best.bptt")
    # the data was written into each trial folder, and the trial trained on that copy
    for tid in ("t000", "t001"):
        assert (out / "trials" / tid / "data" / "corpus.txt").read_bytes() == text.read_bytes()
        recs = [json.loads(l) for l in open(out / "trials" / tid / "metrics.jsonl")]
        assert [x["step"] for x in recs if "val_loss" in x] == [10, 20]


def test_trial_equals_the_same_train_run_alone_bit_for_bit(swept, tmp_path):
    base, out, text, r = swept
    assert r.exit_code == 0, r.output
    before = jit.get_threads()
    try:
        alone = run("--threads", "1", "train", str(text), *TINY, "--lr", "5e-3", "--out", str(tmp_path / "alone"))
    finally:
        jit.set_threads(before)
    assert alone.exit_code == 0, alone.output
    tid = next(t["id"] for t in json.loads((out / "sweep.json").read_text())["trials"] if t["params"]["lr"] == "5e-3")
    a, b = _arrays(tmp_path / "alone" / "checkpoint.bptt"), _arrays(out / "trials" / tid / "checkpoint.bptt")
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    other = _arrays(out / "trials" / ("t000" if tid == "t001" else "t001") / "checkpoint.bptt")
    assert not all(np.array_equal(a[k], other[k]) for k in a)   # the comparison can fail


def test_resume_of_a_finished_sweep_reruns_nothing(swept):
    base, out, text, r = swept
    assert r.exit_code == 0, r.output
    stamp = os.path.getmtime(out / "trials" / "t000" / "checkpoint.bptt")
    r2 = run("sweep", "--resume", "--out", str(out))
    assert r2.exit_code == 0, r2.output
    assert "2 finished before, kept" in r2.output and "2 done" in r2.output
    assert os.path.getmtime(out / "trials" / "t000" / "checkpoint.bptt") == stamp
    r3 = run("sweep", "--grid", "lr=1e-3", "--out", str(out))
    assert r3.exit_code == 1 and "already holds a sweep" in r3.output


def test_toml_spec_and_options_merge_on_the_command_line(tmp_path):
    """The spec's [fixed] table and args reach the trials, an option given on the command line
    replaces the spec's entry for that name; checked through the argument check before Ray."""
    pytest.importorskip("tomllib")
    spec = tmp_path / "s.toml"
    spec.write_text('samples = 1\nargs = ["--steps", "20"]\n[grid]\nlr = [1e-3, 2e-3]\ncell = ["lstm"]\n'
                    '[fixed]\nhidden = 0\n')
    r = run("sweep", str(spec), "--out", str(tmp_path / "a"))
    assert r.exit_code == 2 and "--hidden" in r.output and "0" in r.output   # the fixed hidden = 0 reached train
    spec.write_text('[grid]\nlr = [1e-3, 2e-3]\n[fixed]\nhidden = 8\n')
    r = run("sweep", str(spec), "--grid", "lr=-1", "--out", str(tmp_path / "b"))
    assert r.exit_code == 2 and "trial t000 (lr=-1)" in r.output   # the command line's grid replaced the spec's


def test_dry_run_prints_the_same_trials_for_the_same_seed(tmp_path):
    args = ["sweep", "--dry-run", "--loguniform", "lr=1e-4,1e-2", "--choice", "cell=lstm,gru", "--samples", "8",
            "--seed", "1", "--scheduler", "asha", "--out", str(tmp_path / "s"), "--", "--steps", "2000"]
    r = run(*args)
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 8 and lines[0].startswith("t000: bptt train --steps 2000 --lr ")
    assert all("--cell lstm" in l or "--cell gru" in l for l in lines)
    assert run(*args).output == r.output and not (tmp_path / "s").exists()
    other = run(*[a if a != "1" else "2" for a in args])
    assert other.exit_code == 0 and other.output != r.output


def test_an_address_where_nothing_answers_is_a_one_line_error(tmp_path):
    pytest.importorskip("ray")
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()   # nothing listens there now
    out = tmp_path / "sw"
    for _ in range(2):   # nothing ran, so the same command can be given again
        r = run("sweep", "--address", f"127.0.0.1:{port}", "--grid", "lr=1e-3", "--out", str(out), "--", *TINY)
        assert r.exit_code == 1 and "cannot connect to the Ray cluster" in r.output, r.output
        assert "Traceback" not in r.output and not (out / "sweep.json").exists()


# ---------------------------------------------------------------------------------------------
# Robustness of the spec: seeds, flags, option names, duplicates (all before Ray starts)
# ---------------------------------------------------------------------------------------------

def _dry(tmp_path, *args):
    r = run("sweep", "--dry-run", "--out", str(tmp_path / "d"), *args)
    assert "Traceback" not in r.output, r.output
    return r


def test_a_negative_seed_is_a_one_line_error(tmp_path):
    r = _dry(tmp_path, "--seed", "-1", "--choice", "cell=lstm,gru", "--", "--steps", "1")
    assert r.exit_code == 2 and "--seed" in r.output and "-1" in r.output, r.output
    with pytest.raises(SweepError, match="seed must be a non-negative integer"):
        make_trials(SweepSpec(choice={"cell": ["lstm"]}, seed=-1))   # as from a TOML spec


def test_flags_in_a_grid_or_choice_become_the_flag_or_nothing(tmp_path):
    fit = ["--command", "fit"]
    r = _dry(tmp_path, *fit, "--grid", "bidirectional=true,False", "--", "--demo", "adding", "--epochs", "1")
    assert r.exit_code == 0, r.output
    t0, t1 = r.output.strip().splitlines()
    assert t0.startswith("t000: bptt fit --demo adding --epochs 1 --bidirectional --out ")
    assert t1.startswith("t001: bptt fit --demo adding --epochs 1 --out ")
    r = _dry(tmp_path, *fit, "--grid", "header=YES,no,1,0", "--", "--demo", "adding")
    assert r.exit_code == 0, r.output
    lines = [l for l in r.output.strip().splitlines() if l.startswith("t0")]
    assert ["--header --out" in l for l in lines] == [True, False, True, False]
    assert "note: 2 of the 4 trials (t002, t003)" in r.output   # YES and 1 are the same run
    assert ["--no-header --out" in l for l in lines] == [False, True, False, True]
    r = _dry(tmp_path, *fit, "--choice", "bidirectional=true", "--", "--demo", "adding")
    assert r.exit_code == 0 and "--bidirectional --out" in r.output, r.output
    for bad in (["--grid", "bidirectional=maybe"], ["--choice", "header=2"], ["--uniform", "header=0,1"]):
        r = _dry(tmp_path, *fit, *bad, "--", "--demo", "adding")
        assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1, (bad, r.output)
        assert "is a flag" in r.output, (bad, r.output)
    assert option_args("bidirectional", False, {"bidirectional": None}) == []
    assert option_args("header", "No", {"header": "--no-header"}) == ["--no-header"]
    assert option_args("steps", 5, {"header": "--no-header"}) == ["--steps", "5"]


def test_toml_booleans_for_flags(tmp_path):
    pytest.importorskip("tomllib")
    spec = tmp_path / "s.toml"
    spec.write_text('command = "fit"\nargs = ["--demo", "adding"]\n[grid]\nbidirectional = [true, false]\n'
                    '[fixed]\nheader = false\n')
    r = _dry(tmp_path, str(spec))
    assert r.exit_code == 0, r.output
    t0, t1 = r.output.strip().splitlines()
    assert " --no-header --bidirectional --out " in t0 and " --no-header --out " in t1
    spec.write_text('command = "fit"\nargs = ["--demo", "adding"]\n[fixed]\nbidirectional = false\n')
    r = _dry(tmp_path, str(spec), "--grid", "epochs=1")
    assert r.exit_code == 0 and "bidirectional" not in r.output, r.output
    spec.write_text('command = "fit"\nargs = ["--demo", "adding"]\n[fixed]\nbidirectional = "sometimes"\n')
    r = _dry(tmp_path, str(spec), "--grid", "epochs=1")
    assert r.exit_code != 0 and "is a flag" in r.output, r.output


def test_options_are_known_by_their_option_names_not_their_parameter_names(tmp_path):
    r = _dry(tmp_path, "--command", "forecast", "--grid", "json=a.json,b.json", "--choice", "plot=p.png",
             "--", "--demo", "seasonal")
    assert r.exit_code == 0, r.output
    assert "--json a.json" in r.output and "--json b.json" in r.output and "--plot p.png" in r.output
    r = _dry(tmp_path, "--command", "forecast", "--grid", "json_path=a.json", "--", "--demo", "seasonal")
    assert r.exit_code == 2 and "has no option --json-path" in r.output, r.output
    r = _dry(tmp_path, "--command", "fit", "--grid", "val=v.csv", "--", "--demo", "adding")
    assert "has no option" not in r.output, r.output


@pytest.mark.parametrize("args, msg", [
    (["--grid", "lr=1e-3", "--grid", "lr=2e-3"], "lr"),
    (["--grid", "cell=lstm", "--choice", "cell=gru"], "cell"),
    (["--uniform", "hidden=8,16", "--grid", "hidden=32"], "hidden"),
    (["--grid", "steps=5,6", "--", "--steps", "5"], "--steps"),
    (["--grid", "steps=5,6", "--", "--steps=5"], "--steps"),
])
def test_an_option_given_twice_is_a_one_line_error(tmp_path, args, msg):
    r = _dry(tmp_path, *args)
    assert r.exit_code == 2 and msg in r.output and "twice" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "t000" not in r.output


def test_toml_fixed_and_grid_of_one_option(tmp_path):
    pytest.importorskip("tomllib")
    spec = tmp_path / "s.toml"
    spec.write_text('[grid]\nsteps = [5, 6]\n[fixed]\nsteps = 5\n')
    r = _dry(tmp_path, str(spec))
    assert r.exit_code == 2 and "--steps" in r.output and "twice" in r.output, r.output
    spec.write_text('[fixed]\nsteps = 5\n')
    r = _dry(tmp_path, str(spec), "--grid", "steps=7,8")   # the command line's grid wins
    assert r.exit_code == 0 and [l.count("--steps") for l in r.output.strip().splitlines()] == [1, 1], r.output


def test_identical_trials_are_noted(tmp_path):
    r = _dry(tmp_path, "--choice", "cell=lstm", "--samples", "3")
    assert r.exit_code == 0, r.output
    assert "note:" in r.output and "t001" in r.output and "t002" in r.output
    r = _dry(tmp_path, "--grid", "cell=lstm", "--samples", "3")   # nothing random: the seed counts up
    assert r.exit_code == 0 and "note:" not in r.output, r.output
