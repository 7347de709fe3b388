"""The book's recurrent language model (ch. 9, ``RNNModel``) on d2l_ext layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .. import nn as dnn

__all__ = ["RNNLM"]

_CELLS = {"rnn": dnn.RNN, "gru": dnn.GRU, "lstm": dnn.LSTM}


class RNNLM(nn.Module):
    """A character- or word-level language model: tokens -> (one-hot or an
    embedding) -> a d2l_ext RNN/GRU/LSTM -> a linear head over the vocabulary.

    ``forward(inputs, state)``: inputs (B, T) token indices (the book's layout),
    state None or the recurrent state ((L * D, B, H), a pair for the LSTM)
    -> (logits (T * B, V), time-major as the book flattens them, new state).
    ``embedding=None`` feeds one-hot vectors, as the book does; an int gives
    an ``nn.Embedding`` of that size. ``bidirectional`` runs the book's deep
    bidirectional variant (it sees the future, so its perplexity is not a
    language model's; the book shows why).
    """

    def __init__(
        self,
        vocab_size: int,
        num_hiddens: int = 256,
        num_layers: int = 1,
        cell: str = "gru",
        *,
        bidirectional: bool = False,
        embedding: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {tuple(_CELLS)}, got {cell!r}")
        self.vocab_size, self.cell = vocab_size, cell
        self.embedding = None if embedding is None else nn.Embedding(vocab_size, embedding)
        inputs = vocab_size if embedding is None else embedding
        self.rnn = _CELLS[cell](inputs, num_hiddens, num_layers, dropout=dropout, bidirectional=bidirectional)
        self.linear = nn.Linear(num_hiddens * (2 if bidirectional else 1), vocab_size)

    def begin_state(self, batch_size: int, device: torch.device | str = "cpu"):
        """Zero state: (L * D, B, H), or an (h, c) pair for the LSTM."""
        shape = (self.rnn.num_layers * (2 if self.rnn.bidirectional else 1), batch_size, self.rnn.hidden_size)
        h = torch.zeros(shape, device=device, dtype=self.linear.weight.dtype)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def forward(self, inputs: Tensor, state=None) -> tuple[Tensor, object]:
        tokens = inputs.T.long()  # (T, B)
        if self.embedding is None:
            x = nn.functional.one_hot(tokens, self.vocab_size).to(self.linear.weight.dtype)
        else:
            x = self.embedding(tokens)
        y, state = self.rnn(x, state)  # (T, B, D * H)
        return self.linear(y.reshape(-1, y.shape[-1])), state

    @torch.no_grad()
    def predict(
        self,
        prefix: str | Sequence[str],
        num_preds: int,
        vocab,
        *,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> str:
        """The book's ``predict_ch8``: warm the state up on ``prefix``, then
        append ``num_preds`` tokens (never ``<unk>``), each the most likely next one
        (``temperature=0``) or drawn from softmax(logits / temperature) with
        ``generator`` (the same generator seed gives the same text). A string
        prefix is read as characters and the result joined without spaces; a
        list of words gives words joined by spaces."""
        was_training = self.training
        self.eval()
        device = self.linear.weight.device
        tokens = list(prefix)
        if not tokens:
            raise ValueError("predict: prefix must hold at least one token")
        state = self.begin_state(1, device)
        outputs = [vocab[tokens[0]]]
        for tok in tokens[1:]:  # warm-up
            _, state = self(torch.tensor([[outputs[-1]]], device=device), state)
            outputs.append(vocab[tok])
        unk = getattr(vocab, "unk", None)
        for _ in range(num_preds):
            logits, state = self(torch.tensor([[outputs[-1]]], device=device), state)
            if unk is not None:  # never generate the unknown token
                logits[0, unk] = float("-inf")
            if temperature > 0:
                probs = torch.softmax(logits[0].float() / temperature, dim=0).cpu()
                outputs.append(int(torch.multinomial(probs, 1, generator=generator)))
            else:
                outputs.append(int(logits[0].argmax()))
        self.train(was_training)
        words = [vocab.to_tokens(i) for i in outputs]
        return ("" if isinstance(prefix, str) else " ").join(words)
