"""The language model, the trainer, and the train/sample/eval/embed/search/plot commands."""
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from bptt import jit
from bptt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bptt.data import UNK_TEXT, CharTokenizer, load_corpus
from bptt.generate import cosine_top_k, embed_texts, sample
from bptt.finitediff import gradcheck
from bptt.model import LanguageModel, LMConfig
from bptt.train import BEST_NAME, CHECKPOINT_NAME, Trainer, TrainConfig, TrainingError, load_model
from clihelp import one_line_error, run

WORDS = "the cat sat on a mat and the dog ran to the park while birds sang in trees".split()
TINY = dict(hidden=16, embed_dim=8, batch_size=4, seq_len=8, val_every=5, val_tokens=500, lr=0.01)
TINY_ARGS = ["--hidden", "16", "--embed-dim", "8", "--batch-size", "4", "--seq-len", "8",
             "--val-every", "5", "--val-tokens", "500", "--lr", "0.01"]


@pytest.fixture(autouse=True)
def _restore_threads():
    before = jit.get_threads()
    yield
    jit.set_threads(before)


@pytest.fixture(scope="module")
def text():
    rng = np.random.default_rng(0)
    return "\n".join(" ".join(rng.choice(WORDS, 8)) for _ in range(120)) + "\n"


@pytest.fixture
def corpus(tmp_path, text):
    p = tmp_path / "tiny.txt"
    p.write_text(text, encoding="utf-8")
    return p


def params_of(path):
    return load_checkpoint(path)["model"]


# -- the model --------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_language_model_gradcheck(cell):
    """Every parameter of the whole model (embedding, 2 layers, head) and h0/c0, in float64."""
    model = LanguageModel(LMConfig(vocab_size=7, cell=cell, hidden=5, layers=2, embed_dim=4,
                                   dtype="float64", seed=1))
    rng = np.random.default_rng(0)
    inputs = {"x": rng.integers(0, 7, (2, 4)), "y": rng.integers(0, 7, (2, 4)),
              "h0": rng.standard_normal((2, 2, 5)) * 0.5}
    if cell == "lstm":
        inputs["c0"] = rng.standard_normal((2, 2, 5)) * 0.5
    report = gradcheck(model, inputs, max_checks=30)
    assert report.passed, report.table()
    assert {r.name for r in report.rows} >= {"embedding.weight", "head.weight", "rnn.weight_hh_l1", "h0"}


def test_model_rejects_bad_ids():
    model = LanguageModel(LMConfig(vocab_size=5, hidden=4, embed_dim=3))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        model.forward(np.array([[1, 7]]))


# -- training -----------------------------------------------------------------------------------

def test_train_cli_learns_and_writes_run(corpus, tmp_path):
    out = tmp_path / "run"
    r = run("train", corpus, *TINY_ARGS, "--steps", 40, "--out", out)
    assert r.exit_code == 0, r.output
    assert "unigram baseline" in r.output and "val loss" in r.output and "bpc" in r.output
    ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    assert ckpt["step"] == 40
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    train = [l for l in lines if "loss" in l]
    val = [l for l in lines if "val_loss" in l]
    assert len(train) == 40 and [v["step"] for v in val] == [5, 10, 15, 20, 25, 30, 35, 40]
    # It learns: the last validation loss is well below the first and below the unigram baseline.
    assert val[-1]["val_loss"] < val[0]["val_loss"] - 0.3
    assert val[-1]["val_loss"] < ckpt["metrics"]["unigram"]


def test_best_checkpoint_holds_the_lowest_validation_loss(corpus, tmp_path):
    """best.bptt is written whenever the validation loss improves: its step is the argmin of the
    validation losses in metrics.jsonl, and the final report names it when it is not the last."""
    out = tmp_path / "run"
    r = run("train", corpus, *TINY_ARGS, "--lr", "0.2", "--steps", 60, "--out", out)
    assert r.exit_code == 0, r.output
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    val = [l for l in lines if "val_loss" in l]
    best = min(val, key=lambda v: v["val_loss"])
    ckpt = load_checkpoint(out / BEST_NAME)
    assert ckpt["step"] == best["step"]
    assert ckpt["metrics"]["best_val"] == best["val_loss"] and ckpt["metrics"]["best_step"] == best["step"]
    if best["step"] != 60:
        assert f"best: step {best['step']}" in r.output
    assert run("sample", out / BEST_NAME, "--length", 20).exit_code == 0

def test_refuses_to_overwrite_a_run(corpus, tmp_path):
    out = tmp_path / "run"
    assert run("train", corpus, *TINY_ARGS, "--steps", 5, "--out", out).exit_code == 0
    before = (out / CHECKPOINT_NAME).read_bytes()
    r = run("train", corpus, *TINY_ARGS, "--steps", 5, "--out", out)
    assert "--resume" in one_line_error(r)
    assert (out / CHECKPOINT_NAME).read_bytes() == before


def assert_resume_matches(corpus, straight, stopped, steps):
    """Resume the run in ``stopped`` to ``steps`` through the CLI: its weights and optimiser state
    must be bitwise those of ``straight``, which ran ``steps`` without a break."""
    mid = params_of(stopped / CHECKPOINT_NAME)
    r = run("train", corpus, "--steps", steps, "--out", stopped, "--resume")
    assert r.exit_code == 0 and "resuming" in r.output, r.output
    pa, pb = params_of(straight / CHECKPOINT_NAME), params_of(stopped / CHECKPOINT_NAME)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k
    assert any(not np.array_equal(mid[k], pb[k]) for k in pb)  # the resume really trained
    oa = load_checkpoint(straight / CHECKPOINT_NAME)["optim"]
    ob = load_checkpoint(stopped / CHECKPOINT_NAME)["optim"]
    assert json.dumps(oa, default=lambda x: x.tolist()) == json.dumps(ob, default=lambda x: x.tolist())


@pytest.mark.parametrize("cell,optimizer,schedule", [("lstm", "adam", "constant"), ("gru", "sgd", "step"),
                                                     ("rnn", "rmsprop", "constant")])
def test_resume_is_bitwise_exact(corpus, tmp_path, cell, optimizer, schedule):
    """N steps then a resume to 2N gives bitwise the weights of 2N steps without a break."""
    args = [*TINY_ARGS, "--cell", cell, "--optimizer", optimizer, "--schedule", schedule, "--lr-step-size", 4]
    a, b = tmp_path / "a", tmp_path / "b"
    assert run("train", corpus, *args, "--steps", 14, "--out", a).exit_code == 0
    r = run("train", corpus, *args, "--steps", 7, "--out", b)
    assert r.exit_code == 0, r.output
    assert_resume_matches(corpus, straight=a, stopped=b, steps=14)


def test_resume_is_bitwise_exact_with_cosine_and_the_same_steps(corpus, tmp_path):
    """A cosine schedule's shape depends on --steps: stopped at 7 of 14, then resumed with
    --steps 14, it gives bitwise the weights of 14 steps without a break."""
    args = [*TINY_ARGS, "--schedule", "cosine", "--warmup", 2]
    a, b = tmp_path / "a", tmp_path / "b"
    assert run("train", corpus, *args, "--steps", 14, "--out", a).exit_code == 0
    config = TrainConfig(steps=14, schedule="cosine", warmup=2, sources=[str(corpus)], **TINY)
    t = Trainer.fresh(config, b, load_corpus([str(corpus)]))

    def on_event(kind, info):
        if kind == "step" and info["step"] == 7:
            t.request_stop()

    assert t.run(on_event)["step"] == 7
    assert_resume_matches(corpus, straight=a, stopped=b, steps=14)


def test_ctrl_c_saves_and_resume_continues_exactly(text, tmp_path):
    straight = Trainer.fresh(TrainConfig(steps=12, **TINY), tmp_path / "s", text)
    straight.run()

    t = Trainer.fresh(TrainConfig(steps=12, **TINY), tmp_path / "i", text)

    def on_event(kind, info):
        if kind == "step" and info["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, caught by the trainer

    summary = t.run(on_event)
    assert summary["reason"] == "interrupted" and summary["step"] == 3
    assert load_checkpoint(tmp_path / "i" / CHECKPOINT_NAME)["step"] == 3
    Trainer.resume(tmp_path / "i", text=text).run()
    a, b = params_of(tmp_path / "s" / CHECKPOINT_NAME), params_of(tmp_path / "i" / CHECKPOINT_NAME)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_and_keeps_the_good_checkpoint(text, tmp_path, monkeypatch):
    t = Trainer.fresh(TrainConfig(steps=30, **TINY), tmp_path / "r", text)
    original = t.model.loss_and_grad

    def poisoned(x, y, state=None):
        loss, st = original(x, y, state)
        if t.step >= 7:  # the 8th step diverges
            t.model.grads["head.bias"][0] = np.nan
            return float("nan"), st
        return loss, st

    monkeypatch.setattr(t.model, "loss_and_grad", poisoned)
    path = tmp_path / "r" / CHECKPOINT_NAME
    with pytest.raises(TrainingError, match="step 8.*last good checkpoint"):
        t.run()
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 5
    assert all(np.all(np.isfinite(v)) for v in ckpt["model"].values())


def test_train_nan_via_cli_is_one_line(corpus, tmp_path):
    r = run("train", corpus, *TINY_ARGS, "--steps", 20, "--lr", "1e30", "--clip", "0",
            "--optimizer", "sgd", "--momentum", "0", "--out", tmp_path / "r")
    if r.exit_code == 0:
        pytest.skip("this seed did not diverge")  # pragma: no cover
    line = one_line_error(r)
    assert "non-finite" in line or "nan" in line.lower()


def test_non_finite_validation_never_overwrites_the_good_checkpoint(text, tmp_path):
    """The loss of step 3 is finite (it is computed before the update), but a huge learning rate
    makes the weights, and so the validation loss, non-finite: nothing is saved."""
    t = Trainer.fresh(TrainConfig(steps=10, **{**TINY, "val_every": 1}), tmp_path / "r", text)
    t.schedule = lambda step: 1e38 if step >= 2 else TINY["lr"]
    path = tmp_path / "r" / CHECKPOINT_NAME
    good = {}

    def on_event(kind, info):
        if kind == "val":
            good[info["step"]] = path.read_bytes()

    with pytest.raises(TrainingError, match="non-finite.*step 3.*last good checkpoint"):
        t.run(on_event)
    assert sorted(good) == [1, 2]
    assert path.read_bytes() == good[2]
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 2 and np.isfinite(ckpt["metrics"]["val"]["val_loss"])
    # save() itself refuses non-finite weights, whatever path reaches it.
    t.model.load_state(ckpt["model"])
    t.model.parameters()["head.weight"][0, 0] = np.inf
    with pytest.raises(TrainingError, match="weights became non-finite \\(head.weight\\)"):
        t.save()
    assert path.read_bytes() == good[2]


def test_huge_lr_via_cli_saves_nothing(corpus, tmp_path):
    out = tmp_path / "r"
    r = run("train", corpus, "--hidden", 16, "--embed-dim", 8, "--batch-size", 4, "--seq-len", 8,
            "--steps", 5, "--val-every", 1, "--lr", "1e38", "--out", out)
    line = one_line_error(r)
    assert "non-finite" in line and "no checkpoint had been written yet" in line
    assert not (out / CHECKPOINT_NAME).exists()


def test_builtin_corpus_is_the_default(tmp_path):
    r = run("train", "--steps", 2, "--hidden", 8, "--embed-dim", 4, "--batch-size", 2, "--seq-len", 8,
            "--val-tokens", 200, "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    assert "built-in corpus" in r.output
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["data"]["train_tokens"] > 400_000


def test_word_tokenizer_and_epochs(corpus, tmp_path):
    r = run("train", corpus, *TINY_ARGS, "--tokenizer", "word", "--epochs", "1", "--out", tmp_path / "w")
    assert r.exit_code == 0, r.output
    assert "perplexity" in r.output
    model, tok, ckpt = load_model(tmp_path / "w")
    assert tok.kind == "word" and ckpt["step"] >= 1
    r = run("sample", tmp_path / "w", "--length", 10, "--prime", "the cat")
    assert r.exit_code == 0 and r.output.startswith("the cat")


# -- sampling, evaluation, embedding, search ------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, text):
    d = tmp_path_factory.mktemp("trained")
    (d / "tiny.txt").write_text(text, encoding="utf-8")
    Trainer.fresh(TrainConfig(steps=30, **TINY), d / "run", text).run()
    return d


def test_sample_is_deterministic_and_streams(trained):
    a = run("sample", trained / "run", "--length", 60, "--seed", 3)
    b = run("sample", trained / "run" / CHECKPOINT_NAME, "--length", 60, "--seed", 3)
    c = run("sample", trained / "run", "--length", 60, "--seed", 4)
    assert a.exit_code == 0 and a.output == b.output and a.output != c.output
    assert len(a.output.rstrip("\n")) == 60
    p = run("sample", trained / "run", "--length", 20, "--prime", "the dog", "--top-k", 3, "--temperature", 0.5)
    assert p.exit_code == 0 and p.output.startswith("the dog")


def test_sample_bad_prime_and_options(trained):
    line = one_line_error(run("sample", trained / "run", "--prime", "zebra€"))
    assert "€" in line or "z" in line
    assert run("sample", trained / "run", "--temperature", 0).exit_code == 2
    assert run("sample", trained / "run", "--top-k", 0).exit_code == 2


def test_eval_prints_loss_perplexity_bpc(trained):
    r = run("eval", trained / "run", trained / "tiny.txt")
    assert r.exit_code == 0, r.output
    loss = float(r.output.split("loss: ")[1].split()[0])
    ppl = float(r.output.split("perplexity: ")[1].split()[0])
    bpc = float(r.output.split("bits per character: ")[1].split()[0])
    assert abs(np.exp(loss) - ppl) < 1e-2 * ppl and abs(loss / np.log(2) - bpc) < 1e-3


@pytest.mark.parametrize("suffix", [".npy", ".jsonl"])
def test_embed_and_search(trained, tmp_path, suffix):
    out = tmp_path / f"vectors{suffix}"
    r = run("embed", trained / "run", trained / "tiny.txt", "--out", out, "--pool", "mean")
    assert r.exit_code == 0, r.output
    r = run("search", out, "the cat sat on a mat", "-k", 3)
    assert r.exit_code == 0, r.output
    rows = r.output.strip().splitlines()
    assert len(rows) == 3
    scores = [float(row.split()[1]) for row in rows]
    assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)


def test_search_finds_the_line_itself(trained):
    model, tok, _ = load_model(trained / "run")
    lines = (trained / "tiny.txt").read_text().splitlines()[:40]
    vecs = embed_texts(model, tok, lines, pool="mean")
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    q = embed_texts(model, tok, [lines[17]], pool="mean")[0]
    idx, sims = cosine_top_k(vecs, q, 1)
    assert abs(sims[0] - 1) < 1e-5 and lines[idx[0]] == lines[17]


def test_search_with_a_checkpoint_and_file(trained):
    r = run("search", trained / "run", "the dog ran", "--in", trained / "tiny.txt", "-k", 2)
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 2


def test_sample_never_emits_unk():
    tok = CharTokenizer.fit("ab\n")
    model = LanguageModel(LMConfig(vocab_size=tok.vocab_size, hidden=4, embed_dim=3))
    model.parameters()["head.bias"][0] = 50.0  # <unk> would win almost every draw
    out = "".join(sample(model, tok, length=50, seed=0))
    assert len(out) == 50 and set(out) <= set("ab\n")
    out = "".join(sample(model, tok, length=20, seed=0, top_k=1))
    assert len(out) == 20 and UNK_TEXT not in out
    # ... unless it is the whole vocabulary.
    only = CharTokenizer([])
    model = LanguageModel(LMConfig(vocab_size=1, hidden=4, embed_dim=3))
    assert "".join(sample(model, only, length=3)) == UNK_TEXT * 3


def test_python_api_sample(trained):
    model, tok, _ = load_model(trained / "run")
    a = "".join(sample(model, tok, length=30, seed=1, prime="the"))
    assert a == "".join(sample(model, tok, length=30, seed=1, prime="the")) and len(a) == 30


def test_plot(trained, tmp_path):
    pytest.importorskip("matplotlib")
    r = run("plot", trained / "run", "--out", tmp_path / "loss.png")
    assert r.exit_code == 0 and (tmp_path / "loss.png").stat().st_size > 1000


# -- bad input: one line, exit 1 (2 for usage), nothing overwritten -------------------------

def test_bad_text_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "bin.dat"
    binary.write_bytes(b"abc\x00\x01\x02")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait".encode("latin-1"))
    short = tmp_path / "short.txt"
    short.write_text("just a few characters here\n" * 3)
    out = tmp_path / "r"
    assert "no such file" in one_line_error(run("train", tmp_path / "missing.txt", "--out", out)).lower()
    assert "empty" in one_line_error(run("train", empty, "--out", out))
    assert "binary" in one_line_error(run("train", binary, "--out", out))
    assert "UTF-8" in one_line_error(run("train", latin, "--out", out))
    assert "tokens" in one_line_error(run("train", short, "--seq-len", 64, "--out", out))
    assert not (out / CHECKPOINT_NAME).exists()


def test_bad_checkpoints_never_overwrite(trained, tmp_path, corpus):
    good = tmp_path / "good"
    assert run("train", corpus, *TINY_ARGS, "--steps", 5, "--out", good).exit_code == 0
    data = (good / CHECKPOINT_NAME).read_bytes()
    garbage = tmp_path / "garbage.bptt"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    truncated = tmp_path / "trunc" / CHECKPOINT_NAME
    truncated.parent.mkdir()
    truncated.write_bytes(data[: len(data) // 2])
    for path in (garbage, truncated):
        one_line_error(run("sample", path))
        one_line_error(run("eval", path, corpus))
    one_line_error(run("sample", tmp_path / "nowhere.bptt"))
    before = truncated.read_bytes()
    one_line_error(run("train", corpus, "--out", truncated.parent, "--resume", "--steps", 10))
    assert truncated.read_bytes() == before
    # Resuming with other text is refused, and the good checkpoint is untouched.
    other = tmp_path / "other.txt"
    other.write_text("a completely different text " * 50)
    assert "differs" in one_line_error(run("train", other, "--out", good, "--resume", "--steps", 10))
    assert (good / CHECKPOINT_NAME).read_bytes() == data


@pytest.mark.parametrize("drop", ["config", "model", "tokenizer", "optim", "rng", "data"])
def test_checkpoint_without_an_entry_is_one_line(corpus, tmp_path, drop):
    """A checkpoint with a valid checksum but a missing entry: a one-line error, nothing written."""
    out = tmp_path / "r"
    assert run("train", corpus, *TINY_ARGS, "--steps", 5, "--out", out).exit_code == 0
    path = out / CHECKPOINT_NAME
    payload = load_checkpoint(path)
    del payload[drop]
    save_checkpoint(path, payload)
    before = path.read_bytes()
    line = one_line_error(run("train", corpus, "--out", out, "--resume", "--steps", 10))
    assert "lacks the entry" in line and drop in line
    assert path.read_bytes() == before
    if drop in ("config", "model", "tokenizer"):
        assert drop in one_line_error(run("eval", out, corpus))
        assert drop in one_line_error(run("sample", out))
        with pytest.raises(CheckpointError, match="lacks the entry"):
            load_model(out)
    else:  # not needed to use the model
        assert run("eval", out, corpus).exit_code == 0


def test_non_finite_option_values_are_usage_errors(corpus, tmp_path):
    for opt in ("--epochs", "--minutes", "--lr", "--momentum", "--weight-decay", "--clip", "--lr-gamma"):
        for value in ("nan", "inf", "-inf", "1e400"):
            r = run("train", corpus, opt, value, "--out", tmp_path / "x")
            line = one_line_error(r, code=2)
            assert opt in line and "finite" in line, (opt, value, line)
    line = one_line_error(run("sample", tmp_path / "x", "--temperature", "nan"), code=2)
    assert "--temperature" in line
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="epochs must be positive and finite"):
        TrainConfig(epochs=float("inf")).validate()


def test_options_out_of_range_are_usage_errors(corpus, tmp_path):
    for args in (["--hidden", "0"], ["--lr", "-1"], ["--batch-size", "0"], ["--steps", "0"],
                 ["--cell", "transformer"], ["--threads", "0"], ["--momentum", "1.5"]):
        r = run("train", corpus, *args, "--out", tmp_path / "x")
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output


def test_bad_vectors_file(tmp_path):
    bad = tmp_path / "v.jsonl"
    bad.write_text("not json\n")
    assert "vectors file" in one_line_error(run("search", bad, "q"))


def test_ctrl_c_stops_asks_once_then_raises_and_restores_the_handler():
    """What every trainer's run loop runs inside: the first Ctrl-C asks the trainer to stop, a
    second one raises at once, and the previous handler is back afterwards."""
    from bptt.train import ctrl_c_stops

    class Stub:
        _stop = False

        def request_stop(self):
            self._stop = True

    before = signal.getsignal(signal.SIGINT)
    stub = Stub()
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_stops(stub):
            os.kill(os.getpid(), signal.SIGINT)
            assert stub._stop
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("bad, match", [({"cell": "tcn"}, "cell must be one of"),
                                        ({"layers": 0}, "layers must be a positive integer"),
                                        ({"hidden": 2.5}, "hidden must be a positive integer"),
                                        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
                                        ({"dropout": True}, r"dropout must be in \[0, 1\)")])
def test_stack_models_refuse_a_bad_config(bad, match):
    """The language model and the contrastive encoder check their configs the same way."""
    from bptt.contrastive import Encoder, EncoderConfig
    from bptt.model import LanguageModel, LMConfig
    for Model, Config in ((LanguageModel, LMConfig), (Encoder, EncoderConfig)):
        with pytest.raises(ValueError, match=match):
            Model(Config(**{"vocab_size": 5, "hidden": 4, "embed_dim": 3, **bad}))


# -- robustness: what the audit found -----------------------------------------------------------

def test_sample_and_eval_refuse_a_text_classifier_checkpoint(tmp_path):
    """A `bptt fit --text` checkpoint has no next-token head: one line naming what it is."""
    rows = ["text,label"] + [f"{'good fine' if i % 2 else 'bad poor'} the item {i % 3},{'pos' if i % 2 else 'neg'}"
                             for i in range(16)]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "rev"
    r = run("fit", tmp_path / "r.csv", "--text", "text", "--target", "label", "--tokenizer", "word",
            "--epochs", 1, "--hidden", 4, "--rnn-hidden", 4, "--embed-dim", 3, "--out", out)
    assert r.exit_code == 0, r.output
    (tmp_path / "t.txt").write_text("the good item\n")
    for args in (["sample", out], ["eval", out, tmp_path / "t.txt"], ["sample", out / BEST_NAME]):
        one_line_error(run(*args), "text-classifier checkpoint of `bptt fit`", f"`bptt {args[0]}`", "embed")
    assert run("embed", out, tmp_path / "t.txt", "--out", tmp_path / "v.npy").exit_code == 0


def test_plot_a_run_without_val_loss_and_bad_lines(tmp_path):
    """A contrastive run validates with retrieval metrics, not a loss: they are plotted; a line
    that is not a JSON object is a one-line error."""
    pytest.importorskip("matplotlib")
    run_dir = tmp_path / "c"
    run_dir.mkdir()
    recs = [{"step": s, "loss": 1.5 / s, "grad_norm": 1.0} for s in range(1, 7)]
    recs += [{"step": 3, "val_recall@1": 0.1, "val_mrr": 0.2, "val_lexical": "bm25"},
             {"step": 6, "val_recall@1": 0.2, "val_mrr": 0.3, "val_lexical": "bm25"}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    r = run("plot", run_dir, "--out", tmp_path / "c.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c.png").stat().st_size > 1000
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write("[1, 2, 3]\n")
    one_line_error(run("plot", run_dir, "--out", tmp_path / "d.png"), "line 9", "not a metrics record")
    one_line_error(run("plot", run_dir, "--out", tmp_path / "nodir" / "d.png"), "does not exist")


def test_embed_and_search_do_not_centre_a_tiny_collection(trained, tmp_path):
    """One text centred on itself is the zero vector, two become v and -v: too few are left as
    they are, with a note."""
    one = tmp_path / "one.txt"
    one.write_text("the cat sat\n")
    r = run("embed", trained / "run", one, "--out", tmp_path / "one.npy")
    assert r.exit_code == 0, r.output
    assert "not centred" in r.output and "wrote 1 vector of size 16" in r.output
    v = np.load(tmp_path / "one.npy")
    assert abs(np.linalg.norm(v[0]) - 1) < 1e-5
    two = tmp_path / "two.txt"
    two.write_text("the cat sat\nbirds sang in trees\n")
    r = run("embed", trained / "run", two, "--out", tmp_path / "two.npy", "--whiten")
    assert r.exit_code == 0 and "not centred or whitened" in r.output, r.output
    v = np.load(tmp_path / "two.npy")
    assert not np.allclose(v[0], -v[1], atol=1e-4)
    r = run("search", trained / "run", "the cat", "--in", one)
    assert r.exit_code == 0, r.output
    assert float(r.output.splitlines()[-1].split()[1]) > 0.1
    r = run("embed", trained / "run", trained / "tiny.txt", "--out", tmp_path / "all.npy", "--whiten")
    assert r.exit_code == 0 and "note" not in r.output, r.output


def test_eval_scores_every_token_exactly(tmp_path):
    """Whole T-chunks of B streams leave a tail; ``whole`` scores it too: the same as running each
    stream alone, the last one to the end of the text."""
    from bptt.train import evaluate
    m = LanguageModel(LMConfig(vocab_size=7, cell="gru", hidden=5, layers=2, embed_dim=4, dtype="float64", seed=1))
    ids = np.random.default_rng(0).integers(0, 7, 103)
    B, T = 3, 5
    S = (ids.size - 1) // B
    total = 0.0
    for b in range(B):
        end = (b + 1) * S if b < B - 1 else ids.size - 1
        loss, n, _ = m.loss(ids[b * S:end].reshape(1, -1), ids[b * S + 1:end + 1].reshape(1, -1))
        total += loss * n
    assert evaluate(m, ids, batch_size=B, seq_len=T, whole=True) == pytest.approx(total / (ids.size - 1), rel=1e-12)
    assert evaluate(m, ids, batch_size=B, seq_len=T) != pytest.approx(total / (ids.size - 1), rel=1e-12)


def test_eval_reports_scored_and_unseen_tokens(trained, tmp_path):
    t = tmp_path / "t.txt"
    t.write_text("the cat sat on a mat QQQ\n" * 7)        # 175 characters, 21 of them unseen
    r = run("eval", trained / "run", t)
    assert r.exit_code == 0, r.output
    assert "tokens: 175 (174 scored" in r.output
    assert "unseen characters: 21 of 175 (12.00%)" in r.output
    r = run("embed", trained / "run", t, trained / "tiny.txt", "--out", tmp_path / "v.npy")
    assert r.exit_code == 0 and "note" not in r.output, r.output
    (tmp_path / "u.txt").write_text("QQQ\nthe cat\n€€\n")
    r = run("embed", trained / "run", tmp_path / "u.txt", "--out", tmp_path / "v.npy")
    assert r.exit_code == 0 and "2 of 3 texts have no token the model knows" in r.output, r.output


def test_word_sample_puts_a_space_after_the_prime():
    from bptt.data import WordTokenizer
    tok = WordTokenizer.fit("the cat sat on the mat .")
    model = LanguageModel(LMConfig(vocab_size=tok.vocab_size, hidden=4, embed_dim=3))
    model.parameters()["head.bias"][tok.encode("cat")[0]] = 50.0   # "cat" wins every draw
    assert "".join(sample(model, tok, length=2, prime="the")) == " cat cat"
    assert "".join(sample(model, tok, length=2, prime="the ")) == "cat cat"
    assert "".join(sample(model, tok, length=2)) == "cat cat"
    model.parameters()["head.bias"][tok.encode(".")[0]] = 100.0
    assert "".join(sample(model, tok, length=1, prime="the")) == "."


def test_resume_refuses_changed_options_and_a_passed_step(corpus, tmp_path):
    out = tmp_path / "r"
    args = [corpus, *TINY_ARGS, "--steps", 5, "--out", out]
    assert run("train", *args).exit_code == 0
    before = (out / CHECKPOINT_NAME).read_bytes()
    line = one_line_error(run("train", corpus, "--hidden", 32, "--cell", "gru", "--lr", 0.5, "--optimizer",
                              "sgd", "--batch-size", 8, "--steps", 10, "--out", out, "--resume"))
    for opt in ("--hidden 32 (the run's: 16)", "--cell gru", "--lr 0.5", "--optimizer sgd", "--batch-size 8"):
        assert opt in line, line
    assert (out / CHECKPOINT_NAME).read_bytes() == before
    one_line_error(run("train", corpus, "--clip", 0, "--steps", 6, "--out", out, "--resume"), "--clip")
    assert "past --steps 3" in one_line_error(run("train", *args[:-4], "--steps", 3, "--out", out, "--resume"))
    assert (out / CHECKPOINT_NAME).read_bytes() == before
    r = run("train", *args, "--resume")                    # the same command again: nothing to do
    assert r.exit_code == 0 and "resuming" in r.output and "already finished" in r.output, r.output
    assert (out / CHECKPOINT_NAME).read_bytes() == before
    r = run("train", *args[:-4], "--steps", 7, "--out", out, "--resume", "--clip", 1, "--weight-decay", 0)
    assert r.exit_code == 0, r.output
    assert load_checkpoint(out / CHECKPOINT_NAME)["step"] == 7


def test_perplexity_of_a_diverged_model_is_readable(trained, tmp_path):
    payload = load_checkpoint(trained / "run" / CHECKPOINT_NAME)
    payload["model"]["head.weight"] = payload["model"]["head.weight"] * 1e4
    save_checkpoint(tmp_path / "big.bptt", payload)
    r = run("eval", tmp_path / "big.bptt", trained / "tiny.txt")
    assert r.exit_code == 0, r.output
    ppl = r.output.split("perplexity: ")[1].split()[0]
    assert ppl == "inf" or "e+" in ppl, ppl


def test_tiny_temperature_is_greedy(trained):
    r = run("sample", trained / "run", "--length", 30, "--temperature", "1e-310")
    assert r.exit_code == 0 and "Error" not in r.output, r.output
    assert r.output == run("sample", trained / "run", "--length", 30, "--top-k", 1).output
    assert "--top-k 1" in run("sample", "--help").output


def test_messages_name_the_real_problem(corpus, tmp_path, monkeypatch):
    short = tmp_path / "short.txt"
    short.write_text("just a single line of fifty characters, or so....\n")
    line = one_line_error(run("train", short, "--out", tmp_path / "s"))
    assert "--seq-len" in line and "val_fraction" not in line
    f = tmp_path / "afile"
    f.write_text("x")
    r = run("train", corpus, *TINY_ARGS, "--steps", 2, "--out", f / "sub")
    assert "is a file, not a folder" in one_line_error(r) and "training a" not in r.output
    one_line_error(run("embed", tmp_path / "nowhere", corpus, "--out", tmp_path / "nodir" / "v.npy"),
                   "does not exist")
    assert "no such vectors file" in one_line_error(run("search", tmp_path / "none.npy", "x"))
    # a run's text recorded by a relative path, resumed from another folder
    monkeypatch.chdir(corpus.parent)
    assert run("train", corpus.name, *TINY_ARGS, "--steps", 2, "--out", "rel").exit_code == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    one_line_error(run("train", "--steps", 3, "--out", tmp_path / "rel", "--resume"),
                   "the text this run recorded", "pass the text files")


def test_vectors_wider_than_their_metadata_are_one_line(trained, tmp_path):
    v = tmp_path / "v.npy"
    assert run("embed", trained / "run", trained / "tiny.txt", "--out", v).exit_code == 0
    np.save(v, np.ones((len(np.load(v)), 8), np.float32))
    one_line_error(run("search", v, "the cat"), "8 wide", "run `bptt embed` again")


def test_best_is_written_before_the_checkpoint_that_names_it(text, tmp_path, monkeypatch):
    """A kill between the two writes must not leave a checkpoint whose best step has no best.bptt:
    every trainer writes best.bptt first."""
    import bptt.checkpoint as ck
    import bptt.contrastive as con
    import bptt.supervised as sup
    import bptt.train as tr
    order = []
    real = ck.save_checkpoint

    def spy(path, payload):
        order.append(Path(path).name)
        return real(path, payload)

    for mod in (tr, sup, con):
        monkeypatch.setattr(mod, "save_checkpoint", spy)
    t = Trainer.fresh(TrainConfig(steps=2, **{**TINY, "val_every": 1}), tmp_path / "r", text)
    t.run()
    assert order[:2] == [tr.BEST_NAME, CHECKPOINT_NAME], order
