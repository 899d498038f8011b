"""The readable twin of every kernel: plain Python and NumPy, one line per equation.

``bptt.kernels`` is fast: Numba loops over tiles and panels, parallel, in a fixed fma order. This
package computes the same things the way a textbook writes them, so that a reader can follow the
math, step through it in ``pdb`` and trust it. Each function here has the *same name and the
same signature* as its fast twin (``bptt.reference.lstm.lstm_backward`` is the twin of
``bptt.kernels.lstm.lstm_backward``): outputs and gradient buffers first, then inputs, and
backward functions add into their gradient buffers (``+=``).

=====================  ===============================================================
module                 what
=====================  ===============================================================
``activations``        every activation f and its derivative f', the three GELU forms
``dense``              y = x·Wᵀ + b and its backward
``losses``             MSE, softmax cross-entropy (gradient p − y), BCE from logits
``embedding``          the table lookup and its scatter-add gradient; the embedding bag
                       (a weighted sum of rows per position: a word's n-grams)
``rnn``                the Elman RNN over a sequence and its BPTT; the input projection
                       and the weight-gradient sums every cell shares
``lstm``, ``gru``      the LSTM and the GRU, gate by gate, forward and BPTT
``dropout``            inverted dropout with the trainer's mask, and its backward
``pooling``            last / mean / max over each padded sequence's valid steps; the
                       whole-sequence mean and unit length of the contrastive encoder
``contrastive``        the in-batch InfoNCE loss and its similarity matrix
=====================  ===============================================================

The recurrent backward passes walk time backwards in an explicit loop,
``for t in reversed(time_steps(T, reverse))`` (``reversed(range(T))`` for the forward direction),
carrying ``dh_next`` = ∂L/∂h_t from the later step to the earlier one.

Run any layer, model or ``bptt`` command on these with ``BPTT_KERNELS=reference`` (or
``bptt --kernels reference ...``): no JIT, slow, and every line steppable in ``pdb``
(:func:`bptt.jit.set_kernels`). tests/test_reference.py compares every pair in float64 to 1e-12.

Stacked and bidirectional networks need no kernels of their own: the layers
(:mod:`bptt.layers.recurrent`) call a cell once per layer and direction, each direction
writing its own columns ``off:off+H`` of the layer output, which is the next layer's input.
"""
