"""Recurrent layers ``RNN``, ``LSTM`` and ``GRU``: stacked, bidirectional, batch-first.

They mirror ``torch.nn.RNN/LSTM/GRU(..., batch_first=True)``: the same parameter names, shapes and
order (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``, then the
``_reverse`` ones), the same gate order, the same state layout (L·D, B, H) with index
``layer·D + direction``.

How a call runs (see :mod:`bptt.kernels.rnn` for the kernels' conventions):

- ``x`` (B, T, I) is copied once into a time-major workspace (T, B, I).
- Per layer and direction: the input projection of all T steps in one ``input_forward``, then
  the cell's forward kernel, which runs the recurrence (touching only W_hh) and
  writes the states straight into the layer's output (T, B, D·H) at the direction's columns.
  That output is the next layer's input.
- Backward walks the layers top-down. Per direction: the cell's BPTT sweep writes the gate
  pre-activation gradients of every step, then ``dW_ih``/``b_ih``, ``dW_hh``/``b_hh`` and
  ``dx`` are each one pass over all T·B rows (``input_backward_params``,
  ``recurrent_backward_params``, ``input_backward``; the RNN and the LSTM, whose recurrent
  gradient is the gate gradient itself, run both weight gradients in one pass,
  ``weight_grads_shared``). Both directions add into the same ``dx``. Every pass gives each core
  the same half of the batch as the sweeps (see :mod:`bptt.kernels.rnn`).
- LSTM whose W_ih fits in half a core's L2: the input projection and dx run inside the sweeps,
  step by step (``lstm_forward_fused``, ``lstm_backward_fused``), unless the sweeps split by
  units; LSTM whose W_hh does not fit in a core's L2: the sweeps split the hidden units between
  the cores, for small batches, or always past a share of the L3 (:mod:`bptt.kernels.lstm`).
  Same bits either way.
- Small work (below ``SERIAL_WORK``: one sequence, say), LSTM: a sweep has no rows to share, so
  the projection runs ahead of the forward sweep and the passes beside the backward sweep, as two
  concurrent jobs (``lstm_forward_pipelined``, ``lstm_backward_pipelined``; :mod:`bptt.kernels.rnn`,
  "small batches"). The weight gradients then sum over the steps in two parts (the order is
  documented there); the bits still depend on the shape only, never on the thread count.

Workspaces are owned by the layer and reallocated only when (B, T) changes; nothing is allocated
inside a time loop. The returned ``out``, ``h_n`` and ``dx`` are fresh arrays, so the caller may
keep them (and feed ``h_n`` back as ``h0``) across calls.

Truncated BPTT: run a long sequence chunk by chunk, each chunk ``forward(x_k, h0=h_n_prev)`` then
``backward(...)``. The state is carried forward; the gradient stops at the chunk boundary,
because ``h_n_prev`` is a plain array (``layer.dh0`` holds the gradient that *would* cross the
boundary, and is simply not used). ``backward`` must follow the ``forward`` it belongs to: a
second ``forward`` reuses the workspaces. The weights must not change in between either (as in
torch, where autograd refuses it): below ``SERIAL_WORK`` the LSTM's forward packs W_hh for its
backward, which then uses W_hh as the forward did.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..jit import SERIAL_WORK, get_kernels, serial_when
from ..kernels.gru import gru_backward, gru_forward
from ..kernels.lstm import (fused as lstm_fused, gap_rows, lstm_backward, lstm_backward_fused,
                            lstm_backward_pipelined, lstm_forward, lstm_forward_fused, lstm_forward_pipelined)
from ..kernels.rnn import (batch_half, input_backward, input_backward_params, input_forward,
                           recurrent_backward_params, rnn_backward, rnn_forward, swap_01,
                           weight_grads_shared, gates_in_panels)
from ..kernels.activations import ACTIVATIONS, STATE_ACTIVATIONS
from ..kernels.engine import new_panels, sweep_chunks
from .base import Layer, aligned_empty, aligned_zeros, check_array, uniform

RNN_ACTIVATIONS = STATE_ACTIVATIONS   # the ones the RNN's sweeps compile (bptt.kernels.activations)


def _rng(seed, rng):
    return rng if rng is not None else np.random.default_rng(seed)


def _positive(name, v):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


class _Workspace:
    """Every buffer one (B, T) needs, allocated once."""


class _Recurrent(Layer):
    """Shared machinery: parameters, workspaces, stacking and directions. Subclasses set
    ``GATES`` and implement ``_cell_forward`` / ``_cell_backward`` for one layer and direction."""

    GATES = 1
    # whether the cell has _cell_backward_pipelined: below SERIAL_WORK its backward sweep and the
    # passes after it run side by side (bptt.kernels.rnn, "small batches")
    _PIPELINED = False
    # rows between the two halves of the batch in the next workspace's gates (and the LSTM's c and
    # tanh c): set by LSTM.forward for its fused sweeps (LSTM._gap_for); 0 for the other cells
    _want_gap = 0

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, *, dtype=np.float64, seed=None, rng=None):
        super().__init__(dtype)
        self.input_size = _positive("input_size", input_size)
        self.hidden_size = _positive("hidden_size", hidden_size)
        self.num_layers = _positive("num_layers", num_layers)
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise ValueError(f"bidirectional must be True or False, got {bidirectional!r}")
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if self.bidirectional else 1
        rng = _rng(seed, rng)
        H, GH, D = self.hidden_size, self.GATES * self.hidden_size, self.num_directions
        bound = 1.0 / math.sqrt(H)  # torch: every parameter ~ U(-1/√H, 1/√H)
        for l in range(self.num_layers):
            F = self.input_size if l == 0 else D * H
            for d in range(D):
                for name, shape in zip(self._names(l, d), ((GH, F), (GH, H), (GH,), (GH,))):
                    self.add_param(name, uniform(rng, shape, bound, self.dtype))
        self._ws = None
        self._ready = False  # a forward has filled the workspaces
        self.dh0 = None

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _suffix(l: int, d: int) -> str:
        return f"_l{l}" + ("_reverse" if d else "")

    @staticmethod
    @functools.lru_cache(maxsize=None)   # called for every layer on every step: build each once
    def _names(l: int, d: int) -> tuple:
        """torch's names of layer l, direction d: weight_ih, weight_hh, bias_ih, bias_hh."""
        sfx = _Recurrent._suffix(l, d)
        return ("weight_ih" + sfx, "weight_hh" + sfx, "bias_ih" + sfx, "bias_hh" + sfx)

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self):
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}{self._extra_repr()}, dtype={self.dtype.name})")

    @property
    def state_shape(self):
        """The shape of h0 / h_n (and c0 / c_n) for the batch of the last forward: (L·D, B, H)."""
        B = self._ws.B if self._ws is not None else "B"
        return (self.num_layers * self.num_directions, B, self.hidden_size)

    def _check_x(self, x):
        x = check_array("x", x, ("B", "T", self.input_size), self.dtype,
                        what=" (batch, time, input_size)")
        if x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"x must have at least one sequence and one time step, got shape {x.shape}")
        return x

    def _check_state(self, name, a, B):
        shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        return check_array(name, a, shape, self.dtype, what=" (num_layers·num_directions, batch, hidden_size)")

    def _workspace(self, B: int, T: int) -> _Workspace:
        ws = self._ws
        if ws is not None and ws.B == B and ws.T == T:
            return ws
        H, D, L, GH, dt = self.hidden_size, self.num_directions, self.num_layers, self.GATES * self.hidden_size, self.dtype
        ws = _Workspace()
        ws.B, ws.T = B, T
        ws.xt = aligned_empty((T, B, self.input_size), dt)                  # x, time-major
        ws.dxt = aligned_empty((T, B, self.input_size), dt)
        ws.y = [aligned_empty((T, B, D * H), dt) for _ in range(L)]         # each layer's output
        ws.dy = [aligned_empty((T, B, D * H), dt) for _ in range(L)]
        ws.gap = self._want_gap                                             # (LSTM._gap_for)
        ws.gates = [aligned_empty((T, B + ws.gap, GH), dt) for _ in range(L * D)]   # per layer·direction
        ws.h0 = aligned_empty((L * D, B, H), dt)
        ws.dg = aligned_empty((T, B, GH), dt)                               # shared by every backward
        ws.dh = aligned_empty((B, H), dt)
        ws.zeros = aligned_zeros((L * D, B, H), dt)                         # a final-state gradient of None
        self._alloc_extra(ws)
        self._ws = ws
        self._ready = False
        return ws

    def _alloc_extra(self, ws):
        pass

    # -- public API (RNN and GRU; the LSTM overrides it for its (h, c) state) -------------------
    def forward(self, x, h0=None):
        """(out, h_n) from x (B, T, I) and h0 (L·D, B, H) (zeros if None)."""
        x = self._check_x(x)
        ws = self._workspace(x.shape[0], x.shape[1])
        self._ready = False  # the workspaces no longer hold a complete forward
        self._load_state(ws.h0, "h0", h0, ws.B)
        return self._run_forward(x)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def backward(self, dout=None, dh_n=None, *, accumulate=True):
        """dx (B, T, I) from ∂L/∂out (B, T, D·H) and ∂L/∂h_n (L·D, B, H) (zeros if None).
        Accumulates every parameter gradient (``accumulate=False``: sets them, the same bits as
        ``zero_grad()`` first); leaves ∂L/∂h0 in ``self.dh0``."""
        dx, (self.dh0,) = self._run_backward(dout, [("dh_n", dh_n)], accumulate)
        return dx

    # gradcheck interface: inputs x and, if given, h0; outputs out and h_n.
    def check_forward(self, x, h0=None):
        self._check_h0 = h0 is not None
        out, h_n = self.forward(x, h0)
        return out, h_n

    def check_backward(self, dout, dh_n):
        dx = self.backward(dout, dh_n)
        return {"x": dx, "h0": self.dh0} if self._check_h0 else {"x": dx}

    # -- the stack --------------------------------------------------------------------------
    def _work(self, B, T):
        """Multiply-adds of the whole stack's gate products in a forward, T·B·G·H·(I + H) per
        layer and direction (with the first layer's I for every layer: a size test, not a count)."""
        GH = self.GATES * self.hidden_size
        return T * B * GH * (self.input_size + self.hidden_size) * self.num_layers * self.num_directions

    def _run_forward(self, x):
        small = self._work(x.shape[0], x.shape[1]) < SERIAL_WORK
        with serial_when(small):
            return self._run_forward_kernels(x, small)

    def _run_forward_kernels(self, x, small=False):
        B, T, _ = x.shape
        ws = self._ws
        swap_01(ws.xt, x, True)   # time-major, in parallel
        params = self.params
        for l in range(self.num_layers):
            xin = ws.xt if l == 0 else ws.y[l - 1]
            for d in range(self.num_directions):
                W_ih, W_hh, b_ih, b_hh = (params[n] for n in self._names(l, d))
                k = l * self.num_directions + d
                if small and self._PIPELINED:   # the projection runs ahead of the sweep
                    self._cell_forward_pipelined(ws, l, d, k, W_hh, b_hh, xin, W_ih, b_ih)
                    continue
                if self._fused(W_ih, W_hh):   # the projection inside the sweep, step by step
                    self._cell_forward_fused(ws, l, d, k, W_hh, b_hh, xin, W_ih, b_ih)
                    continue
                input_forward(ws.gates[k], xin, W_ih, b_ih)
                self._cell_forward(ws, l, d, k, W_hh, b_hh)
        self._ready = True
        out = np.empty((B, T, ws.y[-1].shape[2]), self.dtype)   # fresh, batch-first
        swap_01(out, ws.y[-1], False)
        return out, self._final(ws.y, ws.T)

    def _final(self, seq, T):
        """h_n (or c_n) from per-layer sequences (T, B, D·H): the last processed step of each
        direction, i.e. t = T-1 forward and t = 0 in reverse."""
        H, D = self.hidden_size, self.num_directions
        if self.num_layers * D == 1:    # one layer, one direction: step T-1 as it is
            return seq[0][T - 1:T].copy()
        B = seq[0].shape[1]
        out = np.empty((self.num_layers * D, B, H), self.dtype)
        for l in range(self.num_layers):
            for d in range(D):
                out[l * D + d] = seq[l][T - 1 if d == 0 else 0, :, d * H:(d + 1) * H]
        return out

    def _run_backward(self, dout, dstates, accumulate=True):
        """dstates: list of (name, array or None) for the final-state gradients. Returns dx and
        the list of initial-state gradients (fresh arrays). With ``accumulate`` false the
        parameter gradients are set: the small-batch pipelines clear them in their own jobs
        (``lstm_backward_pipelined``); on the other paths the weight-gradient passes set them,
        their sums starting from 0 without reading the gradients (``clear``)."""
        if not self._ready:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        small = self._work(self._ws.B, self._ws.T) < SERIAL_WORK
        with serial_when(small):
            return self._run_backward_kernels(dout, dstates, small, not accumulate)

    def _run_backward_kernels(self, dout, dstates, small=False, clear=False):
        ws = self._ws
        B, T, H, D, L = ws.B, ws.T, self.hidden_size, self.num_directions, self.num_layers
        top = ws.dy[L - 1]
        if dout is None:
            top.fill(0)
        else:
            dout = check_array("dout", dout, (B, T, D * H), self.dtype, what=" (the shape of out)")
            swap_01(top, dout, True)
        # kernels only read the final-state gradients: None shares one array of zeros
        dfinal = [ws.zeros if a is None else self._check_state(name, a, B) for name, a in dstates]
        dinit = [np.zeros((L * D, B, H), self.dtype) for _ in dstates]
        params, grads = self.params, self.grads
        for l in range(L - 1, -1, -1):
            xin = ws.xt if l == 0 else ws.y[l - 1]
            dxin = ws.dxt if l == 0 else ws.dy[l - 1]
            pipelined = small and self._PIPELINED
            # both directions' weights have one shape: fused (or not) alike
            fused = self._fused(*(params[n] for n in self._names(l, 0)[:2]))
            if pipelined or fused:
                dxin.fill(0)   # the sweeps add into it; otherwise the first input_backward sets it
            for d in range(D):
                names = self._names(l, d)
                W_ih, W_hh = params[names[0]], params[names[1]]
                dW_ih, dW_hh, db_ih, db_hh = (grads[n] for n in names)
                k = l * D + d
                dfk, dik = [a[k] for a in dfinal], [a[k] for a in dinit]
                if pipelined:   # the sweep and the passes side by side
                    self._cell_backward_pipelined(ws, l, d, k, W_ih, W_hh, dfk, dik, xin, dxin,
                                                  dW_ih, db_ih, dW_hh, db_hh, clear)
                    continue
                # the fused sweep puts dg straight into the weight-gradient pass's panels
                filled = fused and gates_in_panels(T, B, W_ih.shape[1], H)
                if fused:   # dx inside the sweep, step by step
                    dgh = self._cell_backward_fused(ws, l, d, k, W_hh, dfk, dik, dxin, W_ih, filled)
                else:
                    dgh = self._cell_backward(ws, l, d, k, W_hh, dfk, dik)
                # clear: the passes set the gradients (their sums from 0), not add to them
                if dgh is ws.dg:   # RNN, LSTM: one pass over dg for both weight gradients
                    weight_grads_shared(dW_ih, db_ih, dW_hh, db_hh, ws.dg, xin, ws.y[l], ws.h0[k], d * H, d == 1,
                                        filled, clear)
                else:
                    input_backward_params(dW_ih, db_ih, ws.dg, xin, clear)
                    recurrent_backward_params(dW_hh, db_hh, dgh, ws.y[l], ws.h0[k], d * H, d == 1, clear)
                if not fused:   # the first direction sets dx (not filled), the second adds to it
                    input_backward(dxin, ws.dg, W_ih, d == 0)
        dx = np.empty((B, T, self.input_size), self.dtype)   # fresh, batch-first
        swap_01(dx, ws.dxt, False)
        return dx, dinit

    def _fused(self, W_ih, W_hh):
        """Whether the sweeps take the input projection and dx with them, step by step (the LSTM
        when its W_ih fits in half a core's L2: :func:`bptt.kernels.lstm.fused`)."""
        return False

    def _load_state(self, dst, name, a, B):
        if a is None:
            dst.fill(0)
        else:
            np.copyto(dst, self._check_state(name, a, B))


class RNN(_Recurrent):
    """Elman RNN, as ``torch.nn.RNN(batch_first=True)``:

        h_t = f(W_ih·x_t + b_ih + W_hh·h_{t-1} + b_hh)

    with f = ``activation``: ``'tanh'`` (default), ``'relu'`` or ``'identity'``. With identity the
    cell is the plain linear recurrence h_t = W0·[x_t; h_{t-1}] + b, W0 = [W_ih | W_hh],
    b = b_ih + b_hh.

    ``forward(x, h0=None) -> (out, h_n)``: x (B, T, I); h0 (L·D, B, H), zeros if None;
    out (B, T, D·H); h_n (L·D, B, H).
    ``backward(dout, dh_n=None) -> dx`` (B, T, I); accumulates every parameter gradient and leaves
    ∂L/∂h0 in ``self.dh0``. ``dout=None`` means zeros.
    """

    GATES = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, activation: str = "tanh", *, dtype=np.float64,
                 seed=None, rng=None):
        if activation not in RNN_ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(RNN_ACTIVATIONS)}; got {activation!r}")
        self.activation = activation
        self.code = ACTIVATIONS[activation]
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dtype=dtype, seed=seed, rng=rng)

    def _extra_repr(self):
        return f", activation={self.activation!r}"

    def _cell_forward(self, ws, l, d, k, W_hh, b_hh):
        rnn_forward(ws.y[l], ws.gates[k], ws.h0[k], W_hh, b_hh, d * self.hidden_size, d == 1, self.code)

    def _cell_backward(self, ws, l, d, k, W_hh, dfinal, dinit):
        (dh_n,), (dh0,) = dfinal, dinit
        rnn_backward(ws.dg, dh0, ws.dh, ws.dy[l], dh_n, ws.gates[k], ws.y[l], W_hh,
                     d * self.hidden_size, d == 1, self.code)
        return ws.dg


class GRU(_Recurrent):
    """GRU, as ``torch.nn.GRU(batch_first=True)``, gate order r, z, n:

        r = σ(W_ir·x + b_ir + W_hr·h + b_hr)     z = σ(W_iz·x + b_iz + W_hz·h + b_hz)
        n = tanh(W_in·x + b_in + r ⊙ (W_hn·h + b_hn))
        h' = (1 - z) ⊙ n + z ⊙ h

    The API is :class:`RNN`'s, without ``activation``.
    """

    GATES = 3

    def _alloc_extra(self, ws):
        L, D, T, B, H = self.num_layers, self.num_directions, ws.T, ws.B, self.hidden_size
        ws.mn = [aligned_empty((T, B, H), self.dtype) for _ in range(L * D)]
        ws.m = aligned_empty((B, 3 * H), self.dtype)   # W_hh·h_prev + b_hh of the current step
        ws.dgh = aligned_empty((T, B, 3 * H), self.dtype)

    def _cell_forward(self, ws, l, d, k, W_hh, b_hh):
        gru_forward(ws.y[l], ws.gates[k], ws.mn[k], ws.m, ws.h0[k], W_hh, b_hh, d * self.hidden_size, d == 1)

    def _cell_backward(self, ws, l, d, k, W_hh, dfinal, dinit):
        (dh_n,), (dh0,) = dfinal, dinit
        gru_backward(ws.dg, ws.dgh, dh0, ws.dh, ws.dy[l], dh_n, ws.gates[k], ws.mn[k], ws.y[l],
                     ws.h0[k], W_hh, d * self.hidden_size, d == 1)
        return ws.dgh



class LSTM(_Recurrent):
    """LSTM, as ``torch.nn.LSTM(batch_first=True)``, gate order i, f, g, o:

        i = σ(·)  f = σ(·)  g = tanh(·)  o = σ(·)    of  W_ih·x + b_ih + W_hh·h + b_hh
        c' = f ⊙ c + i ⊙ g       h' = o ⊙ tanh(c')

    ``forward(x, state=None) -> (out, (h_n, c_n))`` with ``state = (h0, c0)`` (either may be None
    for zeros), each (L·D, B, H). ``backward(dout, dstate=None) -> dx`` with ``dstate = (dh_n, dc_n)``,
    a pair like the state; ``backward(dout, dh_n, dc_n)`` works too. Afterwards ``self.dh0``
    and ``self.dc0`` hold ∂L/∂h0 and ∂L/∂c0.
    """

    GATES = 4

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dc0 = None

    def _alloc_extra(self, ws):
        L, D, T, B, H = self.num_layers, self.num_directions, ws.T, ws.B, self.hidden_size
        g = ws.gap   # rows between the batch halves in gates, c and tc (_gap_for)
        ws.c0 = aligned_empty((L * D, B, H), self.dtype)
        ws.c = [aligned_empty((T, B + g, H), self.dtype) for _ in range(L * D)]   # c_t per layer·direction
        ws.tc = [aligned_empty((T, B + g, H), self.dtype) for _ in range(L * D)]  # tanh(c_t)
        ws.dc = aligned_empty((B, H), self.dtype)

    def _gap_for(self, B, T):
        """Rows between the two halves of the batch in the gates, c and tanh c workspaces
        (:func:`bptt.kernels.lstm.gap_rows`): where every layer·direction runs the fused sweeps
        (``lstm_forward_fused``), each half on its own thread; 0 otherwise (the other sweeps,
        and the passes around them, read those arrays as they are)."""
        if get_kernels() != "fast" or self._work(B, T) < SERIAL_WORK or sweep_chunks(B) < 2:
            return 0
        for l in range(self.num_layers):
            for d in range(self.num_directions):
                W_ih, W_hh = (self.params[n] for n in self._names(l, d)[:2])
                if not lstm_fused(W_ih, W_hh, B):
                    return 0
        return gap_rows(self.hidden_size, np.dtype(self.dtype).itemsize)

    def _logical(self, a):
        """Rows of sequences 0 ... B-1 of a (B + gap, ·) step of c: the gap taken out."""
        g, B = self._ws.gap, self._ws.B
        if not g:
            return a
        h = batch_half(B, 2, 0)[1]
        return np.concatenate((a[:h], a[h + g:]))

    def _cell_forward(self, ws, l, d, k, W_hh, b_hh):
        lstm_forward(ws.y[l], ws.gates[k], ws.c[k], ws.tc[k], ws.h0[k], ws.c0[k], W_hh, b_hh,
                     d * self.hidden_size, d == 1)

    def _cell_backward(self, ws, l, d, k, W_hh, dfinal, dinit):
        (dh_n, dc_n), (dh0, dc0) = dfinal, dinit
        lstm_backward(ws.dg, dh0, dc0, ws.dh, ws.dc, ws.dy[l], dh_n, dc_n, ws.gates[k], ws.c[k],
                      ws.tc[k], ws.c0[k], W_hh, d * self.hidden_size, d == 1)
        return ws.dg

    _PIPELINED = True

    def _fused(self, W_ih, W_hh):
        if self._ws is not None and self._ws.gap:   # laid out for the fused sweeps (_gap_for)
            return True
        B = self._ws.B if self._ws is not None else 1   # before a forward: as for one sequence
        return lstm_fused(W_ih, W_hh, B)

    def _cell_forward_fused(self, ws, l, d, k, W_hh, b_hh, xin, W_ih, b_ih):
        lstm_forward_fused(ws.y[l], ws.gates[k], ws.c[k], ws.tc[k], ws.h0[k], ws.c0[k], W_hh, b_hh,
                           d * self.hidden_size, d == 1, xin, W_ih, b_ih, ws.gap)

    def _cell_backward_fused(self, ws, l, d, k, W_hh, dfinal, dinit, dxin, W_ih, in_panels):
        (dh_n, dc_n), (dh0, dc0) = dfinal, dinit
        lstm_backward_fused(ws.dg, dh0, dc0, ws.dh, ws.dc, ws.dy[l], dh_n, dc_n, ws.gates[k], ws.c[k],
                            ws.tc[k], ws.c0[k], W_hh, d * self.hidden_size, d == 1, dxin, W_ih, in_panels, ws.gap)
        return ws.dg

    def _packed_hh(self, ws, k):
        """W_hh of layer·direction k in panels: packed by the pipelined forward for its backward
        (which therefore uses W_hh as the forward did)."""
        if getattr(ws, "P_hh", None) is None:
            H = self.hidden_size
            ws.P_hh = [new_panels(H, 4 * H, self.dtype) for _ in range(self.num_layers * self.num_directions)]
        return ws.P_hh[k]

    def _cell_forward_pipelined(self, ws, l, d, k, W_hh, b_hh, xin, W_ih, b_ih):
        P_hh = self._packed_hh(ws, k)
        lstm_forward_pipelined(ws.y[l], ws.gates[k], ws.c[k], ws.tc[k], ws.h0[k], ws.c0[k], W_hh, b_hh,
                               d * self.hidden_size, d == 1, xin, W_ih, b_ih, P_hh)

    def _cell_backward_pipelined(self, ws, l, d, k, W_ih, W_hh, dfinal, dinit, xin, dxin, dW_ih, db_ih,
                                 dW_hh, db_hh, clear=False):
        (dh_n, dc_n), (dh0, dc0) = dfinal, dinit
        P_hh = self._packed_hh(ws, k)   # packed: a backward runs only after its whole forward
        lstm_backward_pipelined(ws.dg, dh0, dc0, ws.dh, ws.dc, ws.dy[l], dh_n, dc_n, ws.gates[k], ws.c[k],
                                ws.tc[k], ws.c0[k], W_hh, d * self.hidden_size, d == 1, xin, ws.y[l],
                                ws.h0[k], W_ih, dW_ih, db_ih, dW_hh, db_hh, dxin, P_hh, True, clear)

    def _final_c(self):
        ws, H, D = self._ws, self.hidden_size, self.num_directions
        if self.num_layers * D == 1:
            return self._logical(ws.c[0][ws.T - 1])[None].copy()
        c_n = np.empty((self.num_layers * D, ws.B, H), self.dtype)
        for l in range(self.num_layers):
            for d in range(D):
                c_n[l * D + d] = self._logical(ws.c[l * D + d][ws.T - 1 if d == 0 else 0])
        return c_n

    def forward(self, x, state=None, *, h0=None):
        """(out, (h_n, c_n)) from x (B, T, I) and the initial state (h0, c0), each (L·D, B, H)
        (zeros if None). The state may be passed as ``h0=(h0, c0)`` too, as in the RNN and GRU."""
        if h0 is not None:
            if state is not None:
                raise ValueError("give the initial state once: as state or as h0, not both")
            state = h0
        x = self._check_x(x)
        if state is None:
            h0 = c0 = None
        elif isinstance(state, (tuple, list)) and len(state) == 2:
            h0, c0 = state
        else:
            raise ValueError("state must be None or a pair (h0, c0) of arrays of shape "
                             "(num_layers·num_directions, batch, hidden_size)")
        self._want_gap = self._gap_for(x.shape[0], x.shape[1])
        if self._ws is not None and self._ws.gap != self._want_gap:
            self._ws = None   # laid out for the other sweeps
        ws = self._workspace(x.shape[0], x.shape[1])
        self._ready = False  # the workspaces no longer hold a complete forward
        self._load_state(ws.h0, "h0", h0, ws.B)
        self._load_state(ws.c0, "c0", c0, ws.B)
        out, h_n = self._run_forward(x)
        return out, (h_n, self._final_c())

    def backward(self, dout=None, dstate=None, dc_n=None, *, dh_n=None, accumulate=True):
        """dx (B, T, I) from ∂L/∂out (B, T, D·H) (zeros if None) and the final-state gradient
        ``dstate = (dh_n, dc_n)``, each (L·D, B, H) (either may be None for zeros), the pair that
        ``forward`` returns as ``(h_n, c_n)``. Accumulates every parameter gradient; leaves ∂L/∂h0
        in ``self.dh0`` and ∂L/∂c0 in ``self.dc0``.

        The separate form ``backward(dout, dh_n, dc_n)`` (positional or by keyword) works too: a bare
        array as ``dstate`` is dh_n. As ``forward`` takes ``h0=(h0, c0)``, ``dh_n=`` may be the pair.

        ``accumulate=False`` sets the parameter gradients instead of adding to them: the same bits
        as ``zero_grad()`` then ``backward(...)``, and for one sequence (the small-batch pipeline)
        without a pass that clears them first.
        """
        if dh_n is not None:
            if dstate is not None:
                raise ValueError("give dh_n once: as dstate or as dh_n, not both")
            dstate = dh_n
        if isinstance(dstate, (tuple, list)):
            if len(dstate) != 2:
                raise ValueError(f"dstate must be a pair (dh_n, dc_n), got a {type(dstate).__name__} "
                                 f"of length {len(dstate)}")
            if dc_n is not None:
                raise ValueError("give dc_n once: in the pair (dh_n, dc_n) or as dc_n, not both")
            dh_n, dc_n = dstate
        else:
            dh_n = dstate
        dx, (self.dh0, self.dc0) = self._run_backward(dout, [("dh_n", dh_n), ("dc_n", dc_n)], accumulate)
        return dx

    # gradcheck interface
    def check_forward(self, x, h0=None, c0=None):
        self._check_state_given = (h0 is not None, c0 is not None)
        out, (h_n, c_n) = self.forward(x, (h0, c0))
        return out, h_n, c_n

    def check_backward(self, dout, dh_n, dc_n):
        dx = self.backward(dout, (dh_n, dc_n))
        g = {"x": dx}
        if self._check_state_given[0]:
            g["h0"] = self.dh0
        if self._check_state_given[1]:
            g["c0"] = self.dc0
        return g
