"""Layer 3: text corpora, tokenizers and the batcher that feeds truncated BPTT.

Pure Python and NumPy. The pieces, in the order a training run uses them:

- :func:`read_text_files` (or :func:`builtin_corpus` when no file is given) -> one ``str``;
- :class:`CharTokenizer` / :class:`WordTokenizer` fitted on it -> token ids (1-D int64);
- :func:`split_train_val` -> a contiguous train part and a validation part;
- :class:`StreamBatcher` -> chunks ``x``, ``y`` of shape (B, T), each continuing the last, so that
  the hidden state can be carried from one chunk to the next.

Token id 0 is ``<unk>`` in both tokenizers: a symbol that was not seen when the tokenizer was fitted
encodes to 0 (or raises with ``strict=True``) and decodes to U+FFFD '�'. A :class:`WordTokenizer`
with ``oov_buckets`` N > 0 instead hashes a word it does not know into one of N bucket ids (the same
word, the same id, in every process), so that rare words keep an identity; see :func:`oov_bucket`.
"""
from __future__ import annotations

import ast
import codecs
import collections
import functools
import inspect
import os
import re
import sysconfig
import warnings
import zlib

import numpy as np

__all__ = ["DataError", "UNK_ID", "UNK_TOKEN", "UNK_TEXT", "CharTokenizer", "WordTokenizer",
           "SubwordTokenizer", "WORD_PATTERN", "TOKENIZERS", "oov_bucket", "count_unknown", "fit_tokenizer", "tokenizer_from_dict", "builtin_corpus",
           "BUILTIN_CORPUS_BYTES", "read_text_files", "load_corpus", "split_train_val",
           "StreamBatcher", "Batch"]

UNK_ID = 0
UNK_TOKEN = "<unk>"     # its name in vocabularies and messages
UNK_TEXT = "\ufffd"     # what decode() writes for it: U+FFFD REPLACEMENT CHARACTER '�'


class DataError(ValueError):
    """A corpus that cannot be used (missing, binary, not UTF-8, ...); the message is one line."""


def _positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _as_ids(name: str, ids) -> np.ndarray:
    """A 1-D int64 array of non-negative token ids."""
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of token ids, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer token ids, got dtype {a.dtype}")
    if a.dtype.kind == "i" and int(a.min()) < 0:
        raise ValueError(f"{name} must hold non-negative token ids, found {int(a.min())}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _list_unknown(unknown, what: str) -> str:
    shown = ", ".join(repr(u) for u in unknown[:20])
    more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
    return f"{len(unknown)} {what} not in the vocabulary: {shown}{more}"


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------

class CharTokenizer:
    """Character-level tokenizer over Unicode code points.

    Vocabulary: id 0 is ``<unk>``; ids 1..V-1 are the distinct characters of the text it was
    fitted on, sorted by code point, so that the same text always gives the same ids.

    ``encode`` maps a character that is not in the vocabulary to 0 (``strict=True`` raises
    ValueError listing them instead, for a user-given prompt); ``decode`` writes id 0 as U+FFFD.
    """

    kind = "char"

    def __init__(self, chars):
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"chars must be single characters, got {c!r}")
        codes = [ord(c) for c in chars]
        if any(a >= b for a, b in zip(codes, codes[1:])):
            raise ValueError("chars must be distinct and sorted by code point")
        self.chars: list[str] = chars
        self._codes = np.asarray(codes, dtype=np.int64)   # sorted, for searchsorted in encode
        # decode table: id -> code point; id 0 is <unk>
        self._table = np.asarray([ord(UNK_TEXT)] + codes, dtype="<u4")

    @classmethod
    def fit(cls, text: str) -> "CharTokenizer":
        """The tokenizer whose vocabulary is every distinct character of ``text``."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text must be non-empty to fit a tokenizer")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        """V: the number of ids, ``<unk>`` included."""
        return len(self.chars) + 1

    def __len__(self) -> int:
        return self.vocab_size

    def tokens(self) -> list[str]:
        """The vocabulary by id: ``['<unk>', c1, c2, ...]``."""
        return [UNK_TOKEN] + self.chars

    @staticmethod
    def _code_points(text: str) -> np.ndarray:
        # UTF-32 gives one 4-byte unit per code point; "surrogatepass" keeps lone surrogates.
        return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)

    def encode(self, text: str, strict: bool = False) -> np.ndarray:
        """Token ids (1-D int64) of ``text``; unseen characters -> 0, or ValueError if ``strict``."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        cp = self._code_points(text)
        if cp.size == 0:
            return np.zeros(0, np.int64)
        if self._codes.size == 0:
            pos = np.zeros(cp.shape, np.int64)
            known = np.zeros(cp.shape, bool)
        else:
            pos = np.searchsorted(self._codes, cp)
            known = self._codes[np.minimum(pos, self._codes.size - 1)] == cp
        if strict and not known.all():
            unknown = sorted({chr(c) for c in cp[~known].tolist()})
            raise ValueError("text contains " + _list_unknown(unknown, "characters"))
        return np.where(known, pos + 1, UNK_ID).astype(np.int64)

    def decode(self, ids) -> str:
        """The text of token ids; id 0 becomes U+FFFD. ValueError on an id outside [0, V)."""
        a = _as_ids("ids", ids)
        if a.size and int(a.max()) >= self.vocab_size:
            raise ValueError(f"ids must be in the range [0, {self.vocab_size}), found {int(a.max())}")
        return self._table[a].tobytes().decode("utf-32-le", "surrogatepass")

    def to_dict(self) -> dict:
        """A JSON-serialisable description: ``{'kind': 'char', 'chars': '<the vocabulary>'}``."""
        return {"kind": self.kind, "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        if not isinstance(d, dict) or d.get("kind") != cls.kind or not isinstance(d.get("chars"), str):
            raise ValueError(f"not a char tokenizer description: expected {{'kind': 'char', 'chars': str}}, "
                             f"got {_describe(d)}")
        return cls(list(d["chars"]))

    def __eq__(self, other):
        return isinstance(other, CharTokenizer) and self.chars == other.chars

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size})"


WORD_PATTERN = r"\w+(?:['’]\w+)*|\n|[^\w\s]"
"""How :class:`WordTokenizer` splits text, tried left to right:

- ``\\w+(?:['’]\\w+)*``: a word, that is a run of letters, digits or underscores, possibly with
  inner apostrophes (``don't``, ``o'clock``);
- ``\\n``: every newline is a token of its own, so that line and paragraph breaks survive;
- ``[^\\w\\s]``: any other single non-space character (punctuation, symbols).

Spaces, tabs and carriage returns only separate tokens and are dropped.
"""

_WORD_RE = re.compile(WORD_PATTERN)
_NO_SPACE_BEFORE = set(".,;:!?%)]}…")
_NO_SPACE_AFTER = set("([{")


def oov_bucket(token: str, n: int) -> int:
    """The bucket, in [0, n), of a word that is not in a vocabulary: CRC-32 of its UTF-8 bytes mod n.

    CRC-32 (:func:`zlib.crc32`) is fixed by its standard, unlike Python's ``hash()`` of a str,
    which is salted per process: the same word gets the same bucket in every process and on every
    machine, so a rare name in a query and in a document (embedded another day) meet.
    """
    return zlib.crc32(token.encode("utf-8", "surrogatepass")) % n


class WordTokenizer:
    """Word-level tokenizer with a capped vocabulary and, optionally, hash buckets for other words.

    Text is split by :data:`WORD_PATTERN` (words, newlines, single punctuation characters),
    lower-cased first if ``lowercase``. The vocabulary is ``<unk>`` (id 0) followed by the
    ``max_vocab - 1`` most frequent tokens seen at least ``min_count`` times, ordered by descending
    count and, among equal counts, by the token's code points, so it is the same on every run.

    A token not in the vocabulary encodes to 0 when ``oov_buckets`` N is 0 (the default). With
    N > 0 it encodes to bucket ``1 + len(vocab) + oov_bucket(token, N)``: ids
    ``[1 + len(vocab), V)`` are the N buckets, after the words, so the words keep their ids
    whatever N is. Many rare words share a bucket, but the same word always lands in the same
    one, so an encoder can still tell that a query and a document share a name it never learnt.
    Id 0 is then never produced by ``encode`` (it stays for masking and for old checkpoints).

    ``decode`` is not an exact inverse, because spaces are not tokens. It writes a space between
    tokens except after a newline or an opening bracket, and before closing punctuation
    ``. , ; : ! ? % ) ] } …``; id 0 is written as U+FFFD and bucket j as ``<oov:j>``.
    """

    kind = "word"

    def __init__(self, vocab, lowercase: bool = False, oov_buckets: int = 0):
        vocab = list(vocab)
        for t in vocab:
            if not isinstance(t, str) or not t:
                raise ValueError(f"vocab must hold non-empty strings, got {t!r}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocab must not repeat a token")
        if isinstance(oov_buckets, bool) or not isinstance(oov_buckets, (int, np.integer)) or oov_buckets < 0:
            raise ValueError(f"oov_buckets must be a non-negative integer, got {oov_buckets!r}")
        self.vocab: list[str] = vocab          # tokens for ids 1..len(vocab)
        self.lowercase = bool(lowercase)
        self.oov_buckets = int(oov_buckets)
        self._ids = {t: i + 1 for i, t in enumerate(vocab)}
        self._text = [UNK_TEXT] + vocab + [f"<oov:{j}>" for j in range(self.oov_buckets)]

    @staticmethod
    def split(text: str, lowercase: bool = False) -> list[str]:
        """The tokens of ``text`` by :data:`WORD_PATTERN`."""
        return _WORD_RE.findall(text.lower() if lowercase else text)

    @classmethod
    def fit(cls, text: str, max_vocab: int = 10000, lowercase: bool = False, *, oov_buckets: int = 0,
            min_count: int = 1) -> "WordTokenizer":
        """The tokenizer of the ``max_vocab - 1`` most frequent tokens of ``text`` seen at least
        ``min_count`` times (plus ``<unk>``), with ``oov_buckets`` buckets for the others."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        max_vocab = _positive_int("max_vocab", max_vocab)
        min_count = _positive_int("min_count", min_count)
        if max_vocab < 2:
            raise ValueError(f"max_vocab must be at least 2 (<unk> and one word), got {max_vocab}")
        counts = collections.Counter(cls.split(text, lowercase))
        if not counts:
            raise ValueError("text must contain at least one token to fit a tokenizer")
        ranked = sorted(((t, n) for t, n in counts.items() if n >= min_count), key=lambda kv: (-kv[1], kv[0]))
        if not ranked:
            raise ValueError(f"no token of the text is seen min_count={min_count} times or more")
        return cls([t for t, _ in ranked[:max_vocab - 1]], lowercase=lowercase, oov_buckets=oov_buckets)

    @property
    def vocab_size(self) -> int:
        """V: the number of ids, ``<unk>`` and the buckets included."""
        return len(self.vocab) + 1 + self.oov_buckets

    def __len__(self) -> int:
        return self.vocab_size

    def tokens(self) -> list[str]:
        """The vocabulary by id: ``['<unk>', w1, w2, ..., '<oov:0>', '<oov:1>', ...]``."""
        return [UNK_TOKEN] + self.vocab + self._text[1 + len(self.vocab):]

    def encode(self, text: str, strict: bool = False) -> np.ndarray:
        """Token ids (1-D int64) of ``text``; an unseen token -> its bucket (or 0 without buckets),
        or ValueError if ``strict``."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        toks = self.split(text, self.lowercase)
        get = self._ids.get
        ids = np.fromiter((get(t, UNK_ID) for t in toks), dtype=np.int64, count=len(toks))
        if strict and (ids == UNK_ID).any():
            unknown = sorted({t for t, i in zip(toks, ids.tolist()) if i == UNK_ID})
            raise ValueError("text contains " + _list_unknown(unknown, "words"))
        if self.oov_buckets:
            first, n = 1 + len(self.vocab), self.oov_buckets
            for k in np.flatnonzero(ids == UNK_ID).tolist():
                ids[k] = first + oov_bucket(toks[k], n)
        return ids

    def decode(self, ids) -> str:
        """Text of token ids, joined as described in the class docstring."""
        a = _as_ids("ids", ids)
        if a.size and int(a.max()) >= self.vocab_size:
            raise ValueError(f"ids must be in the range [0, {self.vocab_size}), found {int(a.max())}")
        out = []
        prev = "\n"  # the start of text behaves like a line start: no leading space
        for i in a.tolist():
            tok = self._text[i]
            if not (tok == "\n" or prev == "\n" or prev in _NO_SPACE_AFTER or tok in _NO_SPACE_BEFORE):
                out.append(" ")
            out.append(tok)
            prev = tok
        return "".join(out)

    def to_dict(self) -> dict:
        """A JSON-serialisable description: ``{'kind': 'word', 'vocab': [...], 'lowercase': bool}``,
        plus ``'oov_buckets': N`` when N > 0 (a description without it means N = 0, as before)."""
        d = {"kind": self.kind, "vocab": list(self.vocab), "lowercase": self.lowercase}
        if self.oov_buckets:
            d["oov_buckets"] = self.oov_buckets
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WordTokenizer":
        if (not isinstance(d, dict) or d.get("kind") != cls.kind or not isinstance(d.get("vocab"), list)
                or not isinstance(d.get("lowercase", False), bool)):
            raise ValueError("not a word tokenizer description: expected {'kind': 'word', 'vocab': list, "
                             f"'lowercase': bool}}, got {_describe(d)}")
        return cls(d["vocab"], lowercase=d.get("lowercase", False), oov_buckets=d.get("oov_buckets", 0))

    def __eq__(self, other):
        return (isinstance(other, WordTokenizer) and self.vocab == other.vocab
                and self.lowercase == other.lowercase and self.oov_buckets == other.oov_buckets)

    def __repr__(self):
        buckets = f", oov_buckets={self.oov_buckets}" if self.oov_buckets else ""
        return f"WordTokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase}{buckets})"


class SubwordTokenizer(WordTokenizer):
    """A :class:`WordTokenizer` that also gives each token its hashed character n-grams (fastText).

    ``encode(text)`` returns an (N, 1 + K) int64 array, one row per token: column 0 is the
    token's word id (exactly what the word tokenizer gives), columns 1..K the ids in
    ``[0, subword_buckets)`` of the character n-grams of ``<token>`` (the token lower-cased as
    the words are, between boundary markers ``<`` and ``>``), n from ``min_n`` to ``max_n``, in
    order of start position then n, the first K of them; -1 fills the rest of a short token's row.
    An n-gram's id is CRC-32 of its UTF-8 bytes mod ``subword_buckets`` (as :func:`oov_bucket`):
    the same in every process. So a rare name, version or path that only reached an OOV bucket
    still shares most of its n-grams with its neighbours (``libfoo2`` and ``libfoo3``).
    ``decode`` accepts these rows (it reads column 0) or plain word ids.
    """

    kind = "subword"

    def __init__(self, vocab, lowercase: bool = False, oov_buckets: int = 0, *, subword_buckets: int,
                 min_n: int = 3, max_n: int = 5, max_ngrams: int = 32):
        super().__init__(vocab, lowercase=lowercase, oov_buckets=oov_buckets)
        self.subword_buckets = _positive_int("subword_buckets", subword_buckets)
        self.min_n = _positive_int("min_n", min_n)
        self.max_n = _positive_int("max_n", max_n)
        self.max_ngrams = _positive_int("max_ngrams", max_ngrams)
        if self.min_n > self.max_n:
            raise ValueError(f"min_n ({self.min_n}) must not exceed max_n ({self.max_n})")
        self._grams: dict = {}

    @classmethod
    def from_word(cls, word: WordTokenizer, subword_buckets: int, **kw) -> "SubwordTokenizer":
        """The word tokenizer ``word`` with n-grams hashed into ``subword_buckets`` ids."""
        return cls(word.vocab, lowercase=word.lowercase, oov_buckets=word.oov_buckets,
                   subword_buckets=subword_buckets, **kw)

    @property
    def width(self) -> int:
        """1 + K: the columns of an encoded row."""
        return 1 + self.max_ngrams

    def ngrams(self, token: str) -> tuple:
        """The n-gram ids of one token (already lower-cased if the tokenizer lower-cases)."""
        got = self._grams.get(token)
        if got is None:
            w, S = "<" + token + ">", self.subword_buckets
            got = tuple(zlib.crc32(w[i:i + n].encode("utf-8", "surrogatepass")) % S
                        for i in range(len(w)) for n in range(self.min_n, self.max_n + 1)
                        if i + n <= len(w))[:self.max_ngrams]
            if len(self._grams) < 1 << 20:   # a cache bounded for a long-lived process
                self._grams[token] = got
        return got

    def encode(self, text: str, strict: bool = False) -> np.ndarray:
        """(N, 1 + K) int64: each token's word id, then its n-gram ids (-1 after the last)."""
        words = super().encode(text, strict)
        rows = np.full((words.size, self.width), -1, np.int64)
        rows[:, 0] = words
        for k, tok in enumerate(self.split(text, self.lowercase)):
            g = self.ngrams(tok)
            rows[k, 1:1 + len(g)] = g
        return rows

    def decode(self, ids) -> str:
        a = np.asarray(ids)
        return super().decode(a[:, 0] if a.ndim == 2 else a)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "kind": self.kind, "subword_buckets": self.subword_buckets,
                "min_n": self.min_n, "max_n": self.max_n, "max_ngrams": self.max_ngrams}

    @classmethod
    def from_dict(cls, d: dict) -> "SubwordTokenizer":
        if (not isinstance(d, dict) or d.get("kind") != cls.kind or not isinstance(d.get("vocab"), list)
                or not isinstance(d.get("lowercase", False), bool) or "subword_buckets" not in d):
            raise ValueError("not a subword tokenizer description: expected {'kind': 'subword', 'vocab': list, "
                             f"'lowercase': bool, 'subword_buckets': int, ...}}, got {_describe(d)}")
        return cls(d["vocab"], lowercase=d.get("lowercase", False), oov_buckets=d.get("oov_buckets", 0),
                   subword_buckets=d["subword_buckets"], min_n=d.get("min_n", 3), max_n=d.get("max_n", 5),
                   max_ngrams=d.get("max_ngrams", 32))

    def __eq__(self, other):
        return isinstance(other, SubwordTokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return (f"SubwordTokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase}, "
                f"oov_buckets={self.oov_buckets}, subword_buckets={self.subword_buckets})")


TOKENIZERS = {"char": CharTokenizer, "word": WordTokenizer}
_DESCRIBED = {**TOKENIZERS, "subword": SubwordTokenizer}   # what a checkpoint may hold


def count_unknown(tokenizer, ids) -> int:
    """How many of ``ids`` (from ``tokenizer.encode``) stand for a symbol the tokenizer never saw:
    ``<unk>`` (id 0) or, for a word tokenizer with ``oov_buckets``, one of its buckets. Subword
    rows (N, 1 + K) count by their word id."""
    a = np.asarray(ids)
    if a.ndim == 2:
        a = a[:, 0]
    unknown = a == UNK_ID
    if getattr(tokenizer, "oov_buckets", 0):
        unknown |= a > len(tokenizer.vocab)
    return int(unknown.sum())


def _describe(d) -> str:
    if isinstance(d, dict):
        return "a dict with keys " + ", ".join(repr(k) for k in d)
    return type(d).__name__


def fit_tokenizer(kind: str, text: str, *, max_vocab: int = 10000, lowercase: bool = False,
                  oov_buckets: int = 0, min_count: int = 1):
    """Fit a ``'char'`` or ``'word'`` tokenizer on ``text`` (``max_vocab``, ``lowercase``,
    ``oov_buckets``, ``min_count``: word only; ValueError if buckets are asked of a char tokenizer)."""
    if kind == "char":
        if oov_buckets or min_count != 1:
            raise ValueError("oov_buckets and min_count are for the word tokenizer; a char tokenizer "
                             "has neither")
        return CharTokenizer.fit(text)
    if kind == "word":
        return WordTokenizer.fit(text, max_vocab=max_vocab, lowercase=lowercase, oov_buckets=oov_buckets,
                                 min_count=min_count)
    raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}; got {kind!r}")


def tokenizer_from_dict(d: dict):
    """The tokenizer that ``to_dict()`` described (as stored in a checkpoint)."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in _DESCRIBED:
        raise ValueError(f"tokenizer description must have 'kind' one of {', '.join(_DESCRIBED)}; "
                         f"got {kind!r}")
    return _DESCRIBED[kind].from_dict(d)


# ---------------------------------------------------------------------------------------------
# Corpora
# ---------------------------------------------------------------------------------------------

BUILTIN_CORPUS_BYTES = 600_000
_SKIP_MODULES = {"this.py", "antigravity.py"}   # no prose: a rot13 poem, an easter egg


_DEFS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _defs(stmts):
    """Class and function definitions among ``stmts``, in source order, looking inside if/try/with
    blocks (platform-dependent definitions) but not inside the definitions themselves."""
    for s in stmts:
        if isinstance(s, _DEFS):
            yield s
        elif isinstance(s, (ast.If, ast.Try, ast.With)):
            yield from _defs(getattr(s, "body", []))
            for h in getattr(s, "handlers", []):
                yield from _defs(h.body)
            yield from _defs(getattr(s, "orelse", []))
            yield from _defs(getattr(s, "finalbody", []))


def _docstrings(node):
    """Docstrings of a module, its classes and functions (nested ones too), in source order."""
    doc = ast.get_docstring(node, clean=True)
    if doc:
        yield doc
    for d in _defs(node.body):
        yield from _docstrings(d)


@functools.lru_cache(maxsize=4)
def builtin_corpus(max_bytes: int = BUILTIN_CORPUS_BYTES) -> str:
    """The default training text: docstrings of the Python standard library, about 600 KB.

    It is English prose written by people (with some code examples) that ships with every Python,
    so a first run needs no download. How it is assembled, deterministically for a given Python:

    1. the public top-level modules of ``sysconfig.get_paths()['stdlib']``: every ``*.py`` file
       whose name does not start with ``_``, sorted by name (packages are not entered);
    2. each file is parsed with :mod:`ast`, never imported or executed; a file that cannot be read
       or parsed is skipped;
    3. the docstrings of the module and of its classes and functions, in source order, cleaned by
       ``inspect.cleandoc`` with trailing spaces removed; a docstring identical to an earlier one
       is left out;
    4. they are joined with one blank line and cut at the last paragraph break (blank line) before
       ``max_bytes`` UTF-8 bytes; the text ends with a newline.

    The result is cached in memory for the life of the process; nothing is written to disk.
    DataError if no stdlib sources are found (a Python installed without its ``.py`` files).
    """
    max_bytes = _positive_int("max_bytes", max_bytes)
    root = sysconfig.get_paths()["stdlib"]
    try:
        names = sorted(n for n in os.listdir(root)
                       if n.endswith(".py") and not n.startswith("_") and n not in _SKIP_MODULES)
    except OSError:
        names = []
    seen = set()
    parts = []
    size = 0
    for name in names:
        try:
            with open(os.path.join(root, name), "rb") as f:
                src = f.read()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escape sequences in old sources
                tree = ast.parse(src, filename=name)
        except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
            continue
        for doc in _docstrings(tree):
            doc = "\n".join(line.rstrip() for line in inspect.cleandoc(doc).splitlines())
            doc = re.sub(r"\n{3,}", "\n\n", doc).strip()
            if not doc or doc in seen:
                continue
            seen.add(doc)
            parts.append(doc)
            size += len(doc.encode("utf-8")) + 2
        if size > max_bytes:
            break
    if not parts:
        raise DataError(f"no Python standard library sources found in {root} for the built-in corpus; "
                        "give a text file instead")
    text = "\n\n".join(parts) + "\n"
    data = text.encode("utf-8")
    if len(data) > max_bytes:
        head = data[:max_bytes].decode("utf-8", "ignore")
        cut = head.rfind("\n\n")
        text = (head[:cut] if cut > 0 else head) + "\n"
    return text


def read_text_files(paths) -> str:
    """The text of one or more UTF-8 files (a path, or a list of paths).

    A leading UTF-8 byte order mark is dropped and Windows line ends (CRLF) become ``\\n``.
    Several files are joined in the given order, each ending with a newline, separated by a blank
    line. Raises :class:`DataError` with a one-line message, naming the file, if a file is missing,
    is a directory, cannot be read, is empty, is binary (holds NUL bytes) or is not valid UTF-8
    (with the byte offset of the first bad byte).
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise DataError("no text files given")
    texts = []
    for p in paths:
        name = os.fsdecode(p)
        if os.path.isdir(p):
            raise DataError(f"{name}: is a directory, expected a UTF-8 text file")
        try:
            with open(p, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise DataError(f"{name}: no such file") from None
        except PermissionError:
            raise DataError(f"{name}: permission denied") from None
        except OSError as e:
            raise DataError(f"{name}: cannot read ({e.strerror or e})") from None
        skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        if len(data) == skip:
            raise DataError(f"{name}: file is empty")
        nul = data.find(b"\x00")
        if nul >= 0:
            raise DataError(f"{name}: looks like a binary file (NUL byte at offset {nul}), expected UTF-8 text")
        try:
            text = data[skip:].decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{name}: not valid UTF-8 (byte 0x{data[skip + e.start]:02x} at offset "
                            f"{skip + e.start}); convert it to UTF-8 first") from None
        texts.append(text.replace("\r\n", "\n"))
    if len(texts) == 1:
        return texts[0]
    return "\n".join(t if t.endswith("\n") else t + "\n" for t in texts)


def load_corpus(paths=None) -> str:
    """``read_text_files(paths)``, or :func:`builtin_corpus` when ``paths`` is None or empty."""
    if paths is None or (not isinstance(paths, (str, bytes, os.PathLike)) and len(list(paths)) == 0):
        return builtin_corpus()
    return read_text_files(paths)


# ---------------------------------------------------------------------------------------------
# Splitting and batching
# ---------------------------------------------------------------------------------------------

def split_train_val(ids, val_fraction: float = 0.1, *, min_tokens: int = 2):
    """Split token ids into a contiguous train part (the first) and validation part (the last).

    The validation part is the last ``round(N · val_fraction)`` tokens; both are views of ``ids``
    (as 1-D int64). ``val_fraction = 0`` gives an empty validation part. ValueError if
    ``val_fraction`` is outside [0, 1) or if a part would have fewer than ``min_tokens`` tokens
    (2 at least: one input and its next-token target).
    """
    a = _as_ids("ids", ids)
    min_tokens = _positive_int("min_tokens", min_tokens)
    try:
        f = float(val_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}") from None
    if not 0.0 <= f < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n = a.size
    n_val = int(round(n * f))
    n_train = n - n_val
    if n_train < min_tokens:
        raise ValueError(f"the training part would have {n_train} tokens (of {n}, val_fraction={f}); "
                         f"it needs at least {min_tokens}")
    if f > 0 and n_val < min_tokens:
        raise ValueError(f"the validation part would have {n_val} tokens (of {n}, val_fraction={f}); "
                         f"it needs at least {min_tokens}: use more text or a larger val_fraction")
    return a[:n_train], a[n_train:]


class Batch(tuple):
    """One chunk from :class:`StreamBatcher`: ``(x, y, reset)`` plus ``epoch`` and ``index``."""
    __slots__ = ()

    def __new__(cls, x, y, reset, epoch, index):
        return tuple.__new__(cls, (x, y, reset, epoch, index))

    x = property(lambda s: s[0], doc="inputs (B, T) int64")
    y = property(lambda s: s[1], doc="next-token targets (B, T) int64: y[b, t] follows x[b, t]")
    reset = property(lambda s: s[2], doc="True at the first chunk of an epoch: start from zero state")
    epoch = property(lambda s: s[3], doc="the epoch this chunk belongs to (0-based)")
    index = property(lambda s: s[4], doc="the chunk's index k in [0, num_chunks)")


class StreamBatcher:
    """B parallel token streams cut into chunks of T steps, for truncated BPTT.

    With N tokens, stream b is the contiguous run ``ids[b·S : (b+1)·S]`` of length
    S = ⌊(N − 1) / B⌋ (one token is kept back as the last target). Chunk k is

        x[b, t] = ids[b·S + k·T + t],   y[b, t] = ids[b·S + k·T + t + 1],   t < T,

    for k < ``num_chunks`` = ⌊S / T⌋ (the last S mod T tokens of each stream are not used). Row b
    of chunk k+1 continues row b of chunk k, so the hidden state at the end of one chunk is the
    right initial state for the next.

    Iterating (``next(batcher)``) returns :class:`Batch` ``(x, y, reset, epoch, index)`` and goes
    on forever: after the last chunk it wraps to chunk 0 and the epoch counter goes up. ``reset``
    is True for chunk 0, where the trainer must zero the hidden state (the streams start over).
    The whole iteration state is ``position`` (the next chunk's index) and ``epoch``:
    :meth:`state_dict` / :meth:`load_state_dict` save and restore it for an exact resume.
    """

    def __init__(self, ids, batch_size: int, seq_len: int):
        a = _as_ids("ids", ids)
        self.batch_size = B = _positive_int("batch_size", batch_size)
        self.seq_len = T = _positive_int("seq_len", seq_len)
        need = B * T + 1
        if a.size < need:
            raise ValueError(f"the corpus has {a.size} tokens, too few for batch_size={B} streams of "
                             f"seq_len={T}: that needs at least {need} tokens (B·T + 1); use more text "
                             f"or a smaller batch size or sequence length")
        self.num_tokens = int(a.size)
        self.stream_len = S = (a.size - 1) // B
        self.num_chunks = S // T
        self._x = a[:B * S].reshape(B, S)
        self._y = a[1:B * S + 1].reshape(B, S)
        self.position = 0
        self.epoch = 0

    def chunk(self, k: int):
        """Chunk ``k`` as ``(x, y)``, fresh C-contiguous int64 arrays of shape (B, T)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < self.num_chunks:
            raise ValueError(f"k must be a chunk index in [0, {self.num_chunks}), got {k!r}")
        s = slice(k * self.seq_len, (k + 1) * self.seq_len)
        return np.ascontiguousarray(self._x[:, s]), np.ascontiguousarray(self._y[:, s])

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        k = self.position
        x, y = self.chunk(k)
        batch = Batch(x, y, k == 0, self.epoch, k)
        self.position = k + 1
        if self.position == self.num_chunks:
            self.position = 0
            self.epoch += 1
        return batch

    def iter_epoch(self):
        """One pass over chunks 0..num_chunks-1 as :class:`Batch`, without touching ``position``
        (for evaluation)."""
        for k in range(self.num_chunks):
            x, y = self.chunk(k)
            yield Batch(x, y, k == 0, self.epoch, k)

    def remainder(self):
        """``(x, y)`` (B, S mod T) of the streams' last tokens, which no chunk covers, or None
        when S is a multiple of T: what scoring the whole text adds after the last chunk."""
        r = self.stream_len - self.num_chunks * self.seq_len
        if r == 0:
            return None
        s = slice(self.stream_len - r, self.stream_len)
        return np.ascontiguousarray(self._x[:, s]), np.ascontiguousarray(self._y[:, s])

    def __len__(self) -> int:
        return self.num_chunks

    def state_dict(self) -> dict:
        """The iteration state, with the shape it belongs to: plain ints, JSON-serialisable."""
        return {"position": self.position, "epoch": self.epoch, "num_tokens": self.num_tokens,
                "batch_size": self.batch_size, "seq_len": self.seq_len}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; ValueError if it was saved for another corpus or shape."""
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict from StreamBatcher.state_dict(), got {type(state).__name__}")
        for key in ("num_tokens", "batch_size", "seq_len"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(f"batcher state was saved with {key}={state[key]}, but this batcher has "
                                 f"{key}={getattr(self, key)}")
        pos, epoch = state.get("position"), state.get("epoch", 0)
        if isinstance(pos, bool) or not isinstance(pos, (int, np.integer)) or not 0 <= pos < self.num_chunks:
            raise ValueError(f"state['position'] must be a chunk index in [0, {self.num_chunks}), got {pos!r}")
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"state['epoch'] must be a non-negative integer, got {epoch!r}")
        self.position = int(pos)
        self.epoch = int(epoch)

    def __repr__(self):
        return (f"StreamBatcher(tokens={self.num_tokens}, batch_size={self.batch_size}, "
                f"seq_len={self.seq_len}, num_chunks={self.num_chunks})")
