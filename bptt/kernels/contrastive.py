"""The in-batch contrastive loss (InfoNCE) on a matrix of similarities, and that matrix.

B pairs (a_i, b_i): two views of paragraph i. u (B, H) and v (B, H) are their unit-length
embeddings, s = exp(log_scale) = 1/τ the inverse temperature. Each a_i must pick out b_i among all
b_j (the other paragraphs are the negatives), and each b_j its a_j: the loss is symmetric,

    S[i, j] = s ⟨u_i, v_j⟩                                               (B, B) logits
    L = 1/(2B) Σ_i [lse_j S[i, j] − S[i, i]]  +  1/(2B) Σ_j [lse_i S[i, j] − S[j, j]]

with P = softmax over each row of S and Q = softmax over each column:

    ∂L/∂S[i, j] = (P[i, j] + Q[i, j] − 2 [i = j]) / (2B)
    ∂L/∂u_i = s Σ_j ∂L/∂S[i, j] v_j      ∂L/∂v_j = s Σ_i ∂L/∂S[i, j] u_i
    ∂L/∂log_scale = Σ_{i,j} ∂L/∂S[i, j] S[i, j]          (S is linear in s = e^log_scale)
"""
import math

from ..jit import kernel, prange


@kernel
def similarity_forward(S, u, v, scale):
    """S[i, j] = scale · Σ_h u[i, h] v[j, h].

    S : (B, B) output.  u, v : (B, H).  scale : the inverse temperature s.
    """
    B, H = u.shape
    for i in prange(B):
        for j in range(B):
            acc = 0.0
            for h in range(H):
                acc += u[i, h] * v[j, h]
            S[i, j] = scale * acc


@kernel
def similarity_backward(du, dv, dS, u, v, scale):
    """du[i] += s Σ_j dS[i, j] v[j];  dv[j] += s Σ_i dS[i, j] u[i].

    du, dv : (B, H) accumulated.  dS : (B, B) ∂L/∂S.  u, v : (B, H).  scale : s.
    Two passes, each parallel over the rows it writes.
    """
    B, H = u.shape
    for i in prange(B):
        for j in range(B):
            g = scale * dS[i, j]
            for h in range(H):
                du[i, h] += g * v[j, h]
    for j in prange(B):
        for i in range(B):
            g = scale * dS[i, j]
            for h in range(H):
                dv[j, h] += g * u[i, h]


@kernel
def info_nce_rows(row_loss, col_loss, dS, S):
    """The symmetric InfoNCE loss of the logits S and its gradient (overwritten: a loss is where
    backpropagation starts).

    row_loss : (B,) lse_j S[i, j] − S[i, i]  (a_i picking b_i).
    col_loss : (B,) lse_i S[i, j] − S[j, j]  (b_j picking a_j).
    dS : (B, B) output (P + Q − 2I) / (2B).  S : (B, B) logits.
    L = (Σ row_loss + Σ col_loss) / (2B), summed by the caller in a fixed order.
    """
    B = S.shape[0]
    c = 1.0 / (2.0 * B)
    for i in prange(B):                   # rows: P = softmax_j S[i, :]
        m = S[i, 0]
        for j in range(1, B):
            if S[i, j] > m:
                m = S[i, j]
        z = 0.0
        for j in range(B):
            e = math.exp(S[i, j] - m)
            dS[i, j] = e
            z += e
        row_loss[i] = m + math.log(z) - S[i, i]
        for j in range(B):
            dS[i, j] *= c / z
        dS[i, i] -= c
    for j in prange(B):                   # columns: Q = softmax_i S[:, j]; each thread its own column
        m = S[0, j]
        for i in range(1, B):
            if S[i, j] > m:
                m = S[i, j]
        z = 0.0
        for i in range(B):
            z += math.exp(S[i, j] - m)
        col_loss[j] = m + math.log(z) - S[j, j]
        for i in range(B):
            dS[i, j] += c * math.exp(S[i, j] - m) / z
        dS[j, j] -= c
