"""bptt: neural networks with hand-written forward and backward passes as Numba loops.

Layers of the code, each importing only from those below it:
1. ``bptt.kernels``: ``@njit`` loops on arrays;
2. ``bptt.layers``: objects owning parameters, gradients and caches;
3. models and training;
4. the CLI (``cli.py``), which holds no math.
"""
from .jit import get_threads, set_threads
from .layers import (BCEWithLogitsLoss, CrossEntropyLoss, Dense, MLP, MSELoss, bce_with_logits,
                     mse_loss, softmax_cross_entropy)
from .layers import GRU, LSTM, RNN, Embedding
from .gradcheck import gradcheck

__version__ = "0.1.0"
