"""The Elman RNN over a sequence and its BPTT; the passes every cell shares. The twin of
:mod:`bptt.kernels.rnn`.

Shapes: T steps, B batch, I inputs, H hidden units, G gates (1 here, 3 GRU, 4 LSTM), D
directions. Sequences are time-major, (T, B, ·). The cell:

    q_t = (W_ih·x_t + b_ih) + W_hh·h_prev + b_hh        h_t = f(q_t)

Forward, unrolled: h0 → h_1 → h_2 → ... → h_T, each h_t feeding the output y_t and the next step.
Backward through time walks the same graph the other way. h_t gets gradient from two places, the
output at step t and the next step, so with dh_next = ∂L/∂h_t carried from step t+1:

    dh_t    = dy_t + dh_next
    dq_t    = dh_t ⊙ f'(q_t)
    dh_next = dq_t·W_hh                     (∂L/∂h_{t-1}: carried to the earlier step)
    dW_hh  += dq_tᵀ·h_{t-1}    dW_ih += dq_tᵀ·x_t    db += Σ_b dq_t    dx_t = dq_t·W_ih

The weight gradients are sums over every step: :func:`input_backward_params` and
:func:`recurrent_backward_params` add them up after the sweep from the stored dq_t.

Direction: ``reverse`` runs t = T-1, ..., 0 (the second half of a bidirectional layer); arrays
are indexed by the true time t. This direction's states live in columns ``off:off+H`` of y.
"""
from .activations import act, dact


def time_steps(T, reverse):
    """The steps in processing order: 0, 1, ..., T-1, or T-1, ..., 0 in reverse."""
    return range(T - 1, -1, -1) if reverse else range(T)


def previous(t, reverse):
    """The step processed just before t (whose state step t reads)."""
    return t + 1 if reverse else t - 1


def rnn_forward(y, q, h0, W_hh, b_hh, off, reverse, code):
    """Forward over the sequence: q_t += W_hh·h_prev + b_hh, h_t = f(q_t).

    y : (T, B, D·H) output; writes y[t, :, off:off+H] = h_t.
    q : (T, B, H) in: the input projection W_ih·x_t + b_ih; out: the pre-activation q_t.
    h0 : (B, H).  W_hh : (H, H).  b_hh : (H,).  off : column offset.  reverse : bool.
    code : activation code (:mod:`bptt.reference.activations`).
    """
    T, B, H = q.shape
    h_prev = h0
    for t in time_steps(T, reverse):
        q[t] += h_prev @ W_hh.T + b_hh                 # q_t = W_ih·x_t + b_ih + W_hh·h_prev + b_hh
        y[t, :, off:off + H] = act(q[t], code)         # h_t = f(q_t)
        h_prev = y[t, :, off:off + H]


def rnn_backward(dq, dh0, dh, dy, dh_n, q, y, W_hh, off, reverse, code):
    """Backpropagation through time, from the last processed step to the first.

        dh_t = dy_t + dh_next      dq_t = dh_t ⊙ f'(q_t)      dh_next = dq_t·W_hh
    and at the end dh0 += dh_next.

    dq : (T, B, H) written: ∂L/∂q_t.  dh0 : (B, H) accumulated.
    dh : (B, H) workspace: holds dh_next.  dy : (T, B, D·H) ∂L/∂y (columns off:off+H).
    dh_n : (B, H) ∂L/∂h_n.  q, y : from :func:`rnn_forward`.  W_hh : (H, H).
    """
    T, B, H = q.shape
    dh_next = dh
    dh_next[...] = dh_n                                 # the gradient arriving from after the end
    for t in reversed(time_steps(T, reverse)):
        h_t = y[t, :, off:off + H]
        dh_t = dy[t, :, off:off + H] + dh_next          # h_t feeds the output and the next step
        dq[t] = dh_t * dact(q[t], h_t, code)            # through h_t = f(q_t)
        dh_next[...] = dq[t] @ W_hh                     # through q_t = ... + W_hh·h_{t-1}
    dh0 += dh_next


def input_forward(g, x, W, b):
    """The input projection of every step at once: g_t = W·x_t + b.

    g : (T, B, G·H) output.  x : (T, B, I).  W : (G·H, I).  b : (G·H,).
    """
    g[...] = x @ W.T + b


def input_backward(dx, dg, W, clear=False):
    """dx_t += dg_t·W for every step.   dx : (T, B, I) accumulated (set, with ``clear``).
    dg : (T, B, G·H).  W : (G·H, I)."""
    if clear:
        dx[...] = 0
    dx += dg @ W


def input_backward_params(dW_ih, db_ih, dg, x, clear=False):
    """dW_ih += Σ_t dg_tᵀ·x_t,  db_ih += Σ_t Σ_b dg_t: the input weights are shared by every step.

    dW_ih : (G·H, I), db_ih : (G·H,) accumulated (set, with ``clear``).  dg : (T, B, G·H).
    x : (T, B, I).
    """
    if clear:
        dW_ih[...] = 0
        db_ih[...] = 0
    for t in range(dg.shape[0]):
        dW_ih += dg[t].T @ x[t]
        db_ih += dg[t].sum(axis=0)


def recurrent_backward_params(dW_hh, db_hh, dgh, y, h0, off, reverse, clear=False):
    """dW_hh += Σ_t dgh_tᵀ·h_prev_t,  db_hh += Σ_t Σ_b dgh_t, h_prev_t the state step t read
    (h0 for the first processed step).

    dW_hh : (G·H, H), db_hh : (G·H,) accumulated (set, with ``clear``).  dgh : (T, B, G·H)
    ∂L/∂(W_hh·h_prev + b_hh).  y : (T, B, D·H) the states (columns off:off+H).  h0 : (B, H).
    """
    if clear:
        dW_hh[...] = 0
        db_hh[...] = 0
    T, H = dgh.shape[0], h0.shape[1]
    steps = time_steps(T, reverse)
    for t in steps:
        h_prev = h0 if t == steps[0] else y[previous(t, reverse), :, off:off + H]
        dW_hh += dgh[t].T @ h_prev
        db_hh += dgh[t].sum(axis=0)


def weight_grads_shared(dW_ih, db_ih, dW_hh, db_hh, dg, x, y, h0, off, reverse, filled=False, clear=False):
    """Both weight-gradient passes of a cell whose recurrent gradient is dg itself (RNN, LSTM):
    :func:`input_backward_params`, then :func:`recurrent_backward_params` with dgh = dg (``clear``:
    set, not added to). (The kernels' ``filled``, dg in the sweep's panels, is a layout this
    twin's sweep never uses: it always writes dg.)"""
    input_backward_params(dW_ih, db_ih, dg, x, clear)
    recurrent_backward_params(dW_hh, db_hh, dg, y, h0, off, reverse, clear)


def previous_states(X, y, h0, off, reverse):
    """X[t·B + b] = h_prev_t[b], the state step t read (h0 for the first processed step).
    X : (T·B, H).  y : (T, B, D·H) the states (columns off:off+H).  h0 : (B, H)."""
    T, B, H = y.shape[0], y.shape[1], h0.shape[1]
    steps = time_steps(T, reverse)
    for t in steps:
        h_prev = h0 if t == steps[0] else y[previous(t, reverse), :, off:off + H]
        X[t * B:(t + 1) * B] = h_prev


# From SPLIT_B sequences on, the fast module runs these sums by batch half (a split that changes
# the order of the additions, not the sums): the same functions, under the fast kernels' names.
_input_backward_params_halves = input_backward_params
_recurrent_backward_params_halves = recurrent_backward_params


def swap_01(dst, src, to_time_major):
    """dst[i, j] = src[j, i]: (B, T, F) to (T, B, F) and back (a copy, either way)."""
    dst[...] = src.transpose(1, 0, 2)
