"""The book's English-French machine translation data (ch. 10.5), for a user who has ``fra-eng/fra.txt``.

``fra.txt`` holds one pair a line, ``English<TAB>French`` (a third, tab-separated attribution column
of newer Tatoeba exports is ignored). Nothing here touches the network: get the book's archive from
``FRA_ENG_URL``, unzip it and pass the file (or its ``fra-eng`` folder) as ``path=``, or put it at
``default_data_root() / "fra-eng" / "fra.txt"``.

Example::

    loader, src_vocab, tgt_vocab = load_data_nmt(batch_size=64, num_steps=10, path="fra-eng/fra.txt")
    for X, X_valid_len, Y, Y_valid_len in loader:  # int64 (64, 10), (64,), (64, 10), (64,)
        ...
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import torch
from torch.utils.data import DataLoader, TensorDataset

from .text import Vocab
from .vision import default_data_root

__all__ = [
    "FRA_ENG_URL",
    "NMT_RESERVED_TOKENS",
    "build_array_nmt",
    "fra_eng_path",
    "load_data_nmt",
    "preprocess_nmt",
    "read_data_nmt",
    "tokenize_nmt",
    "truncate_pad",
]

#: The book's archive of the English-French pairs (unzips to ``fra-eng/fra.txt``).
FRA_ENG_URL = "http://d2l-data.s3-accelerate.amazonaws.com/fra-eng.zip"
#: Padding, begin- and end-of-sequence tokens, reserved in both vocabularies (indices 1, 2, 3).
NMT_RESERVED_TOKENS = ("<pad>", "<bos>", "<eos>")

PathLike = Union[str, "os.PathLike[str]"]


def fra_eng_path(path: PathLike | None = None) -> Path:
    """The pairs file: ``path`` (``fra.txt`` itself or a folder holding it), else
    ``default_data_root() / "fra-eng" / "fra.txt"``. Not checked for existence."""
    if path is None:
        return default_data_root() / "fra-eng" / "fra.txt"
    p = Path(path).expanduser()
    return p / "fra.txt" if p.is_dir() else p


def read_data_nmt(path: PathLike | None = None) -> str:
    """The raw text of ``fra.txt`` (UTF-8), see :func:`fra_eng_path` for ``path``.

    ``FileNotFoundError`` naming the expected path and the book's download URL when it is missing.
    """
    file = fra_eng_path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"English-French pairs not found at {str(file)!r}: download {FRA_ENG_URL}, unzip it "
            f"and pass the resulting fra-eng/fra.txt (or its folder) as path=, or put it at "
            f"{fra_eng_path()}"
        )
    return file.read_text(encoding="utf-8")


def preprocess_nmt(text: str) -> str:
    """The book's cleaning: non-breaking spaces (U+202F, U+00A0) become spaces, everything is
    lowercased, and a space is inserted before ``, . ! ?`` when not already preceded by one."""
    text = text.replace("\u202f", " ").replace("\xa0", " ").lower()
    out = [" " + ch if i > 0 and ch in ",.!?" and text[i - 1] != " " else ch for i, ch in enumerate(text)]
    return "".join(out)


def tokenize_nmt(text: str, num_examples: int | None = None) -> tuple[list[list[str]], list[list[str]]]:
    """(source, target) token lists of the first ``num_examples`` pairs (all when None), words split
    on single spaces as the book does. Lines without a tab are skipped; a third tab-separated column
    is ignored. (The book's loop keeps ``num_examples + 1`` lines; this keeps exactly
    ``num_examples`` pairs.)"""
    source: list[list[str]] = []
    target: list[list[str]] = []
    for line in text.split("\n"):
        if num_examples is not None and len(source) >= num_examples:
            break
        parts = line.rstrip("\r").split("\t")
        if len(parts) >= 2:
            source.append(parts[0].split(" "))
            target.append(parts[1].split(" "))
    return source, target


def truncate_pad(line: Sequence, num_steps: int, padding_token) -> list:
    """``line`` cut to its first ``num_steps`` items, or right-padded with ``padding_token`` to
    ``num_steps`` items."""
    line = list(line)
    if len(line) > num_steps:
        return line[:num_steps]
    return line + [padding_token] * (num_steps - len(line))


def build_array_nmt(
    lines: Sequence[Sequence[str]], vocab: Vocab, num_steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (array int64 (N, num_steps), valid_len int64 (N,)).

    Each line is mapped to indices, ``<eos>`` appended, then truncated or padded with ``<pad>``
    to ``num_steps``; ``valid_len`` counts the non-padding positions (``<eos>`` included unless
    truncated away).
    """
    pad, eos = vocab["<pad>"], vocab["<eos>"]
    rows = [truncate_pad([*vocab[list(line)], eos], num_steps, pad) for line in lines]
    array = torch.tensor(rows, dtype=torch.long).reshape(len(rows), num_steps)
    valid_len = (array != pad).long().sum(1)
    return array, valid_len


def load_data_nmt(
    batch_size: int,
    num_steps: int,
    num_examples: int = 600,
    path: PathLike | None = None,
    *,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[DataLoader, Vocab, Vocab]:
    """The book's ``load_data_nmt``: (loader, src_vocab, tgt_vocab) of the first ``num_examples`` pairs.

    Both vocabularies keep tokens seen at least twice and reserve ``<pad>``, ``<bos>``, ``<eos>``.
    The loader yields ``(X, X_valid_len, Y, Y_valid_len)``: int64 (B, num_steps), (B,),
    (B, num_steps), (B,); shuffled each epoch (reproducibly when ``generator`` is given).
    """
    source, target = tokenize_nmt(preprocess_nmt(read_data_nmt(path)), num_examples)
    src_vocab = Vocab(source, min_freq=2, reserved_tokens=NMT_RESERVED_TOKENS)
    tgt_vocab = Vocab(target, min_freq=2, reserved_tokens=NMT_RESERVED_TOKENS)
    src_array, src_valid_len = build_array_nmt(source, src_vocab, num_steps)
    tgt_array, tgt_valid_len = build_array_nmt(target, tgt_vocab, num_steps)
    dataset = TensorDataset(src_array, src_valid_len, tgt_array, tgt_valid_len)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)
    return loader, src_vocab, tgt_vocab
