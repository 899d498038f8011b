"""The blocked kernels in bptt.kernels against their readable twins in bptt.reference.

Shapes are odd on purpose: B and N around ROWS, H and I around COLS, so that every tile and row
chunk remainder runs. Both directions (``reverse``) and a non-zero column offset are covered.
"""
import numpy as np
import pytest

from bptt import jit
from bptt.kernels import dense, gru, lstm, rnn
from bptt.kernels.activations import ACTIVATIONS, TANH
from bptt.kernels.engine import CHUNK_C_BYTES, COLS, ROWS, new_panels
from bptt.reference import dense as ref_dense, gru as ref_gru, lstm as ref_lstm, rnn as ref_rnn

pytestmark = pytest.mark.jit   # the tilings and builds of the compiled kernels

TOL = {np.float64: 1e-12, np.float32: 2e-5}
# (B, T, I, H): one tiny, one with B > ROWS and G·H > COLS, neither a multiple of the block
SHAPES = [(1, 3, 5, 7), (ROWS + 3, 4, COLS + 5, COLS // 4 + 3)]


def close(a, b, dtype, what):
    scale = max(np.abs(b).max(), 1e-30)
    err = np.abs(a.astype(np.float64) - b).max() / scale
    assert err <= TOL[dtype], f"{what}: relative error {err:.2e}"


@pytest.fixture(params=[1, 2], ids=["serial", "parallel"])
def nthreads(request):
    old = jit.get_threads()
    jit.set_threads(min(request.param, jit.max_threads()))
    yield
    jit.set_threads(old)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("N,I,O", [(1, 1, 1), (ROWS + 1, COLS + 3, 7), (5, 9, COLS + 2)])
def test_dense_kernels(N, I, O, dtype, nthreads):
    rng = np.random.default_rng(N + I + O)
    x, W, b, dy = (rng.standard_normal(s).astype(dtype) for s in [(N, I), (O, I), (O,), (N, O)])
    y, y0 = np.empty((N, O), dtype), np.empty((N, O), dtype)
    dense.dense_forward(y, x, W, b)
    ref_dense.dense_forward(y0, x, W, b)
    close(y, y0, dtype, "y")
    dx, dx0 = (np.full((N, I), 0.5, dtype) for _ in range(2))
    dense.dense_backward_input(dx, dy, W)
    ref_dense.dense_backward_input(dx0, dy, W)
    close(dx, dx0, dtype, "dx")
    dW, dW0 = (np.full((O, I), 0.5, dtype) for _ in range(2))
    db, db0 = (np.full(O, 0.5, dtype) for _ in range(2))
    dense.dense_backward_params(dW, db, dy, x)
    ref_dense.dense_backward_params(dW0, db0, dy, x)
    close(dW, dW0, dtype, "dW")
    close(db, db0, dtype, "db")


def _common(rng, B, T, I, H, G, dtype):
    D = 2
    r = lambda *s: (rng.standard_normal(s) * 0.5).astype(dtype)
    return dict(y=r(T, B, D * H), g=r(T, B, G * H), h0=r(B, H), c0=r(B, H), W_hh=r(G * H, H),
                b_hh=r(G * H), dy=r(T, B, D * H), dh_n=r(B, H), dc_n=r(B, H), x=r(T * B, I),
                W_ih=r(G * H, I))


def _shared_backward(a, dg, dgh, y, d, H, dtype):
    """dW_ih, db_ih, dW_hh, db_hh, dx from both implementations."""
    T, B, GH = dg.shape
    I = a["x"].shape[1]
    outs = []
    x3 = a["x"].reshape(T, B, I)
    for mod in (rnn, ref_rnn):   # the same signatures
        dW_ih, dW_hh = np.full((GH, I), 0.25, dtype), np.full((GH, H), 0.25, dtype)
        db_ih, db_hh = np.full(GH, 0.25, dtype), np.full(GH, 0.25, dtype)
        dx = np.full((T, B, I), 0.25, dtype)
        g = np.empty((T, B, GH), dtype)
        mod.input_backward_params(dW_ih, db_ih, dg, x3)
        mod.input_backward(dx, dg, a["W_ih"])
        mod.input_forward(g, x3, a["W_ih"], a["b_hh"])
        mod.recurrent_backward_params(dW_hh, db_hh, dgh, y, a["h0"], d * H, d == 1)
        outs.append((dW_ih, db_ih, dW_hh, db_hh, dx, g))
    for name, u, v in zip(("dW_ih", "db_ih", "dW_hh", "db_hh", "dx", "input projection"), *outs):
        close(u, v, dtype, name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("d", [0, 1], ids=["forward", "reverse"])
def test_rnn_kernels(shape, d, dtype, nthreads):
    B, T, I, H = shape
    rng = np.random.default_rng(B * T + d)
    a = _common(rng, B, T, I, H, 1, dtype)
    code = ACTIVATIONS["tanh"]
    res = []
    for mod in (rnn, ref_rnn):
        y, q = a["y"].copy(), a["g"].copy()
        mod.rnn_forward(y, q, a["h0"], a["W_hh"], a["b_hh"], d * H, d == 1, code)
        dq, dh0, dh = np.empty_like(q), np.full((B, H), 0.5, dtype), np.empty((B, H), dtype)
        mod.rnn_backward(dq, dh0, dh, a["dy"], a["dh_n"], q, y, a["W_hh"], d * H, d == 1, code)
        res.append((y, q, dq, dh0))
    for name, u, v in zip(("y", "q", "dq", "dh0"), *res):
        close(u, v, dtype, name)
    _shared_backward(a, res[1][2], res[1][2], res[1][0], d, H, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("d", [0, 1], ids=["forward", "reverse"])
def test_lstm_kernels(shape, d, dtype, nthreads):
    B, T, I, H = shape
    rng = np.random.default_rng(B * T + d + 1)
    a = _common(rng, B, T, I, H, 4, dtype)
    res = []
    for mod in (lstm, ref_lstm):
        y, g = a["y"].copy(), a["g"].copy()
        c, tc = np.empty((T, B, H), dtype), np.empty((T, B, H), dtype)
        mod.lstm_forward(y, g, c, tc, a["h0"], a["c0"], a["W_hh"], a["b_hh"], d * H, d == 1)
        da = np.empty_like(g)
        dh0, dc0 = np.full((B, H), 0.5, dtype), np.full((B, H), 0.5, dtype)
        dh, dc = np.empty((B, H), dtype), np.empty((B, H), dtype)
        mod.lstm_backward(da, dh0, dc0, dh, dc, a["dy"], a["dh_n"], a["dc_n"], g, c, tc, a["c0"],
                          a["W_hh"], d * H, d == 1)
        res.append((y, g, c, tc, da, dh0, dc0))
    for name, u, v in zip(("y", "gates", "c", "tc", "da", "dh0", "dc0"), *res):
        close(u, v, dtype, name)
    _shared_backward(a, res[1][4], res[1][4], res[1][0], d, H, dtype)


def _lstm_pipeline_run(pipelined, a, x, W_ih, b_ih, B, T, I, H, d, dtype, build=None, prepacked=True):
    """Forward and backward of one LSTM direction, by the small-batch pipeline or by the classic
    kernels (the projection, the sweep, then each pass); every output and accumulated gradient."""
    y, g = a["y"].copy(), np.empty((T, B, 4 * H), dtype)
    c, tc = np.empty((T, B, H), dtype), np.empty((T, B, H), dtype)
    da = np.empty_like(g)
    dh0, dc0 = np.full((B, H), 0.5, dtype), np.full((B, H), 0.5, dtype)
    dh, dc = np.empty((B, H), dtype), np.empty((B, H), dtype)
    dW_ih, db_ih = np.full((4 * H, I), 0.25, dtype), np.full(4 * H, 0.25, dtype)
    dW_hh, db_hh = np.full((4 * H, H), 0.25, dtype), np.full(4 * H, 0.25, dtype)
    dx = np.full((T, B, I), 0.5, dtype)
    fwd = (y, g, c, tc, a["h0"], a["c0"], a["W_hh"], a["b_hh"], d * H, d == 1)
    bwd = (da, dh0, dc0, dh, dc, a["dy"], a["dh_n"], a["dc_n"], g, c, tc, a["c0"], a["W_hh"], d * H, d == 1)
    if pipelined:
        mod = ref_lstm if pipelined == "reference" else lstm
        f, b = mod.lstm_forward_pipelined, mod.lstm_backward_pipelined
        if build:
            f, b = getattr(f, build), getattr(b, build)
        P_hh = new_panels(H, 4 * H, dtype)   # the forward packs W_hh into it for the backward
        f(*fwd, x, W_ih, b_ih, P_hh)
        if not prepacked:
            P_hh.fill(np.nan)                 # the backward must pack it itself
        b(*bwd, x, y, a["h0"], W_ih, dW_ih, db_ih, dW_hh, db_hh, dx, P_hh, prepacked)
    else:   # the classic kernels, the weight gradients summed part by part as the pipeline does
        rnn.input_forward(g, x, W_ih, b_ih)
        lstm.lstm_forward(*fwd)
        lstm.lstm_backward(*bwd)
        rnn.input_backward_params(np.zeros_like(dW_ih), db_ih, da, x)   # the biases as always
        rnn.recurrent_backward_params(np.zeros_like(dW_hh), db_hh, da, y, a["h0"], d * H, d == 1)
        rnn.input_backward(dx, da, W_ih)
        X = np.empty((T * B, H), dtype)
        rnn.previous_states(X, y, a["h0"], d * H, d == 1)
        da2, x2, unused = da.reshape(T * B, -1), x.reshape(T * B, -1), np.zeros(4 * H, dtype)
        for p in range(rnn.PIPE_PARTS):
            k0, k1 = rnn.pipe_part_rows(T, B, p, d == 1)
            if k1 > k0:
                dense.dense_backward_params(dW_ih, unused, da2[k0:k1], x2[k0:k1])
                dense.dense_backward_params(dW_hh, unused, da2[k0:k1], X[k0:k1])
    return dict(y=y, gates=g, c=c, tc=tc, da=da, dh0=dh0, dc0=dc0, dW_ih=dW_ih, db_ih=db_ih, dW_hh=dW_hh,
                db_hh=db_hh, dx=dx)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (rnn.SPLIT_B - 1, 3, 17, 9), (rnn.SPLIT_B + 3, 2, 5, COLS // 4 + 3)])
@pytest.mark.parametrize("d", [0, 1], ids=["forward", "reverse"])
def test_lstm_sweeps_with_the_projection_and_dx_same_bits(shape, d, dtype, nthreads):
    """The fused sweeps (the input projection before each step's product, dx after the backward
    step's) give the bits of input_forward + lstm_forward and lstm_backward + input_backward, below
    SPLIT_B and from it on, and agree with the reference twins."""
    B, T, I, H = shape
    rng = np.random.default_rng(B * T + H + d)
    r = lambda *s: (rng.standard_normal(s) * 0.5).astype(dtype)  # noqa: E731
    x, W_ih, b_ih, h0, c0, W, b = r(T, B, I), r(4 * H, I), r(4 * H), r(B, H), r(B, H), r(4 * H, H), r(4 * H)
    y0, dy, dh_n, dc_n, dx0 = r(T, B, 2 * H), r(T, B, 2 * H), r(B, H), r(B, H), r(T, B, I)
    outs = []
    for how in ("passes", "fused", "reference"):
        y, g = y0.copy(), np.full((T, B, 4 * H), np.nan, dtype)
        c, tc = np.zeros((T, B, H), dtype), np.zeros((T, B, H), dtype)
        da, dx = np.empty_like(g), dx0.copy()
        dh0, dc0 = np.full((B, H), 0.5, dtype), np.full((B, H), 0.5, dtype)
        dh, dc = np.empty((B, H), dtype), np.empty((B, H), dtype)
        fwd = (d * H, d == 1)
        if how == "passes":
            rnn.input_forward(g, x, W_ih, b_ih)
            lstm.lstm_forward(y, g, c, tc, h0, c0, W, b, *fwd)
            lstm.lstm_backward(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, g, c, tc, c0, W, *fwd)
            rnn.input_backward(dx, da, W_ih)
        else:
            mod = lstm if how == "fused" else ref_lstm
            mod.lstm_forward_fused(y, g, c, tc, h0, c0, W, b, *fwd, x, W_ih, b_ih)
            mod.lstm_backward_fused(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, g, c, tc, c0, W, *fwd, dx, W_ih)
        outs.append((y, g, c, tc, da, dh0, dc0, dx))
    for name, passes, fused, ref in zip(("y", "gates", "c", "tanh c", "da", "dh0", "dc0", "dx"), *outs):
        assert np.array_equal(passes, fused), name
        close(fused, ref, dtype, name)


def _sweeps(cell, shape, d, dtype, how):
    """A forward and a backward sweep of ``cell`` (its kernels module's) on random arrays, run
    ``how``: "rows" (split by sequences, the serial build), "side_by_side" (the composites, which
    must take the split by units), "in_order" or "three_parts" (the split by units on one thread,
    two or three parts). Returns the outputs by name."""
    B, T, H = shape
    G = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    mod = {"rnn": rnn, "gru": gru, "lstm": lstm}[cell]
    rng = np.random.default_rng(B * T + H + d + G)
    r = lambda *s: (rng.standard_normal(s) * 0.5).astype(dtype)  # noqa: E731
    y, g, h0, c0, W, b = r(T, B, 2 * H), r(T, B, G * H), r(B, H), r(B, H), r(G * H, H), r(G * H)
    dy, dh_n, dc_n = r(T, B, 2 * H), r(B, H), r(B, H)
    dh0, dc0 = np.full((B, H), 0.5, dtype), np.full((B, H), 0.5, dtype)
    dh, dc, da, dgh = np.empty((B, H), dtype), np.empty((B, H), dtype), np.empty_like(g), np.empty_like(g)
    mn, c, tc = np.zeros((T, B, H), dtype), np.zeros((T, B, H), dtype), np.zeros((T, B, H), dtype)
    off, rev = d * H, d == 1
    fwd, bwd, extra = getattr(mod, f"{cell}_forward"), getattr(mod, f"{cell}_backward"), ()
    old = jit.get_threads()   # side by side needs two threads, also under BPTT_THREADS=1
    jit.set_threads(1 if how in ("in_order", "three_parts") else max(old, 2) if how == "side_by_side" else old)
    try:
        if how == "rows":
            fwd, bwd = fwd.serial, bwd.serial
        elif how == "side_by_side":
            assert rnn.wide(W, B)
        else:
            fwd, bwd = getattr(mod, f"{cell}_forward_wide"), getattr(mod, f"{cell}_backward_wide")
            extra = (3 if how == "three_parts" else 2,)
        if cell == "rnn":
            fwd(y, g, h0, W, b, off, rev, TANH, *extra)
            bwd(da, dh0, dh, dy, dh_n, g, y, W, off, rev, TANH, *extra)
            return {"y": y, "q": g, "dq": da, "dh0": dh0}
        if cell == "gru":
            fwd(y, g, mn, np.empty((B, 3 * H), dtype), h0, W, b, off, rev, *extra)
            bwd(da, dgh, dh0, dh, dy, dh_n, g, mn, y, h0, W, off, rev, *extra)
            return {"y": y, "gates": g, "m_n": mn, "dgx": da, "dgh": dgh, "dh0": dh0}
        fwd(y, g, c, tc, h0, c0, W, b, off, rev, *extra)
        bwd(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, g, c, tc, c0, W, off, rev, *extra)
        return {"y": y, "gates": g, "c": c, "tanh c": tc, "da": da, "dh0": dh0, "dc0": dc0}
    finally:
        jit.set_threads(old)


# the GRU and the RNN in float64 only, the dtype test_recurrent's gradcheck through the split
# compiles too: each (cell, dtype) compiles about 13 s of kernels, and CI has 10 minutes
SPLIT_CASES = [("lstm", (1, 3, 37), np.float64), ("lstm", (9, 4, 20), np.float64),
               ("lstm", (3, 2, COLS // 2 + 17), np.float64), ("lstm", (1, 3, 37), np.float32),
               ("lstm", (9, 4, 20), np.float32), ("lstm", (3, 2, COLS // 2 + 17), np.float32),
               ("gru", (1, 3, 37), np.float64), ("gru", (9, 4, 20), np.float64),
               ("rnn", (1, 3, 37), np.float64), ("rnn", (9, 4, 20), np.float64),
               # rows of y (2H) and of the gate gradients 4096 bytes apart: copied apart first
               # (engine.aliased), once for a step's several products (engine.apart)
               ("lstm", (5, 2, 256), np.float64), ("gru", (5, 2, 256), np.float64),
               ("rnn", (5, 2, 256), np.float64)]


@pytest.mark.skipif(jit.max_threads() < 2, reason="needs two threads")
@pytest.mark.parametrize("cell,shape,dtype", SPLIT_CASES)
@pytest.mark.parametrize("d", [0, 1], ids=["forward", "reverse"])
@pytest.mark.parametrize("how", ["side_by_side", "in_order", "three_parts"])
def test_sweeps_split_by_units_same_bits(cell, shape, d, dtype, how, monkeypatch):
    """The sweeps split by hidden units (large W_hh: rnn.wide; the LSTM's, the GRU's and the
    RNN's) give the bits of the split by sequences (the serial build): on two threads side by side
    (a part each), and run in order on one thread, where job 0 takes every piece of the other parts
    (the claims' fallback), with two parts and with three (a machine with three threads).
    Thresholds lowered so that small shapes take the split; H = 20 and 37 give unequal parts
    (16 + 4, 32 + 5; 16 + 16 + 5)."""
    monkeypatch.setattr(rnn, "WIDE_BYTES", 0)
    monkeypatch.setattr(rnn, "WIDE_ALWAYS", 0)
    want = _sweeps(cell, shape, d, dtype, "rows")
    got = _sweeps(cell, shape, d, dtype, how)
    for name in want:
        assert np.array_equal(want[name], got[name]), name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(1, 1, 2, 3), (1, 3, 5, 7), (3, 9, 6, 5), (1, 13, 17, COLS // 4 + 3)])
@pytest.mark.parametrize("d", [0, 1], ids=["forward", "reverse"])
def test_lstm_pipeline_same_bits(shape, d, dtype):
    """The small-batch pipeline (the projection ahead of the forward sweep, the passes beside the
    backward one, on two threads) against the classic kernels run one after another, the weight
    gradients summed part by part in the order the pipeline documents: the same bits in every
    output, by its serial and its parallel build (T = 1, and T past a multiple of the chunk)."""
    B, T, I, H = shape
    rng = np.random.default_rng(B * T + d + 3)
    a = _common(rng, B, T, I, H, 4, dtype)
    x = (rng.standard_normal((T, B, I)) * 0.5).astype(dtype)
    W_ih = (rng.standard_normal((4 * H, I)) * 0.5).astype(dtype)
    b_ih = (rng.standard_normal(4 * H) * 0.5).astype(dtype)
    args = (a, x, W_ih, b_ih, B, T, I, H, d, dtype)
    old = jit.get_threads()
    jit.set_threads(min(2, jit.max_threads()))
    try:
        want = _lstm_pipeline_run(False, *args)
        for build in ("serial", "parallel", None):
            for prepacked in (True, False, True):   # the hand-offs fall differently from run to run
                got = _lstm_pipeline_run(True, *args, build=build, prepacked=prepacked)
                for name in want:
                    assert np.array_equal(got[name], want[name]), f"{name} ({build}, prepacked {prepacked})"
    finally:
        jit.set_threads(old)
    ref = _lstm_pipeline_run("reference", *args)   # the twins BPTT_KERNELS=reference runs
    for name in want:
        close(want[name], ref[name], dtype, f"{name} (reference twin)")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("d", [0, 1], ids=["forward", "reverse"])
def test_gru_kernels(shape, d, dtype, nthreads):
    B, T, I, H = shape
    rng = np.random.default_rng(B * T + d + 2)
    a = _common(rng, B, T, I, H, 3, dtype)
    res = []
    for mod in (gru, ref_gru):
        y, g, mn = a["y"].copy(), a["g"].copy(), np.empty((T, B, H), dtype)
        mod.gru_forward(y, g, mn, np.empty((B, 3 * H), dtype), a["h0"], a["W_hh"], a["b_hh"],
                        d * H, d == 1)
        dgx, dgh = np.empty_like(g), np.empty_like(g)
        dh0, dh = np.full((B, H), 0.5, dtype), np.empty((B, H), dtype)
        mod.gru_backward(dgx, dgh, dh0, dh, a["dy"], a["dh_n"], g, mn, y, a["h0"], a["W_hh"],
                         d * H, d == 1)
        res.append((y, g, mn, dgx, dgh, dh0))
    for name, u, v in zip(("y", "gates", "mn", "dgx", "dgh", "dh0"), *res):
        close(u, v, dtype, name)
    _shared_backward(a, res[1][3], res[1][4], res[1][0], d, H, dtype)


@pytest.mark.skipif(jit.max_threads() < 2, reason="needs two threads")
@pytest.mark.parametrize("B", [rnn.SPLIT_B - 1, rnn.SPLIT_B + 3])
def test_passes_around_the_sweep_are_bitwise_equal_serial_and_parallel(B):
    """Below SPLIT_B one pass over all rows, from it on two batch halves whose weight-gradient
    sums are added at the end: either way the split is fixed by B, so the serial build and the
    parallel one (on two threads) give the same bits, and the split sums agree with the reference."""
    T, I, H, GH = 5, COLS + 5, 19, 4 * 19
    rng = np.random.default_rng(B)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x, dg, W_ih, b, y, h0 = r(T, B, I), r(T, B, GH), r(GH, I), r(GH), r(T, B, 2 * H), r(B, H)
    res = []
    old = jit.get_threads()
    for n in (1, 2):
        jit.set_threads(n)
        try:
            dW_ih, dW_hh = np.full((GH, I), 0.25, np.float32), np.full((GH, H), 0.25, np.float32)
            db_ih, db_hh = np.full(GH, 0.25, np.float32), np.full(GH, 0.25, np.float32)
            dx, g = np.full((T, B, I), 0.25, np.float32), np.empty((T, B, GH), np.float32)
            rnn.input_forward(g, x, W_ih, b)
            rnn.input_backward_params(dW_ih, db_ih, dg, x)
            rnn.recurrent_backward_params(dW_hh, db_hh, dg, y, h0, H, True)
            rnn.input_backward(dx, dg, W_ih)
        finally:
            jit.set_threads(old)
        res.append((g, dW_ih, db_ih, dW_hh, db_hh, dx))
    for name, u, v in zip(("g", "dW_ih", "db_ih", "dW_hh", "db_hh", "dx"), *res):
        assert np.array_equal(u, v), name
    dW0, db0 = np.full((GH, I), 0.25, np.float32), np.full(GH, 0.25, np.float32)
    ref_rnn.input_backward_params(dW0, db0, dg, x)
    close(res[0][1], dW0, np.float32, "dW_ih")
    close(res[0][2], db0, np.float32, "db_ih")


def test_step_products_in_chunks_of_rows_are_the_dense_sums(nthreads):
    """From SPLIT_B sequences on, the input projection and dx run as rnn.step_products: the T·B
    rows in two parts, each in chunks of rows (engine.CHUNK_C_BYTES of C per chunk; T here makes
    several chunks and a partial last one), over two k-blocks for dx: bitwise the dense kernels'
    sums over all T·B rows."""
    from bptt.kernels.engine import COLS as C_COLS, KC
    B, I, GH = rnn.SPLIT_B + 3, C_COLS + 5, KC + 9
    T = 2 * rnn.ROW_PARTS * CHUNK_C_BYTES // (C_COLS * 4 * B) + 3
    rng = np.random.default_rng(T)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x, W, b, dg = r(T, B, I), r(GH, I), r(GH), r(T, B, GH)
    g, g0 = np.empty((T, B, GH), np.float32), np.empty((T * B, GH), np.float32)
    rnn.input_forward(g, x, W, b)
    dense.dense_forward(g0, x.reshape(T * B, I), W, b)
    assert np.array_equal(g.reshape(T * B, GH), g0)
    dx, dx0 = np.full((T, B, I), 0.25, np.float32), np.full((T * B, I), 0.25, np.float32)
    rnn.input_backward(dx, dg, W)
    dense.dense_backward_input(dx0, dg.reshape(T * B, GH), W)
    assert np.array_equal(dx.reshape(T * B, I), dx0)


@pytest.mark.parametrize("B", [rnn.SPLIT_B - 1, rnn.SPLIT_B + 3])
def test_input_backward_with_clear_sets_dx_with_the_bits_of_zeros_then_the_sum(nthreads, B):
    """input_backward(clear=True), as the layers call it for a layer's first direction instead of
    filling dx with zeros first, never reads dx (NaN there stays out) and gives the bits of zeros
    then the accumulating call, below SPLIT_B (the dense kernel) and from it on (step_products,
    over several chunks of rows and two k-blocks)."""
    from bptt.kernels.engine import COLS as C_COLS, KC
    I, GH = C_COLS + 5, KC + 9   # two k-blocks, a partial panel
    T = 2 * rnn.ROW_PARTS * CHUNK_C_BYTES // (C_COLS * 4 * B) + 3 if B >= rnn.SPLIT_B else 7
    rng = np.random.default_rng(B)
    W, dg = rng.standard_normal((GH, I)).astype(np.float32), rng.standard_normal((T, B, GH)).astype(np.float32)
    set_, zeros = np.full((T, B, I), np.nan, np.float32), np.zeros((T, B, I), np.float32)
    rnn.input_backward(set_, dg, W, True)
    rnn.input_backward(zeros, dg, W)
    assert np.array_equal(set_, zeros)
    ref = np.zeros_like(zeros)
    ref_rnn.input_backward(ref, dg, W)
    close(ref, zeros, np.float32, "dx")
    again = np.full((T, B, I), np.nan, np.float32)
    ref_rnn.input_backward(again, dg, W, True)
    close(again, zeros, np.float32, "dx (reference, clear)")


@pytest.mark.parametrize("N,M,even", [(800, 4096, True), (800, 1024, True), (800, 3072, True), (128, 512, True),
                                      (6400, 2048, True), (800, 1500, True), (300, 1000, True), (37, 333, False),
                                      (5, 24, False), (1, 1, False), (65, 256, True), (80, 200, False)])
def test_product_jobs_cover_the_output_once_and_share_it_evenly(N, M, even):
    """The jobs of an (N, M) product (engine.block_origin) cover every output exactly once; for
    the larger shapes their number is a multiple of the cores (engine.CHUNKS) and each core's
    equal range of jobs, as a parallel loop deals them, holds the same work to within 2 %, or,
    where the cores share out column blocks (M > N, engine.block_index), to within one panel of
    columns (a block is whole panels: 1000 columns are 31¼ panels, 512 + 488). In whole 32-row
    tiles and 240-column blocks, 800 rows on two cores were 384 against 416, and 4096 columns
    left a block of 16: shares 5.5 % apart."""
    from bptt.kernels import engine
    ng, ncb = engine.n_blocks(N, M)
    nj = ng * ncb
    cover = np.zeros((N, M), np.int64)
    work = []
    for j in range(nj):
        n0, n1, c0, c1 = engine.block_origin(j, N, M)
        assert c0 % engine.PANEL == 0 and c1 - c0 <= COLS
        cover[n0:n1, c0:c1] += 1
        work.append((n1 - n0) * (c1 - c0))
    assert (cover == 1).all()
    if even:
        T = engine.CHUNKS
        assert nj % T == 0
        shares = np.add.reduceat(np.array(work), np.arange(0, nj, nj // T))
        if M > N:
            assert shares.max() - shares.min() <= N * engine.PANEL, shares
        else:
            assert shares.max() <= 1.02 * shares.mean(), shares


def test_a_weight_gradient_of_one_job_a_core_splits_the_wider_operand_by_columns():
    """A weight gradient with as many jobs as cores by rows (ncb 1), where Bm (the layer's input)
    is the wider operand (M > N), takes column blocks instead, so that each core packs only its
    share of Bm: on two cores, each core's jobs read half of Bm's columns (whole panels), for
    the char-LM head's (65 rows of dW, 256 columns: already two column blocks where a family's
    tile is 240 wide) and for 65 or 80 rows of 200 (one column block in every family). Other
    products, and a taller one (M ≤ N), keep their rows apart: each core reads every column."""
    from bptt.kernels import engine
    if engine.CHUNKS != 2:
        pytest.skip("the split is for two cores here")

    def per_core(N, M, by_columns):   # each core's share of the columns, and every output once
        ng, ncb = engine.n_blocks(N, M, by_columns)
        nj = ng * ncb
        assert nj % 2 == 0
        cover = np.zeros((N, M), np.int64)
        cols, work = [], []
        for half in range(2):
            c = np.zeros(M, bool)
            w = 0
            for j in range(half * nj // 2, (half + 1) * nj // 2):
                n0, n1, c0, c1 = engine.block_origin(j, N, M, by_columns)
                assert c0 % engine.PANEL == 0
                cover[n0:n1, c0:c1] += 1
                c[c0:c1] = True
                w += (n1 - n0) * (c1 - c0)
            cols.append(c)
            work.append(w)
        assert (cover == 1).all()
        if by_columns:   # by rows, 80 rows are 48 and 32 (whole blocks of the family's rows)
            assert abs(work[0] - work[1]) <= N * engine.PANEL
        return cols

    for N, M in ((65, 256), (65, 200), (80, 200)):
        cols = per_core(N, M, True)
        assert not (cols[0] & cols[1]).any() and (cols[0] | cols[1]).all(), (N, M)
    nj = dense.weight_grad_jobs(65, 256)   # the dense layer's weight gradient takes that split
    halves = [{c for j in range(h * nj // 2, (h + 1) * nj // 2) for c in range(*dense.weight_grad_job(j, 65, 256)[2:4])}
              for h in range(2)]
    assert not halves[0] & halves[1] and halves[0] | halves[1] == set(range(256))
    for N, M in ((65, 200), (80, 200)):   # a product over a layer's weights keeps its rows apart
        assert all(c.all() for c in per_core(N, M, False)), (N, M)
    assert engine.n_blocks(96, 64, True) == engine.n_blocks(96, 64)


def test_operands_whose_rows_alias_are_laid_out_apart_where_the_family_needs_it():
    """engine.apart_rows: rows a multiple of 4 KB long get an odd number of cache lines more,
    for the families whose blocks read more than 4 rows at once (avx512), and stay as they are
    otherwise; the transposed copy a weight gradient reads as A takes that length."""
    from bptt.kernels import engine
    pads = engine.micro.R > engine.ALIAS_ROWS
    for n, itemsize in ((1024, 4), (2048, 4), (512, 8)):
        ld = engine.apart_rows(n, itemsize)
        if pads:
            assert ld > n and ld * itemsize % 64 == 0 and ld * itemsize // 64 % 2 == 1, (n, ld)
        else:
            assert ld == n
    assert engine.apart_rows(1000, 4) == 1000 and engine.apart_rows(4, 1024) == 4
    X = np.arange(1024 * 3, dtype=np.float32).reshape(1024, 3)
    XT = engine.transposed_copy(X)
    assert XT.shape == (3, engine.apart_rows(1024, 4)) and np.array_equal(XT[:, :1024], X.T)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dense_weight_grads_over_rows_that_alias(dtype, nthreads):
    """The dense weight gradient over 4 KB of rows (1024 float32, 512 float64: dyᵀ laid out
    apart on avx512) agrees with the reference twin, serial and parallel."""
    N = 4096 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(N)
    x, dy = rng.standard_normal((N, COLS + 5)).astype(dtype), rng.standard_normal((N, 37)).astype(dtype)
    dW, dW0 = (np.full((37, COLS + 5), 0.5, dtype) for _ in range(2))
    db, db0 = (np.full(37, 0.5, dtype) for _ in range(2))
    dense.dense_backward_params(dW, db, dy, x)
    ref_dense.dense_backward_params(dW0, db0, dy, x)
    close(dW, dW0, dtype, "dW")
    close(db, db0, dtype, "db")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [rnn.SPLIT_B - 1, rnn.SPLIT_B, rnn.SPLIT_B + 3])
@pytest.mark.parametrize("d", [0, 1], ids=["forward", "reverse"])
def test_shared_weight_grads_are_the_two_passes_bit_for_bit(B, d, dtype, nthreads):
    """weight_grads_shared (the RNN's and the LSTM's dW_ih and dW_hh in one pass over dg: one
    copy and transpose of dg for both products) gives exactly the bits of input_backward_params
    then recurrent_backward_params, and agrees with the reference twin. I and H past a panel and
    not a multiple of NARROW, so the narrow columns run too."""
    from bptt.kernels.engine import PANEL
    T, I, H = 5, PANEL + 5, PANEL // 2 + 3
    GH = 4 * H
    rng = np.random.default_rng(B + d)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    x, dg, y, h0 = r(T, B, I), r(T, B, GH), r(T, B, 2 * H), r(B, H)
    outs = []
    for how in ("two", "shared", "reference"):
        dW_ih, dW_hh = np.full((GH, I), 0.25, dtype), np.full((GH, H), 0.25, dtype)
        db_ih, db_hh = np.full(GH, 0.25, dtype), np.full(GH, 0.25, dtype)
        if how == "two":
            rnn.input_backward_params(dW_ih, db_ih, dg, x)
            rnn.recurrent_backward_params(dW_hh, db_hh, dg, y, h0, d * H, d == 1)
        else:
            mod = rnn if how == "shared" else ref_rnn
            mod.weight_grads_shared(dW_ih, db_ih, dW_hh, db_hh, dg, x, y, h0, d * H, d == 1)
        outs.append((dW_ih, db_ih, dW_hh, db_hh))
    for name, two, shared, ref in zip(("dW_ih", "db_ih", "dW_hh", "db_hh"), *outs):
        assert np.array_equal(two, shared), name
        close(shared, ref, dtype, name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [rnn.SPLIT_B, rnn.SPLIT_B + 3])
@pytest.mark.parametrize("d", [0, 1], ids=["forward", "reverse"])
def test_split_weight_grads_are_the_same_bits_either_way(B, d, dtype, monkeypatch):
    """The split weight-gradient passes run by rows of dW (dgᵀ · X, on a transposed copy of dg)
    or transposed (Xᵀ · dg into a transposed block of dW), whichever moves fewer numbers
    (rnn.wg_transposed): each entry is the same fma chain, so both ways give the same bits, for
    the shared pass and for each pass on its own. I past a panel and not a multiple of NARROW; dW
    blocks of WG_ROWS rows and a partial one."""
    from bptt.kernels.engine import PANEL
    T, I, H = 3, PANEL + 5, rnn.WG_ROWS // 8 + 3
    GH = 4 * H
    rng = np.random.default_rng(B + d)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    x, dg, y, h0 = r(T, B, I), r(T, B, GH), r(T, B, 2 * H), r(B, H)
    outs = []
    for way in (False, True):
        monkeypatch.setattr(rnn, "wg_transposed", lambda N, K, way=way: way)
        for shared in (False, True):
            dW_ih, dW_hh = np.full((GH, I), 0.25, dtype), np.full((GH, H), 0.25, dtype)
            db_ih, db_hh = np.full(GH, 0.25, dtype), np.full(GH, 0.25, dtype)
            if shared:
                rnn.weight_grads_shared(dW_ih, db_ih, dW_hh, db_hh, dg, x, y, h0, d * H, d == 1)
            else:
                rnn.input_backward_params(dW_ih, db_ih, dg, x)
                rnn.recurrent_backward_params(dW_hh, db_hh, dg, y, h0, d * H, d == 1)
            outs.append((dW_ih, db_ih, dW_hh, db_hh))
    for other in outs[1:]:
        for name, u, v in zip(("dW_ih", "db_ih", "dW_hh", "db_hh"), outs[0], other):
            assert np.array_equal(u, v), name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [rnn.SPLIT_B, rnn.SPLIT_B + 3])
@pytest.mark.parametrize("d", [0, 1], ids=["forward", "reverse"])
def test_the_fused_sweep_puts_da_into_the_weight_gradient_panels_with_the_same_bits(B, d, dtype, nthreads,
                                                                                     monkeypatch):
    """The LSTM's fused backward sweep can write each step's da straight into the panels the
    transposed weight-gradient pass copies dg into (lstm_backward_fused(..., in_panels=True), then
    weight_grads_shared(..., filled=True), which reads the bias sums from those panels). The
    state gradients, dx, every dW and db are bitwise those of the sweep that writes da and the
    pass that copies it: 4H past one block of WG_ROWS columns (a partial block and panel), an
    odd batch half, both directions, one thread and two."""
    from bptt.kernels.engine import PANEL
    monkeypatch.setattr(rnn, "wg_transposed", lambda N, K: True)   # the transposed pass at a small T·B
    T, I, H = 4, PANEL + 5, rnn.WG_ROWS // 4 + 3
    G4 = 4 * H
    assert rnn.gates_in_panels(T, B, I, H)
    rng = np.random.default_rng(B + d)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    u = lambda *s: rng.uniform(0.05, 0.95, s).astype(dtype)  # noqa: E731
    gates, c, c0 = u(T, B, G4), r(T, B, H), r(B, H)
    tc, dy, x, y, h0 = np.tanh(c), r(T, B, 2 * H), r(T, B, I), r(T, B, 2 * H), r(B, H)
    dh_n, dc_n, W_hh, W_ih = r(B, H), r(B, H), r(G4, H), r(G4, I)
    outs = []
    for in_panels in (False, True):
        da = np.full((T, B, G4), np.nan, dtype)
        dh0, dc0, dh, dc = (np.full((B, H), 0.5, dtype) for _ in range(4))
        dx = np.full((T, B, I), 0.5, dtype)
        lstm.lstm_backward_fused(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, W_hh, d * H, d == 1,
                                 dx, W_ih, in_panels)
        assert np.isnan(da).all() == in_panels   # filled: da itself is not written
        grads = [np.full((G4, I), 0.25, dtype), np.full(G4, 0.25, dtype), np.full((G4, H), 0.25, dtype),
                 np.full(G4, 0.25, dtype)]
        rnn.weight_grads_shared(*grads, da, x, y, h0, d * H, d == 1, in_panels)
        outs.append([dh0, dc0, dx] + grads)
    for name, a, b in zip(("dh0", "dc0", "dx", "dW_ih", "db_ih", "dW_hh", "db_hh"), *outs):
        assert np.array_equal(a, b), name
    with pytest.raises(ValueError, match="panels"):   # filled only where the pass reads panels
        rnn.weight_grads_shared(*outs[0][3:], da[:, :rnn.SPLIT_B - 1], x[:, :rnn.SPLIT_B - 1], y[:, :rnn.SPLIT_B - 1],
                                h0[:rnn.SPLIT_B - 1], d * H, d == 1, True)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("B", [rnn.SPLIT_B + 3, rnn.SPLIT_B + 12])
def test_weight_grads_ignore_what_their_scratch_held(B, transposed, monkeypatch):
    """The split weight-gradient passes (either way, rnn.wg_transposed) take their temporaries from
    scratch buffers kept from call to call (engine.scratch). Whatever a buffer holds (NaN here, or
    a larger shape's leftovers, larger than needed) never reaches a result: the sums are bitwise
    those of a run on freshly allocated buffers."""
    from bptt.kernels.engine import release_scratch, scratch
    T, I, H, GH = 4, 21, 19, 4 * 19
    rng = np.random.default_rng(B)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x, dg, y, h0 = r(T, B, I), r(T, B, GH), r(T, B, H), r(B, H)

    def run():
        dW_ih, dW_hh = np.full((GH, I), 0.25, np.float32), np.full((GH, H), 0.25, np.float32)
        db_ih, db_hh = np.full(GH, 0.25, np.float32), np.full(GH, 0.25, np.float32)
        rnn.input_backward_params(dW_ih, db_ih, dg, x)
        rnn.recurrent_backward_params(dW_hh, db_hh, dg, y, h0, 0, False)
        return dW_ih, db_ih, dW_hh, db_hh

    monkeypatch.setattr(rnn, "wg_transposed", lambda N, K: transposed)
    release_scratch()
    fresh = run()
    for name in ("split_S1", "split_G", "split_GT", "split_Gp", "split_C", "wg_P_x_T", "wg_P_h_T"):   # poisoned
        scratch(name, 1 << 16, np.float32)[:] = np.nan
    for name, u, v in zip(("dW_ih", "db_ih", "dW_hh", "db_hh"), fresh, run()):
        assert np.array_equal(u, v), name
    again = run()   # the same buffers, as the previous call left them
    for name, u, v in zip(("dW_ih", "db_ih", "dW_hh", "db_hh"), fresh, again):
        assert np.array_equal(u, v), name


@pytest.mark.parametrize("T,B,H,D,form", [(6, 50, 45, 1, rnn.BY_UNITS), (5, 9, 20, 2, rnn.BY_UNITS),
                                         (4, 33, 16, 1, rnn.BY_UNITS), (3, 64, 100, 2, rnn.BY_STEPS),
                                         (3, 40, 5, 1, rnn.BY_STEPS)])
@pytest.mark.parametrize("reverse", [False, True])
def test_transposed_packs_of_the_steps_hold_them_in_part_row_order_in_either_form(nthreads, T, B, H, D, form,
                                                                                    reverse):
    """pack_inputs and pack_states, transposed (the weight gradients' A), copy every step's
    inputs, or the state it read (h0 first, from column ``off`` of a bidirectional layer's
    output otherwise), into the columns of P in part_row order, whichever form the copy takes:
    by steps, or by blocks of units, whose last block of TB rows overlaps the one before it
    (H = 45, 20) and whose halves' runs are no whole number of TB (25, 5 and 4, 17 and 16)."""
    rng = np.random.default_rng(T * B + H)
    assert rnn.transposed_form(T, B, H, 4) == form
    X, h0 = rng.standard_normal((T, B, D * H)).astype(np.float32), rng.standard_normal((B, H)).astype(np.float32)
    off = H * (D - 1)
    xs = np.ascontiguousarray(X[:, :, :H])
    got_x = rnn.pack_inputs(xs, True)[:, :T * B].copy()
    got_h = rnn.pack_states(X, h0, off, reverse, True)[:, :T * B].copy()
    want_x, want_h = np.empty((H, T * B), np.float32), np.empty((H, T * B), np.float32)
    for t in range(T):
        for b in range(B):
            r = rnn.part_row(B, T, 2, t, b)
            want_x[:, r] = xs[t, b]
            first = t == (T - 1 if reverse else 0)
            want_h[:, r] = h0[b] if first else X[t + 1 if reverse else t - 1, b, off:off + H]
    assert np.array_equal(got_x, want_x)
    assert np.array_equal(got_h, want_h)


def test_scratch_is_reused_aligned_and_grows():
    from bptt.kernels.engine import release_scratch, scratch
    release_scratch()
    a = scratch("t", 100, np.float32)
    assert a.shape == (100,) and a.dtype == np.float32 and a.ctypes.data % 64 == 0
    b = scratch("t", 50, np.float32)
    assert b.ctypes.data == a.ctypes.data            # the same memory again
    c = scratch("t", 1000, np.float32)
    assert c.shape == (1000,) and c.ctypes.data % 64 == 0
    assert scratch("t", 10, np.float64).dtype == np.float64   # a buffer per dtype
    assert scratch("u", 10, np.float32).ctypes.data != scratch("t", 10, np.float32).ctypes.data
    release_scratch()


def test_cache_sizes_are_read_from_the_host_or_defaulted():
    """engine.cache_bytes: a cache level the host describes is a positive size; one it does not
    (level 9) is the default. Thresholds derived from them move speed only, never bits."""
    from bptt.kernels.engine import L2_BYTES, L3_BYTES, cache_bytes
    assert cache_bytes(9, 12345) == 12345
    for level, size in ((2, L2_BYTES), (3, L3_BYTES)):
        assert size == cache_bytes(level, size) and size >= 64 * 1024
