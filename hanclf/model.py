"""The Hierarchical Attention Network of Yang et al. (NAACL 2016), the flat attention
baseline it is measured against (one BiGRU + attention over all the words of a document), and
an ensemble of M of either.

Shapes in the comments:
    B  documents in the batch        S  sentence slots per document (padded)
    W  word slots per sentence       N  real sentences in the batch (N <= B*S)
    E  embedding size                Hw, Hs  GRU hidden size per direction
    C  classes                       M  members of an ensemble
    R, T  rows and steps of one GRU call (sentences and words, or documents and sentences)
    Nw real words of a packed batch  V  vocabulary size   H  a GRU's hidden size (Hw or Hs)
    D  size of the vectors an attention scores or pools (the document vector: 2Hs, or 2Hw
       with doc_pooling=sentences)

A batch holds `tokens` (B, S, W) of word ids, `word_lengths` (B, S) and `sent_lengths` (B,).
Real sentences come first in each document (sentence s is real iff s < sent_lengths[b]) and
every real sentence has at least one word; the collate function guarantees both.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

PAD = 0  # word id of padding; its embedding row is held at zero
UNK = 1  # word id of out-of-vocabulary words


ARCHITECTURES = ("han", "flat")
DOC_POOLINGS = ("encoded", "sentences")


@dataclass
class HANConfig:
    vocab_size: int
    num_classes: int
    architecture: str = "han"  # or "flat": the baseline that shows what the hierarchy buys
    embed_dim: int = 200  # paper: 200
    word_hidden: int = 50  # per direction; paper: 50
    sent_hidden: int = 50  # per direction; paper: 50
    word_att_dim: int = 100  # size of u_it and u_w; paper: 100
    sent_att_dim: int = 100  # size of u_i and u_s; paper: 100
    dropout: float = 0.2  # on embeddings, sentence vectors and the document vector
    # What sentence attention mixes into the document vector: "encoded" is the paper's
    # v = sum_i alpha_i h_i; "sentences" is v = sum_i alpha_i s_i, the sentence vectors before
    # the sentence GRU (which still reads the context to score them), so that a sentence's
    # share of v is exactly its attention (more faithful explanations; see the README).
    doc_pooling: str = "encoded"
    # Independently initialised copies trained side by side on the same batches; predictions
    # average their probabilities (a deep ensemble: less variance, M times the compute).
    members: int = 1


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim, restricted to `mask`; padding gets exactly 0.

    Computed in fp32 even under autocast: bf16 exponentials of long rows lose the small
    weights. Filling with the most negative finite float (not -inf) keeps a row that is all
    padding NaN-free; the final multiply zeroes it.
    """
    scores = scores.float().masked_fill(~mask, torch.finfo(torch.float32).min)
    return torch.softmax(scores, dim=-1) * mask


def log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """log of probabilities(logits, multi_label=False), fp32, computed in log space: where a
    float32 softmax underflows to 0 (a class a logit gap of ~100 below the top one), its log
    stays finite, and what a temperature makes of it stays right. An ensemble's logits
    (M, B, C) give the log of the mean of its members' probabilities (B, C)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    if log_probs.dim() == 3:
        log_probs = torch.logsumexp(log_probs, dim=0) - math.log(log_probs.shape[0])
    return log_probs


def probabilities(logits: torch.Tensor, multi_label: bool, temperature: float = 1.0) -> torch.Tensor:
    """Softmax over the classes, or for multi-label an independent sigmoid per label; fp32.
    An ensemble's logits (M, B, C) give the mean of its members' probabilities (B, C).

    `temperature` T (single-label), fitted on valid by train, makes the probabilities say how
    often the model is right: softmax(log(p) / T), i.e. softmax(logits / T) for one model.
    T > 1 flattens them, T < 1 sharpens them; their order, and so the label chosen, stays."""
    logits = logits.float()
    if temperature != 1.0 and not multi_label:
        return torch.softmax(log_probabilities(logits) / temperature, dim=-1)
    probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
    return probs.mean(0) if logits.dim() == 3 else probs


def packed_on(device: torch.device) -> bool:
    """Whether the GRUs run on packed sequences on `device`. On the CPU packing skips the
    padding's arithmetic; on a GPU that arithmetic is nearly free and packing is not (cuDNN ran a
    word GRU 5.5-8x slower packed than padded on an H100 and an H200,
    bench/results/throughput-gpu.md)."""
    return device.type == "cpu"


def reversal(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(R, T) indices that read each of R rows backwards within its length: slot t takes the
    row's step lengths-1-t, and the padding slots take each other's places. Applying it twice
    gives the rows back."""
    steps = torch.arange(T, device=lengths.device)
    return (lengths.unsqueeze(1) - 1 - steps) % T


def packed_reversal(words: PackedSequence) -> torch.Tensor:
    """(Nw,) indices that read each row of a packed sequence backwards (as `reversal`).
    Packed data holds step t of its batch_sizes[t] longest rows at offset sum_{<t}."""
    sizes = words.batch_sizes  # (T,) on the CPU
    starts = torch.cumsum(sizes, 0) - sizes  # (T,)
    step = torch.repeat_interleave(torch.arange(len(sizes)), sizes)  # (Nw,)
    row = torch.arange(len(step)) - starts[step]  # (Nw,) rank of the row by length
    row_lengths = (sizes.unsqueeze(0) > torch.arange(int(sizes[0])).unsqueeze(1)).sum(1)  # (R,)
    return (starts[row_lengths[row] - 1 - step] + row).to(words.data.device)


# In training on a GPU, a GRU call over at least 2 x ROWS_PER_LENGTH_GROUP rows runs in groups
# of rows of similar length (BiGRUEncoder.grouped): in practice the word level of batches of
# ~500 documents and more. Measured by bench/gpu_layouts.py on an H200.
ROWS_PER_LENGTH_GROUP = 3_200
MAX_LENGTH_GROUPS = 4


class ReadBackwards(torch.autograd.Function):
    """x.gather(dim, index) for an index of `reversal` or `packed_reversal`. Gathering twice
    gives x back, so the gradient is gathered the same way; autograd's own gradient of gather
    (a scatter-add into zeros) made training on the CPU ~5% slower."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
        ctx.dim = dim
        ctx.save_for_backward(index)
        return x.gather(dim, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (index,) = ctx.saved_tensors
        return grad.gather(ctx.dim, index), None, None


class BiGRUEncoder(nn.Module):
    """A bidirectional GRU in which padding never enters the recurrence before a real step: one
    GRU reads each row from its first word, the other from its last.

    Two one-direction GRUs rather than nn.GRU(bidirectional=True), so that the backward one can
    read rows reversed within their lengths: with padding, a bidirectional GRU would have to
    read the rows and a reversed copy of them, twice the arithmetic (a training step took 1.2x,
    inference 1.5x the time at 2,048 IMDb reviews on an H200; bench/gpu_layouts.py). Created in
    this order, they draw the same initial weights from a seed as one bidirectional GRU does."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.forward_gru = nn.GRU(in_dim, hidden, batch_first=True)
        self.backward_gru = nn.GRU(in_dim, hidden, batch_first=True)
        # (2, V, 3H) or None: see precompute_input_gates. A plain tensor, never saved.
        self.input_gates: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x: (R, T, in_dim), lengths: (R,) all >= 1  ->  (R, T, 2*hidden), zeros past each length
        if packed_on(x.device):
            return self.packed(x, lengths)
        groups = min(MAX_LENGTH_GROUPS, len(x) // ROWS_PER_LENGTH_GROUP) if self.training else 1
        return self.grouped(x, lengths, groups) if groups > 1 else self.padded(x, lengths)

    def packed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """forward's result on packed sequences: the recurrence runs on the real steps only."""
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out = self.both_directions(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.size(1))[0]

    def both_directions(self, words: PackedSequence) -> PackedSequence:
        # packed data (Nw, in_dim)  ->  packed data (Nw, 2H): forward and backward states
        flip = packed_reversal(words).unsqueeze(1)  # (Nw, 1)
        forward, _ = self.forward_gru(words)
        backward, _ = self.backward_gru(
            words._replace(data=ReadBackwards.apply(words.data, 0, flip.expand_as(words.data))))
        backward = ReadBackwards.apply(backward.data, 0, flip.expand_as(backward.data))
        return words._replace(data=torch.cat([forward.data, backward], dim=-1))

    def padded(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """forward's result without packing: the forward GRU reads x as it is (words first, its
        states over the padding after them are dropped), the backward one each row reversed
        within its length (words first again)."""
        R, T, _ = x.shape
        flip = reversal(lengths, T).unsqueeze(-1)  # (R, T, 1)
        forward, _ = self.forward_gru(x)  # (R, T, H)
        backward, _ = self.backward_gru(ReadBackwards.apply(x, 1, flip.expand_as(x)))  # (R, T, H)
        backward = ReadBackwards.apply(backward, 1, flip.expand_as(backward))  # in reading order
        is_word = torch.arange(T, device=x.device) < lengths.unsqueeze(1)  # (R, T)
        return torch.cat([forward, backward], dim=-1) * is_word.unsqueeze(-1)

    def grouped(self, x: torch.Tensor, lengths: torch.Tensor, groups: int) -> torch.Tensor:
        """padded's result from the rows sorted by length in `groups` groups of equal rows, each
        cut to its own longest row: the GRUs run over less padding (a training step took 0.74x
        the time at 2,048 IMDb reviews, a word level of 26,000 sentences, on an H200; slower
        below ~3,000 rows a group). Reading the groups' lengths waits for the GPU once, which
        predict's queued batches must not: training only."""
        R, T, _ = x.shape
        order = lengths.argsort(descending=True)  # (R,)
        bounds = [R * g // groups for g in range(groups + 1)]
        longest = lengths[order[bounds[:-1]]].tolist()  # each group's first row is its longest
        parts = [
            nn.functional.pad(self.padded(x[order[a:b], :t], lengths[order[a:b]]), (0, 0, 0, T - t))
            for a, b, t in zip(bounds, bounds[1:], longest)
        ]  # (b - a, T, 2H) each
        return torch.cat(parts)[order.argsort()]  # rows back in their order

    @torch.no_grad()
    def precompute_input_gates(self, embedding: nn.Embedding) -> None:
        """For inference on the CPU: the GRU's input term W_i e_w + b_i depends on the word w
        alone, so it is computed once per vocabulary entry here instead of once per occurrence
        (most of the model's arithmetic). Used by encode_ids while the module is in eval mode."""
        self.input_gates = torch.stack([  # (2, V, 3H): forward and backward direction
            embedding.weight @ g.weight_ih_l0.T + g.bias_ih_l0
            for g in (self.forward_gru, self.backward_gru)
        ])

    def encode_ids(
        self, words: PackedSequence, embedding: nn.Embedding, dropout: nn.Dropout
    ) -> PackedSequence:
        # words: packed word ids, data (Nw,)  ->  packed GRU outputs, data (Nw, 2H)
        if self.input_gates is None or self.training:
            return self.both_directions(words._replace(data=dropout(embedding(words.data))))
        return words._replace(data=self._recur(words))

    def _recur(self, words: PackedSequence) -> torch.Tensor:
        """nn.GRU's recurrence with the input terms looked up in input_gates; same numbers.
        Packed data holds time step t of its batch_sizes[t] longest rows at offset sum_{<t}."""
        H = self.forward_gru.hidden_size
        sizes = words.batch_sizes.tolist()
        starts = [0, *itertools.accumulate(sizes)]
        out = words.data.new_empty((len(words.data), 2, H), dtype=self.input_gates.dtype)
        for d, g, steps in (
            (0, self.forward_gru, range(len(sizes))),
            (1, self.backward_gru, reversed(range(len(sizes)))),
        ):
            w_h, b_h = g.weight_hh_l0, g.bias_hh_l0
            i_all = self.input_gates[d].index_select(0, words.data)  # (Nw, 3H)  W_i x + b_i
            # The backward direction meets each row at its last word, with a zero state.
            h = out.new_zeros(sizes[0], H)
            for t in steps:
                n, i_rzn = sizes[t], i_all[starts[t] : starts[t + 1]]  # (n, 3H)
                h_rzn = torch.addmm(b_h, h[:n], w_h.T)  # (n, 3H)  W_h h_{t-1} + b_h
                rz = torch.sigmoid(i_rzn[:, : 2 * H] + h_rzn[:, : 2 * H])
                r, z = rz[:, :H], rz[:, H:]
                cand = torch.tanh(i_rzn[:, 2 * H :] + r * h_rzn[:, 2 * H :])
                # (1 - z) * cand + z * h_{t-1}: PyTorch's convention; the paper's eq. 1 names
                # the gate the other way round (z for 1 - z), the same GRU.
                h[:n] = cand + z * (h[:n] - cand)
                out[starts[t] : starts[t + 1], d] = h[:n]
        return out.view(len(words.data), 2 * H)


def renamed_bidirectional_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with the GRU weights of models saved while BiGRUEncoder held one bidirectional
    nn.GRU (hanclf 0.1.0 to 361c5a0: `...encoder.gru.weight_ih_l0`, `..._l0_reverse`) under
    today's names; the same numbers, so those models load and predict as before."""
    old = re.compile(r"(^|\.)gru\.(\w+_l0)(_reverse)?$")
    return {old.sub(lambda m: f"{m[1]}{'backward' if m[3] else 'forward'}_gru.{m[2]}", key): value
            for key, value in state.items()}


class Attention(nn.Module):
    """Additive attention with a learned context vector (paper eqs. 5-7 and 8-10)."""

    def __init__(self, in_dim: int, att_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, att_dim)  # W and b
        self.context = nn.Parameter(torch.empty(att_dim))  # u_w or u_s
        # The first scores u . u_w (att_dim terms, each |u_i| <= 1) then have a variance below
        # one whatever att_dim: attention starts near uniform.
        nn.init.normal_(self.context, std=att_dim**-0.5)

    def score(self, h: torch.Tensor) -> torch.Tensor:
        # h: (..., D) -> (...)   u . u_w, with u = tanh(W h + b)
        return torch.tanh(self.proj(h)) @ self.context

    def forward(
        self, h: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # h: (..., T, D) scored, mask: (..., T), values: (..., T, D') pooled (default: h)
        return pool(self.score(h), mask, h if values is None else values)


def pool(
    scores: torch.Tensor, mask: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    # scores: (..., T), mask: (..., T), values: (..., T, D)  ->  (..., D), alpha (..., T)
    alpha = masked_softmax(scores, mask)  # softmax(u . u_w)
    # Multiply and sum, not a batched matmul: a matmul's rounding changed with the other
    # documents in the batch, and a document's output must not (predict --devices N == 1).
    pooled = (alpha.unsqueeze(-1) * values.float()).sum(dim=-2)  # sum_t alpha_t v_t
    return pooled, alpha


def attend_words(
    ids: torch.Tensor,
    lengths: torch.Tensor,
    embedding: nn.Embedding,
    dropout: nn.Dropout,
    encoder: BiGRUEncoder,
    attention: Attention,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed, encode and attend over the words of R rows of ids.

    On the CPU the rows are packed (the layout the GRU runs on) before anything else, so no
    padding slot is embedded, run through the attention's projection or scored: in batches of
    IMDb reviews most slots of the (R, T) grid are padding, and this made CPU inference 1.6x
    faster. Elsewhere the padded grid goes through (see packed_on); padding gets no attention.
    ids: (R, T), lengths: (R,) all >= 1  ->  pooled (R, 2H), alpha (R, T)
    """
    T = ids.size(1)
    is_word = torch.arange(T, device=ids.device) < lengths.unsqueeze(1)  # (R, T)
    if not packed_on(ids.device):
        return attention(encoder(dropout(embedding(ids)), lengths), is_word)  # h: (R, T, 2H)
    words = pack_padded_sequence(ids, lengths.cpu(), batch_first=True, enforce_sorted=False)
    h = encoder.encode_ids(words, embedding, dropout)  # data: (Nw, 2H)  Nw real words
    scores = h._replace(data=attention.score(h.data))  # data: (Nw,)
    h_padded, _ = pad_packed_sequence(h, batch_first=True, total_length=T)  # (R, T, 2H)
    scores_padded, _ = pad_packed_sequence(scores, batch_first=True, total_length=T)  # (R, T)
    return pool(scores_padded, is_word, h_padded)


class HAN(nn.Module):
    """Word encoder + word attention -> sentence vectors; sentence encoder + attention -> doc."""

    def __init__(self, config: HANConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=PAD)
        self.word_encoder = BiGRUEncoder(c.embed_dim, c.word_hidden)
        self.word_attention = Attention(2 * c.word_hidden, c.word_att_dim)
        self.sent_encoder = BiGRUEncoder(2 * c.word_hidden, c.sent_hidden)
        self.sent_attention = Attention(2 * c.sent_hidden, c.sent_att_dim)
        self.dropout = nn.Dropout(c.dropout)
        doc_dim = 2 * (c.word_hidden if c.doc_pooling == "sentences" else c.sent_hidden)
        self.classifier = nn.Linear(doc_dim, c.num_classes)

    def precompute_word_gates(self) -> None:
        """Faster inference on the CPU (BiGRUEncoder.precompute_input_gates); same outputs."""
        self.word_encoder.precompute_input_gates(self.embedding)

    def forward(
        self, tokens: torch.Tensor, word_lengths: torch.Tensor, sent_lengths: torch.Tensor,
        sentence_slots: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns logits (B, C), word attention (B, S, W) and sentence attention (B, S).

        sentence_slots (N,): b * S + s for each of the N real sentences (collate's). Selecting
        them with a boolean mask instead would make the host wait for the GPU at every batch."""
        B, S, W = tokens.shape
        is_sentence = word_lengths > 0  # (B, S)

        # Word level: the N real sentences of the whole batch go through the GRU at once.
        sent_vecs, word_alpha = attend_words(  # (N, 2Hw), (N, W)
            tokens.view(B * S, W)[sentence_slots], word_lengths.view(B * S)[sentence_slots],
            self.embedding, self.dropout, self.word_encoder, self.word_attention,
        )

        # Back to documents: scatter the N sentence vectors into their (B, S) slots.
        doc_sents = sent_vecs.new_zeros(B * S, sent_vecs.size(-1))
        doc_sents[sentence_slots] = sent_vecs
        doc_sents = doc_sents.view(B, S, -1)  # (B, S, 2Hw)
        h_sents = self.sent_encoder(self.dropout(doc_sents), sent_lengths)  # (B, S, 2Hs)
        pooled = doc_sents if self.config.doc_pooling == "sentences" else h_sents
        doc_vecs, sent_alpha = self.sent_attention(h_sents, is_sentence, pooled)  # (B, D), (B, S)

        logits = self.classifier(self.dropout(doc_vecs))  # (B, C)
        word_att = word_alpha.new_zeros(B * S, W)
        word_att[sentence_slots] = word_alpha
        return logits, word_att.view(B, S, W), sent_alpha


class FlatAttention(nn.Module):
    """The baseline without the hierarchy: the document's words in one sequence, one BiGRU, one
    attention (Yang et al.'s word level applied to the whole document).

    It answers in HAN's shapes so that predict and explain work unchanged: a sentence's
    attention is the share of the word attention that falls in it, and its words' attention is
    renormalised within it (so sent_att * word_att is the flat attention of the word).
    """

    def __init__(self, config: HANConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=PAD)
        self.encoder = BiGRUEncoder(c.embed_dim, c.word_hidden)
        self.attention = Attention(2 * c.word_hidden, c.word_att_dim)
        self.dropout = nn.Dropout(c.dropout)
        self.classifier = nn.Linear(2 * c.word_hidden, c.num_classes)

    def precompute_word_gates(self) -> None:
        self.encoder.precompute_input_gates(self.embedding)

    def forward(
        self, tokens: torch.Tensor, word_lengths: torch.Tensor, sent_lengths: torch.Tensor,
        sentence_slots: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """HAN.forward's inputs and outputs; the flat model reads words, not sentence slots."""
        B, S, W = tokens.shape
        is_word = torch.arange(W, device=tokens.device) < word_lengths.unsqueeze(-1)  # (B, S, W)
        doc_lengths = word_lengths.sum(1)  # (B,)
        T = int(doc_lengths.max())
        in_doc = torch.arange(T, device=tokens.device) < doc_lengths.unsqueeze(1)  # (B, T)
        # Row-major order keeps each document's words in reading order.
        doc_tokens = tokens.new_full((B, T), PAD)
        doc_tokens[in_doc] = tokens[is_word]  # (B, T)

        doc_vecs, alpha = attend_words(  # (B, 2Hw), (B, T)
            doc_tokens, doc_lengths, self.embedding, self.dropout, self.encoder, self.attention
        )
        logits = self.classifier(self.dropout(doc_vecs))  # (B, C)

        flat_att = alpha.new_zeros(B, S, W)
        flat_att[is_word] = alpha[in_doc]
        sent_att = flat_att.sum(-1)  # (B, S)
        word_att = flat_att / sent_att.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(-1)
        return logits, word_att, sent_att


class Ensemble(nn.Module):
    """M independently initialised models of one architecture, run on the same batch.

    Logits stay per member, (M, B, C): the loss trains each member on its own, as if it were
    trained alone, and `probabilities` averages their probabilities. The attention returned is
    the members' mean, the explanation of the averaged prediction.
    """

    def __init__(self, config: HANConfig) -> None:
        super().__init__()
        self.config = config
        one = dataclasses.replace(config, members=1)
        self.members = nn.ModuleList(build_model(one) for _ in range(config.members))

    def precompute_word_gates(self) -> None:
        for member in self.members:
            member.precompute_word_gates()

    def forward(
        self, tokens: torch.Tensor, word_lengths: torch.Tensor, sent_lengths: torch.Tensor,
        sentence_slots: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns logits (M, B, C), word attention (B, S, W) and sentence attention (B, S)."""
        inputs = tokens, word_lengths, sent_lengths, sentence_slots
        logits, word_att, sent_att = zip(*(m(*inputs) for m in self.members))
        return torch.stack(logits), torch.stack(word_att).mean(0), torch.stack(sent_att).mean(0)


def build_model(config: HANConfig) -> HAN | FlatAttention | Ensemble:
    if config.members > 1:
        return Ensemble(config)
    return {"han": HAN, "flat": FlatAttention}[config.architecture](config)


def members(model: HAN | FlatAttention | Ensemble) -> list[HAN | FlatAttention]:
    """The single models inside `model` (itself, unless it is an ensemble)."""
    return list(model.members) if isinstance(model, Ensemble) else [model]
