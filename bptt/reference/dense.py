"""The dense layer, y = x·Wᵀ + b, and its backward: the twin of :mod:`bptt.kernels.dense`.

Shapes: x (N, I), W (O, I), b (O,), y (N, O). With y[n, o] = b[o] + Σ_i x[n, i] W[o, i], the
chain rule gives, for an upstream gradient dy = ∂L/∂y:

    ∂L/∂x[n, i] = Σ_o dy[n, o] W[o, i]        dx = dy·W
    ∂L/∂W[o, i] = Σ_n dy[n, o] x[n, i]        dW = dyᵀ·x
    ∂L/∂b[o]    = Σ_n dy[n, o]                db = the column sums of dy
"""
from .activations import activation_forward


def dense_forward(y, x, W, b):
    """y = x·Wᵀ + b.   y : (N, O) output, x : (N, I), W : (O, I), b : (O,)."""
    y[...] = x @ W.T + b


def dense_backward_input(dx, dy, W):
    """dx += dy·W.   dx : (N, I) accumulated, dy : (N, O), W : (O, I)."""
    dx += dy @ W


def dense_backward_params(dW, db, dy, x):
    """dW += dyᵀ·x,  db += Σ_n dy[n].   dW : (O, I), db : (O,) accumulated, dy : (N, O), x : (N, I)."""
    dW += dy.T @ x
    db += dy.sum(axis=0)


# Forms the layers call so that each thread writes what it computed (bptt.kernels.dense).

def dense_forward_act(y, z, x, W, b, code):
    """y = x·Wᵀ + b, z = f(y) (activation ``code``).   y, z : (N, O) outputs."""
    y[...] = x @ W.T + b
    activation_forward(z, y, code)


def dense_forward_kept(y, z, xc, x, W, b, code):
    """:func:`dense_forward_act` (z the same array as y for the identity), and xc = x: the copy of
    x a layer keeps for its backward.   xc : (N, I) output."""
    xc[...] = x
    dense_forward_act(y, z, x, W, b, code)


def dense_input_grad(dx, dy, W):
    """dx = dy·W.   dx : (N, I) output, dy : (N, O), W : (O, I)."""
    dx[...] = dy @ W


def dense_zero_grads(dW, db):
    """dW = 0, db = 0.   dW : (O, I), db : (O,)."""
    dW[...] = 0
    db[...] = 0


def dense_weight_grads(dW, db, dy, x):
    """dW = dyᵀ·x,  db = Σ_n dy[n] (set, not added to).   dW : (O, I), db : (O,) outputs."""
    dW[...] = dy.T @ x
    db[...] = dy.sum(axis=0)


def dense_backward(dW, db, dx, dy, x, W, clear):
    """dW (+)= dyᵀ·x, db (+)= Σ_n dy[n] (set with ``clear``), dx = dy·W."""
    (dense_weight_grads if clear else dense_backward_params)(dW, db, dy, x)
    dense_input_grad(dx, dy, W)
