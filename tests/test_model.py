"""The HAN's invariants (and the flat baseline's, where they apply), including the bugs of public HAN implementations (notes/peers.md §3):
attention over padding, padding-dependent outputs, batch of 1, NaN under mixed precision,
hidden state leaking between sentences, uninitialised parameters."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from hanclf.data import EncodedDoc, collate
import hanclf.model
from hanclf.model import (
    HAN, PAD, BiGRUEncoder, FlatAttention, HANConfig, ReadBackwards, build_model, masked_softmax,
    packed_reversal, reversal,
)
from tests.conftest import with_bidirectional_names

VOCAB = 40


def doc(*sentences: list[int]) -> EncodedDoc:
    return EncodedDoc(
        np.array([i for s in sentences for i in s], dtype=np.int32),
        np.array([len(s) for s in sentences], dtype=np.int32),
    )


DOCS = [
    doc([2, 3, 4], [5, 6], [7, 8, 9, 10, 11, 12]),
    doc([13]),  # one word, one sentence
    doc([14, 15], [16, 17, 18]),
    doc([PAD]),  # how an empty document is encoded
    doc(*[[19 + i, 20 + i] for i in range(9)]),  # many short sentences
]


def small(architecture: str, doc_pooling: str = "encoded") -> HAN | FlatAttention:
    torch.manual_seed(0)
    return build_model(HANConfig(vocab_size=VOCAB, num_classes=3, embed_dim=16, word_hidden=8,
                                 sent_hidden=6, word_att_dim=12, sent_att_dim=12,
                                 architecture=architecture, doc_pooling=doc_pooling)).eval()


@pytest.fixture(params=[("han", "encoded"), ("flat", "encoded"), ("han", "sentences")],
                ids=["han", "flat", "han-pool-sentences"])
def model(request) -> HAN | FlatAttention:
    return small(*request.param)


def run(model: HAN, docs: list[EncodedDoc]):
    return model(**collate(docs))


def test_collate_pads_and_keeps_order():
    batch = collate([doc([2, 3], [4]), doc([5, 6, 7])])
    assert batch["tokens"].tolist() == [[[2, 3, 0], [4, 0, 0]], [[5, 6, 7], [0, 0, 0]]]
    assert batch["word_lengths"].tolist() == [[2, 1], [3, 0]]
    assert batch["sent_lengths"].tolist() == [2, 1]


def test_attention_is_zero_on_padding_and_sums_to_one(model):
    _, word_att, sent_att = run(model, DOCS)
    batch = collate(DOCS)
    W = word_att.shape[-1]
    word_mask = torch.arange(W) < batch["word_lengths"].unsqueeze(-1)  # (B, S, W)
    sent_mask = batch["word_lengths"] > 0
    assert torch.all(word_att[~word_mask] == 0)
    assert torch.all(sent_att[~sent_mask] == 0)
    # each real sentence's word attention and each document's sentence attention is a distribution
    torch.testing.assert_close(word_att.sum(-1)[sent_mask], torch.ones(int(sent_mask.sum())))
    torch.testing.assert_close(sent_att.sum(-1), torch.ones(len(DOCS)))
    assert torch.all(word_att[word_mask] > 0)


def test_document_output_is_the_same_alone_and_in_a_padded_batch(model):
    logits, word_att, sent_att = run(model, DOCS)
    for b, d in enumerate(DOCS):
        alone_logits, alone_word, alone_sent = run(model, [d])
        S, W = alone_word.shape[1:]
        torch.testing.assert_close(alone_logits[0], logits[b], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alone_sent[0], sent_att[b, :S], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alone_word[0], word_att[b, :S, :W], atol=1e-5, rtol=1e-5)


def torch_bigru(encoder: BiGRUEncoder) -> nn.GRU:
    """torch's own bidirectional GRU holding the encoder's two directions."""
    g = encoder.forward_gru
    bigru = nn.GRU(g.input_size, g.hidden_size, batch_first=True, bidirectional=True)
    old_names = with_bidirectional_names(encoder.state_dict())  # gru.weight_ih_l0, ..._reverse
    bigru.load_state_dict({name.removeprefix("gru."): value for name, value in old_names.items()})
    return bigru


def reference_forward(model: HAN, d: EncodedDoc) -> tuple[torch.Tensor, list, torch.Tensor]:
    """Yang et al.'s equations for one document, one sentence at a time, nothing padded: what the
    batched, packed forward must equal."""

    def attend(attention, h, values):  # h: (T, D) -> sum_t alpha_t values_t, alpha
        u = torch.tanh(h @ attention.proj.weight.T + attention.proj.bias)  # (T, A)
        alpha = torch.softmax(u @ attention.context, dim=0)  # (T,)
        return alpha @ values, alpha

    sentences = np.split(d.ids, np.cumsum(d.lengths)[:-1])
    sent_vecs, word_alphas = [], []
    for ids in sentences:
        x = model.embedding.weight[torch.from_numpy(ids.astype(np.int64))]  # (T, E)
        h, _ = torch_bigru(model.word_encoder)(x.unsqueeze(0))  # (1, T, 2Hw)
        s, alpha = attend(model.word_attention, h[0], h[0])
        sent_vecs.append(s)
        word_alphas.append(alpha)
    s = torch.stack(sent_vecs)  # (S, 2Hw)
    h, _ = torch_bigru(model.sent_encoder)(s.unsqueeze(0))  # (1, S, 2Hs)
    pooled = s if model.config.doc_pooling == "sentences" else h[0]
    v, sent_alpha = attend(model.sent_attention, h[0], pooled)
    return model.classifier(v), word_alphas, sent_alpha


@pytest.mark.parametrize("doc_pooling", ["encoded", "sentences"])
def test_batched_forward_equals_the_papers_equations_one_sentence_at_a_time(doc_pooling):
    model = small("han", doc_pooling)
    logits, word_att, sent_att = run(model, DOCS)
    for b, d in enumerate(DOCS):
        ref_logits, ref_word, ref_sent = reference_forward(model, d)
        torch.testing.assert_close(logits[b], ref_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sent_att[b, : len(d.lengths)], ref_sent, atol=1e-6, rtol=1e-5)
        for s, alpha in enumerate(ref_word):
            torch.testing.assert_close(word_att[b, s, : len(alpha)], alpha, atol=1e-6, rtol=1e-5)


def test_batch_of_one_single_word(model):
    logits, word_att, sent_att = run(model, [doc([7])])
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()
    assert word_att.tolist() == [[[1.0]]] and sent_att.tolist() == [[1.0]]


def test_no_hidden_state_leaks_between_sentences():
    """A sentence's word attention depends on its own words only (uvipen, EdGE carried the word
    GRU state from one sentence into the next)."""
    model = small("han")
    _, word_a, _ = run(model, [doc([2, 3, 4], [5, 6])])
    _, word_b, _ = run(model, [doc([2, 3, 4], [30, 31, 32, 33])])
    torch.testing.assert_close(word_a[0, 0, :3], word_b[0, 0, :3])
    assert not torch.allclose(word_a[0, 1, :2], word_b[0, 1, :2])


def test_flat_attention_is_one_distribution_over_the_whole_document():
    model = small("flat")
    _, word_att, sent_att = run(model, DOCS)
    flat = word_att * sent_att.unsqueeze(-1)  # the attention of each word among all words
    torch.testing.assert_close(flat.sum((1, 2)), torch.ones(len(DOCS)))
    # one GRU runs across sentence boundaries: the first sentence sees the second
    _, word_a, _ = run(model, [doc([2, 3, 4], [5, 6])])
    _, word_b, _ = run(model, [doc([2, 3, 4], [30, 31, 32, 33])])
    assert not torch.allclose(word_a[0, 0, :3], word_b[0, 0, :3])


def test_masked_softmax_is_nan_free_for_extreme_scores_and_empty_rows():
    scores = torch.tensor([[1e30, -1e30, 0.0], [5.0, 5.0, 5.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    alpha = masked_softmax(scores, mask)
    assert torch.isfinite(alpha).all()
    assert alpha.tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


@pytest.mark.parametrize("doc_pooling", ["encoded", "sentences"])
def test_pooling_sentence_vectors_makes_each_sentence_a_separate_term(doc_pooling):
    """With uniform sentence attention, doc_pooling="sentences" makes the logits the mean of
    per-sentence terms: swapping one sentence changes them by half of what it changes a
    one-sentence document. The paper's pooling over encoded states mixes sentences, so not."""
    model = small("han", doc_pooling)
    with torch.no_grad():
        model.sent_attention.context.zero_()  # all scores 0: alpha = 1/2 for two sentences
        both_a = run(model, [doc([2, 3, 4], [5, 6])])[0]
        both_b = run(model, [doc([2, 3, 4], [30, 31, 32])])[0]
        only_a = run(model, [doc([5, 6])])[0]
        only_b = run(model, [doc([30, 31, 32])])[0]
    additive = torch.allclose(both_a - both_b, (only_a - only_b) / 2, atol=1e-6)
    assert additive == (doc_pooling == "sentences")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_gives_finite_outputs_and_fp32_attention(model, dtype):
    with torch.autocast("cpu", dtype=dtype):
        logits, word_att, sent_att = run(model, DOCS)
    assert torch.isfinite(logits).all() and torch.isfinite(word_att).all()
    assert word_att.dtype == torch.float32 and sent_att.dtype == torch.float32
    torch.testing.assert_close(sent_att.sum(-1), torch.ones(len(DOCS)))
    fp32_logits, _, _ = run(model, DOCS)
    torch.testing.assert_close(logits.float(), fp32_logits, atol=0.05, rtol=0.05)


def test_every_parameter_is_initialised_and_gets_a_gradient(model):
    model.train()
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
    logits, _, _ = run(model, DOCS)
    logits.sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    assert model.embedding.weight.grad[PAD].abs().sum() == 0  # PAD stays a zero vector


@pytest.mark.parametrize("architecture", ["han", "flat"])
def test_tiny_model_overfits_a_tiny_set(architecture):
    """Labels decided by one word in one of several sentences: the model must fit all of them."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    docs, labels = [], []
    for i in range(24):
        label = i % 3
        sentences = [list(rng.integers(10, VOCAB, size=rng.integers(2, 6))) for _ in range(3)]
        sentences[int(rng.integers(0, 3))].insert(0, 2 + label)  # ids 2, 3, 4 decide the label
        docs.append(doc(*sentences))
        labels.append(label)
    model = build_model(HANConfig(vocab_size=VOCAB, num_classes=3, embed_dim=16, word_hidden=16,
                                  sent_hidden=16, word_att_dim=16, sent_att_dim=16, dropout=0.0,
                                  architecture=architecture))
    batch, y = collate(docs), torch.tensor(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(**batch)[0], y)
        loss.backward()
        optimizer.step()
    model.eval()
    assert (model(**batch)[0].argmax(-1) == y).float().mean().item() == 1.0


def test_precomputed_word_gates_give_the_same_outputs_in_eval_and_are_ignored_in_training(model):
    expected = run(model, DOCS)
    model.precompute_word_gates()
    for got, want in zip(run(model, DOCS), expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    # a training step must see the live weights, not a table computed before it
    model.train()
    torch.manual_seed(1)
    logits, _, _ = run(model, DOCS)
    logits.sum().backward()
    assert model.embedding.weight.grad is not None and model.embedding.weight.grad.abs().sum() > 0


def test_the_padded_gru_path_of_gpus_gives_the_packed_paths_outputs_and_gradients(model, monkeypatch):
    """On a GPU the GRUs run on the padded grid (model.packed_on); it must compute the same
    function, forwards and backwards, as the packed sequences of the CPU."""

    def outputs_and_gradients():
        model.zero_grad()
        outputs = run(model, DOCS)
        (outputs[0].square().sum() + outputs[1].sum() + outputs[2].sum()).backward()
        return [o.detach() for o in outputs], [p.grad.clone() for p in model.parameters()]

    packed = outputs_and_gradients()
    monkeypatch.setattr(hanclf.model, "packed_on", lambda device: False)
    padded = outputs_and_gradients()
    for got, want in zip(padded[0] + padded[1], packed[0] + packed[1]):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_the_padded_bigru_reads_each_row_from_its_own_ends():
    torch.manual_seed(0)
    encoder = BiGRUEncoder(5, 4)
    x = torch.randn(6, 9, 5)
    lengths = torch.tensor([9, 1, 4, 7, 2, 9])
    expected = encoder.packed(x, lengths)
    x[torch.arange(9) >= lengths.unsqueeze(1)] = 100.0  # what lies in the padding must not matter
    torch.testing.assert_close(encoder.padded(x, lengths), expected, atol=1e-6, rtol=1e-5)
    # a row alone: its backward state at word 0 has read every word, from the last one
    alone, _ = torch_bigru(encoder)(x[2:3, :4])
    torch.testing.assert_close(encoder.padded(x, lengths)[2, :4], alone[0], atol=1e-6, rtol=1e-5)


def test_training_on_a_gpu_groups_rows_by_length_and_computes_the_same(monkeypatch):
    """In training, the padded path runs large batches in groups of rows of similar length
    (BiGRUEncoder.grouped); outputs and gradients must be those of one call over all rows. Not
    in eval mode: predict's batches must not wait for the GPU."""
    torch.manual_seed(0)
    encoder = BiGRUEncoder(5, 4).train()
    x = torch.randn(10, 9, 5, requires_grad=True)
    lengths = torch.tensor([9, 1, 4, 7, 2, 9, 3, 3, 8, 5])
    weights = torch.randn(10, 9, 8)
    monkeypatch.setattr(hanclf.model, "packed_on", lambda device: False)
    calls = []
    grouped = BiGRUEncoder.grouped
    monkeypatch.setattr(BiGRUEncoder, "grouped", lambda self, *args: calls.append(args[2]) or grouped(self, *args))

    def outputs_and_gradients():
        out = encoder(x, lengths)
        return [out, *torch.autograd.grad((out * weights).sum(), [x, *encoder.parameters()])]

    one_call = outputs_and_gradients()
    assert calls == []  # 10 rows: below two groups of ROWS_PER_LENGTH_GROUP
    monkeypatch.setattr(hanclf.model, "ROWS_PER_LENGTH_GROUP", 3)
    in_groups = outputs_and_gradients()
    assert calls == [3]
    for got, want in zip(in_groups, one_call):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    encoder.eval()
    encoder(x, lengths)
    assert calls == [3]


def test_a_seed_gives_the_initial_weights_one_bidirectional_gru_had():
    """The encoder's two one-direction GRUs replaced one nn.GRU(bidirectional=True): a seed
    must still give the same initial weights, or every seeded result in the README moves."""
    torch.manual_seed(5)
    encoder = BiGRUEncoder(7, 3)
    torch.manual_seed(5)
    bigru = nn.GRU(7, 3, batch_first=True, bidirectional=True)
    for name, value in torch_bigru(encoder).state_dict().items():
        assert torch.equal(value, bigru.state_dict()[name]), name


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_reading_backwards_has_the_gradient_of_gather(packed):
    """ReadBackwards gathers its gradient instead of scattering it: right only because its
    indices reverse rows, which this checks against autograd's gradient of gather."""
    torch.manual_seed(0)
    lengths = torch.tensor([5, 2, 4])
    if packed:
        x = torch.randn(11, 3, dtype=torch.float64, requires_grad=True)  # 11 packed words
        words = pack_padded_sequence(torch.zeros(3, 5), lengths, batch_first=True, enforce_sorted=False)
        dim, index = 0, packed_reversal(words).unsqueeze(1).expand(11, 3)
    else:
        x = torch.randn(3, 5, 2, dtype=torch.float64, requires_grad=True)
        dim, index = 1, reversal(lengths, 5).unsqueeze(-1).expand(3, 5, 2)
    weights = torch.randn_like(x)
    ours, = torch.autograd.grad((ReadBackwards.apply(x, dim, index) * weights).sum(), x)
    theirs, = torch.autograd.grad((x.gather(dim, index) * weights).sum(), x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_packed_reversal_reads_each_row_backwards():
    lengths = torch.tensor([3, 1, 4, 2])
    ids = torch.tensor([[1, 2, 3, 0], [4, 0, 0, 0], [5, 6, 7, 8], [9, 10, 0, 0]])
    words = pack_padded_sequence(ids, lengths, batch_first=True, enforce_sorted=False)
    flip = packed_reversal(words)
    backwards, _ = pad_packed_sequence(words._replace(data=words.data[flip]), batch_first=True)
    assert backwards.tolist() == [[3, 2, 1, 0], [4, 0, 0, 0], [8, 7, 6, 5], [10, 9, 0, 0]]
    assert torch.equal(words.data[flip][flip], words.data)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu.sh runs it)")
@pytest.mark.parametrize("members", [1, 3])
def test_on_a_gpu_the_forward_pass_never_waits_for_the_gpu(members):
    """predict queues the next batches on the GPU while it builds the last ones' output: any
    synchronizing operation in the forward pass (a boolean mask, .item()) would stall that."""
    torch.manual_seed(0)
    model = build_model(HANConfig(vocab_size=VOCAB, num_classes=3, members=members)).cuda().eval()
    batch = {k: v.cuda() for k, v in collate(DOCS).items()}
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16):
            logits, _, _ = model(**batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(logits.float()).all()
