"""Elman RNN cell over a whole sequence, and the weight-gradient passes every cell shares.

Shapes: T time steps, B batch, H hidden units, D directions (1 or 2), G gates (1 here).
Layout is time-major: a sequence is (T, B, ·), so one time step is a contiguous (B, ·) block.

    q_t = (W_ih·x_t + b_ih) + W_hh·h_{t-1} + b_hh        h_t = f(q_t)

The caller computes the input projection W_ih·x_t + b_ih for *every* t in one pass before the
recurrence (``dense_forward`` on the (T·B, I) rows), so the time loop touches only W_hh. Backward
keeps dq_t for every step, so that dW_ih, dW_hh, the biases and dx are each one big pass over all
N = T·B rows after the sweep (:func:`input_backward_params`, :func:`recurrent_backward_params`,
:func:`input_backward`). These three are shared by every cell.

Why not ``dense_backward_params`` / ``dense_backward_input`` for the input side: those add each
product straight into the output array, and Numba optimises such loops differently in a freshly
compiled parallel build and in one loaded from the on-disk cache (FMA contraction), so their bits
can differ between thread counts. Here every sum runs in a register in a fixed order and is added
to the output once, which keeps serial and parallel builds bitwise equal.

Direction. Every recurrent kernel takes ``reverse``: False runs t = 0, 1, ..., T-1; True runs
t = T-1, ..., 0 (the backward half of a bidirectional layer). Arrays are always indexed by the true
time t, so the reverse direction needs no reversed copy of x. "Previous" means previous in
processing order: h_{t-1} forward, h_{t+1} in reverse; the first processed step reads h0.

Output columns. The hidden states go straight into the layer's output y (T, B, D·H): this
direction owns the columns ``off:off+H`` (0 forward, H reverse), so a bidirectional layer's
output is assembled without a copy and the next layer reads it as its input.

Parallelism. The cell kernels run ``prange`` over the batch rows b with the time loop inside:
sequences are independent, so a whole forward or backward sweep is one parallel region (not one
per step), and each row's state is written by one thread. The weight-gradient passes run over
the output units u, the dx pass over the rows n. No sum is split across threads.
"""
from ..jit import kernel, prange
from .activations import act, dact


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
    for b in prange(B):  # sequences are independent: one parallel region, the time loop inside
        for s in range(T):
            t = T - 1 - s if reverse else s
            # h_prev: h0 at the first processed step, else the previous step's columns of y
            hp = h0 if s == 0 else y[t + 1 if reverse else t - 1]
            hoff = 0 if s == 0 else off
            for o in range(H):
                acc = q[t, b, o] + b_hh[o]
                for j in range(H):
                    acc += W_hh[o, j] * hp[b, hoff + j]
                q[t, b, o] = acc
                y[t, b, off + o] = act(acc, code)


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
    for b in prange(B):
        for o in range(H):
            dh[b, o] = dh_n[b, o]
        for s in range(T - 1, -1, -1):
            t = T - 1 - s if reverse else s
            for o in range(H):
                g = dy[t, b, off + o] + dh[b, o]
                dq[t, b, o] = g * dact(q[t, b, o], y[t, b, off + o], code)
            for j in range(H):
                acc = 0.0
                for o in range(H):
                    acc += dq[t, b, o] * W_hh[o, j]
                dh[b, j] = acc
        for o in range(H):
            dh0[b, o] += dh[b, o]


@kernel
def input_backward_params(dW_ih, db_ih, dg, x):
    """Input-side weight gradients in one pass over all N = T·B rows, for every cell:

        dW_ih[u, i] += Σ_n dg[n, u] · x[n, i]      db_ih[u] += Σ_n dg[n, u]

    dW_ih : (G·H, I) accumulated.  db_ih : (G·H,) accumulated.
    dg : (N, G·H) gate pre-activation gradients of every step, rows n = t·B + b.
    x : (N, I) the layer's input, rows as in dg.
    Parallel over the rows u; each sum runs over n in order, in a register.
    """
    N, GH = dg.shape
    I = x.shape[1]
    for u in prange(GH):
        sb = 0.0
        for n in range(N):
            sb += dg[n, u]
        db_ih[u] += sb
        for i in range(I):
            acc = 0.0
            for n in range(N):
                acc += dg[n, u] * x[n, i]
            dW_ih[u, i] += acc


@kernel
def input_backward(dx, dg, W_ih):
    """dx[n, i] += Σ_u dg[n, u] · W_ih[u, i]   (∂L/∂x_t = dg_t·W_ih for every step at once).

    dx : (N, I) accumulated (both directions of a layer add into it).
    dg : (N, G·H) gate pre-activation gradients, rows n = t·B + b.  W_ih : (G·H, I).
    Parallel over the rows n.
    """
    N, GH = dg.shape
    I = W_ih.shape[1]
    for n in prange(N):
        for i in range(I):
            acc = 0.0
            for u in range(GH):
                acc += dg[n, u] * W_ih[u, i]
            dx[n, i] += acc


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
    Parallel over the rows u; each sum runs over (t, b) in order, in a register.
    """
    T, B, GH = dgh.shape
    H = h0.shape[1]
    for u in prange(GH):
        sb = 0.0
        for t in range(T):
            for b in range(B):
                sb += dgh[t, b, u]
        db_hh[u] += sb
        for j in range(H):
            acc = 0.0
            for t in range(T):
                first = t == T - 1 if reverse else t == 0
                if first:
                    for b in range(B):
                        acc += dgh[t, b, u] * h0[b, j]
                else:
                    tp = t + 1 if reverse else t - 1
                    for b in range(B):
                        acc += dgh[t, b, u] * y[tp, b, off + j]
            dW_hh[u, j] += acc
