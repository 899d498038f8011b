"""The in-batch contrastive loss (InfoNCE), the twin of :mod:`bptt.kernels.contrastive`.

B pairs of unit vectors (u_i, v_i), two views of paragraph i; s = 1/τ the inverse temperature.

    S = s · u·vᵀ                                   logits: row i scores a_i against every b_j
    L = 1/(2B) Σ_i [lse_j S[i, j] − S[i, i]] + 1/(2B) Σ_j [lse_i S[i, j] − S[j, j]]

Each half is a softmax cross-entropy whose right class is the diagonal, so (as for any softmax
cross-entropy) its gradient is "probability minus one-hot", once along rows (P) and once along
columns (Q):   ∂L/∂S = (P + Q − 2I) / (2B),   ∂L/∂u = s·∂L/∂S·v,   ∂L/∂v = s·(∂L/∂S)ᵀ·u.
"""
import numpy as np


def similarity_forward(S, u, v, scale):
    """S = scale · u·vᵀ.   S : (B, B).  u, v : (B, H)."""
    S[...] = scale * (u @ v.T)


def similarity_backward(du, dv, dS, u, v, scale):
    """du += s·dS·v,  dv += s·dSᵀ·u.   du, dv : (B, H) accumulated.  dS : (B, B)."""
    du += scale * (dS @ v)
    dv += scale * (dS.T @ u)


def info_nce_rows(row_loss, col_loss, dS, S):
    """row_loss[i] = lse_j S[i, j] − S[i, i],  col_loss[j] = lse_i S[i, j] − S[j, j],
    dS = (P + Q − 2I) / (2B) (overwritten).   row_loss, col_loss : (B,).  dS, S : (B, B)."""
    B = S.shape[0]
    rows_max = S.max(axis=1, keepdims=True)
    P = np.exp(S - rows_max)
    row_lse = rows_max[:, 0] + np.log(P.sum(axis=1))
    P /= P.sum(axis=1, keepdims=True)                 # softmax along each row
    cols_max = S.max(axis=0, keepdims=True)
    Q = np.exp(S - cols_max)
    col_lse = cols_max[0] + np.log(Q.sum(axis=0))
    Q /= Q.sum(axis=0, keepdims=True)                 # softmax along each column
    diag = np.diagonal(S)
    row_loss[...] = row_lse - diag
    col_loss[...] = col_lse - diag
    dS[...] = (P + Q - 2 * np.eye(B)) / (2 * B)
