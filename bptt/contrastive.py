"""Layer 3: a text encoder trained contrastively, so that its vectors find what a text means.

    tokens (2B, T) ─ Embedding(V, E) [+ EmbeddingBag(S, E) of n-grams] ─ [Dropout] ─ RNN/LSTM/GRU × L (bidirectional allowed,
      [Dropout] between layers) ─> (2B, T, D·H) ─ mean over T ─> z (2B, D·H) ─ split ─> za, zb (B, D·H)
      ─ InfoNCE ─> L

With ``subwords`` S > 0 the tokenizer is a :class:`~bptt.data.SubwordTokenizer`: a token is a
row ``[word id, n-gram ids …]`` (so ids are (2B, T, 1 + K)), and its input vector is its word's
row plus the mean of its character n-grams' rows (fastText), so that words the vocabulary lacks
(names, versions, paths) still get vectors that say what they are made of.

Training pairs come from unlabelled text. Each paragraph gives two *views*; in a batch of B
paragraphs, view a_i must be nearer to b_i than to every other paragraph's view (the in-batch
negatives), and the other way round (:class:`~bptt.layers.contrastive.InfoNCELoss`, symmetric).

Views (:data:`VIEWS`) are made by a function ``make(paragraphs, rng, config) -> (ids_a, ids_b)``,
two (B, T) id arrays. ``crop`` cuts two independent random spans, of one length T per batch, so
the 2B views run as one batch with no padding; a batch is a random window of the paragraphs
sorted by length, so that T is a similar fraction of each. ``dropout`` (as SimCSE) returns one
such span twice; the views then differ only by their dropout masks. With ``dropout`` p > 0 the
encoder applies inverted dropout (:class:`~bptt.layers.dropout.Dropout`) to the embedding output
and between stacked layers (:class:`~bptt.sequence.RecurrentEncoder`, as ``bptt fit --text``).
The 2B rows run as one batch, so every row, and so each of a paragraph's two views, gets its own
mask, drawn from the trainer's seeded generator (resume stays exact). Dropout is on only when a
generator is passed (training); validation, ``bptt embed``, ``search`` and ``retrieval`` run
without one.

Mean pooling's backward gives every step ∂L/∂z / T, and BPTT carries it through the stack. The
trainer keeps the language model trainer's habits: a run folder with ``checkpoint.bptt``,
``best.bptt`` (the best validation MRR) and ``metrics.jsonl``, exact resume, Ctrl-C saves, a NaN
guard. Two sets of paragraphs are held out from training:

- validation (``val_fraction``, ``validation.txt``): the retrieval benchmark (:mod:`bptt.retrieval`)
  on them picks ``best.bptt``, and the hybrid search's fusion weight α is fitted on them
  (:func:`bptt.retrieval.fit_fusion`, stored in each checkpoint under ``"fusion"``);
- test (``test_fraction``, ``heldout.txt``): used for nothing in training, so that
  ``bptt retrieval RUN RUN/heldout.txt`` reports numbers nothing was chosen on.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import CheckpointError, checkpoint_kind, load_checkpoint, save_checkpoint
from .data import UNK_ID, SubwordTokenizer, fit_tokenizer, tokenizer_from_dict
from .kernels.pooling import mean_pool_backward, mean_pool_forward
from .config import SavedConfig
from .layers.base import Parameterised, as_dtype, load_params
from .layers.contrastive import InfoNCELoss
from .layers.dropout import Dropout
from .layers.embedding import Embedding, EmbeddingBag
from .lexical import LEXICAL
from .model import CELLS, check_stack_config
from .optim import clip_grad_norm, make_optimizer
from .retrieval import (
    centred_cosines,
    cosine_scores,
    fit_fusion,
    gold_ranks,
    lexical_scores,
    metrics_from_ranks,
    paragraphs,
    split_pair,
)
from .train import (BEST_NAME, CHECKPOINT_NAME, TrainingError, append_metrics, ctrl_c_stops, save_at_end,
                    stop_reason, trim_metrics)

KIND = "contrastive"
HELDOUT_NAME = "heldout.txt"
VALIDATION_NAME = "validation.txt"
RESUME_KEYS = ("config", "model_config", "model", "tokenizer", "step", "optim", "rng", "data", "metrics")


@dataclass
class EncoderConfig(SavedConfig):
    """What an encoder is, saved in every checkpoint."""
    vocab_size: int
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    embed_dim: int = 128
    bidirectional: bool = False
    temperature: float = 0.05
    learn_temperature: bool = False
    dtype: str = "float32"
    seed: int = 0
    dropout: float = 0.0
    subword_buckets: int = 0   # S: rows of the n-gram table (0: no n-grams, as before 2026-12-01)


class Encoder(Parameterised):
    """Embedding → recurrent stack → mean pooling, trained with :class:`InfoNCELoss`.

    ``hidden_states(ids)`` has the language model's signature, so :func:`bptt.generate.embed_texts`
    embeds with either. Parameters are named as in the language model (``embedding.weight``,
    ``rnn.weight_ih_l0`` …) plus ``loss.log_scale``, so a language model's weights load by name.
    """

    default_pool = "mean"

    def __init__(self, config: EncoderConfig):
        p = check_stack_config(config)
        self.config = config
        self.dtype = as_dtype(config.dtype)
        rng = np.random.default_rng(config.seed)
        self.embedding = Embedding(config.vocab_size, config.embed_dim, dtype=self.dtype, rng=rng)
        if p > 0:   # the same parameter names, with dropout between the layers
            from .sequence import RecurrentEncoder
            self.rnn = RecurrentEncoder(config.cell, config.embed_dim, config.hidden, config.layers,
                                        bool(config.bidirectional), p, dtype=self.dtype, rng=rng)
            self.drop = Dropout(p, dtype=self.dtype)
        else:
            self.rnn = CELLS[config.cell](config.embed_dim, config.hidden, num_layers=config.layers,
                                          bidirectional=bool(config.bidirectional), dtype=self.dtype, rng=rng)
            self.drop = None
        self.check_dropout_seed = None   # gradcheck: the same dropout masks on every forward
        self.loss = InfoNCELoss(config.temperature, config.learn_temperature, dtype=self.dtype)
        self.parts = {"embedding": self.embedding, "rnn": self.rnn, "loss": self.loss}
        self.subword = None   # drawn last, so the other weights are those of an encoder without it
        if config.subword_buckets:
            self.subword = EmbeddingBag(config.subword_buckets, config.embed_dim, mode="mean",
                                        dtype=self.dtype, rng=rng)
            self.parts["subword"] = self.subword
        self._bag = False
        self.params = {f"{p}.{k}": v for p, part in self.parts.items() for k, v in part.params.items()}
        self.grads = {f"{p}.{k}": v for p, part in self.parts.items() for k, v in part.grads.items()}

    @property
    def width(self) -> int:
        return self.config.hidden * (2 if self.config.bidirectional else 1)

    def trainable(self) -> dict:
        """The parameters the optimiser updates (the temperature only if it is learnt)."""
        keep = {f"loss.{k}" for k in self.loss.trainable()}
        return {k: v for k, v in self.params.items() if not k.startswith("loss.") or k in keep}

    def load_state(self, state, *, partial: bool = False) -> list[str]:
        """Copy parameters by name. ``partial``: load those present (a language model's), skip the
        rest, and return the names loaded; otherwise every parameter must be there."""
        return load_params(self.params, state, partial=partial)

    # -- forward / backward ---------------------------------------------------------------------
    def _embed(self, ids):
        """The input vectors (B, T, E): word rows, plus the mean n-gram rows for (B, T, 1 + K) ids."""
        if isinstance(ids, np.ndarray) and ids.ndim == 3:
            if self.subword is None:
                raise ValueError(f"ids of shape {ids.shape} carry n-grams, but this encoder has no "
                                 f"subword table; pass (B, T) word ids")
            self._bag = True
            return self.embedding.forward(ids[..., 0]) + self.subword.forward(ids[..., 1:])
        self._bag = False
        return self.embedding.forward(ids)

    def hidden_states(self, ids: np.ndarray, state=None, rng=None):
        """The top layer's states (B, T, D·H) and the final state (None with dropout). Dropout
        (if any) is on when a generator ``rng`` is given to draw its masks, one per row. ``ids``:
        (B, T) word ids, or (B, T, 1 + K) rows of a subword tokenizer."""
        e = self._embed(ids)
        if self.drop is None:
            return self.rnn.forward(e, state)
        self.drop.train(rng is not None)
        self.rnn.train(rng is not None)
        e = self.drop.forward(e, rng)
        lengths = np.full(ids.shape[0], ids.shape[1], np.int64)
        return self.rnn.forward(e, lengths, rng, state), None

    def _backward_states(self, dhs):
        de = self.rnn.backward(dhs)
        de = self.drop.backward(de) if self.drop is not None else de
        self.embedding.backward(de)
        if self._bag:
            self.subword.backward(de)

    def encode(self, ids: np.ndarray) -> np.ndarray:
        """Mean-pooled embeddings (B, D·H) of equal-length token rows (B, T) or (B, T, 1 + K)."""
        hs, _ = self.hidden_states(ids)
        z = np.empty((hs.shape[0], hs.shape[2]), self.dtype)
        mean_pool_forward(z, hs)
        return z

    def loss_and_grad(self, ids_a: np.ndarray, ids_b: np.ndarray, dloss: float = 1.0, rng=None) -> float:
        """InfoNCE of the two views (B, T) each; accumulates every gradient (times ``dloss``).
        ``rng`` draws the dropout masks (dropout is off without it)."""
        if ids_a.shape != ids_b.shape:
            raise ValueError(f"ids_a and ids_b must have one shape, got {ids_a.shape} and {ids_b.shape}")
        B = ids_a.shape[0]
        hs, _ = self.hidden_states(np.concatenate([ids_a, ids_b]), rng=rng)
        z = np.empty((2 * B, hs.shape[2]), self.dtype)
        mean_pool_forward(z, hs)
        loss = self.loss.forward(z[:B], z[B:])
        dza, dzb = self.loss.backward(dloss)
        dhs = np.zeros_like(hs)
        mean_pool_backward(dhs, np.concatenate([dza, dzb]))
        self._backward_states(dhs)
        return loss

    # gradcheck interface: the loss as a function of every parameter (ids and dropout masks held
    # fixed: with ``check_dropout_seed`` set, every forward draws the same masks).
    def _check_rng(self):
        seed = self.check_dropout_seed
        return None if seed is None else np.random.default_rng(seed)

    def check_forward(self, ids_a, ids_b):
        self._check_ids = (ids_a, ids_b)
        hs, _ = self.hidden_states(np.concatenate([ids_a, ids_b]), rng=self._check_rng())
        z = np.empty((hs.shape[0], hs.shape[2]), self.dtype)
        mean_pool_forward(z, hs)
        B = ids_a.shape[0]
        return (np.array([self.loss.forward(z[:B], z[B:])]),)

    def check_backward(self, dloss):
        self.loss_and_grad(*self._check_ids, dloss=float(dloss[0]), rng=self._check_rng())
        return {}


# -- views ---------------------------------------------------------------------------------------
def crop_views(paras: list, rng: np.random.Generator, config) -> tuple[np.ndarray, np.ndarray]:
    """Two independent random spans of each paragraph (token id arrays), all of one length

        T = clip(round(r · shortest), crop_min, min(crop_max, shortest)),  r ~ U[crop_low, crop_high]

    so a crop covers a random fraction of the paragraph (as Contriever's random cropping), and
    the views can be stacked into one (B, T) batch with no padding."""
    shortest = min(len(p) for p in paras)
    r = rng.uniform(config.crop_low, config.crop_high)
    T = int(min(max(round(r * shortest), config.crop_min), config.crop_max, shortest))
    a = np.empty((len(paras), T) + paras[0].shape[1:], np.int64)   # (B, T) or (B, T, 1 + K)
    b = np.empty_like(a)
    for i, p in enumerate(paras):
        s1, s2 = rng.integers(0, len(p) - T + 1, size=2)
        a[i] = p[s1:s1 + T]
        b[i] = p[s2:s2 + T]
    return a, b


def disjoint_views(paras: list, rng: np.random.Generator, config) -> tuple[np.ndarray, np.ndarray]:
    """Two random spans of each paragraph that do not overlap, of one length T per batch,

        T = clip(round(r · shortest), crop_min, min(crop_max, shortest // 2)),  r ~ U[crop_low, crop_high]

    so the views share topic, not text (as a query and the passage that answers it); which span
    comes first in the paragraph is random."""
    shortest = min(len(p) for p in paras)
    r = rng.uniform(config.crop_low, config.crop_high)
    T = int(max(1, min(max(round(r * shortest), config.crop_min), config.crop_max, shortest // 2)))
    a = np.empty((len(paras), T) + paras[0].shape[1:], np.int64)
    b = np.empty_like(a)
    for i, p in enumerate(paras):
        s1 = int(rng.integers(0, len(p) - 2 * T + 1))
        s2 = int(rng.integers(s1 + T, len(p) - T + 1))
        first, second = p[s1:s1 + T], p[s2:s2 + T]
        if rng.random() < 0.5:
            first, second = second, first
        a[i], b[i] = first, second
    return a, b


def dropout_views(paras: list, rng: np.random.Generator, config) -> tuple[np.ndarray, np.ndarray]:
    """One random span of each paragraph (as :func:`crop_views` cuts it), twice: the two views
    differ only by the dropout masks the encoder draws for each row (SimCSE)."""
    a, _ = crop_views(paras, rng, config)
    return a, a.copy()


VIEWS = {"crop": crop_views, "disjoint": disjoint_views, "dropout": dropout_views}


def mask_tokens(ids: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """``ids`` (B, T) or (B, T, 1 + K) with the tokens where ``masked`` (B, T) is true made <unk>:
    word id 0 and, for subword rows, no n-grams (-1)."""
    if ids.ndim == 2:
        return np.where(masked, UNK_ID, ids)
    out = ids.copy()
    out[masked] = -1
    out[masked, 0] = UNK_ID
    return out


# -- training ------------------------------------------------------------------------------------
# The word tokenizer's buckets for words outside the vocabulary, and the count below which a word
# goes to them; chosen on validation paragraphs (docs/embeddings.md, "Words outside the vocabulary").
DEFAULT_OOV_BUCKETS = 4096
DEFAULT_MIN_COUNT = 2


class ContrastiveError(TrainingError):
    """Training stopped for a reason the user must see (a NaN loss, a bad resume): a
    :class:`~bptt.train.TrainingError`, so the CLI shows it as one line like the other trainers'."""


@dataclass
class ContrastiveConfig(SavedConfig):
    """Every option of a contrastive run. Saved in the checkpoint."""
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    embed_dim: int = 128
    bidirectional: bool = False
    tokenizer: str = "word"
    max_vocab: int = 20000
    lowercase: bool = True
    oov_buckets: int | None = None   # None: DEFAULT_OOV_BUCKETS for a word tokenizer fitted here, else 0
    subwords: int = 0                # S > 0: hashed character n-gram buckets per word (SubwordTokenizer)
    min_count: int | None = None     # None: DEFAULT_MIN_COUNT with buckets, else 1
    init_from: str | None = None
    views: str = "crop"
    dropout: float = 0.0
    mask: float = 0.3       # chosen on validation paragraphs (docs/embeddings.md); 0.15 before 2026-12-01 (second change), 0 before that
    crop_low: float = 0.25
    crop_high: float = 0.6
    crop_min: int = 8
    crop_max: int = 128
    min_tokens: int = 12
    min_words: int = 16     # held-out paragraphs need this many words (retrieval's MIN_WORDS; 16 before it was an option)
    batch_size: int = 64
    temperature: float = 0.05
    learn_temperature: bool = False
    steps: int | None = 1000
    minutes: float | None = None
    lr: float = 1e-3
    optimizer: str = "adam"
    clip: float | None = 1.0
    val_every: int = 200
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    val_pairs: int = 1000
    seed: int = 0
    dtype: str = "float32"
    sources: list = field(default_factory=list)

    @classmethod
    def from_dict(cls, d):
        if "oov_buckets" not in d:     # a run from before the buckets: every unseen word was <unk>
            d = {**d, "oov_buckets": 0, "min_count": 1}
        if "subwords" not in d:        # a run from before the n-grams
            d = {**d, "subwords": 0}
        if "mask" not in d:            # (every saved config has it; the default was 0)
            d = {**d, "mask": 0.0}
        if "test_fraction" not in d:   # a run from before the validation/test split: its held-out
            d = {**d, "test_fraction": d.get("val_fraction", 0.1), "val_fraction": 0.0}   # set was both
        return super().from_dict(d)

    def validate(self):
        for name in ("hidden", "layers", "embed_dim", "max_vocab", "crop_min", "crop_max", "min_tokens",
                     "min_words", "batch_size", "temperature", "lr", "val_every", "val_pairs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise ValueError(f"{name} must be positive and finite, got {v!r}")
        if isinstance(self.min_words, bool) or not isinstance(self.min_words, int) or self.min_words < 2:
            raise ValueError(f"min_words must be an integer >= 2 (a query and a document of 1+ words), "
                             f"got {self.min_words!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (the other paragraphs are the negatives), got {self.batch_size}")
        if not 0 < self.crop_low <= self.crop_high <= 1:
            raise ValueError(f"crop fractions must satisfy 0 < low <= high <= 1, got {self.crop_low}, {self.crop_high}")
        if self.crop_min > self.crop_max:
            raise ValueError(f"crop_min ({self.crop_min}) must not exceed crop_max ({self.crop_max})")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0 <= self.val_fraction < 1 or self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction must be in [0, 1) and leave paragraphs for training with "
                             f"test_fraction {self.test_fraction}, got {self.val_fraction}")
        if not 0 <= self.mask < 1:
            raise ValueError(f"mask must be in [0, 1), got {self.mask}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.views == "dropout" and self.dropout == 0:
            raise ValueError("views 'dropout' needs dropout > 0: its two views differ only by their dropout masks")
        if self.views not in VIEWS:
            raise ValueError(f"views must be one of {', '.join(VIEWS)}; got {self.views!r}")
        if self.steps is None and self.minutes is None:
            raise ValueError("give a length for the run: steps or minutes")
        for name, low in (("oov_buckets", 0), ("min_count", 1)):   # None: automatic (resolve_vocabulary)
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        if isinstance(self.subwords, bool) or not isinstance(self.subwords, int) or self.subwords < 0:
            raise ValueError(f"subwords must be an integer >= 0, got {self.subwords!r}")
        if self.subwords and self.tokenizer != "word":
            raise ValueError("subwords (character n-grams of each word) need the word tokenizer")
        if (self.oov_buckets or (self.min_count or 1) > 1) and (self.tokenizer != "word" or self.init_from):
            raise ValueError("oov_buckets and min_count apply to the word tokenizer fitted by this run; "
                             "not with the char tokenizer or init_from (whose tokenizer is kept)")

    def resolve_vocabulary(self) -> None:
        """Replace the automatic (None) oov_buckets and min_count by their values for this run."""
        fitted_words = self.tokenizer == "word" and not self.init_from
        if self.oov_buckets is None:
            self.oov_buckets = DEFAULT_OOV_BUCKETS if fitted_words else 0
        if self.min_count is None:
            self.min_count = DEFAULT_MIN_COUNT if self.oov_buckets else 1


def split_paragraphs(text: str, val_fraction: float, seed: int, min_words: int = 16,
                     test_fraction: float = 0.1):
    """(training, validation, test) paragraphs of ``text`` (blocks separated by blank lines), seeded.

    Of the paragraphs of at least ``min_words`` words (the benchmark's own rule), in a seeded
    order, the first ``test_fraction`` are the test set and the next ``val_fraction`` the
    validation set (at least 2 each); every other non-empty paragraph, short ones too, is for
    training. ``val_fraction`` 0 (runs from before the split) validates on the test set, which is
    then the same list object.
    """
    blocks = paragraphs(text, 1)
    long = [i for i, p in enumerate(blocks) if len(p.split()) >= min_words]
    order = np.random.default_rng(seed).permutation(len(long))
    n_test = max(2, round(test_fraction * len(long)))
    n_val = max(2, round(val_fraction * len(long))) if val_fraction > 0 else 0
    if len(long) < n_test + n_val + 2:
        raise ValueError(f"the text has {len(long)} paragraph(s) of at least {min_words} words "
                         f"(blocks separated by blank lines); contrastive training needs "
                         f"{n_test + n_val + 2} or more to hold out {n_test} for testing and "
                         f"{n_val} for validation")
    test_ids = {long[i] for i in order[:n_test]}
    val_ids = {long[i] for i in order[n_test:n_test + n_val]}
    test = [blocks[i] for i in sorted(test_ids)]
    val = [blocks[i] for i in sorted(val_ids)] if n_val else test
    train = [p for i, p in enumerate(blocks) if i not in test_ids and i not in val_ids]
    return train, val, test


def load_encoder_checkpoint(path, required=("config", "model_config", "model", "tokenizer")) -> dict:
    ckpt = load_checkpoint(path, required=required)
    if ckpt.get("kind") != KIND:
        raise CheckpointError(f"{path}: not a contrastive encoder checkpoint")
    return ckpt


def load_embedder(path):
    """(model, tokenizer, checkpoint) from a language-model or a contrastive-encoder checkpoint
    (a file or a run folder): anything :func:`bptt.generate.embed_texts` can embed with."""
    from .train import load_model
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    ckpt = load_checkpoint(p)
    if ckpt.get("kind") != KIND:
        return load_model(p)
    try:
        model = Encoder(EncoderConfig.from_dict(ckpt["model_config"]))
        model.load_state(ckpt["model"])
        tok = tokenizer_from_dict(ckpt["tokenizer"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{p}: checkpoint content is inconsistent ({e})") from None
    return model, tok, ckpt


def load_init_model(path):
    """(model, tokenizer, checkpoint) of the language model an encoder starts from (``init_from``:
    a file or a run folder). Any other kind of checkpoint is a CheckpointError naming it: only a
    language model has the cell, sizes and weight names an encoder copies."""
    from .train import load_model
    p = Path(path)
    ckpt = load_checkpoint(p / CHECKPOINT_NAME if p.is_dir() else p)
    if ckpt.get("kind") != "lm":
        raise CheckpointError(f"--init-from {path} is {checkpoint_kind(ckpt.get('kind'))}; it takes a "
                              f"language-model checkpoint of `bptt train`")
    return load_model(p)


def _fingerprint(paras) -> str:
    h = hashlib.sha256()
    for p in paras:
        h.update(p.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


TEXT_DIFFERS = ("the text differs from the one this run was trained on; resume with the same files "
                "(or none, for the built-in corpus)")


class ContrastiveTrainer:
    """Builds (or resumes) a run in ``out_dir`` and trains it; ``run(on_event)`` as
    :class:`bptt.train.Trainer` (events ``"step"``, ``"val"``, ``"save"``)."""

    def __init__(self, config: ContrastiveConfig, out_dir, text: str, checkpoint: dict | None = None):
        config.validate()
        config.resolve_vocabulary()
        self.config = config
        self.out_dir = Path(out_dir)
        try:
            self.train_paras, self.val_paras, self.test_paras = split_paragraphs(
                text, config.val_fraction, config.seed, min_words=config.min_words,
                test_fraction=config.test_fraction)
        except ValueError:
            if checkpoint is None:
                raise
            raise ContrastiveError(TEXT_DIFFERS) from None   # the run's own text split with this config
        separate = self.val_paras is not self.test_paras
        self.fingerprint = _fingerprint(self.train_paras + self.test_paras + (self.val_paras if separate else []))
        if checkpoint is not None:   # the text is judged before anything else about it
            data = checkpoint["data"]
            if not isinstance(data, dict) or "fingerprint" not in data:
                raise CheckpointError(f"{self.out_dir / CHECKPOINT_NAME}: checkpoint content is "
                                      f"inconsistent (no fingerprint of the text)")
            if data["fingerprint"] != self.fingerprint:
                raise ContrastiveError(TEXT_DIFFERS)
        lm = None
        if checkpoint is not None:
            self.tokenizer = tokenizer_from_dict(checkpoint["tokenizer"])
        elif config.init_from:
            lm, self.tokenizer, lm_ckpt = load_init_model(config.init_from)
            mc = lm_ckpt["model_config"]
            config.cell, config.hidden, config.layers, config.embed_dim = (
                mc["cell"], mc["hidden"], mc["layers"], mc["embed_dim"])
            config.tokenizer = self.tokenizer.kind
        else:
            self.tokenizer = fit_tokenizer(config.tokenizer, "\n\n".join(self.train_paras),
                                           max_vocab=config.max_vocab, lowercase=config.lowercase,
                                           oov_buckets=config.oov_buckets, min_count=config.min_count)
        if config.subwords and not isinstance(self.tokenizer, SubwordTokenizer):
            if self.tokenizer.kind != "word":
                raise ValueError(f"subwords need a word tokenizer; {config.init_from} has a "
                                 f"{self.tokenizer.kind} tokenizer")
            self.tokenizer = SubwordTokenizer.from_word(self.tokenizer, config.subwords)
        self.train_ids = [ids for ids in (self.tokenizer.encode(p) for p in self.train_paras)
                          if len(ids) >= config.min_tokens]
        if len(self.train_ids) < config.batch_size:
            raise ValueError(f"only {len(self.train_ids)} training paragraphs have {config.min_tokens}+ "
                             f"tokens, fewer than --batch-size {config.batch_size}")
        # A batch is a random window of the paragraphs sorted by length: paragraphs of similar
        # length, so the one crop length per batch is a similar fraction of each.
        self.by_length = np.argsort([len(ids) for ids in self.train_ids], kind="stable")
        self.val_queries, self.val_docs = zip(*[split_pair(p) for p in self.val_paras[:config.val_pairs]])
        self._val_lexical = None   # the lexical methods' scores on the validation pairs, computed once
        self.fusion = None         # the score fusion fitted on the validation pairs at the last validation
        self.model_config = EncoderConfig(vocab_size=self.tokenizer.vocab_size, cell=config.cell,
                                          hidden=config.hidden, layers=config.layers,
                                          embed_dim=config.embed_dim, bidirectional=config.bidirectional,
                                          temperature=config.temperature,
                                          learn_temperature=config.learn_temperature,
                                          dtype=config.dtype, seed=config.seed, dropout=config.dropout,
                                          subword_buckets=getattr(self.tokenizer, "subword_buckets", 0))
        self.model = Encoder(self.model_config)
        if lm is not None:
            self.model.load_state(lm.state_dict(), partial=True)
        self.optimizer = make_optimizer(config.optimizer, self.model.trainable(), config.lr)
        self.total_steps = int(config.steps) if config.steps is not None else 10 ** 12
        self.rng = np.random.default_rng(config.seed)
        self.step = 0
        self.best = None
        self.best_step = None
        self.last_val = None
        self._stop = False
        if checkpoint is not None:
            self._restore(checkpoint)

    @classmethod
    def fresh(cls, config, out_dir, text):
        if (Path(out_dir) / CHECKPOINT_NAME).exists():
            raise ContrastiveError(f"{out_dir} already holds a checkpoint; pass --resume to continue it, "
                                   f"or choose another --out folder")
        return cls(config, out_dir, text)

    @classmethod
    def resume(cls, out_dir, *, steps=None, minutes=None, text=None):
        from .data import load_corpus
        ckpt = load_encoder_checkpoint(Path(out_dir) / CHECKPOINT_NAME, required=RESUME_KEYS)
        config = ContrastiveConfig.from_dict(ckpt["config"])
        if steps is not None:
            config.steps = steps
        config.minutes = minutes
        if text is None:
            text = load_corpus(config.sources or None)
        return cls(config, out_dir, text, checkpoint=ckpt)

    def _restore(self, ckpt):
        try:
            self.model.load_state(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optim"])
            self.rng.bit_generator.state = ckpt["rng"]
            self.step = int(ckpt["step"])
            m = ckpt["metrics"]
            self.best, self.best_step, self.last_val = m.get("best"), m.get("best_step"), m.get("val")
            self.fusion = ckpt.get("fusion")
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{self.out_dir / CHECKPOINT_NAME}: checkpoint content is "
                                  f"inconsistent ({e})") from None

    def payload(self) -> dict:
        return {"kind": KIND, "config": self.config.to_dict(), "model_config": self.model_config.to_dict(),
                "tokenizer": self.tokenizer.to_dict(), "step": self.step, "model": self.model.state_dict(),
                "optim": self.optimizer.state_dict(), "rng": self.rng.bit_generator.state,
                "data": {"fingerprint": self.fingerprint, "train_paragraphs": len(self.train_ids),
                         "val_pairs": len(self.val_queries)},
                "metrics": {"val": self.last_val, "best": self.best, "best_step": self.best_step},
                "fusion": self.fusion}

    def save(self, name: str = CHECKPOINT_NAME) -> Path:
        bad = [k for k, v in self.model.parameters().items() if not np.all(np.isfinite(v))]
        if bad:
            raise self._diverged(f"the weights became non-finite ({', '.join(bad[:2])}) at step {self.step}")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for text_name, paras in ((HELDOUT_NAME, self.test_paras), (VALIDATION_NAME, self.val_paras)):
            if text_name == VALIDATION_NAME and paras is self.test_paras:
                continue
            if not (self.out_dir / text_name).exists():
                (self.out_dir / text_name).write_text("\n\n".join(paras) + "\n", encoding="utf-8")
        path = self.out_dir / name
        save_checkpoint(path, self.payload())
        return path

    def _diverged(self, what):
        good = self.out_dir / CHECKPOINT_NAME
        kept = f"the last good checkpoint is kept at {good}" if good.exists() else "no checkpoint had been written yet"
        return ContrastiveError(f"{what}; stopping: {kept}. Try a lower --lr")

    def validate_now(self) -> dict:
        """The retrieval benchmark on the validation paragraphs, mean pooling, no post-processing;
        also fits the hybrid's score fusion on them (``self.fusion``), with the vectors centred as
        ``bptt search`` centres them."""
        from .generate import embed_texts
        q = embed_texts(self.model, self.tokenizer, list(self.val_queries), pool="mean", normalize=False)
        d = embed_texts(self.model, self.tokenizer, list(self.val_docs), pool="mean", normalize=False)
        if self.val_paras is not self.test_paras:   # never fitted on the test pairs
            if self._val_lexical is None:
                self._val_lexical = {k: lexical_scores(k, self.val_queries, self.val_docs) for k in LEXICAL}
            self.fusion = fit_fusion(centred_cosines(q, d), self._val_lexical)
        return metrics_from_ranks(gold_ranks(cosine_scores(q, d)))

    def train_step(self) -> dict:
        c = self.config
        pick = self.by_length[self.rng.integers(0, len(self.by_length) - c.batch_size + 1) + np.arange(c.batch_size)]
        ids_a, ids_b = VIEWS[c.views]([self.train_ids[i] for i in pick], self.rng, c)
        if c.mask > 0:   # token masking: each view token becomes <unk> (and loses its n-grams)
            ids_a = mask_tokens(ids_a, self.rng.random(ids_a.shape[:2]) < c.mask)   # with probability mask
            ids_b = mask_tokens(ids_b, self.rng.random(ids_b.shape[:2]) < c.mask)
        self.model.zero_grad()
        loss = self.model.loss_and_grad(ids_a, ids_b, rng=self.rng)
        grads = {k: self.model.grads[k] for k in self.optimizer_keys}
        norm = clip_grad_norm(grads, c.clip) if c.clip else math.sqrt(
            sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise self._diverged(f"the loss or gradient became non-finite ({loss}) at step {self.step + 1}")
        self.optimizer.step(grads)
        self.step += 1
        return {"step": self.step, "loss": loss, "grad_norm": norm, "tokens": 2 * ids_a.shape[0] * ids_a.shape[1],
                "scale": self.model.loss.scale}

    @property
    def optimizer_keys(self):
        return list(self.model.trainable())

    def request_stop(self) -> None:
        """Finish the current step, then validate, save and return (what Ctrl-C does)."""
        self._stop = True

    def run(self, on_event=None) -> dict:
        c = self.config
        on_event = on_event or (lambda kind, info: None)
        trim_metrics(self.out_dir, self.step)
        self._stop = False
        start = time.perf_counter()
        reason, first = "done", self.step
        with ctrl_c_stops(self):
            while self.step < self.total_steps:
                reason = stop_reason(self, start, c.minutes) or reason
                if reason != "done":
                    break
                t0 = time.perf_counter()
                info = self.train_step()
                dt = time.perf_counter() - t0
                info["tokens_per_sec"] = info["tokens"] / dt if dt > 0 else float("inf")
                info["elapsed"] = time.perf_counter() - start
                append_metrics(self.out_dir, {k: info[k] for k in ("step", "loss", "grad_norm", "scale", "tokens_per_sec", "elapsed")})
                on_event("step", info)
                if self.step % c.val_every == 0 or self.step == self.total_steps:
                    self._validate_and_save(on_event)
        save_at_end(self, first, on_event)
        return {"reason": reason, "step": self.step, "val": self.last_val, "best": self.best,
                "best_step": self.best_step, "elapsed": time.perf_counter() - start,
                "checkpoint": str(self.out_dir / CHECKPOINT_NAME),
                "best_checkpoint": str(self.out_dir / BEST_NAME),
                "heldout": str(self.out_dir / HELDOUT_NAME), "fusion": self.fusion}

    def _validate_and_save(self, on_event, scheduled: bool = True):
        # no early stopping: every validation, on the schedule or not, may pick best.bptt
        m = self.validate_now()
        rec = {"step": self.step, **{f"val_{k}": v for k, v in m.items()}}
        if self.fusion is not None:
            rec.update({"val_hybrid_mrr": self.fusion["mrr"], "val_hybrid_recall@10": self.fusion["recall@10"],
                        "val_alpha": self.fusion["alpha"], "val_lexical": self.fusion["lexical"]})
        self.last_val = rec
        improved = self.best is None or m["mrr"] > self.best
        if improved:
            self.best, self.best_step = m["mrr"], self.step
        append_metrics(self.out_dir, rec)
        if improved:
            self.save(BEST_NAME)
        path = self.save()   # after best.bptt: a checkpoint never names a best that is not on disk
        on_event("val", {**rec, "path": str(path)})
