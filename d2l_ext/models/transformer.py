"""The book's multi-head attention (ch. 11.5), positional encoding (ch. 11.6) and Transformer
(ch. 11.7), built on :mod:`d2l_ext.models.seq2seq` (its :class:`DotProductAttention`, and with it
:func:`masked_softmax`).

Batches are batch-major as the book's: token indices (B, T), hidden states (B, T, num_hiddens).
The encoder and decoder plug into :class:`EncoderDecoder`, :func:`train_seq2seq` and
:func:`predict_seq2seq` as they are.

Example::

    encoder = TransformerEncoder(len(src_vocab), 32, 64, 4, 2, dropout=0.1)
    decoder = TransformerDecoder(len(tgt_vocab), 32, 64, 4, 2, dropout=0.1)
    net = EncoderDecoder(encoder, decoder)
    losses = train_seq2seq(net, loader, lr=0.005, num_epochs=30, tgt_vocab=tgt_vocab, device="cpu")
    translation, _ = predict_seq2seq(net, "go .", src_vocab, tgt_vocab, num_steps=10, device="cpu")

Differences from the book's code (the maths of training is the same):

* Every layer is an eager ``nn.Linear`` with explicit input sizes rather than ``nn.LazyLinear``, so
  that :func:`train_seq2seq` can Xavier-initialise a fresh network before its first forward pass.
  Input sizes default to the sizes the Transformer uses (``num_hiddens`` for attention,
  ``ffn_num_outputs`` for the FFN); pass them as keywords otherwise.
* The decoder adds the positional encoding of each token's real position: when it is fed one token
  at a time from its cache (prediction), the book adds position 0's encoding at every step.
* The decoder's self-attention is always causal (query ``t`` sees keys ``0..t``), in eval mode too:
  the book masks only in training mode, where it is the same, and its one-token prediction steps
  see every cached key, which the causal mask allows anyway. A full teacher-forced pass in eval
  mode is thus causal too, and gives the logits that step-by-step decoding gives.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .seq2seq import DotProductAttention

__all__ = [
    "AddNorm",
    "MultiHeadAttention",
    "PositionWiseFFN",
    "PositionalEncoding",
    "TransformerDecoder",
    "TransformerDecoderBlock",
    "TransformerEncoder",
    "TransformerEncoderBlock",
]

# The decoder's state: [enc_outputs (B, T, H), enc_valid_lens (B,) or None, per-block cache]; the
# cache holds, for block i, its inputs so far (B, t, H) (the keys and values of its self-attention),
# or None before the first call.
DecoderState = list


# --------------------------------------------------------------------------- multi-head attention


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (ch. 11.5).

    Queries, keys and values are projected by ``W_q``, ``W_k``, ``W_v`` to ``num_hiddens`` features,
    split into ``num_heads`` heads of ``num_hiddens // num_heads`` features each, attended per head
    by :class:`DotProductAttention`, concatenated back and projected by ``W_o``.

    ``forward(queries (B, Q, query_size), keys (B, K, key_size), values (B, K, value_size),
    valid_lens)`` -> (B, Q, num_hiddens); ``valid_lens`` is None, (B,) or (B, Q), as for
    :func:`masked_softmax`, the same for every head. ``attention.attention_weights`` keeps the last
    call's (B * num_heads, Q, K) weights, example-major (row ``b * num_heads + h``).

    ``query_size``, ``key_size``, ``value_size`` default to ``num_hiddens`` (the book's layers are
    lazy and infer them).
    """

    def __init__(
        self,
        num_hiddens: int,
        num_heads: int,
        dropout: float,
        bias: bool = False,
        *,
        query_size: int | None = None,
        key_size: int | None = None,
        value_size: int | None = None,
    ) -> None:
        super().__init__()
        if num_hiddens % num_heads != 0:
            raise ValueError(f"num_hiddens ({num_hiddens}) must be a multiple of num_heads ({num_heads})")
        self.num_heads = num_heads
        self.attention = DotProductAttention(dropout)
        self.W_q = nn.Linear(query_size or num_hiddens, num_hiddens, bias=bias)
        self.W_k = nn.Linear(key_size or num_hiddens, num_hiddens, bias=bias)
        self.W_v = nn.Linear(value_size or num_hiddens, num_hiddens, bias=bias)
        self.W_o = nn.Linear(num_hiddens, num_hiddens, bias=bias)

    def transpose_qkv(self, X: Tensor) -> Tensor:
        """(B, T, num_hiddens) -> (B * num_heads, T, num_hiddens / num_heads): head ``h`` takes the
        ``h``-th contiguous slice of the features; row ``b * num_heads + h``."""
        B, T, _ = X.shape
        return X.reshape(B, T, self.num_heads, -1).permute(0, 2, 1, 3).reshape(B * self.num_heads, T, -1)

    def transpose_output(self, X: Tensor) -> Tensor:
        """The inverse of :meth:`transpose_qkv`: (B * num_heads, T, d) -> (B, T, num_heads * d)."""
        _, T, d = X.shape
        return X.reshape(-1, self.num_heads, T, d).permute(0, 2, 1, 3).reshape(-1, T, self.num_heads * d)

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, valid_lens: Tensor | None) -> Tensor:
        queries = self.transpose_qkv(self.W_q(queries))
        keys = self.transpose_qkv(self.W_k(keys))
        values = self.transpose_qkv(self.W_v(values))
        if valid_lens is not None:
            # (B,) or (B, Q) -> (B * num_heads,) or (B * num_heads, Q), matching transpose_qkv's rows
            valid_lens = torch.repeat_interleave(valid_lens, repeats=self.num_heads, dim=0)
        output = self.attention(queries, keys, values, valid_lens)  # (B * num_heads, Q, d)
        return self.W_o(self.transpose_output(output))


# --------------------------------------------------------------------------- positional encoding


class PositionalEncoding(nn.Module):
    """The sinusoidal positional encoding (ch. 11.6), added to the input, then dropout.

    ``P[0, i, 2j] = sin(i / 10000^(2j / d))``, ``P[0, i, 2j + 1] = cos(i / 10000^(2j / d))`` for
    positions ``i < max_len`` and ``d = num_hiddens`` (computed in float64, stored in the default
    dtype as the non-persistent buffer ``P`` (1, max_len, d), so it follows ``.to()``).

    ``forward(X (B, T, d), offset=0)`` -> dropout(X + P[:, offset:offset + T]) (B, T, d); ``offset``
    is the position of ``X``'s first step (the book always starts at 0).
    """

    P: Tensor

    def __init__(self, num_hiddens: int, dropout: float, max_len: int = 1000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        positions = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
        freqs = torch.pow(10000.0, torch.arange(0, num_hiddens, 2, dtype=torch.float64) / num_hiddens)
        angles = positions / freqs  # (max_len, ceil(d / 2))
        P = torch.zeros(1, max_len, num_hiddens, dtype=torch.float64)
        P[0, :, 0::2] = torch.sin(angles)
        P[0, :, 1::2] = torch.cos(angles[:, : num_hiddens // 2])
        self.register_buffer("P", P.to(torch.get_default_dtype()), persistent=False)

    def forward(self, X: Tensor, offset: int = 0) -> Tensor:
        T = X.shape[1]
        if offset + T > self.P.shape[1]:
            raise ValueError(f"positions up to {offset + T} exceed max_len ({self.P.shape[1]})")
        return self.dropout(X + self.P[:, offset : offset + T].to(X.dtype))


# --------------------------------------------------------------------------- Transformer blocks


class PositionWiseFFN(nn.Module):
    """The same two-layer MLP at every position: Linear -> ReLU -> Linear.

    ``forward(X (B, T, ffn_num_input))`` -> (B, T, ffn_num_outputs); ``ffn_num_input`` defaults to
    ``ffn_num_outputs`` (as in the Transformer; the book's lazy layer infers it).
    """

    def __init__(
        self, ffn_num_hiddens: int, ffn_num_outputs: int, *, ffn_num_input: int | None = None
    ) -> None:
        super().__init__()
        self.dense1 = nn.Linear(ffn_num_input or ffn_num_outputs, ffn_num_hiddens)
        self.relu = nn.ReLU()
        self.dense2 = nn.Linear(ffn_num_hiddens, ffn_num_outputs)

    def forward(self, X: Tensor) -> Tensor:
        return self.dense2(self.relu(self.dense1(X)))


class AddNorm(nn.Module):
    """Residual connection then layer normalisation: ``forward(X, Y)`` -> LayerNorm(dropout(Y) + X),
    ``X`` and ``Y`` of the same shape (..., *norm_shape)."""

    def __init__(self, norm_shape: int | list[int] | tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.ln = nn.LayerNorm(norm_shape)

    def forward(self, X: Tensor, Y: Tensor) -> Tensor:
        return self.ln(self.dropout(Y) + X)


class TransformerEncoderBlock(nn.Module):
    """Multi-head self-attention and a position-wise FFN, each followed by :class:`AddNorm`.

    ``forward(X (B, T, num_hiddens), valid_lens (B,) or None)`` -> (B, T, num_hiddens).
    """

    def __init__(
        self, num_hiddens: int, ffn_num_hiddens: int, num_heads: int, dropout: float, use_bias: bool = False
    ) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(num_hiddens, num_heads, dropout, use_bias)
        self.addnorm1 = AddNorm(num_hiddens, dropout)
        self.ffn = PositionWiseFFN(ffn_num_hiddens, num_hiddens)
        self.addnorm2 = AddNorm(num_hiddens, dropout)

    def forward(self, X: Tensor, valid_lens: Tensor | None) -> Tensor:
        Y = self.addnorm1(X, self.attention(X, X, X, valid_lens))
        return self.addnorm2(Y, self.ffn(Y))


class TransformerEncoder(nn.Module):
    """Embedding scaled by sqrt(num_hiddens), positional encoding, ``num_blks`` encoder blocks.

    ``forward(X (B, T) token indices, valid_lens (B,) or None)`` -> (B, T, num_hiddens).
    ``attention_weights`` is the list of each block's last (B * num_heads, T, T) self-attention
    weights.
    """

    def __init__(
        self,
        vocab_size: int,
        num_hiddens: int,
        ffn_num_hiddens: int,
        num_heads: int,
        num_blks: int,
        dropout: float,
        use_bias: bool = False,
    ) -> None:
        super().__init__()
        self.num_hiddens = num_hiddens
        self.embedding = nn.Embedding(vocab_size, num_hiddens)
        self.pos_encoding = PositionalEncoding(num_hiddens, dropout)
        self.blks = nn.Sequential()
        for i in range(num_blks):
            blk = TransformerEncoderBlock(num_hiddens, ffn_num_hiddens, num_heads, dropout, use_bias)
            self.blks.add_module(f"block{i}", blk)
        self.attention_weights: list[Tensor | None] = [None] * num_blks

    def forward(self, X: Tensor, valid_lens: Tensor | None = None, *args) -> Tensor:
        # the embeddings are scaled up to the positional encoding's magnitude (entries in [-1, 1])
        X = self.pos_encoding(self.embedding(X.long()) * math.sqrt(self.num_hiddens))
        self.attention_weights = [None] * len(self.blks)
        for i, blk in enumerate(self.blks):
            X = blk(X, valid_lens)
            self.attention_weights[i] = blk.attention.attention.attention_weights
        return X


class TransformerDecoderBlock(nn.Module):
    """The ``i``-th decoder block: causal multi-head self-attention, multi-head attention over the
    encoder outputs, a position-wise FFN, each followed by :class:`AddNorm`.

    ``forward(X (B, T, num_hiddens), state)`` -> (B, T, num_hiddens), state. ``state`` is the
    decoder's ``[enc_outputs (B, T_enc, H), enc_valid_lens (B,) or None, cache]``: this block's
    inputs are appended to ``cache[i]`` (in place), and its self-attention reads all of them as keys
    and values, so that a prediction fed one token per call sees every earlier one. Query ``t`` (its
    position counted over the cache) sees keys ``0..t`` only.
    """

    def __init__(
        self, num_hiddens: int, ffn_num_hiddens: int, num_heads: int, dropout: float, i: int
    ) -> None:
        super().__init__()
        self.i = i
        self.attention1 = MultiHeadAttention(num_hiddens, num_heads, dropout)
        self.addnorm1 = AddNorm(num_hiddens, dropout)
        self.attention2 = MultiHeadAttention(num_hiddens, num_heads, dropout)
        self.addnorm2 = AddNorm(num_hiddens, dropout)
        self.ffn = PositionWiseFFN(ffn_num_hiddens, num_hiddens)
        self.addnorm3 = AddNorm(num_hiddens, dropout)

    def forward(self, X: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        enc_outputs, enc_valid_lens, cache = state[0], state[1], state[2]
        past = cache[self.i]
        key_values = X if past is None else torch.cat((past, X), dim=1)  # (B, offset + T, H)
        cache[self.i] = key_values
        B, T, _ = X.shape
        offset = key_values.shape[1] - T
        # causal valid lengths (B, T): the query at position offset + t sees offset + t + 1 keys
        # (training, offset 0: 1..T as the book's; one cached step: every key, as the book's None)
        dec_valid_lens = torch.arange(offset + 1, offset + T + 1, device=X.device).repeat(B, 1)
        Y = self.addnorm1(X, self.attention1(X, key_values, key_values, dec_valid_lens))
        Z = self.addnorm2(Y, self.attention2(Y, enc_outputs, enc_outputs, enc_valid_lens))
        return self.addnorm3(Z, self.ffn(Z)), state


class TransformerDecoder(nn.Module):
    """Embedding scaled by sqrt(num_hiddens), positional encoding, ``num_blks`` decoder blocks and a
    dense layer to the vocabulary.

    ``init_state(enc_outputs (B, T_enc, H), enc_valid_lens (B,) or None)`` -> the state
    ``[enc_outputs, enc_valid_lens, [None] * num_blks]``; ``forward(X (B, T) token indices, state)``
    -> (logits (B, T, vocab_size), state), the state's cache extended by ``X``'s steps, so that
    later calls continue the sequence (positions counted from the cached length).
    ``attention_weights`` is ``[self-attention weights per block, encoder-decoder attention weights
    per block]`` of the last call, each (B * num_heads, T, keys).
    """

    def __init__(
        self,
        vocab_size: int,
        num_hiddens: int,
        ffn_num_hiddens: int,
        num_heads: int,
        num_blks: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.num_hiddens = num_hiddens
        self.num_blks = num_blks
        self.embedding = nn.Embedding(vocab_size, num_hiddens)
        self.pos_encoding = PositionalEncoding(num_hiddens, dropout)
        self.blks = nn.Sequential()
        for i in range(num_blks):
            blk = TransformerDecoderBlock(num_hiddens, ffn_num_hiddens, num_heads, dropout, i)
            self.blks.add_module(f"block{i}", blk)
        self.dense = nn.Linear(num_hiddens, vocab_size)
        self._attention_weights: list[list[Tensor | None]] = [[None] * num_blks for _ in range(2)]

    def init_state(self, enc_outputs: Tensor, enc_valid_lens: Tensor | None = None, *args) -> DecoderState:
        return [enc_outputs, enc_valid_lens, [None] * self.num_blks]

    def forward(self, X: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        first_cache = state[2][0] if self.num_blks else None
        offset = 0 if first_cache is None else first_cache.shape[1]  # steps decoded before X
        X = self.pos_encoding(self.embedding(X.long()) * math.sqrt(self.num_hiddens), offset)
        self._attention_weights = [[None] * self.num_blks for _ in range(2)]
        for i, blk in enumerate(self.blks):
            X, state = blk(X, state)
            self._attention_weights[0][i] = blk.attention1.attention.attention_weights
            self._attention_weights[1][i] = blk.attention2.attention.attention_weights
        return self.dense(X), state

    @property
    def attention_weights(self) -> list[list[Tensor | None]]:
        return self._attention_weights
