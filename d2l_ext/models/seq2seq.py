"""The book's sequence-to-sequence learning (ch. 10.6-10.7) and attention (ch. 11.3-11.4) on d2l_ext layers.

Every recurrent layer is a :class:`d2l_ext.nn.GRU` (time-major, as the book's ``nn.GRU``); embeddings
and output heads are ``torch.nn``'s. Batches are batch-major as the book's: token indices (B, T).

Example::

    encoder = Seq2SeqEncoder(len(src_vocab), 32, 32, 2, dropout=0.1)
    decoder = Seq2SeqAttentionDecoder(len(tgt_vocab), 32, 32, 2, dropout=0.1)
    net = EncoderDecoder(encoder, decoder)
    losses = train_seq2seq(net, loader, lr=0.005, num_epochs=250, tgt_vocab=tgt_vocab, device="cpu")
    translation, _ = predict_seq2seq(net, "go .", src_vocab, tgt_vocab, num_steps=10, device="cpu")
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .. import functional as dF
from .. import nn as dnn
from ..data.text import Vocab
from ..data.translation import truncate_pad

__all__ = [
    "AdditiveAttention",
    "DotProductAttention",
    "EncoderDecoder",
    "MaskedSoftmaxCELoss",
    "Seq2SeqAttentionDecoder",
    "Seq2SeqDecoder",
    "Seq2SeqEncoder",
    "bleu",
    "masked_softmax",
    "predict_seq2seq",
    "sequence_mask",
    "seq2seq_xavier_init",
    "train_seq2seq",
]


# --------------------------------------------------------------------------- masking and attention


def sequence_mask(X: Tensor, valid_len: Tensor, value: float = 0.0) -> Tensor:
    """``X`` (B, T, ...) with every position ``t >= valid_len[b]`` set to ``value``.

    ``valid_len`` is (B,). Unlike the book's (which writes into ``X``), returns a new tensor.
    """
    maxlen = X.shape[1]
    mask = torch.arange(maxlen, device=X.device)[None, :] < valid_len.to(X.device)[:, None]  # (B, T)
    mask = mask.reshape(*mask.shape, *([1] * (X.dim() - 2)))
    return X.masked_fill(~mask, value)


def masked_softmax(X: Tensor, valid_lens: Tensor | None = None) -> Tensor:
    """Softmax over the last axis of scores ``X`` (B, Q, K), keeping only the first ``valid_lens`` keys.

    ``valid_lens``: None (all keys), (B,) (the same for every query of an example) or (B, Q).
    Returns (B, Q, K) weights: each row sums to 1 over its valid keys and is exactly 0 beyond them.
    A row with valid length 0 is all zeros (the book's -1e6 fill would give it uniform weights);
    never NaN, whatever the dtype (masked scores are filled with the dtype's lowest finite value).
    """
    if valid_lens is None:
        return torch.softmax(X, dim=-1)
    K = X.shape[-1]
    lens = valid_lens.to(X.device)
    lens = lens[:, None, None] if lens.dim() == 1 else lens[..., None]  # (B, 1 or Q, 1)
    mask = torch.arange(K, device=X.device) < lens  # (B, 1 or Q, K)
    filled = X.masked_fill(~mask, torch.finfo(X.dtype).min)
    return torch.softmax(filled, dim=-1) * mask.to(X.dtype)


class AdditiveAttention(nn.Module):
    """Bahdanau's additive attention: score(q, k) = w_v^T tanh(W_q q + W_k k).

    ``forward(queries (B, Q, query_size), keys (B, K, key_size), values (B, K, v), valid_lens)``
    -> (B, Q, v); ``valid_lens`` as :func:`masked_softmax`. ``attention_weights`` keeps the last
    (B, Q, K) weights (before dropout).
    """

    def __init__(self, key_size: int, query_size: int, num_hiddens: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.W_k = nn.Linear(key_size, num_hiddens, bias=False)
        self.W_q = nn.Linear(query_size, num_hiddens, bias=False)
        self.w_v = nn.Linear(num_hiddens, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.attention_weights: Tensor | None = None

    def forward(
        self, queries: Tensor, keys: Tensor, values: Tensor, valid_lens: Tensor | None = None
    ) -> Tensor:
        features = torch.tanh(self.W_q(queries).unsqueeze(2) + self.W_k(keys).unsqueeze(1))  # (B, Q, K, H)
        scores = self.w_v(features).squeeze(-1)  # (B, Q, K)
        self.attention_weights = masked_softmax(scores, valid_lens)
        return torch.bmm(self.dropout(self.attention_weights), values)


class DotProductAttention(nn.Module):
    """Scaled dot-product attention: softmax(Q K^T / sqrt(d)) V.

    ``forward(queries (B, Q, d), keys (B, K, d), values (B, K, v), valid_lens)`` -> (B, Q, v);
    ``attention_weights`` keeps the last (B, Q, K) weights (before dropout).
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.attention_weights: Tensor | None = None

    def forward(
        self, queries: Tensor, keys: Tensor, values: Tensor, valid_lens: Tensor | None = None
    ) -> Tensor:
        d = queries.shape[-1]
        scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(d)
        self.attention_weights = masked_softmax(scores, valid_lens)
        return torch.bmm(self.dropout(self.attention_weights), values)


# --------------------------------------------------------------------------- encoder and decoders


class Seq2SeqEncoder(nn.Module):
    """Embedding -> a multi-layer d2l_ext GRU.

    ``forward(X (B, T), *args)`` -> (outputs (T, B, H), state (L, B, H)), time-major as the book's.
    """

    def __init__(
        self, vocab_size: int, embed_size: int, num_hiddens: int, num_layers: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = dnn.GRU(embed_size, num_hiddens, num_layers, dropout=dropout)

    def forward(self, X: Tensor, *args) -> tuple[Tensor, Tensor]:
        emb = self.embedding(X.T.long())  # (T, B, E)
        return self.rnn(emb)


class Seq2SeqDecoder(nn.Module):
    """The book's decoder without attention: every input embedding is concatenated with the
    context, the encoder's last-layer final hidden state (fixed for the whole output sequence).

    ``init_state(enc_outputs, *args)`` -> state ``(context (B, H), hidden (L, B, H))``;
    ``forward(X (B, T), state)`` -> (logits (B, T, V), new state).
    """

    def __init__(
        self, vocab_size: int, embed_size: int, num_hiddens: int, num_layers: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = dnn.GRU(embed_size + num_hiddens, num_hiddens, num_layers, dropout=dropout)
        self.dense = nn.Linear(num_hiddens, vocab_size)

    def init_state(self, enc_outputs: tuple[Tensor, Tensor], *args) -> tuple[Tensor, Tensor]:
        hidden = enc_outputs[1]
        return hidden[-1], hidden

    def forward(self, X: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        context, hidden = state
        emb = self.embedding(X.T.long())  # (T, B, E)
        ctx = context.unsqueeze(0).expand(emb.shape[0], -1, -1)
        out, hidden = self.rnn(torch.cat((emb, ctx), dim=2), hidden)  # (T, B, H)
        return self.dense(out).permute(1, 0, 2), (context, hidden)


class Seq2SeqAttentionDecoder(nn.Module):
    """The book's Bahdanau decoder: at each step, additive attention over the encoder outputs with
    the previous last-layer hidden state as query; the context is concatenated to the input embedding.

    ``init_state((enc_outputs (T, B, H), hidden (L, B, H)), enc_valid_lens (B,) or None)`` -> state
    ``(enc_outputs (B, T, H), hidden, enc_valid_lens)``; ``forward(X (B, T'), state)`` ->
    (logits (B, T', V), new state). ``attention_weights`` is the list of the last call's per-step
    (B, 1, T) weights.
    """

    def __init__(
        self, vocab_size: int, embed_size: int, num_hiddens: int, num_layers: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.attention = AdditiveAttention(num_hiddens, num_hiddens, num_hiddens, dropout)
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = dnn.GRU(embed_size + num_hiddens, num_hiddens, num_layers, dropout=dropout)
        self.dense = nn.Linear(num_hiddens, vocab_size)
        self.attention_weights: list[Tensor] = []

    def init_state(self, enc_outputs: tuple[Tensor, Tensor], enc_valid_lens: Tensor | None = None, *args):
        outputs, hidden = enc_outputs
        return outputs.permute(1, 0, 2), hidden, enc_valid_lens

    def forward(self, X: Tensor, state) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor | None]]:
        enc_outputs, hidden, enc_valid_lens = state
        emb = self.embedding(X.T.long())  # (T', B, E)
        outputs, self.attention_weights = [], []
        for x in emb:
            query = hidden[-1].unsqueeze(1)  # (B, 1, H)
            context = self.attention(query, enc_outputs, enc_outputs, enc_valid_lens)  # (B, 1, H)
            step = torch.cat((context, x.unsqueeze(1)), dim=-1).permute(1, 0, 2)  # (1, B, H + E)
            out, hidden = self.rnn(step, hidden)
            outputs.append(out)
            self.attention_weights.append(self.attention.attention_weights)
        logits = self.dense(torch.cat(outputs, dim=0))  # (T', B, V)
        return logits.permute(1, 0, 2), (enc_outputs, hidden, enc_valid_lens)


class EncoderDecoder(nn.Module):
    """``forward(enc_X (B, T), dec_X (B, T'), enc_valid_len (B,) or None)`` -> the decoder's
    (logits (B, T', V), state), the decoder's state initialised from the encoder's outputs."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, enc_X: Tensor, dec_X: Tensor, enc_valid_len: Tensor | None = None, *args):
        enc_outputs = self.encoder(enc_X, enc_valid_len, *args)
        state = self.decoder.init_state(enc_outputs, enc_valid_len, *args)
        return self.decoder(dec_X, state)


# --------------------------------------------------------------------------- loss, training, decoding


class MaskedSoftmaxCELoss(nn.Module):
    """The book's masked cross-entropy: ``forward(pred (B, T, V), label (B, T), valid_len (B,))`` ->
    (B,) per-sequence losses, the sum of the token losses at positions ``t < valid_len[b]`` divided
    by T (the book's ``mean(dim=1)`` over all positions, padding counted as 0).

    Positions beyond ``valid_len`` are given the ignore index, so their logits affect neither the
    loss nor the gradients (even non-finite ones).
    """

    IGNORE = -100

    def forward(self, pred: Tensor, label: Tensor, valid_len: Tensor) -> Tensor:
        B, T = label.shape
        target = sequence_mask(label.long(), valid_len, self.IGNORE)
        losses = dF.cross_entropy(
            pred.reshape(B * T, -1), target.reshape(-1), ignore_index=self.IGNORE, reduction="none"
        )
        return losses.reshape(B, T).sum(dim=1) / T


def seq2seq_xavier_init(module: nn.Module) -> None:
    """The book's ``xavier_init_weights``: Xavier-uniform weights of every Linear and of every GRU
    weight matrix (biases kept). Use as ``net.apply(seq2seq_xavier_init)``."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
    elif isinstance(module, nn.GRU):
        for name in module._flat_weights_names:
            if "weight" in name:
                nn.init.xavier_uniform_(getattr(module, name))


def _grad_clipping(net: nn.Module, theta: float) -> None:
    params = [p for p in net.parameters() if p.requires_grad and p.grad is not None]
    norm = torch.sqrt(sum(torch.sum(p.grad**2) for p in params))
    if norm > theta:
        for p in params:
            p.grad.mul_(theta / norm)


def train_seq2seq(
    net: nn.Module,
    data_iter: Iterable,
    lr: float,
    num_epochs: int,
    tgt_vocab: Vocab,
    device: torch.device | str,
    *,
    init_weights: bool = True,
) -> list[float]:
    """The book's ``train_seq2seq``: Adam at ``lr``, gradient norm clipped to 1, teacher forcing
    (the decoder reads ``<bos>`` followed by the target shifted right), the summed
    :class:`MaskedSoftmaxCELoss` as objective; weights Xavier-initialised first when ``init_weights``.

    ``data_iter`` yields ``(X, X_valid_len, Y, Y_valid_len)`` as :func:`d2l_ext.data.load_data_nmt`.
    Returns each epoch's cross-entropy per (valid) target token, the ``<eos>`` included.
    """
    if init_weights:
        net.apply(seq2seq_xavier_init)
    net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = MaskedSoftmaxCELoss()
    bos_index = tgt_vocab["<bos>"]
    history: list[float] = []
    net.train()
    for _ in range(num_epochs):
        total, tokens = 0.0, 0
        for batch in data_iter:
            X, X_valid_len, Y, Y_valid_len = (t.to(device) for t in batch)
            bos = torch.full((Y.shape[0], 1), bos_index, dtype=Y.dtype, device=device)
            dec_input = torch.cat((bos, Y[:, :-1]), dim=1)
            Y_hat, _ = net(X, dec_input, X_valid_len)
            loss = loss_fn(Y_hat, Y, Y_valid_len)
            optimizer.zero_grad()
            loss.sum().backward()
            _grad_clipping(net, 1.0)
            optimizer.step()
            total += float(loss.detach().sum()) * Y.shape[1]  # undo the mean over T: summed token losses
            tokens += int(Y_valid_len.sum())
        history.append(total / max(tokens, 1))
    return history


def _detached_cpu(w):
    """A tensor, or the Transformer decoder's nested lists of them, detached onto the CPU."""
    if isinstance(w, (list, tuple)):
        return type(w)(_detached_cpu(v) for v in w)
    return None if w is None else w.detach().cpu()


@torch.no_grad()
def predict_seq2seq(
    net: EncoderDecoder,
    src_sentence: str,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    num_steps: int,
    device: torch.device | str,
    save_attention_weights: bool = False,
) -> tuple[str, list[Tensor]]:
    """Greedy translation of ``src_sentence`` (lowercased, split on spaces, ``<eos>`` appended,
    truncated/padded to ``num_steps``): at most ``num_steps`` tokens, stopping at ``<eos>`` (not
    returned). Returns (the tokens joined by spaces, the per-step attention weights when
    ``save_attention_weights`` — (1, 1, num_steps) tensors for the GRU decoder, the Transformer
    decoder's nested lists — else []). Leaves ``net`` in eval mode, as the book does.
    """
    net.eval()
    src_tokens = [*src_vocab[src_sentence.lower().split(" ")], src_vocab["<eos>"]]
    enc_valid_len = torch.tensor([min(len(src_tokens), num_steps)], device=device)
    src_tokens = truncate_pad(src_tokens, num_steps, src_vocab["<pad>"])
    enc_X = torch.tensor([src_tokens], dtype=torch.long, device=device)
    enc_outputs = net.encoder(enc_X, enc_valid_len)
    dec_state = net.decoder.init_state(enc_outputs, enc_valid_len)
    dec_X = torch.tensor([[tgt_vocab["<bos>"]]], dtype=torch.long, device=device)
    eos = tgt_vocab["<eos>"]
    output_seq: list[int] = []
    attention_weight_seq: list[Tensor] = []
    for _ in range(num_steps):
        Y, dec_state = net.decoder(dec_X, dec_state)
        dec_X = Y.argmax(dim=2)
        pred = int(dec_X[0, 0])
        if save_attention_weights:
            weights = getattr(net.decoder, "attention_weights", [])
            if all(torch.is_tensor(w) for w in weights):  # the GRU decoder's: one (1, 1, T) per step
                attention_weight_seq.extend(w.detach().cpu() for w in weights)
            else:  # the Transformer decoder's [[self-attention per block], [cross-attention per block]]
                attention_weight_seq.append(_detached_cpu(weights))
        if pred == eos:
            break
        output_seq.append(pred)
    return " ".join(tgt_vocab.to_tokens(output_seq)), attention_weight_seq


def bleu(pred_seq: str, label_seq: str, k: int) -> float:
    """The book's BLEU: exp(min(0, 1 - len_label / len_pred)) * prod_{n=1..k} p_n ** (1 / 2**n),
    p_n the clipped n-gram precision of the prediction; sequences split on whitespace.

    Orders n longer than the prediction (no n-grams to score; the book divides by zero) are
    skipped, leaving the brevity penalty to punish short predictions. An empty prediction scores 0.
    """
    pred_tokens, label_tokens = pred_seq.split(), label_seq.split()
    len_pred, len_label = len(pred_tokens), len(label_tokens)
    if len_pred == 0:
        return 0.0
    score = math.exp(min(0.0, 1.0 - len_label / len_pred))
    for n in range(1, k + 1):
        if len_pred < n:
            break
        label_subs: collections.Counter[tuple[str, ...]] = collections.Counter(
            tuple(label_tokens[i : i + n]) for i in range(len_label - n + 1)
        )
        num_matches = 0
        for i in range(len_pred - n + 1):
            gram = tuple(pred_tokens[i : i + n])
            if label_subs[gram] > 0:
                num_matches += 1
                label_subs[gram] -= 1
        score *= math.pow(num_matches / (len_pred - n + 1), math.pow(0.5, n))
    return score
