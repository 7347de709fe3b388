"""Tests of d2l_ext.data.text: finding (and downloading) *The Time Machine*, the book's preprocessing,
``Vocab``, the two sequence samplers and ``SeqDataLoader``.

The statistics of the real corpus are checked only when the file is found (the workspace copy
``../shared/data/timemachine.txt``, ``$D2L_EXT_TIME_MACHINE`` or the cache); those tests skip otherwise.
Everything else runs on synthetic corpora, and downloads are served from memory.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import urllib.error
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from d2l_ext import data
from d2l_ext.data import text
from d2l_ext.data.text import (
    SeqDataLoader,
    Vocab,
    load_corpus_time_machine,
    load_data_time_machine,
    preprocess,
    read_time_machine,
    seq_data_iter_random,
    seq_data_iter_sequential,
    time_machine_path,
    tokenize,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- the real corpus


@pytest.fixture(scope="module")
def real_path() -> Path:
    try:
        return time_machine_path()
    except FileNotFoundError:
        pytest.skip(
            "timemachine.txt not found (../shared/data/, $D2L_EXT_TIME_MACHINE or the cache); "
            "point D2L_EXT_TIME_MACHINE at it to run the corpus tests"
        )


@pytest.fixture(scope="module")
def raw(real_path: Path) -> str:
    return real_path.read_text(encoding="utf-8")


def test_shared_copy_location():
    """The workspace copy is looked for at <project root>/../shared/data/timemachine.txt."""
    if PROJECT_ROOT not in Path(text.__file__).resolve().parents:
        pytest.skip("d2l_ext is imported from outside this source tree")
    assert text.SHARED_TIME_MACHINE == PROJECT_ROOT.parent / "shared" / "data" / "timemachine.txt"


def test_real_sha1(real_path: Path):
    assert hashlib.sha1(real_path.read_bytes()).hexdigest() == text.TIME_MACHINE_SHA1


def test_real_raw_text(raw: str):
    assert raw.startswith("The Time Machine, by H. G. Wells [1898]")
    assert read_time_machine() == raw


def test_real_preprocess_alphabet(raw: str):
    processed = preprocess(raw)
    assert set(processed) == set("abcdefghijklmnopqrstuvwxyz ")
    assert "  " not in processed
    assert processed.startswith("the time machine by h g wells i the time traveller")


def test_real_char_vocab(raw: str):
    """Book 2023 (ch. 9.2) prints ``len(corpus), len(vocab)`` = (173428, 28)."""
    corpus, vocab = load_corpus_time_machine()
    processed = preprocess(raw)
    assert len(vocab) == 28
    assert vocab.idx_to_token[0] == "<unk>"
    assert sorted(vocab.idx_to_token[1:]) == sorted("abcdefghijklmnopqrstuvwxyz ")
    assert [tok for tok, _ in vocab.token_freqs[:5]] == [" ", "e", "t", "a", "i"]
    assert vocab.idx_to_token[1:6] == [" ", "e", "t", "a", "i"]
    counts = dict(vocab.token_freqs)
    assert counts[" "] == processed.count(" ")
    # The letter counts are the book's; its space count (29927) is the older edition's, which
    # preprocessed line by line and stripped each line: one space fewer per line boundary.
    assert counts["e"] == 17838 and counts["t"] == 13515
    lines = [re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in raw.splitlines()]
    assert sum(line.count(" ") for line in lines) == 29927
    assert sum(len(line) for line in lines) == 170580  # the older edition's len(corpus)
    assert len(corpus) == len(processed) == 173428


def test_real_word_vocab(raw: str):
    """Book (ch. 9.2): the ten most frequent words and their counts."""
    corpus, vocab = load_corpus_time_machine(token="word")
    book = [("the", 2261), ("i", 1267), ("and", 1245), ("of", 1155), ("a", 816),
            ("to", 695), ("was", 552), ("in", 541), ("that", 443), ("my", 440)]
    assert vocab.token_freqs[:10] == book
    assert vocab.idx_to_token[1:4] == ["the", "i", "and"]
    assert len(corpus) == len(preprocess(raw).split())
    assert len(vocab) == len(set(preprocess(raw).split())) + 1


def test_real_corpus_round_trip(raw: str):
    corpus, vocab = load_corpus_time_machine()
    processed = preprocess(raw)
    assert "".join(vocab.to_tokens(corpus[:200])) == processed[:200]
    short, short_vocab = load_corpus_time_machine(max_tokens=10000)
    assert short == corpus[:10000]
    assert short_vocab.idx_to_token == vocab.idx_to_token  # the vocabulary is built on the whole text


def test_real_load_data(raw: str):
    loader, vocab = load_data_time_machine(32, 35, seed=0)
    assert len(vocab) == 28 and loader.num_tokens == 10000
    batches = list(loader)
    assert len(batches) == (((10000 - loader.offset(0) - 1) // 32) // 35) > 0
    for X, Y in batches:
        assert X.shape == Y.shape == (32, 35) and X.dtype == Y.dtype == torch.int64


# --------------------------------------------------------------------------- finding the file


class FakeResponse(io.BytesIO):
    """What ``urlopen`` returns: a readable context manager."""


class FakeServer:
    """Stands in for ``urllib.request.urlopen``: serves ``payload`` and records the calls."""

    def __init__(self, payload: bytes | None = None, error: Exception | None = None) -> None:
        self.payload, self.error = payload, error
        self.calls: list[tuple[str, float | None]] = []

    def __call__(self, request, timeout=None):
        self.calls.append((getattr(request, "full_url", request), timeout))
        if self.error is not None:
            raise self.error
        return FakeResponse(self.payload)


def no_network(request, timeout=None):
    raise AssertionError("no network access expected")


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> dict[str, Path]:
    """Every place the corpus is looked for points into an empty tmp_path; the network is off."""
    monkeypatch.delenv(text.TIME_MACHINE_ENV, raising=False)
    cache_root = tmp_path / "cache"
    monkeypatch.setenv("D2L_EXT_DATA", str(cache_root))
    shared = tmp_path / "shared" / "data" / "timemachine.txt"
    monkeypatch.setattr(text, "SHARED_TIME_MACHINE", shared)
    monkeypatch.setattr(text.urllib.request, "urlopen", no_network)
    return {"cache": cache_root / "timemachine.txt", "shared": shared, "tmp": tmp_path}


def write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def test_missing_corpus_message(isolated):
    with pytest.raises(FileNotFoundError) as info:
        time_machine_path()
    message = str(info.value)
    for needle in (str(isolated["shared"]), str(isolated["cache"]), text.TIME_MACHINE_ENV,
                   "download=True", "--corpus"):
        assert needle in message
    with pytest.raises(FileNotFoundError):
        read_time_machine()
    with pytest.raises(FileNotFoundError):
        load_data_time_machine(2, 5)


def test_search_order(isolated, monkeypatch):
    cache = write(isolated["cache"], "cache")
    assert time_machine_path() == cache
    shared = write(isolated["shared"], "shared")
    assert time_machine_path() == shared
    env_file = write(isolated["tmp"] / "env" / "tm.txt", "env")
    monkeypatch.setenv(text.TIME_MACHINE_ENV, str(env_file))
    assert time_machine_path() == env_file
    env_dir = isolated["tmp"] / "envdir"
    write(env_dir / "timemachine.txt", "env dir")
    monkeypatch.setenv(text.TIME_MACHINE_ENV, str(env_dir))
    assert read_time_machine() == "env dir"
    arg = write(isolated["tmp"] / "arg.txt", "argument")
    assert time_machine_path(arg) == arg
    assert read_time_machine(str(arg)) == "argument"
    assert read_time_machine(env_dir) == "env dir"  # a directory holding timemachine.txt


def test_explicit_places_must_exist(isolated, monkeypatch):
    write(isolated["cache"], "cache")  # never a fallback for a wrong explicit path
    with pytest.raises(FileNotFoundError, match="does not exist"):
        time_machine_path(isolated["tmp"] / "nope.txt")
    with pytest.raises(FileNotFoundError, match="directory without timemachine.txt"):
        time_machine_path(isolated["tmp"])
    monkeypatch.setenv(text.TIME_MACHINE_ENV, str(isolated["tmp"] / "nope.txt"))
    with pytest.raises(FileNotFoundError, match=text.TIME_MACHINE_ENV):
        time_machine_path()


def test_download_checksum_mismatch(isolated, monkeypatch):
    server = FakeServer(b"not the time machine\n")
    monkeypatch.setattr(text.urllib.request, "urlopen", server)
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        time_machine_path(download=True)
    assert server.calls and server.calls[0][0] == text.TIME_MACHINE_URL
    assert server.calls[0][1] is not None and server.calls[0][1] > 0  # a timeout is set
    cache_dir = isolated["cache"].parent
    assert list(cache_dir.iterdir()) == []  # neither the file nor the temporary one is left


def test_download_accepts_correct_bytes(isolated, monkeypatch):
    payload = b"The Time Machine, by H. G. Wells [1898]\n\nI\n"
    monkeypatch.setattr(text, "TIME_MACHINE_SHA1", hashlib.sha1(payload).hexdigest())
    server = FakeServer(payload)
    monkeypatch.setattr(text.urllib.request, "urlopen", server)
    path = time_machine_path(download=True)
    assert path == isolated["cache"] and path.read_bytes() == payload
    assert [p.name for p in path.parent.iterdir()] == ["timemachine.txt"]
    monkeypatch.setattr(text.urllib.request, "urlopen", no_network)
    assert read_time_machine(download=True) == payload.decode()  # found in the cache: no new download
    assert len(server.calls) == 1


def test_download_network_error(isolated, monkeypatch):
    monkeypatch.setattr(text.urllib.request, "urlopen", FakeServer(error=urllib.error.URLError("offline")))
    with pytest.raises(RuntimeError, match="download failed") as info:
        time_machine_path(download=True)
    assert str(isolated["cache"]) in str(info.value) and "--corpus" in str(info.value)
    assert list(isolated["cache"].parent.iterdir()) == []


# --------------------------------------------------------------------------- preprocessing and vocabulary


def test_preprocess_and_tokenize():
    processed = preprocess("The Time-Machine, by H. G. Wells [1898]\n\nI\n")
    assert processed == "the time machine by h g wells i "
    assert tokenize("ab c") == ["a", "b", " ", "c"]
    assert tokenize(" the  time\nmachine ", "word") == ["the", "time", "machine"]
    with pytest.raises(ValueError, match="'char' or 'word'"):
        tokenize("abc", "line")


def test_vocab_order_and_lookup():
    tokens = list("aaabbbccd")  # a, b tie at 3; then c, d
    vocab = Vocab(tokens)
    assert vocab.idx_to_token == ["<unk>", "a", "b", "c", "d"]
    assert vocab.token_freqs == [("a", 3), ("b", 3), ("c", 2), ("d", 1)]
    assert vocab.token_to_idx == {t: i for i, t in enumerate(vocab.idx_to_token)}
    assert vocab.unk == 0 and vocab["zzz"] == 0 and vocab["<unk>"] == 0
    assert vocab["c"] == 3 and vocab[["a", "zzz", "d"]] == [1, 0, 4] and vocab[("b",)] == [2]
    assert "a" in vocab and "zzz" not in vocab
    assert vocab.to_tokens(3) == "c" and vocab.to_tokens([1, 0]) == ["a", "<unk>"]
    assert vocab.to_tokens(torch.tensor([[1, 2]])) == [["a", "b"]]
    with pytest.raises(IndexError):
        vocab.to_tokens(len(vocab))
    assert Vocab(list("dccbbbaaa")).idx_to_token == vocab.idx_to_token  # ties do not depend on input order


def test_vocab_min_freq_and_reserved():
    tokens = list("aaabbbccd")
    vocab = Vocab(tokens, min_freq=2, reserved_tokens=["<pad>", "<bos>", "a"])
    assert vocab.idx_to_token == ["<unk>", "<pad>", "<bos>", "a", "b", "c"]
    assert vocab["d"] == vocab.unk  # below min_freq
    assert ("d", 1) in vocab.token_freqs  # still counted
    assert Vocab(tokens, min_freq=4).idx_to_token == ["<unk>"]
    assert Vocab(["<unk>", "x"]).idx_to_token == ["<unk>", "x"]
    assert len(Vocab()) == 1


def test_vocab_nested_tokens_and_pickle():
    lines = [["the", "time"], ["the", "machine"], []]
    vocab = Vocab(lines)
    assert vocab.idx_to_token == ["<unk>", "the", "machine", "time"]
    assert vocab[lines] == [[1, 3], [1, 2], []]
    assert vocab.to_tokens(vocab[lines]) == lines
    clone = pickle.loads(pickle.dumps(vocab))
    assert clone.idx_to_token == vocab.idx_to_token and clone.token_freqs == vocab.token_freqs
    assert clone["time"] == 3 and clone["nope"] == 0
    bigrams = Vocab([("the", "time"), ("time", "machine"), ("the", "time")])  # tuples are single tokens
    assert bigrams.idx_to_token == ["<unk>", ("the", "time"), ("time", "machine")]
    assert bigrams.token_to_idx[("time", "machine")] == 2


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="abcde", min_size=1, max_size=3), max_size=60), st.integers(0, 4))
def test_vocab_round_trip_property(tokens, min_freq):
    vocab = Vocab(tokens, min_freq=min_freq)
    known = [t for t in tokens if t in vocab]
    assert vocab.to_tokens(vocab[known]) == known
    freqs = [f for _, f in vocab.token_freqs]
    assert freqs == sorted(freqs, reverse=True)
    assert all(f >= min_freq for _, f in vocab.token_freqs if _ in vocab)
    assert Vocab(sorted(tokens), min_freq=min_freq).idx_to_token == vocab.idx_to_token


# --------------------------------------------------------------------------- samplers


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_random(batches, length: int, batch_size: int, num_steps: int) -> None:
    """Invariants of ``seq_data_iter_random`` over the corpus ``range(length)``."""
    starts = []
    for X, Y in batches:
        assert X.shape == Y.shape == (batch_size, num_steps)
        assert X.dtype == Y.dtype == torch.int64
        assert torch.equal(Y, X + 1)
        assert torch.equal(X, X[:, :1] + torch.arange(num_steps))  # consecutive tokens
        starts += X[:, 0].tolist()
    assert len(starts) == len(set(starts))  # no subsequence twice
    if not starts:
        assert length < (batch_size + 1) * num_steps  # too short for a batch at some offset
        return
    offset = min(starts) % num_steps
    assert all(s % num_steps == offset for s in starts)  # non-overlapping, on the offset's grid
    assert all(s + num_steps < length for s in starts)  # Y stays inside the corpus
    num_subseqs = (length - offset - 1) // num_steps
    assert len(batches) == num_subseqs // batch_size


def check_sequential(batches, length: int, batch_size: int, num_steps: int) -> None:
    """Invariants of ``seq_data_iter_sequential`` over the corpus ``range(length)``."""
    for X, Y in batches:
        assert X.shape == Y.shape == (batch_size, num_steps)
        assert X.dtype == Y.dtype == torch.int64
        assert torch.equal(Y, X + 1)
    for (X0, _), (X1, _) in zip(batches, batches[1:]):
        assert torch.equal(X1[:, 0], X0[:, -1] + 1)  # row r continues where it ended
    if not batches:
        assert length < (batch_size + 1) * num_steps  # too short for a batch at some offset
        return
    streams = torch.cat([X for X, _ in batches], dim=1)  # (batch_size, num_batches * num_steps)
    offset = int(streams[0, 0])
    assert 0 <= offset < num_steps
    stream_len = (length - offset - 1) // batch_size
    assert len(batches) == stream_len // num_steps
    expected = offset + torch.arange(batch_size)[:, None] * stream_len + torch.arange(streams.shape[1])
    assert torch.equal(streams, expected)  # each stream: consecutive tokens, each once
    assert streams.unique().numel() == streams.numel()
    assert int(streams.max()) + 1 < length


def test_book_example_random():
    corpus = list(range(35))
    for seed in range(10):
        batches = list(seq_data_iter_random(corpus, batch_size=2, num_steps=5, generator=seeded(seed)))
        check_random(batches, 35, 2, 5)
        assert len(batches) == 3  # 6 subsequences at offset 0..4 -> 3 batches of 2
        assert len(batches) == len(list(seq_data_iter_random(torch.arange(35), 2, 5, generator=seeded(seed))))


def test_book_example_sequential():
    corpus = list(range(35))
    for seed in range(10):
        batches = list(seq_data_iter_sequential(corpus, batch_size=2, num_steps=5, generator=seeded(seed)))
        check_sequential(batches, 35, 2, 5)
        assert len(batches) == 3  # streams of (35 - offset - 1) // 2 in 15..17 tokens -> 3 batches


def test_offsets_cover_the_range():
    offsets = {int(next(seq_data_iter_sequential(range(100), 2, 5, generator=seeded(s)))[0][0, 0])
               for s in range(60)}
    assert offsets == set(range(5))
    starts = {min(x[:, 0].min().item() % 5 for x, _ in seq_data_iter_random(range(100), 2, 5, seeded(s)))
              for s in range(60)}
    assert starts == set(range(5))


@pytest.mark.parametrize("sampler", [seq_data_iter_random, seq_data_iter_sequential])
def test_sampler_determinism(sampler):
    corpus = list(range(1000))

    def run(seed):
        return [(x.clone(), y.clone()) for x, y in sampler(corpus, 4, 7, generator=seeded(seed))]

    first, again = run(3), run(3)
    assert len(first) == len(again) > 0
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    torch.manual_seed(0)
    global_a = [x for x, _ in sampler(corpus, 4, 7)]
    torch.manual_seed(0)
    global_b = [x for x, _ in sampler(corpus, 4, 7)]
    assert all(torch.equal(a, b) for a, b in zip(global_a, global_b))


def test_sampler_maps_tokens():
    corpus = [7, 3, 9, 1, 4, 11, 8, 2, 6, 5, 0]
    for X, Y in seq_data_iter_sequential(corpus, 1, 3, generator=seeded(0)):
        start = corpus.index(int(X[0, 0]))
        assert X[0].tolist() == corpus[start : start + 3] and Y[0].tolist() == corpus[start + 1 : start + 4]


@pytest.mark.parametrize("sampler", [seq_data_iter_random, seq_data_iter_sequential])
def test_sampler_arguments(sampler):
    with pytest.raises(ValueError, match="batch_size"):
        list(sampler(range(10), 0, 2))
    with pytest.raises(ValueError, match="num_steps"):
        list(sampler(range(10), 2, 0))
    with pytest.raises(ValueError, match="1-D"):
        list(sampler(torch.zeros(3, 4, dtype=torch.int64), 1, 2))
    with pytest.raises(TypeError, match="integer"):
        list(sampler(torch.zeros(10), 1, 2))
    assert list(sampler([], 1, 1)) == [] and list(sampler([5], 1, 1)) == []


@settings(max_examples=150, deadline=None)
@given(length=st.integers(0, 300), batch_size=st.integers(1, 8), num_steps=st.integers(1, 12),
       seed=st.integers(0, 2**31))
def test_sampler_invariants_property(length, batch_size, num_steps, seed):
    corpus = list(range(length))
    random_batches = list(seq_data_iter_random(corpus, batch_size, num_steps, generator=seeded(seed)))
    check_random(random_batches, length, batch_size, num_steps)
    sequential_batches = list(seq_data_iter_sequential(corpus, batch_size, num_steps, generator=seeded(seed)))
    check_sequential(sequential_batches, length, batch_size, num_steps)
    if length <= batch_size * num_steps:  # too short whatever the offset
        assert random_batches == [] and sequential_batches == []
    if length >= (batch_size + 1) * num_steps:  # long enough whatever the offset
        assert random_batches and sequential_batches


# --------------------------------------------------------------------------- SeqDataLoader


def batches_of(iterator):
    return [(x.clone(), y.clone()) for x, y in iterator]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


@pytest.mark.parametrize("use_random_iter", [True, False], ids=["random", "sequential"])
def test_loader_epochs_reproducible(use_random_iter):
    corpus = list(range(503))
    loader = SeqDataLoader.from_corpus(corpus, 4, 6, use_random_iter, seed=11)
    epochs = [batches_of(loader.epoch(e)) for e in range(8)]
    assert all(same(batches_of(loader.epoch(e)), epochs[e]) for e in range(8))
    assert not all(same(epochs[0], other) for other in epochs[1:])  # epochs differ
    if use_random_iter:
        assert not same(epochs[0], epochs[1])
    # epoch e is the sampler run with a generator seeded seed + e
    sampler = seq_data_iter_random if use_random_iter else seq_data_iter_sequential
    assert same(batches_of(sampler(corpus, 4, 6, generator=seeded(11 + 5))), epochs[5])
    # iterating walks through the epochs; set_epoch resumes anywhere
    assert same(batches_of(loader), epochs[0]) and same(batches_of(loader), epochs[1])
    assert loader.next_epoch == 2
    loader.set_epoch(6)
    assert same(batches_of(loader), epochs[6]) and loader.next_epoch == 7
    other = SeqDataLoader.from_corpus(corpus, 4, 6, use_random_iter, seed=11)
    assert same(batches_of(other.epoch(3)), epochs[3])  # another loader, same seed: same epoch
    for epoch_batches in epochs:
        (check_random if use_random_iter else check_sequential)(epoch_batches, 503, 4, 6)


@pytest.mark.parametrize("use_random_iter", [True, False], ids=["random", "sequential"])
def test_loader_len_matches_iteration(use_random_iter):
    loader = SeqDataLoader.from_corpus(range(200), 3, 7, use_random_iter, seed=0)
    for e in range(20):
        expected = len(loader)
        assert loader.num_batches(e) == expected
        assert sum(1 for _ in loader) == expected
        offset = loader.offset(e)
        assert 0 <= offset < 7
        if use_random_iter:
            assert expected == ((200 - offset - 1) // 7) // 3
        else:
            assert expected == ((200 - offset - 1) // 3) // 7
    assert loader.num_tokens == 200
    loader = SeqDataLoader.from_corpus(range(85), 4, 7, use_random_iter, seed=0)
    counts = set()
    for _ in range(40):  # here offset 0 gives 3 batches, offsets 1..6 give 2
        expected = len(loader)
        assert len(batches_of(loader)) == expected
        counts.add(expected)
    assert counts == {2, 3}


def test_loader_seed_none_follows_torch_seed():
    torch.manual_seed(5)
    a = SeqDataLoader.from_corpus(range(300), 2, 5, True)
    torch.manual_seed(5)
    b = SeqDataLoader.from_corpus(range(300), 2, 5, True)
    assert a.seed == b.seed and same(batches_of(a), batches_of(b))
    with pytest.raises(ValueError, match="epoch"):
        a.set_epoch(-1)
    with pytest.raises(TypeError, match="seed"):
        SeqDataLoader.from_corpus(range(300), 2, 5, True, seed=1.5)


def test_load_data_time_machine_on_a_file(tmp_path):
    sample = "The Time Traveller (for so it will be convenient to speak of him)\nwas expounding!\n" * 20
    path = write(tmp_path / "tm.txt", sample)
    loader, vocab = load_data_time_machine(4, 10, max_tokens=-1, path=path, seed=1)
    processed = preprocess(sample)
    assert loader.vocab is vocab and loader.num_tokens == len(processed)
    assert "".join(vocab.to_tokens(loader.corpus)) == processed
    batches = batches_of(loader)
    assert len(batches) == loader.num_batches(0) > 0
    for X, Y in batches:  # Y is X shifted by one character of the text
        for x_row, y_row in zip(vocab.to_tokens(X), vocab.to_tokens(Y)):
            x_text, y_text = "".join(x_row), "".join(y_row)
            assert x_text[1:] == y_text[:-1] and x_text + y_text[-1] in processed
    loader, vocab = load_data_time_machine(2, 3, True, max_tokens=30, token="word", path=tmp_path / "tm.txt")
    assert loader.num_tokens == 30 and vocab.idx_to_token[1] == "be"  # all words tie: by string
    assert repr(loader).startswith("SeqDataLoader(random")


def test_reexported():
    for name in text.__all__:
        assert getattr(data, name) is getattr(text, name)
        assert name in data.__all__
