"""The book's RNN language model (d2l_ext.models.RNNLM) and `d2l-ext train-lm`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import d2l_ext
from d2l_ext import cli, train_lm
from d2l_ext.data.text import Vocab
from d2l_ext.models import RNNLM

# A small corpus the tests write: a few sentences repeated, so a model learns it in seconds.
TEXT = (
    "the time traveller smiled round at us then still smiling faintly and with his hands deep in "
    "his trouser pockets he walked slowly out of the room "
) * 40


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT)
    return path


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers,bidirectional,embedding", [(1, False, None), (2, True, 8)])
def test_shapes_and_layers(cell, layers, bidirectional, embedding):
    V, B, T, H = 28, 3, 7, 16
    model = RNNLM(V, H, layers, cell, bidirectional=bidirectional, embedding=embedding)
    assert type(model.rnn).__module__.startswith("d2l_ext.nn")
    x = torch.randint(0, V, (B, T))
    logits, state = model(x)
    assert logits.shape == (T * B, V)
    D = 2 if bidirectional else 1
    h = state[0] if cell == "lstm" else state
    assert h.shape == (layers * D, B, H)
    begin = model.begin_state(B)
    assert (begin[0] if cell == "lstm" else begin).shape == (layers * D, B, H)
    # time-major flattening, as the book's RNNModel: row t * B + b is step t of sequence b
    logits2, _ = model(x[:1])
    torch.testing.assert_close(logits2[:1], logits[:1])  # step 0 of sequence 0 needs no other input


def test_perplexity_by_hand():
    # uniform predictions over V tokens: every token costs log V nats -> perplexity V
    V, n = 28, 100
    logits = torch.zeros(n, V)
    nll = torch.nn.functional.cross_entropy(logits, torch.randint(0, V, (n,)), reduction="sum").item()
    assert train_lm.perplexity(nll, n) == pytest.approx(V)
    # two tokens predicted with probabilities 0.5 and 0.25: exp((ln 2 + ln 4) / 2) = sqrt(8)
    assert train_lm.perplexity(math.log(2) + math.log(4), 2) == pytest.approx(math.sqrt(8))


def test_predict_is_deterministic():
    vocab = Vocab(list(TEXT))
    torch.manual_seed(0)
    model = RNNLM(len(vocab), 16, 1, "gru")
    a = model.predict("the ", 20, vocab)
    assert a.startswith("the ") and len(a) == 24 and a == model.predict("the ", 20, vocab)
    s1 = model.predict("the ", 20, vocab, temperature=1.0, generator=torch.Generator().manual_seed(3))
    s2 = model.predict("the ", 20, vocab, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert s1 == s2 and len(s1) == 24
    with pytest.raises(ValueError):
        model.predict("", 5, vocab)


# a small model on the small corpus: the options every training test here shares
SMALL = ["--hidden", "32", "--max-tokens", "3000", "--batch-size", "8", "--num-steps", "10", "--no-progress"]


def _run(tmp_path, corpus, *args, out="run"):
    argv = ["gru", "--corpus", str(corpus), *SMALL, "--no-plot", "--out", str(tmp_path / out), *args]
    rc = train_lm.main(argv)
    m = tmp_path / out / "metrics.json"
    return rc, json.loads(m.read_text()) if m.exists() else {}


def test_training_lowers_perplexity_and_writes_files(tmp_path, corpus, capsys):
    rc = cli.main(["train-lm", "lstm", "--corpus", str(corpus), *SMALL, "--epochs", "15",
                   "--out", str(tmp_path / "run")])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "training perplexity" in last and "tokens/s" in last
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    ppl = [h["perplexity"] for h in m["history"]]
    assert len(ppl) == 15 and ppl[-1] < 0.6 * ppl[0], ppl
    assert m["vocab_size"] == len(set(TEXT)) + 1  # letters and space, + <unk>
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert isinstance(m["final"]["sample"], str) and m["final"]["sample"].startswith("time traveller")


@pytest.mark.parametrize("sampler", ["sequential", "random"])
def test_resume_continues_to_the_same_numbers(tmp_path, corpus, sampler):
    rc, full = _run(tmp_path, corpus, "--epochs", "4", "--sampler", sampler, "--dropout", "0.0", out="full")
    assert rc == 0
    rc, _ = _run(
        tmp_path, corpus, "--epochs", "2", "--checkpoint-every", "2", "--sampler", sampler, out="part"
    )
    assert rc == 0
    rc, resumed = _run(tmp_path, corpus, "--epochs", "4", "--resume", "--sampler", sampler, out="part")
    assert rc == 0
    strip = lambda h: [(r["epoch"], r["perplexity"], r["tokens"]) for r in h]  # noqa: E731
    assert strip(resumed["history"]) == strip(full["history"])


def test_backends_agree(tmp_path, corpus):
    runs = {}
    for backend in ("native", "torch"):
        rc, runs[backend] = _run(tmp_path, corpus, "--epochs", "2", "--backend", backend, out=backend)
        assert rc == 0
    a = [h["perplexity"] for h in runs["native"]["history"]]
    b = [h["perplexity"] for h in runs["torch"]["history"]]
    # the same model and data; float32 sums in different orders over ~40 SGD steps
    assert a == pytest.approx(b, rel=1e-3)


def test_missing_corpus_and_bad_arguments(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("D2L_EXT_TIME_MACHINE", str(tmp_path / "nowhere.txt"))
    with pytest.raises(SystemExit):
        train_lm.main(["transformer"])
    with pytest.raises(ValueError, match="--hidden"):
        train_lm.LMConfig(hidden=0).resolved()
    assert d2l_ext.backend() in ("native", "python")
