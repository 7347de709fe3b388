"""Sequence-to-sequence learning and attention (d2l_ext.models.seq2seq) and the translation data pipeline."""

from __future__ import annotations

import math
import random
import time

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from d2l_ext import nn as dnn
from d2l_ext.data import (
    FRA_ENG_URL,
    Vocab,
    build_array_nmt,
    load_data_nmt,
    preprocess_nmt,
    read_data_nmt,
    tokenize_nmt,
    truncate_pad,
)
from d2l_ext.models import (
    AdditiveAttention,
    DotProductAttention,
    EncoderDecoder,
    MaskedSoftmaxCELoss,
    Seq2SeqAttentionDecoder,
    Seq2SeqDecoder,
    Seq2SeqEncoder,
    bleu,
    masked_softmax,
    predict_seq2seq,
    sequence_mask,
    train_seq2seq,
)

RESERVED = ["<pad>", "<bos>", "<eos>"]


# --------------------------------------------------------------------------- masking


def test_sequence_mask_hand_cases():
    X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = sequence_mask(X, torch.tensor([1, 2]))
    assert torch.equal(out, torch.tensor([[1.0, 0.0, 0.0], [4.0, 5.0, 0.0]]))
    assert torch.equal(X, torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))  # not in place
    Y = torch.ones(2, 3, 4)
    out = sequence_mask(Y, torch.tensor([1, 2]), value=-1)
    assert torch.equal(out[0, 0], torch.ones(4)) and torch.equal(out[0, 1:], -torch.ones(2, 4))
    assert torch.equal(out[1, :2], torch.ones(2, 4)) and torch.equal(out[1, 2], -torch.ones(4))


def test_masked_softmax_hand_cases():
    X = torch.tensor([[[1.0, 2.0, 3.0]], [[0.0, 5.0, 1.0]]])
    w = masked_softmax(X, torch.tensor([2, 0]))
    e = math.e
    # row 0: softmax over [1, 2] = [1/(1+e), e/(1+e)], then 0; row 1 has no valid key: all zeros
    expected = torch.tensor([[[1 / (1 + e), e / (1 + e), 0.0]], [[0.0, 0.0, 0.0]]])
    torch.testing.assert_close(w, expected)
    assert not torch.isnan(w).any()
    # (B, Q) valid lengths: one per query
    w2 = masked_softmax(torch.zeros(1, 2, 3), torch.tensor([[1, 3]]))
    torch.testing.assert_close(w2, torch.tensor([[[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]]]))
    # None: a plain softmax
    torch.testing.assert_close(masked_softmax(X), torch.softmax(X, -1))


def test_masked_softmax_rows_sum_to_one_and_zero_beyond():
    torch.manual_seed(0)
    X = torch.randn(4, 5, 7) * 10
    lens = torch.tensor([1, 3, 7, 5])
    w = masked_softmax(X, lens)
    for b, n in enumerate(lens.tolist()):
        torch.testing.assert_close(w[b, :, :n].sum(-1), torch.ones(5))
        assert torch.equal(w[b, :, n:], torch.zeros(5, 7 - n))
    half = masked_softmax(X.half(), torch.tensor([0, 3, 7, 5]))
    assert not torch.isnan(half).any() and torch.equal(half[0], torch.zeros(5, 7, dtype=torch.half))


# --------------------------------------------------------------------------- attention


def test_dot_product_attention_hand_formula():
    q = torch.tensor([[[1.0, 0.0]]])
    k = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    v = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    attn = DotProductAttention(dropout=0.0)
    out = attn(q, k, v, None)
    # scores [1, 0] / sqrt(2); a = weight of the first key
    a = math.exp(1 / math.sqrt(2)) / (math.exp(1 / math.sqrt(2)) + 1)
    expected = torch.tensor([[[a * 1 + (1 - a) * 3, a * 2 + (1 - a) * 4]]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(attn.attention_weights, torch.tensor([[[a, 1 - a]]]))
    # with valid_lens 1 only the first value is seen
    torch.testing.assert_close(attn(q, k, v, torch.tensor([1])), torch.tensor([[[1.0, 2.0]]]))


@pytest.mark.parametrize("kind", ["additive", "dot"])
def test_attention_shapes_and_masked_keys_ignored(kind):
    torch.manual_seed(0)
    B, Q, K, d, v = 2, 3, 6, 4, 5
    attn = AdditiveAttention(d, d, 8, dropout=0.0) if kind == "additive" else DotProductAttention(0.0)
    attn.eval()
    queries, keys, values = torch.randn(B, Q, d), torch.randn(B, K, d), torch.randn(B, K, v)
    lens = torch.tensor([2, 4])
    out = attn(queries, keys, values, lens)
    assert out.shape == (B, Q, v)
    w = attn.attention_weights
    assert w.shape == (B, Q, K)
    assert torch.equal(w[0, :, 2:], torch.zeros(Q, K - 2)) and torch.equal(w[1, :, 4:], torch.zeros(Q, K - 4))
    keys2, values2 = keys.clone(), values.clone()
    keys2[0, 2:] += 100.0
    values2[0, 2:] -= 50.0
    keys2[1, 4:] = torch.randn(K - 4, d)
    values2[1, 4:] = 1e3
    torch.testing.assert_close(attn(queries, keys2, values2, lens), out)


# --------------------------------------------------------------------------- loss


def test_masked_softmax_ce_loss_hand_value():
    pred = torch.zeros(1, 3, 2)
    pred[0, 1, 1] = math.log(3.0)
    label = torch.tensor([[0, 1, 1]])
    loss = MaskedSoftmaxCELoss()(pred, label, torch.tensor([2]))
    # step 0: uniform over 2 classes -> log 2; step 1: p(1) = 3/4 -> log(4/3); step 2 is padding;
    # the book divides by the sequence length T = 3
    expected = (math.log(2.0) + math.log(4.0 / 3.0)) / 3
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_masked_softmax_ce_loss_ignores_padded_logits():
    torch.manual_seed(0)
    pred = torch.randn(3, 5, 7, requires_grad=True)
    label = torch.randint(0, 7, (3, 5))
    lens = torch.tensor([5, 2, 0])
    loss_fn = MaskedSoftmaxCELoss()
    loss = loss_fn(pred, label, lens)
    loss.sum().backward()
    assert loss[2].item() == 0.0
    assert torch.equal(pred.grad[1, 2:], torch.zeros(3, 7)) and torch.equal(pred.grad[2], torch.zeros(5, 7))
    changed = pred.detach().clone()
    changed[1, 2:] = torch.randn(3, 7) * 100
    changed[2] = float("inf")
    torch.testing.assert_close(loss_fn(changed, label, lens), loss.detach())


# --------------------------------------------------------------------------- BLEU


def test_bleu_identical_is_one():
    assert bleu("il est calme .", "il est calme .", 2) == pytest.approx(1.0)
    assert bleu("va !", "va !", 4) == pytest.approx(1.0)  # shorter than k: missing orders skipped


def test_bleu_hand_computed():
    # the book's "he's calm ." example: same length (no brevity penalty); unigrams 3/4 match
    # (il, est, .), bigrams 1/3 ("il est"): (3/4) ** (1/2) * (1/3) ** (1/4) = 0.6580...
    assert bleu("il est paresseux .", "il est calme .", 2) == pytest.approx(0.75**0.5 * (1 / 3) ** 0.25)
    assert bleu("il est paresseux .", "il est calme .", 2) == pytest.approx(0.658037, abs=1e-6)
    # clipped counts: "the" may match only once in "the cat": p1 = 1/3, no brevity penalty
    assert bleu("the the the", "the cat", 1) == pytest.approx((1 / 3) ** 0.5)


def test_bleu_brevity_penalty():
    # 2 predicted tokens, 4 in the label: exp(1 - 4/2) = e^-1; both n-gram precisions are 1
    assert bleu("il est", "il est calme .", 2) == pytest.approx(math.exp(-1))
    assert bleu("", "il est", 2) == 0.0


# --------------------------------------------------------------------------- data


def test_truncate_pad_and_build_array():
    assert truncate_pad([1, 2], 4, 0) == [1, 2, 0, 0]
    assert truncate_pad([1, 2, 3, 4, 5], 3, 0) == [1, 2, 3]
    vocab = Vocab([["a", "b"], ["a"]], reserved_tokens=RESERVED)
    array, valid_len = build_array_nmt([["a", "b"], ["a"], ["b", "a", "b", "a"]], vocab, 4)
    pad, eos = vocab["<pad>"], vocab["<eos>"]
    assert array.shape == (3, 4) and array.dtype == torch.long
    assert array[0].tolist() == [vocab["a"], vocab["b"], eos, pad]
    assert array[1].tolist() == [vocab["a"], eos, pad, pad]
    assert array[2].tolist() == [vocab["b"], vocab["a"], vocab["b"], vocab["a"]]  # <eos> truncated away
    assert valid_len.tolist() == [3, 2, 4]


def test_read_preprocess_tokenize_and_load(tmp_path):
    folder = tmp_path / "fra-eng"
    folder.mkdir()
    lines = ["Go.\tVa !", "Hi.\tSalut\u202f!", "Run!\tCours\xa0!\tCC-BY 2.0 (attribution)", "Go.\tEn route !"]
    (folder / "fra.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw = read_data_nmt(folder / "fra.txt")
    assert raw.startswith("Go.\tVa !")
    assert read_data_nmt(folder) == raw  # a folder holding fra.txt
    text = preprocess_nmt(raw)
    assert text.split("\n")[:3] == [
        "go .\tva !",
        "hi .\tsalut !",
        "run !\tcours !\tcc-by 2 .0 (attribution)",
    ]  # the book's rule spares no dot
    source, target = tokenize_nmt(text)
    assert source == [["go", "."], ["hi", "."], ["run", "!"], ["go", "."]]
    assert target[2] == ["cours", "!"]
    assert tokenize_nmt(text, num_examples=2)[0] == [["go", "."], ["hi", "."]]
    loader, src_vocab, tgt_vocab = load_data_nmt(batch_size=2, num_steps=5, num_examples=4, path=folder)
    for v in (src_vocab, tgt_vocab):
        assert [v["<pad>"], v["<bos>"], v["<eos>"]] == [1, 2, 3]
    assert "go" in src_vocab and "hi" not in src_vocab  # min_freq 2
    assert "!" in tgt_vocab and "va" not in tgt_vocab
    X, X_valid_len, Y, Y_valid_len = next(iter(loader))
    assert X.shape == (2, 5) and Y.shape == (2, 5) and X_valid_len.shape == (2,) and Y_valid_len.shape == (2,)
    assert sum(len(b[0]) for b in loader) == 4


def test_read_data_nmt_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "fra.txt"
    with pytest.raises(FileNotFoundError) as info:
        read_data_nmt(missing)
    assert str(missing) in str(info.value) and FRA_ENG_URL in str(info.value)


# --------------------------------------------------------------------------- models


def test_encoder_decoder_shapes_use_d2l_ext_gru():
    torch.manual_seed(0)
    enc = Seq2SeqEncoder(10, 8, 16, 2)
    X = torch.zeros(4, 7, dtype=torch.long)
    outputs, state = enc(X)
    assert outputs.shape == (7, 4, 16) and state.shape == (2, 4, 16)
    for dec in (Seq2SeqDecoder(12, 8, 16, 2), Seq2SeqAttentionDecoder(12, 8, 16, 2)):
        assert isinstance(dec.rnn, dnn.GRU) and isinstance(enc.rnn, dnn.GRU)
        net = EncoderDecoder(enc, dec)
        Y_hat, _ = net(X, torch.zeros(4, 5, dtype=torch.long), torch.tensor([7, 3, 1, 5]))
        assert Y_hat.shape == (4, 5, 12)
    assert len(dec.attention_weights) == 5 and dec.attention_weights[0].shape == (4, 1, 7)
    assert torch.equal(dec.attention_weights[0][2, 0, 1:], torch.zeros(6))  # valid length 1


EN = "zero one two three four five six seven eight nine".split()
FR = "zéro un deux trois quatre cinq six sept huit neuf".split()


def _digit_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Distinct random digit sequences (2-5 digits) in English words and their French translation."""
    rng = random.Random(seed)
    pairs: dict[tuple[str, str], None] = {}
    while len(pairs) < n:
        digits = [rng.randrange(10) for _ in range(rng.randint(2, 5))]
        pairs[(" ".join(EN[d] for d in digits) + " .", " ".join(FR[d] for d in digits) + " .")] = None
    return list(pairs)


def test_toy_translation_attention_seq2seq_learns():
    """Digit words English -> French (2-5 words and a full stop): 200 training pairs, 50 held-out ones
    (sequences not seen in training). Attention seq2seq (embed 16, hidden 32, one d2l_ext GRU layer
    each side), 50 epochs of Adam at lr 0.01, batch 32: about 6 s on a CPU."""
    torch.manual_seed(0)
    pairs = _digit_pairs(250, seed=0)
    train, held_out = pairs[:200], pairs[200:]
    text = "\n".join(f"{en}\t{fr}" for en, fr in train)
    source, target = tokenize_nmt(preprocess_nmt(text))
    src_vocab = Vocab(source, min_freq=2, reserved_tokens=RESERVED)
    tgt_vocab = Vocab(target, min_freq=2, reserved_tokens=RESERVED)
    num_steps = 8
    X, X_valid_len = build_array_nmt(source, src_vocab, num_steps)
    Y, Y_valid_len = build_array_nmt(target, tgt_vocab, num_steps)
    loader = DataLoader(TensorDataset(X, X_valid_len, Y, Y_valid_len), batch_size=32, shuffle=True)
    net = EncoderDecoder(
        Seq2SeqEncoder(len(src_vocab), 16, 32, 1), Seq2SeqAttentionDecoder(len(tgt_vocab), 16, 32, 1)
    )
    assert all(isinstance(m, dnn.GRU) for m in net.modules() if isinstance(m, torch.nn.RNNBase))
    start = time.perf_counter()
    losses = train_seq2seq(net, loader, lr=0.01, num_epochs=50, tgt_vocab=tgt_vocab, device="cpu")
    elapsed = time.perf_counter() - start
    assert len(losses) == 50 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.1 * losses[0] and losses[-1] < 0.1, losses
    train_bleu = [
        bleu(predict_seq2seq(net, en, src_vocab, tgt_vocab, num_steps, "cpu")[0], fr, 2) for en, fr in train
    ]
    test_bleu = [
        bleu(predict_seq2seq(net, en, src_vocab, tgt_vocab, num_steps, "cpu")[0], fr, 2)
        for en, fr in held_out
    ]
    mean_train, mean_test = sum(train_bleu) / len(train_bleu), sum(test_bleu) / len(test_bleu)
    print(
        f"loss {losses[0]:.3f} -> {losses[-1]:.4f}, BLEU train {mean_train:.3f} held-out {mean_test:.3f}, "
        f"{elapsed:.1f} s"
    )
    assert mean_train >= 0.95
    assert mean_test >= 0.9
    translation, weights = predict_seq2seq(
        net, train[0][0], src_vocab, tgt_vocab, num_steps, "cpu", save_attention_weights=True
    )
    assert translation == train[0][1]
    assert len(weights) == len(translation.split()) + 1  # one per step, the <eos> step included
    assert weights[0].shape == (1, 1, num_steps)


def test_plain_seq2seq_trains():
    """The decoder without attention: its loss falls on the same toy data (no BLEU threshold)."""
    torch.manual_seed(0)
    pairs = _digit_pairs(64, seed=1)
    source, target = tokenize_nmt(preprocess_nmt("\n".join(f"{a}\t{b}" for a, b in pairs)))
    src_vocab = Vocab(source, min_freq=2, reserved_tokens=RESERVED)
    tgt_vocab = Vocab(target, min_freq=2, reserved_tokens=RESERVED)
    X, Xl = build_array_nmt(source, src_vocab, 8)
    Y, Yl = build_array_nmt(target, tgt_vocab, 8)
    loader = DataLoader(TensorDataset(X, Xl, Y, Yl), batch_size=16, shuffle=True)
    net = EncoderDecoder(Seq2SeqEncoder(len(src_vocab), 16, 32, 2), Seq2SeqDecoder(len(tgt_vocab), 16, 32, 2))
    losses = train_seq2seq(net, loader, lr=0.01, num_epochs=10, tgt_vocab=tgt_vocab, device="cpu")
    assert losses[-1] < 0.6 * losses[0], losses
    translation, weights = predict_seq2seq(net, pairs[0][0], src_vocab, tgt_vocab, 8, "cpu", True)
    assert isinstance(translation, str) and weights == []
