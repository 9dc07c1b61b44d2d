"""A model directory: save -> load is exact, and a damaged directory is a clear error."""

from __future__ import annotations

import json
import os
import socket
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from hanclf.artifact import REQUIRED, Artifact, load, load_checkpoint, save
from hanclf.config import load_config
from hanclf.data import EncodedDoc, collate
from hanclf.errors import HanclfError, HanclfWarning, UsageError
from hanclf.model import HAN
from hanclf.tokenize import TOKENIZER_VERSION
from hanclf.vocab import Labels, Vocab
from tests.conftest import with_bidirectional_names

SMALL = {"model.embed_dim": 8, "model.word_hidden": 4, "model.sent_hidden": 6,
         "model.word_att_dim": 5, "model.sent_att_dim": 7, "data.max_words": 9,
         "model.members": 1}  # one HAN (the preset trains an ensemble; test_ensemble.py)


def make_artifact() -> Artifact:
    torch.manual_seed(0)
    config = load_config("yelp", SMALL)
    vocab = Vocab(["the", "food", "was", "great", "awful"], lowercase=True)
    labels = Labels.build(["1", "2", "5"])
    model = HAN(config.han_config(len(vocab), len(labels))).eval()
    return Artifact(model, config, vocab, labels, {"valid_accuracy": 0.75, "epoch": 3})


def doc(*sentences: list[int]) -> EncodedDoc:
    return EncodedDoc(np.array([i for s in sentences for i in s], np.int32),
                      np.array([len(s) for s in sentences], np.int32))


def batch() -> dict[str, torch.Tensor]:
    return collate([doc([2, 3, 4, 5], [6]), doc([1, 1]), doc([0])])


@pytest.fixture
def saved(tmp_path):
    artifact = make_artifact()
    save(tmp_path / "model", artifact)
    return tmp_path / "model", artifact


def test_round_trip_is_exact(saved):
    directory, original = saved
    loaded = load(directory)
    a, b = original.model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert not loaded.model.training
    with torch.no_grad():
        logits_a, words_a, sents_a = original.model(**batch())
        logits_b, words_b, sents_b = loaded.model(**batch())
    assert logits_a.shape == (3, 3)
    assert torch.equal(logits_a, logits_b)
    assert torch.equal(words_a, words_b) and torch.equal(sents_a, sents_b)
    assert loaded.config == original.config
    assert loaded.config.data.label_column == "stars" and loaded.config.model["embed_dim"] == 8
    assert loaded.vocab.words == original.vocab.words and loaded.vocab.lowercase is True
    assert loaded.labels.names == ["1", "2", "5"] and loaded.labels.numeric
    assert loaded.metrics == {"valid_accuracy": 0.75, "epoch": 3}


def test_the_tokenizer_version_is_kept_and_another_one_warns(saved):
    directory, _ = saved
    vocab_file = directory / "vocab.json"
    kept = json.loads(vocab_file.read_text())
    assert kept["tokenizer"] == TOKENIZER_VERSION
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(directory).vocab.tokenizer == TOKENIZER_VERSION
    vocab_file.write_text(json.dumps({**kept, "tokenizer": TOKENIZER_VERSION + 1}))
    (directory / "metrics.json").write_text(json.dumps({"hanclf_version": "9.9.9"}))
    with pytest.warns(HanclfWarning) as caught:
        load(directory)
    assert str(caught[0].message) == (
        f"{directory}: trained with tokenizer rules v{TOKENIZER_VERSION + 1}, this hanclf "
        f"tokenizes with v{TOKENIZER_VERSION}: some words split differently than in training, "
        "which can cost accuracy; retrain the model, or predict with hanclf 9.9.9, which trained it")


def test_a_model_saved_before_tokenizer_versions_counts_as_version_1(saved):
    directory, _ = saved
    kept = json.loads((directory / "vocab.json").read_text())
    del kept["tokenizer"]
    (directory / "vocab.json").write_text(json.dumps(kept))
    assert load(directory).vocab.tokenizer == 1


def test_weights_are_a_real_safetensors_file(saved):
    directory, original = saved
    raw = (directory / "model.safetensors").read_bytes()
    (header_size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_size])
    header.pop("__metadata__", None)
    state = original.model.state_dict()
    assert set(header) == set(state)
    for name, info in header.items():
        assert info["dtype"] == "F32"
        assert tuple(info["shape"]) == tuple(state[name].shape)
    assert header["embedding.weight"]["shape"] == [7, 8]  # 5 words + PAD + UNK, embed_dim 8
    assert b"pickle" not in raw[:8 + header_size]


def test_weights_get_the_same_permissions_as_the_other_files(saved):
    directory, _ = saved
    modes = {path.name: path.stat().st_mode & 0o777 for path in directory.iterdir()}
    assert modes["model.safetensors"] == modes["config.yaml"] == 0o666 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_config_yaml_is_the_resolved_config(saved):
    directory, original = saved
    assert yaml.safe_load((directory / "config.yaml").read_text()) == original.config.to_dict()
    assert load_config(str(directory / "config.yaml")) == original.config  # usable as --config


def test_changed_shape_in_config_is_caught(saved):
    directory, _ = saved
    values = yaml.safe_load((directory / "config.yaml").read_text())
    values["model"]["embed_dim"] = 12
    (directory / "config.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(HanclfError) as err:
        load(directory)
    message = str(err.value)
    assert str(directory / "model.safetensors") in message
    assert "embedding.weight" in message and "(7, 8)" in message and "(7, 12)" in message


def test_vocab_or_labels_not_matching_weights(saved):
    directory, _ = saved
    vocab = json.loads((directory / "vocab.json").read_text())
    (directory / "vocab.json").write_text(json.dumps({**vocab, "words": vocab["words"][:-1]}))
    with pytest.raises(HanclfError, match=r"embedding\.weight' is \(7, 8\).*expect \(6, 8\)"):
        load(directory)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "labels.json").write_text(json.dumps({"labels": ["1", "2", "3", "5"]}))
    with pytest.raises(HanclfError, match=r"classifier\.(weight|bias)' is \(3"):
        load(directory)


@pytest.mark.parametrize("name", REQUIRED)
def test_missing_file_is_named(saved, name):
    directory, _ = saved
    (directory / name).unlink()
    with pytest.raises(UsageError) as err:
        load(directory)
    assert f"missing {name}" in str(err.value)


def test_metrics_json_is_optional(saved):
    directory, _ = saved
    (directory / "metrics.json").unlink()
    assert load(directory).metrics == {}


def test_not_a_directory(tmp_path, monkeypatch):
    with pytest.raises(UsageError) as error:
        load(tmp_path / "nope")
    assert str(error.value) == f"{tmp_path / 'nope'}: not a model directory (train one with `hanclf train`)"
    # Relative, as read by a Ray actor or Spark executor elsewhere: where it was looked for; the
    # advice to share the path is for those (on one machine, a typo is the likely cause).
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as error:
        load(Path("runs/yelp"))
    assert str(error.value) == (
        f"runs/yelp: not a model directory (train one with `hanclf train`); a relative path, read "
        f"from {tmp_path} on host {socket.gethostname()} (Ray, Spark: give a path that every machine reads)")


def test_garbage_weights(saved):
    directory, _ = saved
    (directory / "model.safetensors").write_bytes(b"\x00garbage, not safetensors" * 10)
    with pytest.raises(HanclfError) as err:
        load(directory)
    assert str(directory / "model.safetensors") in str(err.value)


def test_a_model_saved_with_one_bidirectional_gru_an_encoder_loads_as_before(saved):
    """Until 361c5a0 each encoder held one nn.GRU(bidirectional=True): its model.safetensors
    names the directions gru.weight_ih_l0 and gru.weight_ih_l0_reverse."""
    directory, original = saved
    old_names = with_bidirectional_names(original.model.state_dict())
    assert "word_encoder.gru.weight_hh_l0_reverse" in old_names
    save_file(old_names, directory / "model.safetensors")
    with torch.no_grad():
        assert torch.equal(load(directory).model(**batch())[0], original.model(**batch())[0])


def test_a_best_epochs_checkpoint_written_with_one_bidirectional_gru_loads(tmp_path):
    """train's last step reloads the best epoch's checkpoint (load_checkpoint); one left by a run
    of hanclf before 951bbbb, resumed after an upgrade, names the GRUs' directions the old way."""
    model = make_artifact().model
    old_names = with_bidirectional_names({"model." + k: v for k, v in model.state_dict().items()})
    assert "model.word_encoder.gru.weight_hh_l0_reverse" in old_names
    torch.save({"state_dict": old_names, "epoch": 3}, tmp_path / "best.ckpt")
    state, epoch = load_checkpoint(tmp_path / "best.ckpt")
    assert epoch == 3 and state.keys() == model.state_dict().keys()


def test_wrong_tensor_names(saved):
    directory, original = saved
    state = dict(original.model.state_dict())
    state["extra"] = torch.zeros(2)
    del state["classifier.bias"]
    save_file(state, directory / "model.safetensors")
    with pytest.raises(HanclfError) as err:
        load(directory)
    assert "classifier.bias" in str(err.value) and "extra" in str(err.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused(saved, value):
    # A NaN bias loaded silently: every probability NaN, every prediction the first label.
    directory, original = saved
    state = {k: v.clone() for k, v in original.model.state_dict().items()}
    state["classifier.bias"][1] = value
    save_file(state, directory / "model.safetensors")
    with pytest.raises(HanclfError) as err:
        load(directory)
    assert str(err.value) == (f"{directory / 'model.safetensors'}: tensor 'classifier.bias' holds "
                              "NaN or infinite values; retrain the model or restore the file")


@pytest.mark.parametrize(
    "name, content",
    [
        ("config.yaml", "model: [1"),
        ("config.yaml", "model:\n  dropout: 5\n"),
        ("config.yaml", "- a list\n"),
        ("vocab.json", "{"),
        ("vocab.json", "[]"),
        ("labels.json", "{}"),
        ("metrics.json", "not json"),
    ],
)
def test_damaged_text_file_is_named(saved, name, content):
    directory, _ = saved
    (directory / name).write_text(content)
    with pytest.raises(HanclfError) as err:
        load(directory)
    assert str(directory / name) in str(err.value)

