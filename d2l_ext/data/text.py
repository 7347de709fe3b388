"""The text pipeline of the book (ch. 9.2-9.5): *The Time Machine*, tokens, a vocabulary and the
two minibatch samplers of a language model.

* ``time_machine_path()`` / ``read_time_machine()`` find the corpus (an argument, ``$D2L_EXT_TIME_MACHINE``,
  the workspace copy ``../shared/data/timemachine.txt`` next to the project, the download cache) and,
  with ``download=True``, fetch the book's copy, checked against ``TIME_MACHINE_SHA1``.
* ``preprocess`` / ``tokenize`` / ``Vocab`` / ``load_corpus_time_machine`` turn it into a flat list of
  token indices, as the book does: every run of non-letters becomes one space, then lowercase.
* ``seq_data_iter_random`` / ``seq_data_iter_sequential`` cut a corpus into (X, Y) minibatches of
  shape (batch_size, num_steps), Y being X shifted by one token; ``SeqDataLoader`` wraps them with
  reproducible epochs (epoch ``e`` of a loader with ``seed`` always yields the same batches).

Example::

    loader, vocab = load_data_time_machine(batch_size=32, num_steps=35)
    for X, Y in loader:  # int64 (32, 35) each
        ...
"""

from __future__ import annotations

import collections
import hashlib
import operator
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Union

import torch

from .vision import default_data_root
from .vision import download as fetch  # `download` is a parameter name in this module

__all__ = [
    "TIME_MACHINE_ENV",
    "TIME_MACHINE_SHA1",
    "TIME_MACHINE_URL",
    "SeqDataLoader",
    "Vocab",
    "load_corpus_time_machine",
    "load_data_time_machine",
    "preprocess",
    "read_time_machine",
    "seq_data_iter_random",
    "seq_data_iter_sequential",
    "time_machine_path",
    "tokenize",
]

#: The book's copy of the text and its SHA-1 (the checksum ``d2l.download`` checks).
TIME_MACHINE_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
TIME_MACHINE_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
TIME_MACHINE_FILE = "timemachine.txt"
#: Environment variable naming the corpus file (or a directory holding timemachine.txt).
TIME_MACHINE_ENV = "D2L_EXT_TIME_MACHINE"
#: Seconds a single network operation may block, and the most the whole download may take.
DOWNLOAD_TIMEOUT = 30.0
DOWNLOAD_DEADLINE = 300.0


def _shared_corpus_path() -> Path | None:
    """``<project root>/../shared/data/timemachine.txt`` (a workspace copy, never part of the project)."""
    parents = Path(__file__).resolve().parents
    if len(parents) < 4:  # pragma: no cover - a file system root too close to the package
        return None
    return parents[3] / "shared" / "data" / TIME_MACHINE_FILE


#: The workspace copy looked for after the argument and the environment variable (used only if it exists).
SHARED_TIME_MACHINE: Path | None = _shared_corpus_path()

PathLike = Union[str, "os.PathLike[str]"]
Token = str
Corpus = Union[Sequence[int], torch.Tensor]


# --------------------------------------------------------------------------- the corpus file


def _cache_path() -> Path:
    return default_data_root() / TIME_MACHINE_FILE


def _advice() -> str:
    return (
        f"pass the file (or its folder) as path= (`--corpus PATH` on the command line), "
        f"set {TIME_MACHINE_ENV} to it, or pass download=True (`--download`) "
        f"to fetch {TIME_MACHINE_URL} into {_cache_path()}"
    )


def _resolve_given(value: PathLike, what: str) -> Path:
    """The corpus named by ``value`` (a file, or a directory holding timemachine.txt), or raise."""
    path = Path(value).expanduser()
    if path.is_dir():
        candidate = path / TIME_MACHINE_FILE
        if candidate.is_file():
            return candidate
        raise FileNotFoundError(
            f"{what} {str(path)!r} is a directory without {TIME_MACHINE_FILE}; {_advice()}"
        )
    if path.is_file():
        return path
    raise FileNotFoundError(f"{what} {str(path)!r} does not exist; {_advice()}")


def _sha1(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def time_machine_path(path: PathLike | None = None, download: bool = False) -> Path:
    """Path of *The Time Machine* (``timemachine.txt``), looked for in this order:

    1. ``path``: the file, or a directory holding ``timemachine.txt`` (an error if it is neither);
    2. ``$D2L_EXT_TIME_MACHINE``, read the same way (an error if set to something else);
    3. ``SHARED_TIME_MACHINE``, ``<project root>/../shared/data/timemachine.txt``, if it exists;
    4. the cache ``default_data_root() / "timemachine.txt"`` (``$D2L_EXT_DATA`` or ``~/.cache/d2l_ext``).

    When none exists and ``download`` is True, the book's copy is fetched from ``TIME_MACHINE_URL``
    into the cache (with a timeout, atomically) and checked against ``TIME_MACHINE_SHA1``;
    ``RuntimeError`` if that fails. Otherwise raises ``FileNotFoundError`` listing the places
    searched and what to do. Files found on disk are not checksummed (any text may serve as corpus).
    """
    if path is not None:
        return _resolve_given(path, "path")
    env = os.environ.get(TIME_MACHINE_ENV, "").strip()
    if env:
        return _resolve_given(env, f"{TIME_MACHINE_ENV}=")
    searched = [f"${TIME_MACHINE_ENV} (not set)"]
    if SHARED_TIME_MACHINE is not None:
        if SHARED_TIME_MACHINE.is_file():
            return SHARED_TIME_MACHINE
        searched.append(str(SHARED_TIME_MACHINE))
    cache = _cache_path()
    if cache.is_file():
        return cache
    searched.append(str(cache))
    if not download:
        raise FileNotFoundError(
            f"The Time Machine ({TIME_MACHINE_FILE}) not found; searched: {'; '.join(searched)}. "
            f"To fix: {_advice()}"
        )
    try:
        fetch(TIME_MACHINE_URL, cache, TIME_MACHINE_SHA1, "sha1", DOWNLOAD_TIMEOUT, DOWNLOAD_DEADLINE)
    except RuntimeError as exc:
        raise RuntimeError(f"The Time Machine: {exc}") from exc
    except (OSError, urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise RuntimeError(
            f"The Time Machine download failed for {TIME_MACHINE_URL} ({type(exc).__name__}: {exc}); "
            f"download it by hand and put it at {cache}, or pass its path as path= (`--corpus PATH`) "
            f"or in {TIME_MACHINE_ENV}"
        ) from exc
    return cache


def read_time_machine(path: PathLike | None = None, download: bool = False) -> str:
    """The raw text of *The Time Machine* (178,979 characters for the book's copy).

    Where it is looked for: see ``time_machine_path``.
    """
    return time_machine_path(path, download).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- tokens and vocabulary

_NON_LETTERS = re.compile("[^A-Za-z]+")


def preprocess(text: str) -> str:
    """The book's preprocessing: every run of non-letters becomes one space, then lowercase.

    The result holds only ``a``-``z`` and single spaces (it may start or end with a space).
    """
    return _NON_LETTERS.sub(" ", text).lower()


def tokenize(text: str, token: str = "char") -> list[str]:
    """``"char"``: the list of characters of ``text``; ``"word"``: ``text.split()``."""
    if token == "char":
        return list(text)
    if token == "word":
        return text.split()
    raise ValueError(f"unknown token type {token!r}: use 'char' or 'word'")


def _flatten(tokens: Iterable[Any]) -> list[Token]:
    flat: list[Token] = []
    for item in tokens:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


class Vocab:
    """A vocabulary: token <-> index, as the book's ``Vocab``.

    Args:
        tokens: the tokens (strings) to count, a flat sequence or a (nested) list of lists of tokens;
            only lists are flattened, so tuples such as bigrams count as single tokens (look them up
            with ``token_to_idx``: ``vocab[a_tuple]`` means several tokens).
        min_freq: tokens seen fewer times are left out (they map to ``<unk>``).
        reserved_tokens: tokens put right after ``<unk>`` in this order, whatever their count.

    Index 0 is ``"<unk>"``, then the reserved tokens, then the counted tokens with count >= ``min_freq``
    by descending count, ties broken by the token string (so the order never depends on the input
    order). ``token_freqs`` lists every counted token, in that order, with its count, including the
    ones ``min_freq`` left out. A token that is ``<unk>`` or reserved appears once, at its first place.
    """

    UNK = "<unk>"

    def __init__(
        self, tokens: Iterable[Any] = (), min_freq: int = 0, reserved_tokens: Iterable[Token] = ()
    ) -> None:
        counter = collections.Counter(_flatten(tokens))
        self.token_freqs: list[tuple[Token, int]] = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        self.idx_to_token: list[Token] = [self.UNK]
        self.token_to_idx: dict[Token, int] = {self.UNK: 0}
        counted = (tok for tok, freq in self.token_freqs if freq >= min_freq)
        for tok in (*reserved_tokens, *counted):
            if tok not in self.token_to_idx:
                self.token_to_idx[tok] = len(self.idx_to_token)
                self.idx_to_token.append(tok)

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __getitem__(self, tokens: Any) -> Any:
        """Index of a token (``unk`` for unknown ones), or the (nested) list of indices of a list/tuple."""
        if isinstance(tokens, (list, tuple)):
            return [self[tok] for tok in tokens]
        return self.token_to_idx.get(tokens, self.unk)

    def __contains__(self, token: object) -> bool:
        return token in self.token_to_idx

    def to_tokens(self, indices: Any) -> Any:
        """Token of an index, or the (nested) list of tokens of a list/tuple/tensor of indices.

        ``IndexError`` for an index outside [0, len(vocab)).
        """
        if isinstance(indices, torch.Tensor):
            indices = indices.tolist()
        if isinstance(indices, (list, tuple)):
            return [self.to_tokens(i) for i in indices]
        i = operator.index(indices)
        if not 0 <= i < len(self.idx_to_token):
            raise IndexError(f"index {i} outside the vocabulary [0, {len(self.idx_to_token)})")
        return self.idx_to_token[i]

    @property
    def unk(self) -> int:
        """Index of the unknown token: 0."""
        return 0

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self.idx_to_token[:6])
        more = ", ..." if len(self) > 6 else ""
        return f"Vocab(size={len(self)}, tokens=[{head}{more}])"


def load_corpus_time_machine(
    max_tokens: int = -1, token: str = "char", path: PathLike | None = None, download: bool = False
) -> tuple[list[int], Vocab]:
    """(corpus, vocab) of *The Time Machine*, as the book's ``load_corpus_time_machine``.

    ``corpus`` is the flat list of the token indices of ``tokenize(preprocess(text), token)``
    (173,428 characters for the book's copy), truncated to its first ``max_tokens`` when
    ``max_tokens > 0``; ``vocab`` is built from the whole text (28 tokens for characters: ``<unk>``,
    the space and 26 letters).
    """
    tokens = tokenize(preprocess(read_time_machine(path, download)), token)
    vocab = Vocab(tokens)
    corpus = vocab[tokens]
    if max_tokens > 0:
        corpus = corpus[:max_tokens]
    return corpus, vocab


# --------------------------------------------------------------------------- minibatch samplers


def _check_sizes(batch_size: int, num_steps: int) -> None:
    for name, value in (("batch_size", batch_size), ("num_steps", num_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _as_corpus_tensor(corpus: Corpus) -> torch.Tensor:
    data = corpus if isinstance(corpus, torch.Tensor) else torch.as_tensor(list(corpus), dtype=torch.int64)
    if data.dim() != 1:
        raise ValueError(f"corpus must be 1-D (a sequence of token indices), got shape {tuple(data.shape)}")
    if data.is_floating_point() or data.is_complex() or data.dtype == torch.bool:
        raise TypeError(f"corpus must hold integer token indices, got {data.dtype}")
    return data.to(torch.int64)


def _draw_offset(num_steps: int, generator: torch.Generator | None) -> int:
    """The random start offset of an epoch, in [0, num_steps - 1]: the first draw from ``generator``."""
    return int(torch.randint(num_steps, (1,), generator=generator).item())


def _num_batches(num_tokens: int, batch_size: int, num_steps: int, offset: int, random_iter: bool) -> int:
    """Batches one epoch yields for a corpus of ``num_tokens`` tokens started at ``offset``."""
    usable = max(num_tokens - offset - 1, 0)  # tokens that have a successor
    if random_iter:
        return (usable // num_steps) // batch_size
    return (usable // batch_size) // num_steps


def _random_batches(
    data: torch.Tensor, batch_size: int, num_steps: int, offset: int, generator: torch.Generator | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    num_subseqs = max(data.numel() - offset - 1, 0) // num_steps
    starts = offset + num_steps * torch.randperm(num_subseqs, generator=generator)
    steps = torch.arange(num_steps)
    for i in range(num_subseqs // batch_size):
        index = starts[i * batch_size : (i + 1) * batch_size, None] + steps  # (batch_size, num_steps)
        yield data[index], data[index + 1]


def _sequential_batches(
    data: torch.Tensor, batch_size: int, num_steps: int, offset: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    stream = max(data.numel() - offset - 1, 0) // batch_size  # tokens per row stream
    span = stream * batch_size
    xs = data[offset : offset + span].reshape(batch_size, stream)
    ys = data[offset + 1 : offset + 1 + span].reshape(batch_size, stream)
    for i in range(stream // num_steps):
        cols = slice(i * num_steps, (i + 1) * num_steps)
        yield xs[:, cols].contiguous(), ys[:, cols].contiguous()


def seq_data_iter_random(
    corpus: Corpus, batch_size: int, num_steps: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Random sampling (the book's ``seq_data_iter_random``): yields (X, Y), int64 (batch_size, num_steps).

    An offset in [0, num_steps - 1] is drawn, the corpus from there is cut into the
    ``(len(corpus) - offset - 1) // num_steps`` non-overlapping subsequences of ``num_steps`` tokens
    starting at ``offset + k * num_steps``, their order is shuffled and each batch takes the next
    ``batch_size`` of them; ``Y`` is ``X`` shifted by one token. The last incomplete batch is dropped,
    so an epoch has ``num_subseqs // batch_size`` batches (none when the corpus is too short).
    Adjacent batches are not adjacent in the text: reset the hidden state every batch.
    ``generator`` (a ``torch.Generator``) makes the offset and the shuffle reproducible; None uses
    torch's global generator.
    """
    _check_sizes(batch_size, num_steps)
    data = _as_corpus_tensor(corpus)
    offset = _draw_offset(num_steps, generator)
    yield from _random_batches(data, batch_size, num_steps, offset, generator)


def seq_data_iter_sequential(
    corpus: Corpus, batch_size: int, num_steps: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Sequential partitioning (the book's ``seq_data_iter_sequential``): yields (X, Y), int64
    (batch_size, num_steps).

    An offset in [0, num_steps - 1] is drawn; the ``L * batch_size`` tokens from there, with
    ``L = (len(corpus) - offset - 1) // batch_size``, are split into ``batch_size`` parallel streams of
    ``L`` consecutive tokens (row ``r`` is the stream starting at ``offset + r * L``) and batch ``i``
    takes columns ``[i * num_steps, (i + 1) * num_steps)`` of every stream, so row ``r`` of batch
    ``i + 1`` continues row ``r`` of batch ``i`` exactly and the hidden state may carry over.
    ``Y`` is ``X`` shifted by one token. An epoch has ``L // num_steps`` batches (none when the corpus
    is too short). ``generator`` makes the offset reproducible; None uses torch's global generator.
    """
    _check_sizes(batch_size, num_steps)
    data = _as_corpus_tensor(corpus)
    offset = _draw_offset(num_steps, generator)
    yield from _sequential_batches(data, batch_size, num_steps, offset)


# --------------------------------------------------------------------------- data loader


class SeqDataLoader:
    """The minibatches of *The Time Machine* for a language model, epoch after epoch.

    Args:
        batch_size, num_steps: shape (batch_size, num_steps) of the int64 batches X and Y.
        use_random_iter: ``seq_data_iter_random`` if True, else ``seq_data_iter_sequential``.
        max_tokens, token, path, download: as ``load_corpus_time_machine``.
        seed: epoch ``e`` draws its offset (and shuffle) from a ``torch.Generator`` seeded with
            ``seed + e``, so ``epoch(e)`` yields the same batches every time, in any process; a resumed
            run calls ``set_epoch(e)`` or iterates ``epoch(e)``. With None, a base seed is drawn from
            torch's global generator at construction (``torch.manual_seed`` makes it reproducible) and
            kept in ``self.seed``.

    ``iter(loader)`` yields epoch ``next_epoch`` and advances it by one, so every ``for`` loop over
    the loader is a fresh epoch. ``len(loader)`` is the exact number of batches that the next
    ``iter(loader)`` yields; it may differ by one between epochs because the offset does, see
    ``num_batches(e)``.
    """

    def __init__(
        self,
        batch_size: int,
        num_steps: int,
        use_random_iter: bool,
        max_tokens: int,
        token: str = "char",
        path: PathLike | None = None,
        seed: int | None = None,
        download: bool = False,
    ) -> None:
        corpus, vocab = load_corpus_time_machine(max_tokens, token, path, download)
        self._setup(corpus, vocab, batch_size, num_steps, use_random_iter, seed)

    @classmethod
    def from_corpus(
        cls,
        corpus: Corpus,
        batch_size: int,
        num_steps: int,
        use_random_iter: bool = False,
        vocab: Vocab | None = None,
        seed: int | None = None,
    ) -> SeqDataLoader:
        """A loader over an existing corpus (a sequence of token indices) instead of the book's text."""
        self = cls.__new__(cls)
        self._setup(_as_corpus_tensor(corpus).tolist(), vocab, batch_size, num_steps, use_random_iter, seed)
        return self

    def _setup(
        self,
        corpus: list[int],
        vocab: Vocab | None,
        batch_size: int,
        num_steps: int,
        use_random_iter: bool,
        seed: int | None,
    ) -> None:
        _check_sizes(batch_size, num_steps)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.corpus: list[int] = corpus
        self.vocab: Vocab | None = vocab
        self.batch_size, self.num_steps = batch_size, num_steps
        self.use_random_iter = bool(use_random_iter)
        self.seed: int = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else seed
        self.next_epoch = 0
        self._data = torch.as_tensor(corpus, dtype=torch.int64)

    @property
    def num_tokens(self) -> int:
        """Number of tokens in the corpus (after ``max_tokens``)."""
        return len(self.corpus)

    def _generator(self, epoch: int) -> torch.Generator:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        generator = torch.Generator()
        generator.manual_seed((self.seed + epoch) % 2**64)
        return generator

    def offset(self, epoch: int) -> int:
        """The start offset, in [0, num_steps - 1], of epoch ``epoch``."""
        return _draw_offset(self.num_steps, self._generator(epoch))

    def num_batches(self, epoch: int | None = None) -> int:
        """Exact number of batches epoch ``epoch`` yields (default: ``next_epoch``)."""
        epoch = self.next_epoch if epoch is None else epoch
        offset = self.offset(epoch)
        return _num_batches(self.num_tokens, self.batch_size, self.num_steps, offset, self.use_random_iter)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches (X, Y) of epoch ``epoch``, int64 (batch_size, num_steps).

        Does not move ``next_epoch``; the same ``epoch`` always yields the same batches.
        """
        generator = self._generator(epoch)
        offset = _draw_offset(self.num_steps, generator)
        if self.use_random_iter:
            return _random_batches(self._data, self.batch_size, self.num_steps, offset, generator)
        return _sequential_batches(self._data, self.batch_size, self.num_steps, offset)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter(loader)`` yield epoch ``epoch`` (to resume a run)."""
        self._generator(epoch)  # validates
        self.next_epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.epoch(self.next_epoch)
        self.next_epoch += 1
        return batches

    def __len__(self) -> int:
        return self.num_batches()

    def __repr__(self) -> str:
        kind = "random" if self.use_random_iter else "sequential"
        return (
            f"SeqDataLoader({kind}, batch_size={self.batch_size}, num_steps={self.num_steps}, "
            f"tokens={self.num_tokens}, seed={self.seed}, next_epoch={self.next_epoch})"
        )


def load_data_time_machine(
    batch_size: int,
    num_steps: int,
    use_random_iter: bool = False,
    max_tokens: int = 10000,
    token: str = "char",
    path: PathLike | None = None,
    seed: int | None = None,
    download: bool = False,
) -> tuple[SeqDataLoader, Vocab]:
    """(loader, vocab) of *The Time Machine*: the book's ``load_data_time_machine`` (first 10,000
    character tokens by default) plus the token type, the corpus location, a seed and ``download``."""
    loader = SeqDataLoader(batch_size, num_steps, use_random_iter, max_tokens, token, path, seed, download)
    assert loader.vocab is not None
    return loader, loader.vocab
