"""Embedding: lookup, scatter-add gradient (repeated ids), gradcheck, determinism, bad ids."""
import numpy as np
import pytest

from bptt import Embedding, gradcheck, jit


def test_forward_is_a_lookup_and_backward_a_scatter_add(rng):
    emb = Embedding(6, 3, seed=0)
    ids = np.array([[0, 5, 5, 2], [5, 1, 0, 0]])
    out = emb.forward(ids)
    assert out.shape == (2, 4, 3)
    np.testing.assert_array_equal(out, emb.weight[ids])
    dout = rng.standard_normal(out.shape)
    assert emb.backward(dout) is None
    expected = np.zeros_like(emb.weight)
    np.add.at(expected, ids.reshape(-1), dout.reshape(-1, 3))
    np.testing.assert_allclose(emb.grads["weight"], expected, rtol=1e-15)
    assert not emb.grads["weight"][[3, 4]].any()       # ids never looked up get nothing
    emb.backward(dout)                                   # accumulates
    np.testing.assert_allclose(emb.grads["weight"], 2 * expected, rtol=1e-15)


def test_flat_ids_and_init(rng):
    emb = Embedding(50, 40, seed=1)
    assert emb.forward(np.array([3, 3, 49], dtype=np.int32)).shape == (3, 40)
    w = emb.weight
    assert abs(w.mean()) < 0.05 and abs(w.std() - 1) < 0.05   # N(0, 1), as torch
    np.testing.assert_array_equal(Embedding(50, 40, seed=1).weight, w)


def test_gradcheck_weight_with_repeated_ids(rng):
    emb = Embedding(5, 3, seed=2)
    report = gradcheck(emb, {"ids": np.array([[1, 1, 4], [0, 1, 4]])})
    assert report.passed, report.table()
    assert [r.name for r in report.rows] == ["weight"]


@pytest.mark.skipif(jit.max_threads() < 2, reason="needs two threads")
def test_serial_and_parallel_bitwise_equal(threads, rng):
    ids = rng.integers(0, 7, size=(9, 13))
    dout = rng.standard_normal((9, 13, 5)).astype(np.float32)
    res = []
    for n in (1, 2):
        threads(n)
        emb = Embedding(7, 5, dtype=np.float32, seed=3)
        out = emb.forward(ids)
        emb.backward(dout)
        res.append((out, emb.grads["weight"].copy()))
    assert all(np.array_equal(a, b) for a, b in zip(*res))


def test_bad_ids_raise_value_error_with_range():
    emb = Embedding(5, 2)
    with pytest.raises(ValueError, match=r"ids must be in the range \[0, 5\), found 5"):
        emb.forward(np.array([[0, 5]]))
    with pytest.raises(ValueError, match=r"range \[0, 5\), found -1"):
        emb.forward(np.array([-1, 2]))
    with pytest.raises(ValueError, match="integer token ids"):
        emb.forward(np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"ids must have shape \(B, T\) or \(N,\)"):
        emb.forward(np.zeros((2, 2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="numpy integer array"):
        emb.forward([[0, 1]])
    with pytest.raises(RuntimeError, match="before forward"):
        Embedding(5, 2).backward(np.zeros((1, 2)))
    emb.forward(np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match=r"dout must have shape \(1, 3, 2\)"):
        emb.backward(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="num_embeddings must be a positive integer"):
        Embedding(0, 2)


def test_parity_with_torch_embedding(rng):
    torch = pytest.importorskip("torch")
    from bptt.interop import to_torch
    for dtype, tol in ((np.float64, 1e-15), (np.float32, 1e-6)):
        emb = Embedding(8, 4, dtype=dtype, seed=4)
        m = to_torch(emb)
        ids = rng.integers(0, 8, size=(3, 6))
        dout = rng.standard_normal((3, 6, 4)).astype(dtype)
        out_t = m(torch.tensor(ids))
        out_t.backward(torch.tensor(dout))
        out = emb.forward(ids)
        emb.backward(dout)
        np.testing.assert_array_equal(out, out_t.detach().numpy())
        np.testing.assert_allclose(emb.grads["weight"], m.weight.grad.numpy(), rtol=tol, atol=tol)


def test_ids_changed_after_forward_do_not_move_the_gradient():
    e = Embedding(6, 2, seed=0)
    ids = np.array([[0, 1, 2]])
    e.forward(ids)
    ids[0, 0] = 5
    e.backward(np.ones((1, 3, 2)))
    assert np.array_equal(e.grads["weight"][0], [1.0, 1.0]) and not e.grads["weight"][5].any()
