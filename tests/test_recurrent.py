"""RNN, LSTM and GRU layers: finite-difference checks (single, stacked, bidirectional, truncated
BPTT), a naive NumPy reference, determinism across thread counts, workspaces and bad input.

Sizes are tiny on purpose: the point is the math, and CI compiles every kernel cold.
"""
import numpy as np
import pytest

import bptt.layers.recurrent as recurrent_mod
from bptt import GRU, LSTM, RNN, gradcheck, jit

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
B, T, I, H = 2, 3, 3, 4


@pytest.fixture(autouse=True)
def _serial(threads):
    """Finite differences call forward thousands of times on tiny shapes; the serial build does
    that without a parallel launch per call. The parallel build is covered by the bitwise test
    below (and by the torch parity tests), which proves the two builds compute the same bits."""
    threads(1)


def make(cell, layers=1, bidirectional=False, seed=0, **kw):
    return CELLS[cell](I, H, layers, bidirectional, seed=seed, **kw)


def make_inputs(layer, rng, batch=B, steps=T):
    S = (layer.num_layers * layer.num_directions, batch, layer.hidden_size)
    inputs = {"x": rng.standard_normal((batch, steps, layer.input_size)), "h0": rng.standard_normal(S)}
    if isinstance(layer, LSTM):
        inputs["c0"] = rng.standard_normal(S)
    return inputs


def run(layer, inputs, douts):
    """forward + backward; returns every output, input gradient and parameter gradient."""
    layer.zero_grad()
    if isinstance(layer, LSTM):
        out, (h_n, c_n) = layer.forward(inputs["x"], (inputs["h0"], inputs["c0"]))
        dx = layer.backward(*douts)
        res = {"out": out, "h_n": h_n, "c_n": c_n, "dx": dx, "dh0": layer.dh0, "dc0": layer.dc0}
    else:
        out, h_n = layer.forward(inputs["x"], inputs["h0"])
        dx = layer.backward(*douts[:2])
        res = {"out": out, "h_n": h_n, "dx": dx, "dh0": layer.dh0}
    res.update({"grad " + k: g.copy() for k, g in layer.grads.items()})
    return res


def random_douts(layer, inputs, rng):
    Bx, Tx = inputs["x"].shape[:2]
    S = inputs["h0"].shape
    return (rng.standard_normal((Bx, Tx, layer.num_directions * layer.hidden_size)),
            rng.standard_normal(S), rng.standard_normal(S))


# -- finite differences ---------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, False), (1, True), (2, True)])
def test_gradcheck_cells_stacked_bidirectional(cell, layers, bidirectional, rng):
    layer = make(cell, layers, bidirectional, seed=10 + layers + 2 * bidirectional)
    assert all(np.all(p != 0) for p in layer.params.values())  # non-zero biases too
    report = gradcheck(layer, make_inputs(layer, rng))
    assert report.passed, report.table()
    names = {r.name for r in report.rows}
    assert set(layer.params) <= names and {"x", "h0"} <= names
    assert ("c0" in names) == (cell == "lstm")
    assert len(layer.params) == 4 * layers * (2 if bidirectional else 1)


@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
def test_gradcheck_rnn_activations(activation, rng):
    layer = RNN(I, H, 2, True, activation, seed=5)
    report = gradcheck(layer, make_inputs(layer, rng, steps=4))
    assert report.passed, report.table()


@pytest.mark.parametrize("cell", list(CELLS))
def test_gradcheck_with_the_batch_split_in_halves(cell, rng):
    """From SPLIT_B sequences on, the weight gradients are summed per batch half (odd B: unequal
    halves) and added: the same finite-difference check, on a bidirectional stack."""
    from bptt.kernels.rnn import SPLIT_B
    layer = make(cell, 2, True, seed=3)
    report = gradcheck(layer, make_inputs(layer, rng, batch=SPLIT_B + 1, steps=2))
    assert report.passed, report.table()
    assert set(layer.params) <= {r.name for r in report.rows}


@pytest.mark.skipif(jit.max_threads() < 2, reason="needs two threads")
@pytest.mark.parametrize("cell", [LSTM, GRU, RNN], ids=["lstm", "gru", "rnn"])
def test_gradcheck_with_the_sweeps_split_by_units(cell, rng, monkeypatch, threads):
    """A large W_hh (or a small batch with a W_hh past L2) splits the sweeps of the LSTM, the GRU
    and the RNN by hidden units between two threads that meet at every step (kernels.rnn.wide):
    thresholds lowered so that a small bidirectional stack takes that path, on two threads, with
    unequal halves (H = 20: 16 + 4 units)."""
    from bptt.kernels import lstm as lstm_kernels, rnn as rnn_kernels
    monkeypatch.setattr(recurrent_mod, "SERIAL_WORK", 0)   # not small: no pipeline, parallel builds
    monkeypatch.setattr(rnn_kernels, "WIDE_BYTES", 0)
    monkeypatch.setattr(rnn_kernels, "WIDE_ALWAYS", 0)
    monkeypatch.setattr(lstm_kernels, "FUSE_BYTES", -1)   # small weights would take the fused sweeps
    threads(2)
    layer = cell(I, 20, 2, True, seed=4)
    assert rnn_kernels.wide(layer.params["weight_hh_l0"], 3)
    report = gradcheck(layer, make_inputs(layer, rng, batch=3, steps=3))
    assert report.passed, report.table()


@pytest.mark.parametrize("batch", [2, 33])
def test_gradcheck_lstm_with_the_projection_and_dx_in_the_sweeps(rng, monkeypatch, batch):
    """W_ih in half a core's L2: the LSTM's sweeps take the input projection and dx with
    them, step by step (kernels.lstm.fused). Not small (SERIAL_WORK lowered), so no pipeline; a
    bidirectional stack, and a batch from SPLIT_B on (the weight gradients by halves)."""
    monkeypatch.setattr(recurrent_mod, "SERIAL_WORK", 0)
    layer = make("lstm", 2, True, seed=6)
    assert layer._fused(layer.params["weight_ih_l0"], layer.params["weight_hh_l0"])
    report = gradcheck(layer, make_inputs(layer, rng, batch=batch, steps=3))
    assert report.passed, report.table()


def test_gradcheck_without_initial_state_and_single_step(rng):
    # h0 omitted (zeros, not checked); T = 1 and B = 1 edge cases.
    for cell in CELLS:
        layer = make(cell, 2, True, seed=7)
        report = gradcheck(layer, {"x": rng.standard_normal((1, 1, I))})
        assert report.passed, report.table()
        assert {r.name for r in report.rows if r.kind == "input"} == {"x"}


def test_gradcheck_catches_broken_gradients(rng, monkeypatch):
    # the pieces broken below are those of the classic path (sweep, then each pass); the small-batch
    # pipeline computes the same bits (tests/test_kernels_vs_reference.py), and is gradchecked above
    monkeypatch.setattr(LSTM, "_PIPELINED", False)
    monkeypatch.setattr(LSTM, "_fused", lambda self, W_ih, W_hh: False)   # nor the fused sweeps
    layer = make("lstm", 1, True, seed=1)
    inputs = make_inputs(layer, rng)
    assert gradcheck(layer, inputs).passed

    # 1. One gate's pre-activation gradient off by 1%: every tensor downstream of it fails.
    real = recurrent_mod.lstm_backward

    def scaled_forget_gate(da, *args):
        real(da, *args)
        da[:, :, H:2 * H] *= 1.01

    monkeypatch.setattr(recurrent_mod, "lstm_backward", scaled_forget_gate)
    report = gradcheck(layer, inputs)
    assert not report.passed
    failed = {r.name for r in report.failures()}
    assert {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "x"} <= failed
    monkeypatch.undo()
    monkeypatch.setattr(LSTM, "_PIPELINED", False)
    monkeypatch.setattr(LSTM, "_fused", lambda self, W_ih, W_hh: False)   # nor the fused sweeps

    # 2. A dropped bias term: exactly the recurrent biases fail, nothing else.
    real_params = recurrent_mod.weight_grads_shared   # the LSTM's dW_ih and dW_hh in one pass

    def no_bias(dW_ih, db_ih, dW_hh, db_hh, *args):
        real_params(dW_ih, db_ih, dW_hh, np.zeros_like(db_hh), *args)

    monkeypatch.setattr(recurrent_mod, "weight_grads_shared", no_bias)
    report = gradcheck(layer, inputs)
    assert {r.name for r in report.failures()} == {"bias_hh_l0", "bias_hh_l0_reverse"}
    monkeypatch.undo()
    assert gradcheck(layer, inputs).passed


# -- truncated BPTT -------------------------------------------------------------------------------

class TwoChunks:
    """A sequence split in two chunks; chunk 2 starts from chunk 1's final state.

    Objective: L = ⟨out1, g1⟩ + ⟨s1, gs1⟩ + ⟨out2, g2⟩ + ⟨s2, gs2⟩, with s the final state(s).

    ``truncated=True``: the carried state is detached, i.e. a constant of the objective: the value
    chunk 1 produced at the unperturbed weights (held fixed while gradcheck perturbs). Its analytic
    gradient is exactly what a truncated-BPTT loop computes: chunk 2's dh0 is dropped.
    ``truncated=False``: the carry is live, and chunk 2's dh0 (dc0) flows into chunk 1.
    """

    def __init__(self, layer, inputs, truncated):
        self.layer, self.truncated = layer, truncated
        self.lstm = isinstance(layer, LSTM)
        self.carry = self._chunk(inputs["x1"], self._state0(inputs))[1]  # detached: computed once

    def _state0(self, inputs):
        return (inputs["h0"], inputs["c0"]) if self.lstm else (inputs["h0"],)

    def _chunk(self, x, state):
        if self.lstm:
            out, (h, c) = self.layer.forward(x, state)
            return out, (h, c)
        out, h = self.layer.forward(x, state[0])
        return out, (h,)

    def _back(self, dout, dstate):
        dx = self.layer.backward(dout, *dstate)
        return dx, ((self.layer.dh0, self.layer.dc0) if self.lstm else (self.layer.dh0,))

    def parameters(self):
        return self.layer.parameters()

    def gradients(self):
        return self.layer.gradients()

    def zero_grad(self):
        self.layer.zero_grad()

    def check_forward(self, x1, x2, h0, c0=None):
        self.inputs = dict(x1=x1, x2=x2, h0=h0, c0=c0)
        out1, s1 = self._chunk(x1, self._state0(self.inputs))
        out2, s2 = self._chunk(x2, self.carry if self.truncated else s1)
        return (out1, *s1, out2, *s2)

    def check_backward(self, *g):
        k = 2 if self.lstm else 1
        g1, gs1, g2, gs2 = g[0], g[1:1 + k], g[1 + k], g[2 + k:]
        # The layer holds chunk 2's forward: backward it, then redo chunk 1 and backward it.
        dx2, dcarry = self._back(g2, gs2)
        self._chunk(self.inputs["x1"], self._state0(self.inputs))
        ds1 = gs1 if self.truncated else tuple(a + b for a, b in zip(gs1, dcarry))
        dx1, dstate0 = self._back(g1, ds1)
        d = {"x1": dx1, "x2": dx2, "h0": dstate0[0]}
        if self.lstm:
            d["c0"] = dstate0[1]
        return d


def tbptt_inputs(layer, rng):
    base = make_inputs(layer, rng)
    inputs = {"x1": base["x"], "x2": rng.standard_normal(base["x"].shape), "h0": base["h0"]}
    if "c0" in base:
        inputs["c0"] = base["c0"]
    return inputs


@pytest.mark.parametrize("cell,layers", [("rnn", 1), ("lstm", 2), ("gru", 1)])
def test_truncated_bptt_across_two_chunks(cell, layers, rng):
    layer = make(cell, layers, seed=11)
    inputs = tbptt_inputs(layer, rng)

    # The analytic gradient equals the finite difference of the *truncated* objective ...
    trunc = TwoChunks(layer, inputs, truncated=True)
    report = gradcheck(trunc, inputs, seed=3)
    assert report.passed, report.table()
    g_trunc = {k: v.copy() for k, v in layer.grads.items()}

    # ... and full BPTT over the same two chunks is checked the same way ...
    full = TwoChunks(layer, inputs, truncated=False)
    report = gradcheck(full, inputs, seed=3)
    assert report.passed, report.table()
    g_full = {k: v.copy() for k, v in layer.grads.items()}

    # ... and the two differ: chunk 2's loss does not reach chunk 1 when truncated.
    diff = max(np.abs(g_trunc[k] - g_full[k]).max() / np.abs(g_full[k]).max() for k in g_full)
    assert diff > 1e-2

    # Full BPTT over two chunks is BPTT over the concatenated sequence (with no upstream gradient
    # on chunk 1's final state, which a single pass does not expose for lower layers or c).
    rng2 = np.random.default_rng(0)
    g = [rng2.standard_normal(o.shape) for o in full.check_forward(**inputs)]
    k = 2 if full.lstm else 1
    for a in g[1:1 + k]:
        a.fill(0)
    full.zero_grad()
    full.check_forward(**inputs)
    d_two = full.check_backward(*g)
    g_two = {n: v.copy() for n, v in layer.grads.items()}
    x = np.concatenate([inputs["x1"], inputs["x2"]], axis=1)
    layer.zero_grad()
    layer.forward(x, (inputs["h0"], inputs["c0"]) if full.lstm else inputs["h0"])
    dx = layer.backward(np.concatenate([g[0], g[1 + k]], axis=1), *g[2 + k:])
    np.testing.assert_allclose(dx, np.concatenate([d_two["x1"], d_two["x2"]], axis=1), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(layer.dh0, d_two["h0"], rtol=1e-10, atol=1e-13)
    for n in layer.grads:
        np.testing.assert_allclose(layer.grads[n], g_two[n], rtol=1e-10, atol=1e-13)


def test_truncated_bptt_loop_matches_the_checked_gradient(rng):
    """A real TBPTT loop (forward, backward, carry h_n) gives the gradient verified above."""
    layer = make("gru", 2, seed=4)
    inputs = tbptt_inputs(layer, rng)
    trunc = TwoChunks(layer, inputs, truncated=True)
    outs = trunc.check_forward(**inputs)
    g = [rng.standard_normal(o.shape) for o in outs]
    trunc.zero_grad()
    trunc.check_forward(**inputs)
    trunc.check_backward(*g)
    expected = {k: v.copy() for k, v in layer.grads.items()}

    layer.zero_grad()
    h = inputs["h0"]
    for x, (dout, dh_n) in zip((inputs["x1"], inputs["x2"]), ((g[0], g[1]), (g[2], g[3]))):
        out, h = layer.forward(x, h)     # carried forward ...
        layer.backward(dout, dh_n)       # ... but layer.dh0 is dropped at the boundary
    for k in expected:  # equal up to the order the two chunks were added in
        np.testing.assert_allclose(layer.grads[k], expected[k], rtol=1e-12, atol=1e-15)


# -- a naive NumPy reference, independent of the kernels --------------------------------------------

def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def reference_forward(layer, x, h0, c0=None):
    """Stacked, bidirectional forward written with NumPy matrix products, one step at a time."""
    L, D, Hh = layer.num_layers, layer.num_directions, layer.hidden_size
    f = {"tanh": np.tanh, "relu": lambda q: np.maximum(q, 0), "identity": lambda q: q}
    inp = x
    h_n, c_n = [], []
    for l in range(L):
        outs = []
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            W_ih, W_hh = layer.params["weight_ih" + sfx], layer.params["weight_hh" + sfx]
            b_ih, b_hh = layer.params["bias_ih" + sfx], layer.params["bias_hh" + sfx]
            h = h0[l * D + d]
            c = c0[l * D + d] if c0 is not None else None
            ys = np.zeros(x.shape[:2] + (Hh,))
            for t in (range(x.shape[1]) if d == 0 else reversed(range(x.shape[1]))):
                a, m = inp[:, t] @ W_ih.T + b_ih, h @ W_hh.T + b_hh
                if isinstance(layer, RNN):
                    h = f[layer.activation](a + m)
                elif isinstance(layer, LSTM):
                    i, fg, g, o = np.split(a + m, 4, axis=1)
                    c = _sig(fg) * c + _sig(i) * np.tanh(g)
                    h = _sig(o) * np.tanh(c)
                else:
                    ar, az, an = np.split(a, 3, axis=1)
                    mr, mz, mn = np.split(m, 3, axis=1)
                    r, z = _sig(ar + mr), _sig(az + mz)
                    n = np.tanh(an + r * mn)
                    h = (1 - z) * n + z * h
                ys[:, t] = h
            outs.append(ys)
            h_n.append(h)
            c_n.append(c)
        inp = np.concatenate(outs, axis=2)
    return inp, np.stack(h_n), (np.stack(c_n) if c0 is not None else None)


@pytest.mark.parametrize("cell,kw", [("rnn", {"activation": "tanh"}), ("rnn", {"activation": "relu"}),
                                     ("rnn", {"activation": "identity"}), ("lstm", {}), ("gru", {})])
def test_forward_matches_numpy_reference(cell, kw, rng):
    layer = make(cell, 2, True, seed=2, **kw)
    inputs = make_inputs(layer, rng, batch=3, steps=5)
    ref_out, ref_h, ref_c = reference_forward(layer, inputs["x"], inputs["h0"], inputs.get("c0"))
    if cell == "lstm":
        out, (h_n, c_n) = layer(inputs["x"], (inputs["h0"], inputs["c0"]))
        np.testing.assert_allclose(c_n, ref_c, rtol=1e-12, atol=1e-14)
    else:
        out, h_n = layer(inputs["x"], inputs["h0"])
    assert out.shape == (3, 5, 2 * H) and h_n.shape == (4, 3, H)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_n, ref_h, rtol=1e-12, atol=1e-14)


def test_parameters_match_torch_names_order_and_init():
    layer = LSTM(3, 5, 2, True, seed=0)
    expected = []
    for l, F in ((0, 3), (1, 10)):
        for sfx in ("", "_reverse"):
            expected += [(f"weight_ih_l{l}{sfx}", (20, F)), (f"weight_hh_l{l}{sfx}", (20, 5)),
                         (f"bias_ih_l{l}{sfx}", (20,)), (f"bias_hh_l{l}{sfx}", (20,))]
    assert [(k, v.shape) for k, v in layer.params.items()] == expected
    allp = np.concatenate([p.ravel() for p in layer.params.values()])
    assert np.abs(allp).max() <= 1 / np.sqrt(5) and np.abs(allp).max() > 0.9 / np.sqrt(5)
    np.testing.assert_array_equal(LSTM(3, 5, 2, True, seed=0).weight_hh_l1, layer.weight_hh_l1)
    assert not np.array_equal(LSTM(3, 5, 2, True, seed=1).weight_hh_l1, layer.weight_hh_l1)
    assert layer.weight_ih_l0 is layer.params["weight_ih_l0"]


# -- determinism, workspaces, dtypes ----------------------------------------------------------------

@pytest.mark.skipif(jit.max_threads() < 2, reason="needs two threads")
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_serial_and_parallel_builds_are_bitwise_equal(cell, threads):
    rng = np.random.default_rng(0)
    layer = CELLS[cell](3, 6, 2, True, seed=0)
    inputs = make_inputs(layer, rng, batch=5, steps=4)
    douts = random_douts(layer, inputs, rng)
    threads(1)
    serial = run(layer, inputs, douts)
    threads(2)
    parallel = run(layer, inputs, douts)
    assert serial.keys() == parallel.keys()
    for k in serial:
        assert np.array_equal(serial[k], parallel[k]), k


@pytest.mark.skipif(jit.max_threads() < 2, reason="needs two threads")
def test_lstm_batch_halves_laid_apart_give_the_bits_of_one_thread(monkeypatch, threads):
    """On two threads the fused LSTM sweeps lay gates, c and tanh c out with rows between the
    two halves of the batch (kernels.lstm.gap_rows, gap_segment), which each thread writes: the
    results are the bits of one thread (no gap), c_n comes out without the gap rows, and a
    backward on one thread after a forward on two (one chunk over both halves: two segments)
    gives the same bits too. A gradient check runs on the gapped layout as well."""
    monkeypatch.setattr(recurrent_mod, "SERIAL_WORK", 0)
    rng = np.random.default_rng(5)
    layer = LSTM(7, 12, 2, True, seed=2)
    inputs = make_inputs(layer, rng, batch=9, steps=4)
    douts = random_douts(layer, inputs, rng)
    threads(1)
    one = run(layer, inputs, douts)
    assert layer._ws.gap == 0
    threads(2)
    two = run(layer, inputs, douts)
    assert layer._ws.gap > 0 and layer._ws.c[0].shape[1] == 9 + layer._ws.gap
    layer.zero_grad()
    out, (h_n, c_n) = layer.forward(inputs["x"], (inputs["h0"], inputs["c0"]))
    threads(1)
    dx = layer.backward(*douts)
    mixed = {"out": out, "h_n": h_n, "c_n": c_n, "dx": dx, "dh0": layer.dh0, "dc0": layer.dc0}
    mixed.update({"grad " + k: g.copy() for k, g in layer.grads.items()})
    for k in one:
        assert np.array_equal(one[k], two[k]), k
        assert np.array_equal(one[k], mixed[k]), k
    threads(2)
    report = gradcheck(layer, make_inputs(layer, rng, batch=9, steps=3))
    assert report.passed and layer._ws.gap > 0, report.table()


def test_workspaces_reused_for_same_shape_and_results_independent_of_history(rng):
    layer = make("lstm", 2, True, seed=3)
    a = make_inputs(layer, rng, batch=2, steps=3)
    b = make_inputs(layer, rng, batch=4, steps=5)
    douts_a = random_douts(layer, a, rng)
    first = run(layer, a, douts_a)
    ws = layer._ws
    run(layer, a, douts_a)
    assert layer._ws is ws                      # same (B, T): no reallocation
    run(layer, b, random_douts(layer, b, rng))
    assert layer._ws is not ws                  # new (B, T): new workspaces
    again = run(layer, a, douts_a)
    for k in first:                             # ... and nothing leaks from one shape to another
        np.testing.assert_array_equal(first[k], again[k])
    # Returned arrays belong to the caller: a later call does not overwrite them.
    out1, (h1, _) = layer.forward(a["x"], (a["h0"], a["c0"]))
    keep = out1.copy(), h1.copy()
    layer.forward(a["x"] * 2, (h1, a["c0"]))    # h_n fed back as h0 (truncated BPTT)
    np.testing.assert_array_equal(out1, keep[0])
    np.testing.assert_array_equal(h1, keep[1])


def test_accumulates_and_dout_none_means_zeros(rng):
    layer = make("gru", 1, True, seed=1)
    inp = make_inputs(layer, rng)
    out, h_n = layer.forward(inp["x"], inp["h0"])
    dh_n = rng.standard_normal(h_n.shape)
    dx1 = layer.backward(None, dh_n)
    g1 = {k: v.copy() for k, v in layer.grads.items()}
    dx2 = layer.backward(np.zeros_like(out), dh_n)
    np.testing.assert_array_equal(dx1, dx2)
    for k, v in layer.grads.items():          # backward adds: twice the same gradient
        np.testing.assert_allclose(v, 2 * g1[k], rtol=1e-12, atol=1e-15)
    layer.zero_grad()
    assert all(not v.any() for v in layer.grads.values())


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dims", [(1, 5, 3, 4, 2, True), (40, 20, 8, 40, 1, False), (40, 2, 8, 40, 2, True),
                                  (20, 30, 8, 40, 1, False)],
                         ids=["pipeline", "passes", "passes-by-rows", "passes-below-split"])
def test_backward_that_sets_the_gradients_gives_the_bits_of_zero_grad_first(cell, dims, rng, threads):
    """``backward(..., accumulate=False)`` after anything in the gradients (NaN here) gives the
    bits of zero_grad() then backward: for one sequence (the LSTM's pipeline clears them in its
    own jobs) and for batches, whose weight-gradient passes set them (sums from 0: the split
    passes transposed and by rows of dW, a bidirectional stack, and below ``SPLIT_B`` the dense
    kernel's), at one thread and two; a second call with the default then adds to them."""
    Bx, Tx, Ix, Hx, layers, bidir = dims
    a = CELLS[cell](Ix, Hx, layers, bidir, seed=0)
    b = CELLS[cell](Ix, Hx, layers, bidir, seed=0)
    inp = make_inputs(a, rng, Bx, Tx)
    douts = random_douts(a, inp, rng)
    lstm = cell == "lstm"
    state = (inp["h0"], inp["c0"]) if lstm else inp["h0"]
    dstate = (douts[1], douts[2]) if lstm else douts[1]
    for n in ((1, 2) if jit.max_threads() > 1 else (1,)):
        threads(n)
        for g in b.grads.values():
            g.fill(np.nan)
        a.zero_grad()
        a.forward(inp["x"], state)
        dx_a = a.backward(douts[0], dstate)
        b.forward(inp["x"], state)
        dx_b = b.backward(douts[0], dstate, accumulate=False)
        np.testing.assert_array_equal(dx_a, dx_b)
        for k in a.grads:
            np.testing.assert_array_equal(a.grads[k], b.grads[k], err_msg=f"{k} at {n} thread(s)")
        for m in (a, b):
            m.forward(inp["x"], state)
            m.backward(douts[0], dstate)
        for k in a.grads:
            np.testing.assert_array_equal(a.grads[k], b.grads[k], err_msg=f"{k}, added to")


def test_float32_layers_run_in_float32(rng, threads):
    threads(jit.max_threads())
    layer = LSTM(3, 4, 1, True, dtype=np.float32, seed=0)
    x = rng.standard_normal((2, 3, 3)).astype(np.float32)
    out, (h, c) = layer(x)
    dx = layer.backward(np.ones_like(out))
    assert out.dtype == h.dtype == c.dtype == dx.dtype == layer.dh0.dtype == np.float32
    assert all(g.dtype == np.float32 and g.any() for g in layer.grads.values())


# -- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_bad_input_raises_value_error_with_expected_shape(cell):
    layer = make(cell, 2, True)
    x = np.zeros((2, 3, I))
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 3\).*got \(2, 3\)"):
        layer.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 3\).*got \(2, 3, 5\)"):
        layer.forward(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r"x must have dtype float64.*got float32"):
        layer.forward(x.astype(np.float32))
    with pytest.raises(ValueError, match="at least one"):
        layer.forward(np.zeros((2, 0, I)))
    with pytest.raises(ValueError, match="must be a numpy array"):
        layer.forward([[[0.0] * I]])
    bad_h0 = np.zeros((2, 2, H))              # needs (L·D, B, H) = (4, 2, 4)
    with pytest.raises(ValueError, match=r"h0 must have shape \(4, 2, 4\).*got \(2, 2, 4\)"):
        layer.forward(x, (bad_h0, None) if cell == "lstm" else bad_h0)
    if cell == "lstm":
        with pytest.raises(ValueError, match=r"c0 must have shape \(4, 2, 4\)"):
            layer.forward(x, (None, np.zeros((4, 3, H))))
        with pytest.raises(ValueError, match=r"state must be None or a pair"):
            layer.forward(x, np.zeros((4, 2, H)))
    with pytest.raises(RuntimeError, match="before forward"):
        make(cell).backward(np.zeros((2, 3, H)))
    layer.forward(x)
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 3, 8\)"):
        layer.backward(np.zeros((2, 3, H)))
    with pytest.raises(ValueError, match=r"dh_n must have shape \(4, 2, 4\)"):
        layer.backward(None, np.zeros((4, 1, H)))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        RNN(3, 0)
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        GRU(3, 4, num_layers=1.5)
    with pytest.raises(ValueError, match="activation must be one of tanh, relu, identity"):
        RNN(3, 4, activation="sigmoid")
    with pytest.raises(ValueError, match="bidirectional must be True or False"):
        LSTM(3, 4, 1, "yes")
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        LSTM(3, 4, dtype=np.int32)


# -- the CLI ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--model", "lstm", "--layers", "2", "--bidirectional"],
    ["--model", "rnn", "--activation", "relu", "--seq-len", "3", "--hidden", "5", "--batch", "2"],
    ["--model", "gru", "--bidirectional", "--layers", "1"],
])
def test_cli_gradcheck_recurrent_every_row_passes(args):
    from click.testing import CliRunner
    from cli import main
    before = jit.get_threads()
    try:
        r = CliRunner().invoke(main, ["gradcheck", *args])
    finally:
        jit.set_threads(before)
    assert r.exit_code == 0, r.output
    assert "FAIL" not in r.output and "tensors pass" in r.output
    assert "weight_hh_l0" in r.output and "h0" in r.output
    if "lstm" in args:
        assert "weight_ih_l1_reverse" in r.output and "c0" in r.output and "19/19 tensors pass" in r.output


def test_cli_gradcheck_help_and_bad_recurrent_options():
    from click.testing import CliRunner
    from cli import main
    r = CliRunner().invoke(main, ["gradcheck", "--help"])
    assert r.exit_code == 0
    for opt in ("--layers", "--bidirectional", "--seq-len", "rnn", "lstm", "gru"):
        assert opt in r.output
    r = CliRunner().invoke(main, ["gradcheck", "--model", "rnn", "--activation", "sigmoid"])
    assert r.exit_code == 2 and "activation must be one of tanh, relu, identity" in r.output
    r = CliRunner().invoke(main, ["gradcheck", "--model", "gru", "--seq-len", "0"])
    assert r.exit_code == 2


def test_failed_forward_leaves_no_stale_state_for_backward():
    layer = make("lstm")
    x = np.zeros((2, 3, I))
    layer.forward(x)
    with pytest.raises(ValueError, match="c0 must have shape"):
        layer.forward(x, (np.ones((1, 2, H)), np.ones((1, 5, H))))
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((2, 3, H)))


def test_lstm_takes_its_state_as_h0_too(rng):
    """forward(x, h0=...) as for the RNN and GRU; for the LSTM the state is the pair (h0, c0)."""
    lstm = LSTM(3, 4, seed=0)
    x = rng.standard_normal((2, 5, 3))
    h0, c0 = rng.standard_normal((1, 2, 4)), rng.standard_normal((1, 2, 4))
    out_a, (h_a, c_a) = lstm.forward(x, (h0, c0))
    out_b, (h_b, c_b) = lstm.forward(x, h0=(h0, c0))
    assert np.array_equal(out_a, out_b) and np.array_equal(h_a, h_b) and np.array_equal(c_a, c_b)
    with pytest.raises(ValueError, match="once"):
        lstm.forward(x, (h0, c0), h0=(h0, c0))



def test_lstm_backward_takes_the_state_gradient_as_a_pair(rng):
    """backward(dout, (dh_n, dc_n)), the shape forward returns its state in, gives the same bits
    as the separate arguments; so do dstate= and dh_n=(dh_n, dc_n) (as forward's h0=(h0, c0))."""
    layer = make("lstm", 2, True, seed=3)
    assert all(b.any() for n, b in layer.params.items() if n.startswith("bias"))
    inp = make_inputs(layer, rng)
    out, (h_n, c_n) = layer.forward(inp["x"], (inp["h0"], inp["c0"]))
    dout, dh_n, dc_n = random_douts(layer, inp, rng)

    def grads(*args, **kw):
        layer.zero_grad()
        dx = layer.backward(*args, **kw)
        return [dx, layer.dh0, layer.dc0] + [g.copy() for g in layer.grads.values()]

    def same(a, b):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)

    ref = grads(dout, dh_n, dc_n)
    assert all(a.any() for a in ref)
    for args, kw in [((dout, (dh_n, dc_n)), {}), ((dout, [dh_n, dc_n]), {}),
                     ((dout,), {"dstate": (dh_n, dc_n)}), ((dout,), {"dh_n": (dh_n, dc_n)}),
                     ((dout,), {"dh_n": dh_n, "dc_n": dc_n}), ((), {"dout": dout, "dh_n": dh_n, "dc_n": dc_n})]:
        same(grads(*args, **kw), ref)
    # either half of the pair may be None (zeros), as in the separate form
    same(grads(dout, (dh_n, None)), grads(dout, dh_n))
    same(grads(dout, (None, dc_n)), grads(dout, dc_n=dc_n))
    same(grads(None, (None, None)), grads(None))
    assert not np.array_equal(grads(dout, (dh_n, None))[0], ref[0])   # dc_n was not dropped above


def test_lstm_backward_state_gradient_misuse_raises_value_error(rng):
    layer = make("lstm", 2, True)
    inp = make_inputs(layer, rng)
    out, (h_n, c_n) = layer.forward(inp["x"])
    d = np.ones_like(h_n)
    with pytest.raises(ValueError, match=r"give dh_n once: as dstate or as dh_n"):
        layer.backward(None, (d, d), dh_n=d)
    with pytest.raises(ValueError, match=r"give dh_n once"):
        layer.backward(None, d, dh_n=d)
    with pytest.raises(ValueError, match=r"give dc_n once: in the pair \(dh_n, dc_n\) or as dc_n"):
        layer.backward(None, (d, d), d)
    with pytest.raises(ValueError, match=r"give dc_n once"):
        layer.backward(None, dh_n=(d, d), dc_n=d)
    with pytest.raises(ValueError, match=r"dstate must be a pair \(dh_n, dc_n\), got a tuple of length 1"):
        layer.backward(None, (d,))
    with pytest.raises(ValueError, match=r"dstate must be a pair \(dh_n, dc_n\), got a list of length 3"):
        layer.backward(None, [d, d, d])
    with pytest.raises(ValueError, match=r"dc_n must have shape \(4, 2, 4\).*got \(4, 1, 4\)"):
        layer.backward(None, (d, np.zeros((4, 1, H))))
    with pytest.raises(ValueError, match=r"dh_n must have shape \(4, 2, 4\).*got \(2, 4, 2, 4\)"):
        layer.backward(None, np.stack([d, d]))       # a stacked array is not the pair
    with pytest.raises(ValueError, match=r"dh_n must have dtype float64"):
        layer.backward(None, (d.astype(np.float32), d))


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("batch", [1, 2])
def test_returned_arrays_are_fresh_even_for_one_sequence(cell, batch):
    """out, h_n and dx do not share memory with the workspaces, so a later call cannot change
    them (with B = 1 the time-major workspace viewed batch-first is already contiguous)."""
    layer = make(cell)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, T, I))
    out, state = layer.forward(x)
    dx = layer.backward(rng.standard_normal(out.shape))
    kept = [a.copy() for a in (out, dx)]
    out2, _ = layer.forward(2 * x)
    layer.backward(rng.standard_normal(out.shape))
    assert np.array_equal(out, kept[0]) and np.array_equal(dx, kept[1])
    assert not np.array_equal(out, out2)


def test_rnn_kernels_take_only_the_state_activations():
    """The RNN's sweeps compile only identity, ReLU and tanh (STATE_CODES); another code is a
    one-line ValueError before any job runs, not a silent identity."""
    from bptt.kernels import rnn as K
    from bptt.kernels.activations import ACTIVATIONS, STATE_CODES
    assert sorted(STATE_CODES) == sorted(ACTIVATIONS[a] for a in recurrent_mod.RNN_ACTIVATIONS)
    T, B, H = 2, 1, 3
    f = np.float64
    y, q, h0 = np.zeros((T, B, H), f), np.zeros((T, B, H), f), np.zeros((B, H), f)
    W, b = np.zeros((H, H), f), np.zeros(H, f)
    with pytest.raises(ValueError, match="activation code"):
        K.rnn_forward(y, q, h0, W, b, 0, False, ACTIVATIONS["sigmoid"])
    with pytest.raises(ValueError, match="activation code"):
        K.rnn_backward(q.copy(), h0.copy(), h0.copy(), y, h0, q, y, W, 0, False, ACTIVATIONS["gelu"])
