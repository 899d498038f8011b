"""Elman RNN cell over a whole sequence, and the weight-gradient passes every cell shares.

Shapes: T time steps, B batch, H hidden units, D directions (1 or 2), G gates (1 here).
Layout is time-major: a sequence is (T, B, ·), so one time step is a contiguous (B, ·) block.

    q_t = (W_ih·x_t + b_ih) + W_hh·h_{t-1} + b_hh        h_t = f(q_t)

The caller computes the input projection W_ih·x_t + b_ih for *every* t in one pass before the
recurrence (``dense_forward`` on the (T·B, I) rows), so the time loop touches only W_hh. Backward
keeps dq_t for every step, so that dW_ih, dW_hh, the biases and dx are each one big pass over all
N = T·B rows after the sweep (:func:`input_backward_params`, :func:`recurrent_backward_params`,
:func:`input_backward`). These three are shared by every cell.

Every product is blocked with :func:`bptt.kernels.dense.acc_panels` (see :mod:`bptt.kernels.dense`)
on its right-hand matrix copied once per call into panels of 128 columns: the recurrent product of
a step, h_prev·W_hhᵀ, reads W_hhᵀ (H, G·H) in panels, and backward's da·W_hh reads W_hh in panels;
both vectorise across output units.

Direction. Every recurrent kernel takes ``reverse``: False runs t = 0, 1, ..., T-1; True runs
t = T-1, ..., 0 (the backward half of a bidirectional layer). Arrays are always indexed by the true
time t, so the reverse direction needs no reversed copy of x. "Previous" means previous in
processing order: h_{t-1} forward, h_{t+1} in reverse; the first processed step reads h0.

Output columns. The hidden states go straight into the layer's output y (T, B, D·H): this
direction owns the columns ``off:off+H`` (0 forward, H reverse), so a bidirectional layer's
output is assembled without a copy and the next layer reads it as its input.

Parallelism. The cell kernels run ``prange`` over chunks of batch rows, one per core
(:func:`bptt.kernels.dense.row_chunks`) with the time loop inside: sequences are independent, so
a whole forward or backward sweep is one parallel region (not one per step), each row's state is
written by one thread, and a chunk's rows share each panel of W_hh they load. The weight-gradient
and dx passes run over tiles of their outputs. No sum is split across threads, and every output
sums in the same order for any chunking, so all builds give the same bits.
"""

from ..jit import kernel, prange
from .activations import act_row, dact_row
from .dense import (COLS, ROWS, acc_panels, dense_backward_input, dense_backward_params, empty_panels,
                    n_panels, pack_panel, packed, packed_T, row_chunks, weight_grads)


@kernel
def rnn_forward(y, q, h0, W_hh, b_hh, off, reverse, code):
    """Forward over the sequence: q_t += W_hh·h_prev + b_hh, h_t = f(q_t).

    y : (T, B, D·H) output; writes y[t, :, off:off+H] = h_t.
    q : (T, B, H) in: the input projection W_ih·x_t + b_ih; out: the pre-activation q_t (kept
        for backward).
    h0 : (B, H) initial state.  W_hh : (H, H).  b_hh : (H,).
    off : int column offset of this direction in y.  reverse : bool.  code : activation code.
    """
    T, B, H = q.shape
    P = packed_T(W_hh)   # W_hhᵀ (H, H) in panels
    nch, rc = row_chunks(B)
    for ch in prange(nch):  # sequences are independent: one region, time inside
        r0 = ch * rc
        r1 = B if ch == nch - 1 else r0 + rc   # the last chunk takes the rest
        for s in range(T):
            t = T - 1 - s if reverse else s
            # h_prev: h0 at the first processed step, else the previous step's columns of y
            hp = h0 if s == 0 else y[t + 1 if reverse else t - 1, :, off:off + H]
            qt = q[t]
            for b in range(r0, r1):       # row views, so that the loops vectorise
                qb = qt[b]
                for o in range(H):
                    qb[o] += b_hh[o]
            for c0 in range(0, H, COLS):
                for n0 in range(r0, r1, ROWS):
                    acc_panels(qt, hp, P, n0, min(r1, n0 + ROWS), c0, min(H, c0 + COLS), 0, H)
            for b in range(r0, r1):
                act_row(y[t, b, off:off + H], qt[b], code)


@kernel
def rnn_backward(dq, dh0, dh, dy, dh_n, q, y, W_hh, off, reverse, code):
    """Backward sweep through time (BPTT), from the last processed step to the first.

    At each step, with dh the gradient carried from the later step (dh_n at the start):
        dh_t   = dy_t + dh                      (h_t feeds the output and the next step)
        dq_t   = dh_t ⊙ f'(q_t)
        dh     = dq_t·W_hh                      (∂L/∂h_prev, carried to the earlier step)
    and at the end dh0 += dh.

    dq : (T, B, H) written: ∂L/∂q_t for every step.
    dh0 : (B, H) accumulated: ∂L/∂h0.
    dh : (B, H) workspace (the carried gradient).
    dy : (T, B, D·H) ∂L/∂y; this direction reads columns off:off+H.
    dh_n : (B, H) ∂L/∂h_n, the gradient on the final state.
    q : (T, B, H) pre-activations from forward.  y : (T, B, D·H) outputs from forward.
    W_hh : (H, H).  off, reverse, code : as in :func:`rnn_forward`.
    """
    T, B, H = q.shape
    P = packed(W_hh, 0, H)   # W_hh (G·H, H) in panels
    nch, rc = row_chunks(B)
    for ch in prange(nch):
        r0 = ch * rc
        r1 = B if ch == nch - 1 else r0 + rc   # the last chunk takes the rest
        for b in range(r0, r1):
            dh[b, :] = dh_n[b, :]
        for s in range(T - 1, -1, -1):
            t = T - 1 - s if reverse else s
            for b in range(r0, r1):       # row views, so that the loop vectorises
                dyb = dy[t, b, off:off + H]
                yb = y[t, b, off:off + H]
                qb = q[t, b]
                dqb = dq[t, b]
                dhb = dh[b]
                for o in range(H):
                    dhb[o] += dyb[o]
                dact_row(dqb, dhb, qb, yb, code)   # dq = (dy + dh) ⊙ f'(q), vectorised per activation
                for o in range(H):
                    dhb[o] = 0.0
            for c0 in range(0, H, COLS):
                for n0 in range(r0, r1, ROWS):
                    acc_panels(dh, dq[t], P, n0, min(r1, n0 + ROWS), c0, min(H, c0 + COLS), 0, H)
        for b in range(r0, r1):
            for o in range(H):
                dh0[b, o] += dh[b, o]


# dW_ih, b_ih and dx of every step at once are the dense layer's backward over all N = T·B rows:
#   input_backward_params(dW_ih, db_ih, dg, x):  dW_ih[u, i] += Σ_n dg[n, u] · x[n, i],
#                                                db_ih[u] += Σ_n dg[n, u]
#   input_backward(dx, dg, W_ih):                dx[n, i] += Σ_u dg[n, u] · W_ih[u, i]
# with dg (N, G·H) the gate pre-activation gradients, rows n = t·B + b, and x, dx (N, I).
input_backward_params = dense_backward_params
input_backward = dense_backward_input


@kernel
def recurrent_backward_params(dW_hh, db_hh, dgh, y, h0, off, reverse):
    """Recurrent weight gradients in one pass over all steps, for every cell:

        dW_hh[u, j] += Σ_t Σ_b dgh[t, b, u] · h_prev_t[b, j]      db_hh[u] += Σ_t Σ_b dgh[t, b, u]

    where h_prev_t is the state the step at time t read (h0 for the first processed step).

    dW_hh : (G·H, H) accumulated.  db_hh : (G·H,) accumulated.
    dgh : (T, B, G·H) ∂L/∂(W_hh·h_prev + b_hh) for every step (the gate pre-activation gradients;
          for the GRU's n gate the r ⊙ factor is already applied).
    y : (T, B, D·H) the layer output holding this direction's states in columns off:off+H.
    h0 : (B, H).  off, reverse : as in :func:`rnn_forward`.

    The sum is one product with A = dgᵀ (G·H, T·B) and the states the steps read, packed in panels
    in the same row order (rows n = t·B + b hold h_prev_t[b]), so every entry sums over (t, b) in
    increasing t (the h0 step first forward, last in reverse). Parallel over tiles of dW_hh
    (:func:`bptt.kernels.dense.weight_grads`).
    """
    T, B, GH = dgh.shape
    H = h0.shape[1]
    N = T * B
    first = T - 1 if reverse else 0          # the step that read h0
    P = empty_panels(H, N, h0)
    for t in prange(T):                      # row block t·B... holds the state step t read
        src = h0 if t == first else y[t + 1 if reverse else t - 1]
        for p in range(n_panels(H)):
            pack_panel(P, src, p, 0 if t == first else off, H, 0, B, t * B)
    weight_grads(dW_hh, db_hh, dgh.reshape((N, GH)), P, H)


@kernel
def swap_01(dst, src):
    """dst[i, j, :] = src[j, i, :]: (B, T, F) to (T, B, F) and back, for the layers' copies between
    the batch-first arrays users pass and the time-major workspaces. Parallel over i; a copy,
    so the bits are src's (numpy's strided copy of a transposed view ran on one core).

    dst : (D0, D1, F).  src : (D1, D0, F).
    """
    D0, D1, F = dst.shape
    for i in prange(D0):
        for j in range(D1):
            d = dst[i, j]
            sj = src[j, i]
            for f in range(F):
                d[f] = sj[f]
