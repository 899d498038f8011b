"""The torch side of every benchmark job, built from the same arrays as bptt's.

This module imports nothing from bptt, on purpose: :func:`bptt.benchmark.workers.plain_torch_times`
loads it by its file path in a process that imports only numpy and torch, to time torch as a
user's own script runs it. Keep it that way (no ``from .. import``).

A job is (kind, spec): kind ``"cell"`` with spec {cell, B, T, I, H}, ``"char_lm"`` with
``CHAR_LM``, ``"mlp"`` with ``MLP_SPEC`` (see :mod:`bptt.benchmark.problems`). ``data`` holds every
array the step needs, the weights under ``"p.<name>"`` with torch's parameter names.
"""
import numpy as np


def params(data) -> dict:
    """The weights in ``data``, by parameter name."""
    return {k[2:]: v for k, v in data.items() if k.startswith("p.")}


def build_torch(kind: str, spec: dict, data: dict):
    """(step, results) of the job in torch, with parameter names matching bptt's.

    step()     zero_grad, forward, loss or upstream gradient, backward
    results()  {name: array} after a step: outputs, input and weight gradients
    """
    import torch
    nn, F = torch.nn, torch.nn.functional
    T_ = lambda a: torch.from_numpy(np.array(a))  # noqa: E731 - a private copy of the array
    box = {}

    def load(module):
        p = params(data)
        with torch.no_grad():
            for name, w in module.named_parameters():
                w.copy_(T_(p[name]))
        return module

    if kind == "cell":
        Module = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[spec["cell"]]
        m = load(Module(spec["I"], spec["H"], batch_first=True))
        lstm = spec["cell"] == "lstm"
        x, h0, c0 = (T_(data[k]).requires_grad_() for k in ("x", "h0", "c0"))
        dout = T_(data["dout"])
        state = (h0, c0) if lstm else h0

        def step():
            m.zero_grad()
            for t in (x, h0, c0):
                t.grad = None
            box["out"], _ = m(x, state)
            box["out"].backward(dout)

        def results():
            r = {"out": box["out"].detach().numpy(), "dx": x.grad.numpy(), "dh0": h0.grad.numpy()}
            if lstm:
                r["dc0"] = c0.grad.numpy()
            return {**r, **{n: w.grad.numpy() for n, w in m.named_parameters()}}
        return step, results

    if kind in ("char_lm", "mlp"):
        if kind == "char_lm":
            class Net(nn.Module):  # names as bptt's LanguageModel: embedding.*, rnn.*, head.*
                def __init__(self):
                    super().__init__()
                    self.embedding = nn.Embedding(spec["V"], spec["E"])
                    self.rnn = nn.LSTM(spec["E"], spec["H"], batch_first=True)
                    self.head = nn.Linear(spec["H"], spec["V"])

                def forward(self, ids):
                    return self.head(self.rnn(self.embedding(ids))[0])
        else:
            class Net(nn.Module):  # names as bptt's MLP: layers.{k}.weight / .bias
                def __init__(self):
                    super().__init__()
                    s = spec["sizes"]
                    self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(s[:-1], s[1:]))

                def forward(self, v):
                    for k, lin in enumerate(self.layers):
                        v = lin(v) if k == len(self.layers) - 1 else F.relu(lin(v))
                    return v
        m = load(Net())
        x, y = T_(data["x"]), T_(data["y"]).reshape(-1)

        def step():
            m.zero_grad()
            logits = m(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y)
            loss.backward()
            box["loss"] = loss.item()

        return step, lambda: {"loss": np.array([box["loss"]]),
                              **{n: w.grad.numpy() for n, w in m.named_parameters()}}
    raise ValueError(f"unknown job kind {kind!r}")
