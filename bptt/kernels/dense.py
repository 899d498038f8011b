"""Dense (fully connected) layer: y = x·Wᵀ + b, as ``torch.nn.Linear``.

Shapes: x (N, I), W (O, I), b (O,), y (N, O). N is any number of rows (B, or B·T).
"""
from ..jit import kernel, prange


@kernel
def dense_forward(y, x, W, b):
    """y[n, o] = b[o] + Σ_i x[n, i] W[o, i].

    y : (N, O) output, x : (N, I), W : (O, I), b : (O,).
    """
    N, I = x.shape
    O = W.shape[0]
    for n in prange(N):
        for o in range(O):
            acc = b[o]
            for i in range(I):
                acc += x[n, i] * W[o, i]
            y[n, o] = acc


@kernel
def dense_backward_input(dx, dy, W):
    """dx[n, i] += Σ_o dy[n, o] W[o, i]   (∂L/∂x = dy·W).

    dx : (N, I) accumulated, dy : (N, O), W : (O, I).
    """
    N, O = dy.shape
    I = W.shape[1]
    for n in prange(N):
        for o in range(O):
            g = dy[n, o]
            for i in range(I):
                dx[n, i] += g * W[o, i]


@kernel
def dense_backward_params(dW, db, dy, x):
    """dW[o, i] += Σ_n dy[n, o] x[n, i],  db[o] += Σ_n dy[n, o]   (∂L/∂W = dyᵀ·x).

    dW : (O, I) accumulated, db : (O,) accumulated, dy : (N, O), x : (N, I).
    Parallel over output units o, so each dW row has one writer and a fixed summation order.
    """
    N, O = dy.shape
    I = x.shape[1]
    for o in prange(O):
        s = 0.0
        for n in range(N):
            g = dy[n, o]
            s += g
            for i in range(I):
                dW[o, i] += g * x[n, i]
        db[o] += s
