"""Copy weights between bptt layers and PyTorch modules, both ways.

======================  =========================  ==========================================
torch                   bptt                       notes
======================  =========================  ==========================================
``nn.Linear``           :class:`~bptt.Dense`       identity activation only (Linear has none)
``nn.Embedding``        :class:`~bptt.Embedding`   no ``padding_idx`` / ``max_norm``
``nn.RNN``              :class:`~bptt.RNN`         tanh or relu (torch has no identity RNN)
``nn.LSTM``             :class:`~bptt.LSTM`        no ``proj_size``
``nn.GRU``              :class:`~bptt.GRU`
======================  =========================  ==========================================

Parameter names and shapes are torch's on both sides, so a copy is a loop over
``named_parameters()``. The dtype follows the source (float32 or float64). bptt's recurrent layers
are always batch-first; :func:`to_torch` builds modules with ``batch_first=True``, and
:func:`from_torch` accepts either layout (the weights do not depend on it). Recurrent modules
with ``bias=False`` or ``dropout > 0`` are refused: bptt computes neither.

torch is imported here only, and only when one of the functions is called, so ``import bptt``
never needs it.
"""
from __future__ import annotations

import numpy as np

from .layers.dense import Dense
from .layers.embedding import Embedding
from .layers.recurrent import GRU, LSTM, RNN

__all__ = ["from_torch", "to_torch"]


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("bptt.interop needs PyTorch: pip install torch") from None
    return torch


def _np_dtype(module):
    torch = _torch()
    dt = next(module.parameters()).dtype
    if dt == torch.float32:
        return np.float32
    if dt == torch.float64:
        return np.float64
    raise ValueError(f"only float32 and float64 modules can be copied, got {dt}")


def _torch_dtype(layer):
    torch = _torch()
    return torch.float64 if layer.dtype == np.float64 else torch.float32


def _state_of(module) -> dict:
    return {name: p.detach().cpu().numpy().copy() for name, p in module.named_parameters()}


def from_torch(module):
    """A bptt layer with ``module``'s configuration and a copy of its weights."""
    torch = _torch()
    nn = torch.nn
    if isinstance(module, nn.Linear):
        dtype = _np_dtype(module)
        layer = Dense(module.in_features, module.out_features, bias=module.bias is not None, dtype=dtype)
        state = _state_of(module)
        state.setdefault("bias", np.zeros(module.out_features, dtype))
        layer.load_state(state)
        return layer
    if isinstance(module, nn.Embedding):
        if module.padding_idx is not None or module.max_norm is not None or module.scale_grad_by_freq:
            raise ValueError("Embedding with padding_idx, max_norm or scale_grad_by_freq is not supported by "
                             "bptt.Embedding")
        layer = Embedding(module.num_embeddings, module.embedding_dim, dtype=_np_dtype(module))
        layer.load_state(_state_of(module))
        return layer
    if isinstance(module, (nn.RNN, nn.LSTM, nn.GRU)):
        if not module.bias:
            raise ValueError(f"{type(module).__name__} with bias=False is not supported: bptt's recurrent layers have biases")
        if module.dropout:
            raise ValueError(f"{type(module).__name__} with dropout={module.dropout} is not supported: bptt has no dropout")
        if getattr(module, "proj_size", 0):
            raise ValueError("LSTM with proj_size > 0 is not supported")
        args = (module.input_size, module.hidden_size, module.num_layers, module.bidirectional)
        dtype = _np_dtype(module)
        if isinstance(module, nn.LSTM):
            layer = LSTM(*args, dtype=dtype)
        elif isinstance(module, nn.GRU):
            layer = GRU(*args, dtype=dtype)
        else:
            layer = RNN(*args, activation=module.nonlinearity, dtype=dtype)
        layer.load_state(_state_of(module))
        return layer
    raise ValueError(f"from_torch supports Linear, Embedding, RNN, LSTM and GRU; got {type(module).__name__}")


def to_torch(layer):
    """A torch module with ``layer``'s configuration and a copy of its weights (batch_first=True)."""
    torch = _torch()
    nn = torch.nn
    if not isinstance(layer, (Dense, Embedding, RNN, LSTM, GRU)):
        raise ValueError(f"to_torch supports Dense, Embedding, RNN, LSTM and GRU; got {type(layer).__name__}")
    dtype = _torch_dtype(layer)
    if isinstance(layer, Dense):
        if layer.activation != "identity":
            raise ValueError(f"to_torch: torch.nn.Linear has no activation; this Dense uses {layer.activation!r}")
        module = nn.Linear(layer.in_features, layer.out_features, bias=layer.has_bias, dtype=dtype)
    elif isinstance(layer, Embedding):
        module = nn.Embedding(layer.num_embeddings, layer.embedding_dim, dtype=dtype)
    elif isinstance(layer, (RNN, LSTM, GRU)):
        kw = dict(num_layers=layer.num_layers, bidirectional=layer.bidirectional, batch_first=True, dtype=dtype)
        args = (layer.input_size, layer.hidden_size)
        if isinstance(layer, LSTM):
            module = nn.LSTM(*args, **kw)
        elif isinstance(layer, GRU):
            module = nn.GRU(*args, **kw)
        else:
            if layer.activation not in ("tanh", "relu"):
                raise ValueError(f"to_torch: torch.nn.RNN supports tanh and relu only; this RNN uses {layer.activation!r}")
            module = nn.RNN(*args, nonlinearity=layer.activation, **kw)
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.from_numpy(np.ascontiguousarray(layer.params[name])))
    return module
