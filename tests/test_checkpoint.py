"""Checkpoint files (bptt.checkpoint): round trip, atomic writes, and every way a file can be bad."""
import io
import json
import os
import zipfile

import numpy as np
import pytest

import bptt.checkpoint as ckpt
from bptt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bptt.optim import make_optimizer


def payload(seed=0):
    rng = np.random.default_rng(seed)
    nan_bits = np.array([0x7FF8000000000001, 0xFFF0000000000000, 0x8000000000000000], np.uint64)
    return {
        "config": {"hidden": 32, "cell": "lstm", "lr": 0.002, "layers": [1, 2], "none": None,
                   "flag": True, "name": "ünïcode ✓", "tiny": 5e-324, "huge": 2 ** 100},
        "tokenizer": {"kind": "char", "chars": "\n abc"},
        "step": 1234,
        "metadata": {"losses": [2.5, float("inf"), float("nan")], "pair": (1, "a")},
        "model": {"embedding.weight": rng.standard_normal((5, 4)).astype(np.float32),
                  "rnn.weight_ih_l0": rng.standard_normal((8, 4)),
                  "fortran": np.asfortranarray(rng.standard_normal((3, 2))),
                  "strided": rng.standard_normal((6, 6))[::2, 1::3]},
        "extras": [np.arange(5, dtype=np.int64), np.zeros((0, 3), np.float32), np.array(7.5),
                   np.array([True, False]), np.float32(0.1), np.int64(-3),
                   nan_bits.view(np.float64), np.array([1, 2], dtype=">i4")],
    }


def assert_same(a, b, where="payload"):
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), where   # bit for bit
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, where


def test_round_trip_is_exact(tmp_path):
    p = tmp_path / "run.ckpt"
    src = payload()
    save_checkpoint(p, src)
    back = load_checkpoint(p)
    assert_same(src, back)
    assert back["model"]["fortran"].flags.f_contiguous
    assert back["model"]["embedding.weight"].flags.writeable


def test_same_payload_gives_same_bytes(tmp_path):
    save_checkpoint(tmp_path / "a", payload(3))
    save_checkpoint(tmp_path / "b", payload(3))
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    save_checkpoint(tmp_path / "c", payload(4))
    assert (tmp_path / "a").read_bytes() != (tmp_path / "c").read_bytes()


@pytest.mark.parametrize("bitgen", ["PCG64", "MT19937", "Philox", "SFC64"])
def test_rng_state_round_trip(tmp_path, bitgen):
    gen = np.random.Generator(getattr(np.random, bitgen)(1234))
    gen.standard_normal(7)
    gen.integers(0, 10, size=3)   # leaves a buffered uint32 in some generators
    save_checkpoint(tmp_path / "r", {"rng": gen.bit_generator.state})
    expect = gen.standard_normal(20)
    other = np.random.Generator(getattr(np.random, bitgen)(0))
    other.bit_generator.state = load_checkpoint(tmp_path / "r")["rng"]
    assert np.array_equal(other.standard_normal(20), expect)


def test_optimizer_resume_through_a_file_is_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    grads = [{"w": rng.standard_normal((4, 3)).astype(np.float32)} for _ in range(6)]
    w0 = rng.standard_normal((4, 3)).astype(np.float32)
    full = {"w": w0.copy()}
    opt = make_optimizer("adam", full, 0.01)
    for g in grads:
        opt.step(g)
    part = {"w": w0.copy()}
    opt = make_optimizer("adam", part, 0.01)
    for g in grads[:3]:
        opt.step(g)
    save_checkpoint(tmp_path / "o", {"model": part, "optim": opt.state_dict()})
    state = load_checkpoint(tmp_path / "o")
    resumed = {"w": state["model"]["w"].copy()}
    opt = make_optimizer("adam", resumed, 1.0)
    opt.load_state_dict(state["optim"])
    for g in grads[3:]:
        opt.step(g)
    assert np.array_equal(resumed["w"], full["w"])


def test_bad_payloads_are_refused_before_writing(tmp_path):
    p = tmp_path / "x"
    for bad, msg in [({1: 2}, r"payload has the key 1; checkpoint dict keys must be strings"),
                     ({"a": {"b": np.array([object()])}}, r"payload\['a'\]\['b'\] is an array of Python objects"),
                     ({"a": {1, 2}}, r"payload\['a'\] is a set"),
                     ({"__bptt_array__": "x"}, "reserved"),
                     ([1], "payload must be a dict")]:
        with pytest.raises(ValueError, match=msg):
            save_checkpoint(p, bad)
    assert os.listdir(tmp_path) == []


# -- atomicity ----------------------------------------------------------------------------------

def fail_on_call(n, exc):
    calls = {"n": 0}
    real = zipfile.ZipFile.writestr

    def writestr(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(self, *args, **kw)
    return writestr


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch, exc):
    p = tmp_path / "model.ckpt"
    save_checkpoint(p, payload(0))
    good = p.read_bytes()
    monkeypatch.setattr(zipfile.ZipFile, "writestr", fail_on_call(3, exc))   # after the header and an array
    with pytest.raises(CheckpointError if isinstance(exc, OSError) else KeyboardInterrupt):
        save_checkpoint(p, payload(1))
    assert p.read_bytes() == good
    assert os.listdir(tmp_path) == ["model.ckpt"]
    monkeypatch.undo()
    assert_same(load_checkpoint(p), payload(0))


def test_failed_fsync_or_replace_leaves_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "model.ckpt"

    def boom(*a):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(CheckpointError, match=r"model.ckpt: cannot write checkpoint \(Input/output error\)"):
        save_checkpoint(p, payload(0))
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(CheckpointError):
        save_checkpoint(p, payload(0))
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_and_keeps_mode(tmp_path):
    p = tmp_path / "m"
    save_checkpoint(p, {"step": 1})
    os.chmod(p, 0o640)
    save_checkpoint(p, {"step": 2})
    assert load_checkpoint(p)["step"] == 2
    assert os.stat(p).st_mode & 0o777 == 0o640
    with pytest.raises(CheckpointError, match="does not exist"):
        save_checkpoint(tmp_path / "no" / "dir" / "m", {"step": 1})


# -- bad files ----------------------------------------------------------------------------------

def load_error(path) -> str:
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert isinstance(e.value, ValueError)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


def test_missing_empty_directory_and_garbage(tmp_path):
    assert "no such checkpoint file" in load_error(tmp_path / "nope")
    assert "is a directory" in load_error(tmp_path)
    (tmp_path / "empty").write_bytes(b"")
    assert "file is empty" in load_error(tmp_path / "empty")
    (tmp_path / "garbage").write_bytes(np.random.default_rng(0).bytes(3000))
    assert "not a bptt checkpoint (unrecognised file format)" in load_error(tmp_path / "garbage")
    (tmp_path / "text").write_text("hidden: 32\n")
    assert "not a bptt checkpoint" in load_error(tmp_path / "text")


def test_plain_npz_is_not_a_checkpoint(tmp_path):
    np.savez(tmp_path / "w.npz", a=np.arange(3))
    assert "not a bptt checkpoint (no bptt.json header" in load_error(tmp_path / "w.npz")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99, -1, 10])
def test_truncated_file(tmp_path, keep):
    p = tmp_path / "t.ckpt"
    save_checkpoint(p, payload())
    data = p.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    p.write_bytes(data[:n])
    assert "checkpoint is truncated or corrupt" in load_error(p)


def test_flipped_byte_in_array_data_is_detected(tmp_path):
    p = tmp_path / "c.ckpt"
    src = payload()
    save_checkpoint(p, src)
    data = bytearray(p.read_bytes())
    needle = src["model"]["rnn.weight_ih_l0"].tobytes()[:16]
    at = bytes(data).index(needle)
    data[at + 3] ^= 0x01
    p.write_bytes(bytes(data))
    assert "truncated or corrupt" in load_error(p)


def rewrite(path, edit, fix_checksum=True):
    """Rewrite a checkpoint's entries through ``edit(name, data) -> data`` (valid zip CRCs)."""
    with zipfile.ZipFile(path) as zf:
        entries = [(n, zf.read(n)) for n in zf.namelist()]
    entries = [(n, edit(n, d)) for n, d in entries]
    if fix_checksum:
        body = [(n, d) for n, d in entries if n != ckpt.CHECKSUM]
        entries = body + [(ckpt.CHECKSUM, (ckpt._digest(body) + "\n").encode())]
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in entries:
            zf.writestr(n, d)


def test_checksum_catches_consistent_zip_with_changed_content(tmp_path):
    p = tmp_path / "s.ckpt"
    save_checkpoint(p, payload())

    def tweak(name, data):
        if name == "arrays/1.npy":
            data = data[:-8] + np.float64(1.0).tobytes()
        return data
    rewrite(p, tweak, fix_checksum=False)   # the zip is valid, its CRCs match; only SHA-256 can tell
    assert "SHA-256 checksum mismatch" in load_error(p)
    rewrite(p, lambda n, d: d)               # a matching checksum makes it loadable again
    assert load_checkpoint(p)["model"]["rnn.weight_ih_l0"][-1, -1] == 1.0


def test_other_format_version(tmp_path):
    p = tmp_path / "v.ckpt"
    save_checkpoint(p, payload())

    def bump(name, data):
        if name == ckpt.HEADER:
            h = json.loads(data)
            h["format_version"] = 2
            data = json.dumps(h).encode()
        return data
    rewrite(p, bump)
    msg = load_error(p)
    assert "checkpoint format version 2 is not supported; this bptt reads format version 1" in msg


def test_other_format_name(tmp_path):
    p = tmp_path / "f.ckpt"
    save_checkpoint(p, {"step": 1})
    rewrite(p, lambda n, d: d.replace(b"bptt-checkpoint", b"other-thing") if n == ckpt.HEADER else d)
    assert "not a bptt checkpoint (format is not 'bptt-checkpoint')" in load_error(p)


def test_pickled_array_is_never_loaded(tmp_path):
    p = tmp_path / "p.ckpt"
    save_checkpoint(p, {"a": np.arange(3)})

    def pickled(name, data):
        if name == "arrays/0.npy":
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
            data = buf.getvalue()
        return data
    rewrite(p, pickled)
    assert "bad array arrays/0.npy" in load_error(p)


def test_required_entries(tmp_path):
    path = tmp_path / "c.bptt"
    save_checkpoint(path, payload())
    assert load_checkpoint(path, required=("config.hidden", "model", "step"))["step"] == 1234
    with pytest.raises(CheckpointError, match=r"c\.bptt: checkpoint lacks the entry 'optim'"):
        load_checkpoint(path, required=("model", "optim"))
    with pytest.raises(CheckpointError, match="lacks the entry 'config.seq_len'"):
        load_checkpoint(path, required=("config.seq_len",))
    with pytest.raises(CheckpointError, match="entry 'step' should be a dict, not int"):
        load_checkpoint(path, required=("step.count",))


def test_load_params_checks_every_name_before_copying():
    """Every model's load_state: a wrong shape or a missing name copies nothing; partial skips."""
    from bptt.layers.base import copy_params, load_params
    params = {"a": np.zeros(2), "b": np.zeros((2, 2))}
    with pytest.raises(ValueError, match=r"parameter 'b' must have shape \(2, 2\), got \(3,\)"):
        load_params(params, {"a": np.ones(2), "b": np.ones(3)})
    assert not params["a"].any()
    with pytest.raises(ValueError, match="missing parameter 'b'"):
        load_params(params, {"a": np.ones(2)})
    assert load_params(params, {"a": np.ones(2)}, partial=True) == ["a"]
    assert params["a"].all() and not params["b"].any()
    copy = copy_params(params)
    copy["a"][0] = 5.0
    assert params["a"][0] == 1.0


def test_flipped_byte_in_the_zip_directory_is_corrupt(tmp_path):
    """A bit flip in the end-of-archive record (the offset of the zip directory, b[-5]) sends the
    reader to a bad offset: a corrupt file, not an I/O error. Flips the reader ignores (entry
    counts, the comment length) still load the exact payload, which the checksum vouches for."""
    p, q = tmp_path / "c.ckpt", tmp_path / "flipped.ckpt"
    save_checkpoint(p, payload())
    data = p.read_bytes()
    for back in range(1, 23):
        flipped = bytearray(data)
        flipped[-back] ^= 1
        q.write_bytes(bytes(flipped))
        try:
            assert_same(load_checkpoint(q), payload())
        except CheckpointError:
            msg = load_error(q)
            assert "truncated or corrupt" in msg or "not a bptt checkpoint" in msg, (back, msg)
    flipped = bytearray(data)
    flipped[-5] ^= 1
    q.write_bytes(bytes(flipped))
    assert "truncated or corrupt" in load_error(q)


def test_output_locations_are_checked_before_the_work(tmp_path):
    from bptt.checkpoint import check_output_file, check_output_folder
    f = tmp_path / "afile"
    f.write_text("x")
    check_output_folder(tmp_path / "new" / "deeper")          # can be made: fine
    check_output_file(tmp_path / "v.npy")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_output_folder(f / "sub")
    with pytest.raises(ValueError, match="does not exist"):
        check_output_file(tmp_path / "nodir" / "v.npy")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_output_file(f / "v.npy")
    with pytest.raises(ValueError, match="is a folder"):
        check_output_file(tmp_path)
