"""Multi-head attention, positional encoding and the Transformer (d2l_ext.models.transformer)."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from d2l_ext.data import Vocab, build_array_nmt, preprocess_nmt, tokenize_nmt
from d2l_ext.models import (
    AddNorm,
    EncoderDecoder,
    MultiHeadAttention,
    PositionalEncoding,
    PositionWiseFFN,
    TransformerDecoder,
    TransformerDecoderBlock,
    TransformerEncoder,
    TransformerEncoderBlock,
    bleu,
    predict_seq2seq,
    train_seq2seq,
)

from .test_seq2seq import RESERVED, _digit_pairs

# --------------------------------------------------------------------------- multi-head attention


def test_multi_head_attention_book_shapes():
    # the book's example: 100 hidden units in 5 heads, 4 queries, 6 key-value pairs
    torch.manual_seed(0)
    attention = MultiHeadAttention(100, 5, 0.5)
    attention.eval()
    X, Y = torch.ones(2, 4, 100), torch.ones(2, 6, 100)
    out = attention(X, Y, Y, torch.tensor([3, 2]))
    assert out.shape == (2, 4, 100)
    w = attention.attention.attention_weights
    assert w.shape == (2 * 5, 4, 6)
    # rows b * num_heads + h: example 0 sees 3 keys in every head, example 1 sees 2
    assert torch.equal(w[:5, :, 3:], torch.zeros(5, 4, 3)) and torch.equal(w[5:, :, 2:], torch.zeros(5, 4, 4))
    torch.testing.assert_close(w.sum(-1), torch.ones(10, 4))
    # (B, Q) valid lengths, one per query, the same in every head
    attention(X, Y, Y, torch.tensor([[1, 2, 3, 4], [6, 5, 4, 3]]))
    w = attention.attention.attention_weights
    assert torch.equal(w[:5, 0, 1:], torch.zeros(5, 5)) and torch.equal(w[5:, 3, 3:], torch.zeros(5, 3))
    assert attention(X, Y, Y, None).shape == (2, 4, 100)
    H = torch.arange(2 * 3 * 100, dtype=torch.float32).reshape(2, 3, 100)
    assert attention.transpose_qkv(H).shape == (10, 3, 20)
    assert torch.equal(attention.transpose_output(attention.transpose_qkv(H)), H)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        MultiHeadAttention(10, 3, 0.0)


# Tolerances: both sides compute the same maths, but torch.nn.MultiheadAttention scales the queries
# by 1/sqrt(d) before the Q K^T product (we divide the scores, as the book's DotProductAttention),
# projects q, k, v with one packed weight and uses its own softmax/bmm kernels: a few roundings per
# op in another order, summed over at most 100 features. Outputs are O(1), so these reorderings stay
# within ~1e-7 in float32 (epsilon 1.2e-7; 1e-5 leaves a 100x margin, with the same absolute slack for
# entries near 0) and ~1e-16 in float64 (epsilon 2.2e-16; 1e-12 leaves the same kind of margin).
TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-12, 1e-12)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_multi_head_attention_matches_torch(dtype, bias):
    torch.manual_seed(0)
    B, Q, K, E, H = 3, 4, 6, 100, 5
    ours = MultiHeadAttention(E, H, 0.0, bias=bias).to(dtype).eval()
    ref = torch.nn.MultiheadAttention(E, H, dropout=0.0, bias=bias, batch_first=True).to(dtype).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.W_q.weight, ours.W_k.weight, ours.W_v.weight]))
        ref.out_proj.weight.copy_(ours.W_o.weight)
        if bias:
            ref.in_proj_bias.copy_(torch.cat([ours.W_q.bias, ours.W_k.bias, ours.W_v.bias]))
            ref.out_proj.bias.copy_(ours.W_o.bias)
    queries = torch.randn(B, Q, E, dtype=dtype)
    keys, values = torch.randn(B, K, E, dtype=dtype), torch.randn(B, K, E, dtype=dtype)
    rtol, atol = TOLERANCES[dtype]

    # valid_lens (B,) <-> a key padding mask (True: ignored)
    valid_lens = torch.tensor([2, 6, 1])
    padding = torch.arange(K)[None, :] >= valid_lens[:, None]
    out = ours(queries, keys, values, valid_lens)
    expected, expected_weights = ref(queries, keys, values, key_padding_mask=padding)
    torch.testing.assert_close(out, expected, rtol=rtol, atol=atol)
    weights = ours.attention.attention_weights.reshape(B, H, Q, K).mean(dim=1)  # torch averages heads
    torch.testing.assert_close(weights, expected_weights, rtol=rtol, atol=atol)

    # valid_lens (B, Q) <-> a per-head (B * H, Q, K) attention mask, torch's rows also b * H + h
    valid_lens = torch.tensor([[1, 2, 3, 4], [6, 5, 4, 3], [2, 2, 6, 1]])
    mask = torch.arange(K)[None, None, :] >= valid_lens[:, :, None]  # (B, Q, K)
    out = ours(queries, keys, values, valid_lens)
    expected, _ = ref(queries, keys, values, attn_mask=mask.repeat_interleave(H, dim=0))
    torch.testing.assert_close(out, expected, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- positional encoding, FFN


def test_positional_encoding_hand_values():
    d = 8
    pe = PositionalEncoding(d, 0.0, max_len=60)
    P = pe.P
    assert P.shape == (1, 60, d) and P.dtype == torch.get_default_dtype()
    # position 0: sin 0 = 0 in the even columns, cos 0 = 1 in the odd ones
    torch.testing.assert_close(P[0, 0, 0:4], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    # P[i, 2j] = sin(i / 10000^(2j/d)), P[i, 2j + 1] = cos(i / 10000^(2j/d))
    for i, j in [(1, 0), (1, 1), (5, 3), (59, 2)]:
        angle = i / 10000 ** (2 * j / d)
        assert P[0, i, 2 * j].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert P[0, i, 2 * j + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    expected_row = [math.sin(1), math.cos(1), math.sin(1 / 10000 ** (2 / d)), math.cos(1 / 10000 ** (2 / d))]
    torch.testing.assert_close(P[0, 1, 0:4], torch.tensor(expected_row))
    # forward adds P from position `offset` on (dropout 0)
    X = torch.randn(2, 5, d)
    torch.testing.assert_close(pe(X), X + P[:, :5])
    torch.testing.assert_close(pe(X, offset=7), X + P[:, 7:12])
    assert pe(X.double()).dtype == torch.float64
    with pytest.raises(ValueError, match="max_len"):
        pe(X, offset=56)
    # an odd width keeps the last sine column
    odd = PositionalEncoding(5, 0.0, max_len=4).P
    assert odd.shape == (1, 4, 5)
    assert odd[0, 3, 4].item() == pytest.approx(math.sin(3 / 10000 ** (4 / 5)), abs=1e-6)


def test_position_wise_ffn_and_add_norm():
    torch.manual_seed(0)
    ffn = PositionWiseFFN(4, 8, ffn_num_input=4)  # the book's example: 4 inputs, 4 hidden, 8 outputs
    ffn.eval()
    out = ffn(torch.ones(2, 3, 4))
    assert out.shape == (2, 3, 8)
    assert torch.equal(out[0], out[1]) and torch.equal(out[0, 0], out[0, 2])  # the same MLP everywhere
    assert PositionWiseFFN(16, 8)(torch.ones(2, 3, 8)).shape == (2, 3, 8)  # input size defaults to output's
    add_norm = AddNorm(4, 0.5)
    add_norm.eval()
    assert add_norm(torch.ones(2, 3, 4), torch.ones(2, 3, 4)).shape == (2, 3, 4)
    # LayerNorm (weight 1, bias 0) of X + Y = [1, 2, 3, 4]: mean 2.5, variance 1.25
    out = add_norm(torch.tensor([[0.0, 1.0, 2.0, 3.0]]), torch.ones(1, 4))
    expected = (torch.tensor([[1.0, 2.0, 3.0, 4.0]]) - 2.5) / math.sqrt(1.25 + 1e-5)
    torch.testing.assert_close(out, expected)


# --------------------------------------------------------------------------- encoder and decoder


def test_encoder_and_decoder_book_shapes():
    torch.manual_seed(0)
    X = torch.ones(2, 100, 24)
    valid_lens = torch.tensor([3, 2])
    encoder_blk = TransformerEncoderBlock(24, 48, 8, 0.5)
    encoder_blk.eval()
    assert encoder_blk(X, valid_lens).shape == X.shape

    encoder = TransformerEncoder(200, 24, 48, 8, 2, 0.5)
    encoder.eval()
    enc_outputs = encoder(torch.ones(2, 100, dtype=torch.long), valid_lens)
    assert enc_outputs.shape == (2, 100, 24)
    assert len(encoder.attention_weights) == 2
    for w in encoder.attention_weights:
        assert w.shape == (2 * 8, 100, 100)
        assert torch.equal(w[:8, :, 3:], torch.zeros(8, 100, 97))
        assert torch.equal(w[8:, :, 2:], torch.zeros(8, 100, 98))

    decoder_blk = TransformerDecoderBlock(24, 48, 8, 0.5, 0)
    decoder_blk.eval()
    state = [encoder_blk(X, valid_lens), valid_lens, [None]]
    out, state = decoder_blk(X, state)
    assert out.shape == X.shape and torch.equal(state[2][0], X)  # the block's inputs are cached

    decoder = TransformerDecoder(200, 24, 48, 8, 2, 0.5)
    decoder.eval()
    state = decoder.init_state(enc_outputs, valid_lens)
    assert state[0] is enc_outputs and state[1] is valid_lens and state[2] == [None, None]
    logits, state = decoder(torch.ones(2, 100, dtype=torch.long), state)
    assert logits.shape == (2, 100, 200)
    assert [c.shape for c in state[2]] == [(2, 100, 24), (2, 100, 24)]
    self_w, cross_w = decoder.attention_weights
    assert len(self_w) == len(cross_w) == 2
    for w in self_w:  # causal: query t sees keys 0..t
        assert w.shape == (16, 100, 100) and torch.equal(w, w.tril())
    for w in cross_w:  # the encoder's valid lengths
        assert w.shape == (16, 100, 100) and torch.equal(w[8:, :, 2:], torch.zeros(8, 100, 98))

    net = EncoderDecoder(TransformerEncoder(11, 16, 32, 4, 2, 0.1), TransformerDecoder(13, 16, 32, 4, 2, 0.1))
    src, tgt = torch.zeros(4, 7, dtype=torch.long), torch.zeros(4, 5, dtype=torch.long)
    Y_hat, _ = net(src, tgt, torch.tensor([7, 3, 1, 5]))
    assert Y_hat.shape == (4, 5, 13)


def test_encoder_ignores_padding():
    torch.manual_seed(0)
    encoder = TransformerEncoder(20, 16, 32, 4, 2, 0.0)
    encoder.eval()
    X = torch.randint(0, 20, (3, 7))
    valid_lens = torch.tensor([7, 4, 2])
    out = encoder(X, valid_lens)
    X2 = X.clone()
    X2[1, 4:] = (X2[1, 4:] + 5) % 20
    X2[2, 2:] = (X2[2, 2:] + 1) % 20
    out2 = encoder(X2, valid_lens)
    torch.testing.assert_close(out2[1, :4], out[1, :4])
    torch.testing.assert_close(out2[2, :2], out[2, :2])
    torch.testing.assert_close(out2[0], out[0])


def test_decoder_incremental_decoding_matches_full_pass():
    """Decoding one token per call from the state's cache (prediction) gives the logits of one
    teacher-forced pass over the whole sequence with the causal mask; float64."""
    torch.manual_seed(0)
    B, T, T_enc, H, V = 3, 9, 5, 16, 11
    decoder = TransformerDecoder(V, H, 32, 4, 2, 0.0).double()
    decoder.eval()
    enc_outputs = torch.randn(B, T_enc, H, dtype=torch.float64)
    enc_valid_lens = torch.tensor([3, 5, 1])
    X = torch.randint(0, V, (B, T))
    with torch.no_grad():
        full, state = decoder(X, decoder.init_state(enc_outputs, enc_valid_lens))
        assert full.shape == (B, T, V) and full.dtype == torch.float64
        assert [c.shape for c in state[2]] == [(B, T, H)] * 2

        state = decoder.init_state(enc_outputs, enc_valid_lens)
        steps = []
        for t in range(T):
            logits, state = decoder(X[:, t : t + 1], state)
            steps.append(logits)
            assert [c.shape[1] for c in state[2]] == [t + 1, t + 1]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-10, atol=1e-10)

        # two chunks (positions continue from the cache) give the same logits too
        state = decoder.init_state(enc_outputs, enc_valid_lens)
        first, state = decoder(X[:, :4], state)
        rest, state = decoder(X[:, 4:], state)
        torch.testing.assert_close(torch.cat((first, rest), dim=1), full, rtol=1e-10, atol=1e-10)

        # causal: later tokens do not change earlier logits
        X2 = X.clone()
        X2[:, 4:] = (X2[:, 4:] + 3) % V
        changed, _ = decoder(X2, decoder.init_state(enc_outputs, enc_valid_lens))
        torch.testing.assert_close(changed[:, :4], full[:, :4], rtol=1e-10, atol=1e-10)
        assert not torch.allclose(changed[:, 4:], full[:, 4:])

        # the book's training path (training mode; dropout 0 so it is deterministic) is the same pass
        decoder.train()
        trained, _ = decoder(X, decoder.init_state(enc_outputs, enc_valid_lens))
        torch.testing.assert_close(trained, full, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- training


def test_toy_translation_transformer_learns():
    """Digit words English -> French (as test_seq2seq's attention test), 2,000 training pairs and 100
    held-out ones (sequences not seen in training). A Transformer of 32 hidden units, 4 heads, FFN 64,
    2 blocks each side, dropout 0: 30 epochs of Adam at lr 0.005, batch 128, 15-20 s on one core.

    Measured with torch seeds 0, 1, 2: held-out BLEU-2 0.966 / 0.981 / 0.984, exact translations
    83 / 90 / 91 %, training-set BLEU 0.98-0.99. The 200 training pairs that suffice for the GRU model
    leave this Transformer memorising them (held-out BLEU 0.4-0.55 in our runs).
    """
    torch.manual_seed(0)
    pairs = _digit_pairs(2100, seed=0)
    train, held_out = pairs[:2000], pairs[2000:]
    source, target = tokenize_nmt(preprocess_nmt("\n".join(f"{en}\t{fr}" for en, fr in train)))
    src_vocab = Vocab(source, min_freq=2, reserved_tokens=RESERVED)
    tgt_vocab = Vocab(target, min_freq=2, reserved_tokens=RESERVED)
    num_steps = 8
    X, X_valid_len = build_array_nmt(source, src_vocab, num_steps)
    Y, Y_valid_len = build_array_nmt(target, tgt_vocab, num_steps)
    loader = DataLoader(TensorDataset(X, X_valid_len, Y, Y_valid_len), batch_size=128, shuffle=True)

    def translate(net: EncoderDecoder, subset: list[tuple[str, str]]) -> list[str]:
        return [predict_seq2seq(net, en, src_vocab, tgt_vocab, num_steps, "cpu")[0] for en, _ in subset]

    def mean_bleu(translations: list[str], subset: list[tuple[str, str]]) -> float:
        return sum(bleu(t, fr, 2) for t, (_, fr) in zip(translations, subset)) / len(subset)

    net = EncoderDecoder(
        TransformerEncoder(len(src_vocab), 32, 64, 4, 2, 0.0),
        TransformerDecoder(len(tgt_vocab), 32, 64, 4, 2, 0.0),
    )
    # one thread: the matrices are tiny (32 x 64), and on a busy shared machine two OpenMP threads
    # that wait on each other made this run about 7 times slower (15 s -> 108 s measured)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        losses = train_seq2seq(net, loader, lr=0.005, num_epochs=30, tgt_vocab=tgt_vocab, device="cpu")
        elapsed = time.perf_counter() - start
        train_translations, held_out_translations = translate(net, train[:100]), translate(net, held_out)
    finally:
        torch.set_num_threads(threads)
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.1 * losses[0] and losses[-1] < 0.15, losses
    mean_train = mean_bleu(train_translations, train[:100])
    mean_test = mean_bleu(held_out_translations, held_out)
    exact = sum(t == fr for t, (_, fr) in zip(held_out_translations, held_out)) / len(held_out)
    print(
        f"loss {losses[0]:.3f} -> {losses[-1]:.4f}, BLEU train {mean_train:.3f} held-out {mean_test:.3f}, "
        f"held-out exact {exact:.2f}, {elapsed:.1f} s"
    )
    assert mean_train >= 0.9
    assert mean_test >= 0.9
    assert exact >= 0.7
    # the attention weights of each decoding step: [self-attention per block, cross-attention per block]
    en = held_out[0][0]
    translation, weights = predict_seq2seq(net, en, src_vocab, tgt_vocab, num_steps, "cpu", True)
    assert translation == predict_seq2seq(net, en, src_vocab, tgt_vocab, num_steps, "cpu")[0]
    assert 1 <= len(weights) <= num_steps
    for step, (self_attn, cross) in enumerate(weights):
        assert len(self_attn) == len(cross) == 2
        assert self_attn[0].shape == (4, 1, step + 1)  # heads, one query, the tokens so far
        assert cross[0].shape == (4, 1, num_steps)
        torch.testing.assert_close(cross[0].sum(-1), torch.ones(4, 1))
