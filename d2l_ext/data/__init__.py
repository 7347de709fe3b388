"""Datasets of the book as map-style ``torch.utils.data.Dataset`` objects.

``d2l_ext.data.vision`` holds the image classification data (MNIST 5k, which needs no
network, and Fashion-MNIST); its public API is re-exported here::

    from d2l_ext.data import load_dataset
    train, test = load_dataset("mnist5k", resize=32)   # items: (float32 (1, 32, 32), int)

``d2l_ext.data.text`` holds the text pipeline (*The Time Machine*, ``Vocab``, the two sequence
samplers); its public API is re-exported here too::

    from d2l_ext.data import load_data_time_machine
    loader, vocab = load_data_time_machine(32, 35)   # batches: int64 (32, 35) X and Y
"""

from __future__ import annotations

from .text import (
    TIME_MACHINE_ENV,
    TIME_MACHINE_SHA1,
    TIME_MACHINE_URL,
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
from .translation import (
    FRA_ENG_URL,
    NMT_RESERVED_TOKENS,
    build_array_nmt,
    fra_eng_path,
    load_data_nmt,
    preprocess_nmt,
    read_data_nmt,
    tokenize_nmt,
    truncate_pad,
)
from .vision import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    FASHION_MNIST_MD5,
    FASHION_MNIST_URL,
    MNIST_CLASSES,
    ImageDataset,
    default_data_root,
    load_dataset,
    load_fashion_mnist,
    load_mnist5k,
    mnist5k_path,
    read_idx,
)

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_URL",
    "MNIST_CLASSES",
    "ImageDataset",
    "default_data_root",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist5k",
    "mnist5k_path",
    "read_idx",
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
