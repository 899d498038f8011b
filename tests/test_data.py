"""Tokenizers, corpora, the train/val split and the stream batcher (bptt.data)."""
import inspect
import json
import sys

import numpy as np
import pytest

from bptt.data import (UNK_ID, UNK_TEXT, Batch, CharTokenizer, DataError, StreamBatcher, WordTokenizer,
                       builtin_corpus, count_unknown, fit_tokenizer, load_corpus, read_text_files,
                       split_train_val, tokenizer_from_dict)


# -- CharTokenizer ------------------------------------------------------------------------------

def test_char_vocab_sorted_by_code_point_with_unk_first():
    tok = CharTokenizer.fit("hello, world")
    assert tok.kind == "char"
    assert tok.chars == sorted(set("hello, world"))
    assert tok.tokens()[0] == "<unk>"
    assert tok.vocab_size == len(set("hello, world")) + 1
    # the same characters in another order give the same ids
    assert CharTokenizer.fit("dlrow ,olleh") == tok
    ids = tok.encode("hello")
    assert ids.dtype == np.int64
    assert ids.tolist() == [tok.chars.index(c) + 1 for c in "hello"]


def test_char_round_trip_including_non_bmp_and_combining():
    text = "naïve café 😀 e\u0301 — ok\n\ttab"
    tok = CharTokenizer.fit(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(list(tok.encode(text))) == text   # plain lists work too


def test_char_unknown_maps_to_unk_and_decodes_as_replacement_char():
    tok = CharTokenizer.fit("abc")
    ids = tok.encode("abxc€")
    assert ids.tolist() == [1, 2, UNK_ID, 3, UNK_ID]
    assert tok.decode(ids) == "ab" + UNK_TEXT + "c" + UNK_TEXT
    with pytest.raises(ValueError, match=r"2 characters not in the vocabulary: 'x', '€'"):
        tok.encode("abxc€x", strict=True)
    assert tok.encode("", strict=True).shape == (0,)


def test_char_decode_rejects_out_of_range_ids():
    tok = CharTokenizer.fit("ab")
    with pytest.raises(ValueError, match=r"\[0, 3\), found 3"):
        tok.decode([1, 3])
    with pytest.raises(ValueError, match="non-negative"):
        tok.decode([-1])


def test_char_to_dict_is_json_and_round_trips():
    tok = CharTokenizer.fit("zebra 🦓\n")
    d = json.loads(json.dumps(tok.to_dict()))
    back = tokenizer_from_dict(d)
    assert isinstance(back, CharTokenizer) and back == tok
    assert back.encode("bra 🦓").tolist() == tok.encode("bra 🦓").tolist()
    with pytest.raises(ValueError, match="char tokenizer"):
        CharTokenizer.from_dict({"kind": "word", "vocab": []})
    with pytest.raises(ValueError, match="sorted"):
        CharTokenizer.from_dict({"kind": "char", "chars": "ba"})


def test_char_fit_rejects_empty_text():
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer.fit("")


# -- WordTokenizer ------------------------------------------------------------------------------

def test_word_split_by_documented_pattern():
    toks = WordTokenizer.split("Don't panic, it's 42!\n\n(Really.)  x_y")
    assert toks == ["Don't", "panic", ",", "it's", "42", "!", "\n", "\n", "(", "Really", ".", ")", "x_y"]


def test_word_vocab_capped_by_frequency_with_deterministic_ties():
    text = "b a c a b d e e e"   # counts: e3, a2, b2, c1, d1
    tok = WordTokenizer.fit(text, max_vocab=4)
    assert tok.vocab == ["e", "a", "b"]      # a before b: equal counts, code-point order
    assert tok.vocab_size == 4
    assert tok.encode("a c e z").tolist() == [2, UNK_ID, 1, UNK_ID]
    with pytest.raises(ValueError, match=r"2 words not in the vocabulary: 'c', 'z'"):
        tok.encode("a c e z", strict=True)
    assert WordTokenizer.fit(text, max_vocab=100).vocab == ["e", "a", "b", "c", "d"]


def test_word_decode_joins_punctuation_and_newlines():
    text = "Hello, world! (Yes.)\nSecond line: done?"
    tok = WordTokenizer.fit(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("Hello zzz world")) == "Hello " + UNK_TEXT + " world"


def test_word_lowercase_and_dict_round_trip():
    tok = WordTokenizer.fit("The cat. the CAT.", lowercase=True)
    assert tok.vocab == [".", "cat", "the"]
    assert tok.encode("THE Cat").tolist() == [3, 2]
    back = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert isinstance(back, WordTokenizer) and back == tok and back.kind == "word"
    assert back != WordTokenizer.fit("The cat. the CAT.")


def test_word_fit_checks_arguments():
    with pytest.raises(ValueError, match="max_vocab must be at least 2"):
        WordTokenizer.fit("a b", max_vocab=1)
    with pytest.raises(ValueError, match="at least one token"):
        WordTokenizer.fit("   ")


def test_fit_tokenizer_and_from_dict_dispatch():
    assert isinstance(fit_tokenizer("char", "ab"), CharTokenizer)
    assert fit_tokenizer("word", "a b b", max_vocab=2).vocab == ["b"]
    with pytest.raises(ValueError, match="tokenizer must be one of char, word; got 'bpe'"):
        fit_tokenizer("bpe", "ab")
    with pytest.raises(ValueError, match="'kind' one of char, word"):
        tokenizer_from_dict({"kind": "bpe"})


# -- built-in corpus ----------------------------------------------------------------------------

def test_builtin_corpus_is_stdlib_docstrings_of_about_600kb():
    import abc
    text = builtin_corpus()
    size = len(text.encode("utf-8"))
    assert 550_000 <= size <= 600_000
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert "\n\n\n" not in text
    assert inspect.cleandoc(abc.__doc__) in text   # the first module's docstring, read via ast
    assert builtin_corpus() is text                # cached


def test_builtin_corpus_is_deterministic_and_imports_nothing():
    first = builtin_corpus()
    builtin_corpus.cache_clear()
    before = set(sys.modules)
    again = builtin_corpus()
    assert again == first
    assert set(sys.modules) - before == set()


def test_builtin_corpus_cut_at_paragraph_boundary():
    small = builtin_corpus(5000)
    assert len(small.encode("utf-8")) <= 5000
    assert builtin_corpus().startswith(small[:-1] + "\n\n")


def test_load_corpus_defaults_to_builtin(tmp_path):
    assert load_corpus() is builtin_corpus()
    assert load_corpus([]) is builtin_corpus()
    p = tmp_path / "a.txt"
    p.write_text("abc\n", encoding="utf-8")
    assert load_corpus(str(p)) == "abc\n"


# -- reading files ------------------------------------------------------------------------------

def test_read_text_files_reads_and_joins(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes("\ufeffline one\r\nline two".encode("utf-8"))   # BOM, CRLF, no final newline
    b.write_text("ünïcode\n", encoding="utf-8")
    assert read_text_files(a) == "line one\nline two"
    assert read_text_files([a, b]) == "line one\nline two\n\nünïcode\n"


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"", "file is empty"),
    (b"\xef\xbb\xbf", "file is empty"),
    (b"abc\x00def", r"binary file \(NUL byte at offset 3\)"),
    (b"hello \xff world", r"not valid UTF-8 \(byte 0xff at offset 6\)"),
    (b"\xef\xbb\xbfhi \xe2\x82", r"not valid UTF-8 \(byte 0xe2 at offset 6\)"),
])
def test_read_text_files_errors(tmp_path, content, message):
    p = tmp_path / "x.txt"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        read_text_files([p])
    assert isinstance(e.value, ValueError)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_read_text_files_directory_and_nothing(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        read_text_files(tmp_path)
    with pytest.raises(DataError, match="no text files given"):
        read_text_files([])


# -- train/val split ----------------------------------------------------------------------------

def test_split_is_contiguous_90_10():
    ids = np.arange(1000)
    train, val = split_train_val(ids)
    assert train.size == 900 and val.size == 100
    assert np.array_equal(np.concatenate([train, val]), ids)
    assert train.dtype == np.int64
    train, val = split_train_val(ids, 0.0)
    assert train.size == 1000 and val.size == 0


def test_split_rejects_short_parts_and_bad_fraction():
    with pytest.raises(ValueError, match="validation part would have 1 tokens"):
        split_train_val(np.arange(10), 0.1)
    with pytest.raises(ValueError, match="validation part would have 9 tokens.*at least 16"):
        split_train_val(np.arange(90), 0.1, min_tokens=16)
    with pytest.raises(ValueError, match="training part would have 1 tokens"):
        split_train_val(np.arange(10), 0.9)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        split_train_val(np.arange(100), 1.0)
    with pytest.raises(ValueError, match="1-D"):
        split_train_val(np.zeros((2, 50), np.int64))


# -- stream batcher -----------------------------------------------------------------------------

def test_batcher_chunks_are_contiguous_streams_with_next_token_targets():
    N, B, T = 103, 4, 5
    ids = np.arange(N) * 7 % 101     # distinct values, so positions can be recovered
    bt = StreamBatcher(ids, B, T)
    S = (N - 1) // B
    assert bt.stream_len == S == 25 and bt.num_chunks == S // T == 5 and len(bt) == 5
    for k in range(bt.num_chunks):
        x, y = bt.chunk(k)
        assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == np.int64
        assert x.flags.c_contiguous and y.flags.c_contiguous
        for b in range(B):
            start = b * S + k * T
            assert x[b].tolist() == ids[start:start + T].tolist()
            assert y[b].tolist() == ids[start + 1:start + T + 1].tolist()
    # chunk k+1 continues chunk k: the target of the last step is the next chunk's first input
    x0, y0 = bt.chunk(0)
    x1, _ = bt.chunk(1)
    assert np.array_equal(y0[:, -1], x1[:, 0])


def test_batcher_wraps_with_reset_and_epoch():
    bt = StreamBatcher(np.arange(50), batch_size=2, seq_len=6)   # S = 24, 4 chunks
    seen = [next(bt) for _ in range(9)]
    assert all(isinstance(b, Batch) for b in seen)
    assert [b.index for b in seen] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert [b.reset for b in seen] == [True, False, False, False, True, False, False, False, True]
    assert [b.epoch for b in seen] == [0, 0, 0, 0, 1, 1, 1, 1, 2]
    assert np.array_equal(seen[4].x, seen[0].x) and np.array_equal(seen[5].y, seen[1].y)
    assert bt.position == 1 and bt.epoch == 2
    x, y, reset, epoch, index = seen[2]
    assert index == 2 and not reset and x.shape == (2, 6)


def test_batcher_state_dict_resumes_exactly():
    ids = np.random.default_rng(0).integers(0, 50, size=500)
    a = StreamBatcher(ids, 3, 7)
    for _ in range(a.num_chunks + 2):
        next(a)
    state = json.loads(json.dumps(a.state_dict()))
    b = StreamBatcher(ids, 3, 7)
    b.load_state_dict(state)
    for _ in range(a.num_chunks + 3):
        p, q = next(a), next(b)
        assert np.array_equal(p.x, q.x) and np.array_equal(p.y, q.y)
        assert (p.reset, p.epoch, p.index) == (q.reset, q.epoch, q.index)


def test_batcher_load_state_rejects_other_shapes():
    ids = np.arange(200)
    state = StreamBatcher(ids, 2, 5).state_dict()
    with pytest.raises(ValueError, match="batch_size=2, but this batcher has batch_size=4"):
        StreamBatcher(ids, 4, 5).load_state_dict(state)
    with pytest.raises(ValueError, match="num_tokens=200"):
        StreamBatcher(np.arange(300), 2, 5).load_state_dict(state)
    with pytest.raises(ValueError, match="position"):
        StreamBatcher(ids, 2, 5).load_state_dict(dict(state, position=99))


def test_batcher_iter_epoch_leaves_position_alone():
    bt = StreamBatcher(np.arange(100), 3, 4)
    next(bt)
    chunks = list(bt.iter_epoch())
    assert [c.index for c in chunks] == list(range(bt.num_chunks))
    assert bt.position == 1


def test_batcher_too_short_corpus_says_how_many_tokens():
    with pytest.raises(ValueError, match=r"has 40 tokens.*batch_size=4.*seq_len=10.*at least 41 tokens"):
        StreamBatcher(np.arange(40), 4, 10)
    assert StreamBatcher(np.arange(41), 4, 10).num_chunks == 1
    with pytest.raises(ValueError, match="seq_len must be a positive integer"):
        StreamBatcher(np.arange(41), 4, 0)
    with pytest.raises(ValueError, match="integer token ids"):
        StreamBatcher(np.linspace(0, 1, 100), 2, 3)


def test_batcher_remainder_is_the_streams_uncovered_tail():
    ids = np.arange(24)                      # S = 23 // 2 = 11, T = 4: 2 chunks, 3 left per stream
    b = StreamBatcher(ids, 2, 4)
    x, y = b.remainder()
    assert np.array_equal(x, [[8, 9, 10], [19, 20, 21]]) and np.array_equal(y, x + 1)
    assert StreamBatcher(np.arange(17), 2, 4).remainder() is None   # S = 8: whole chunks


def test_count_unknown_counts_unk_and_buckets():
    c = CharTokenizer.fit("abc")
    assert count_unknown(c, c.encode("abxyc")) == 2
    w = WordTokenizer.fit("the cat sat", oov_buckets=4)
    assert count_unknown(w, w.encode("the dog sat on it")) == 3
    w0 = WordTokenizer.fit("the cat sat")
    assert count_unknown(w0, w0.encode("the dog")) == 1

