"""Config: dataclass defaults == configs/default.yaml, presets, overrides, validation."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import yaml

from hanclf.config import (
    config_from_dict,
    default_config,
    load_config,
    parse_override,
    preset_names,
)
from hanclf.errors import UsageError


def test_default_yaml_equals_dataclass_defaults():
    text = (resources.files("hanclf.configs") / "default.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(text) == default_config().to_dict()
    assert load_config("default").to_dict() == default_config().to_dict()


def test_presets_are_listed_and_all_load():
    names = preset_names()
    assert {"default", "yelp", "imdb", "amazon"} <= set(names)
    assert names == sorted(names)
    for name in names:
        raw = yaml.safe_load((resources.files("hanclf.configs") / f"{name}.yaml").read_text("utf-8"))
        resolved = load_config(name).to_dict()
        # every value the preset sets ends up in the resolved config
        for section, values in raw.items():
            for key, value in values.items():
                assert resolved[section][key] == value, f"{name}: {section}.{key}"


def test_preset_overrides_defaults_and_keeps_the_rest():
    cfg = load_config("yelp")
    assert cfg.data.label_column == "stars"
    assert cfg.data.max_sentences == 25 and cfg.data.max_words == 40
    assert cfg.train.max_epochs == 4
    assert cfg.model["members"] == 3
    # not in the preset: defaults
    assert cfg.data.text_column == "text"
    assert cfg.train.lr == 2e-3
    assert cfg.model == {**default_config().model, "members": 3, "word_hidden": 100, "sent_hidden": 100}
    assert load_config("amazon").model["dropout"] == 0.3


def test_precedence_defaults_then_preset_then_overrides():
    cfg = load_config("yelp", {"data.max_words": 7, "model.dropout": 0.5})
    assert cfg.data.max_words == 7  # override beats preset (40) and default (50)
    assert cfg.model["dropout"] == 0.5  # override beats default
    assert cfg.data.max_sentences == 25  # preset beats default
    assert cfg.data.min_count == 3
    assert load_config(None, {"train.seed": 1}).train.seed == 1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("model.word_hidden=64", ("model.word_hidden", 64)),
        ("model.dropout=0.3", ("model.dropout", 0.3)),
        ("train.lr=0.001", ("train.lr", 0.001)),
        ("data.lowercase=false", ("data.lowercase", False)),
        ("data.lowercase=true", ("data.lowercase", True)),
        ("data.id_column=null", ("data.id_column", None)),
        ("data.id_column=", ("data.id_column", None)),
        ("data.text_column=review", ("data.text_column", "review")),
        (" train.precision = bf16-mixed", ("train.precision", "bf16-mixed")),
        ("data.text_column=a=b", ("data.text_column", "a=b")),
    ],
)
def test_parse_override(text, expected):
    key, value = parse_override(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


def test_scientific_floats_in_overrides_and_files(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as a string: a config file's `lr: 1e-3` was refused.
    assert load_config(None, dict([parse_override("train.lr=1e-3")])).train.lr == 0.001
    (tmp_path / "c.yaml").write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-2\nmodel:\n  dropout: 1e-1\n")
    config = load_config(str(tmp_path / "c.yaml"))
    assert (config.train.lr, config.train.weight_decay, config.model["dropout"]) == (0.001, 0.05, 0.1)
    assert load_config(None, dict([parse_override("data.text_column=1e5")])).data.text_column == "1e5"
    for bad in ("nan", "inf", "-Infinity"):  # a NaN passed every range check, and crashed AdamW
        (tmp_path / "c.yaml").write_text(f"train:\n  lr: {bad}\n")
        with pytest.raises(UsageError, match="config key train.lr: must be a finite number"):
            load_config(str(tmp_path / "c.yaml"))


@pytest.mark.parametrize("bad", ["model.dropout", "=3", ""])
def test_parse_override_needs_key_and_equals(bad):
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_override(bad)


def test_int_for_float_key_is_float():
    cfg = load_config(None, {"train.lr": 1, "model.dropout": 0})
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float
    assert type(cfg.model["dropout"]) is float


def test_union_typed_keys():
    assert load_config(None, {"train.devices": 2}).train.devices == 2
    assert load_config(None, {"train.devices": "auto"}).train.devices == "auto"
    assert load_config(None, {"data.id_column": "id"}).data.id_column == "id"
    assert load_config(None, {"data.text_column": ["title", "text"]}).data.text_column == ["title", "text"]
    assert load_config(None, {"data.text_column": ["body"]}).data.text_column == "body"  # one is one


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("model.embed_dim", "big", "expected int"),
        ("model.embed_dim", 1.5, "expected int"),
        ("model.embed_dim", True, "expected int"),  # bool is not an int here
        ("data.lowercase", 1, "expected bool"),
        ("data.text_column", 3, "expected str or a list of strings"),
        ("data.text_column", [], "expected str or a list of strings"),
        ("data.text_column", ["title", 3], "expected str or a list of strings"),
        ("data.id_column", 3, "expected str or null"),
        ("train.lr", "fast", "expected float"),
        ("data.max_words", -1, "must be > 0"),
        ("data.max_sentences", 0, "must be > 0"),
        ("train.batch_size", -8, "must be > 0"),
        ("train.lr", 0, "must be > 0"),
        ("model.dropout", 1.0, "[0, 1)"),
        ("model.dropout", 1.5, "[0, 1)"),
        ("model.dropout", -0.1, "[0, 1)"),
        ("data.valid_fraction", 0, "(0, 1)"),
        ("train.weight_decay", -1, ">= 0"),
        ("train.accelerator", "gpuu", "is not one of"),
        ("train.precision", "fp16", "is not one of"),
        # Settings Lightning knows that the model does not run with: they crashed in fit().
        ("train.precision", "64", "is not one of"),
        ("train.precision", "16-true", "is not one of"),
        ("train.precision", "bf16-true", "is not one of"),
        ("train.accelerator", "tpu", "is not one of"),
    ],
)
def test_bad_values_name_the_key(key, value, words):
    with pytest.raises(UsageError) as err:
        load_config(None, {key: value})
    assert key in str(err.value)
    assert words in str(err.value)


def test_numeric_precision_is_accepted():
    for text in ("train.precision=16", "train.precision=32"):
        key, value = parse_override(text)
        assert str(load_config(None, {key: value}).train.precision) == text.split("=")[1]


def test_negative_seed_is_rejected():
    with pytest.raises(UsageError, match="train.seed"):
        load_config(None, {"train.seed": -1})


@pytest.mark.parametrize(
    "key", ["optim.lr", "model.hidden", "data.max_word", "train", "data.vocab_size"]
)
def test_unknown_keys_name_the_key(key):
    with pytest.raises(UsageError, match=re.escape(f"unknown config key '{key}'")):
        load_config(None, {key: 1})


@pytest.mark.parametrize("key, hint", [
    ("dropout", "did you mean model.dropout?"),
    ("optim.lr", "did you mean train.lr?"),
    ("model.lr", "did you mean train.lr?"),
    ("foo.bar", "SECTION one of data, model, train, e.g. data.max_words"),
])
def test_a_key_without_its_section_gets_the_section_named(key, hint):
    with pytest.raises(UsageError) as err:
        load_config(None, {key: 1})
    assert str(err.value).endswith(hint + ")")


def test_model_fields_from_data_are_not_settable():
    for key in ("model.vocab_size", "model.num_classes"):
        with pytest.raises(UsageError, match=key):
            load_config(None, {key: 10})


def test_unknown_section_in_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: 0.1\n")
    with pytest.raises(UsageError, match="unknown section 'optim'") as err:
        load_config(str(path))
    assert str(path) in str(err.value)


def test_bad_value_in_file_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  dropout: 2\n")
    with pytest.raises(UsageError, match="model.dropout"):
        load_config(str(path))


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(UsageError, match="unknown config preset 'nope'.*yelp"):
        load_config("nope")
    with pytest.raises(UsageError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_a_preset_name_is_the_preset_whatever_the_current_folder_holds(tmp_path, monkeypatch):
    # Data kept in ./yelp/ made `--config yelp` "yelp: config file not found".
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yelp").mkdir()
    (tmp_path / "imdb").write_text("model:\n  dropout: 0.9\n")
    assert load_config("yelp").model["members"] == 3
    assert load_config("imdb").model["dropout"] != 0.9  # the preset's, not the file's
    assert load_config("./imdb").model["dropout"] == 0.9  # a path to the file: the file
    with pytest.raises(UsageError, match="data: a folder, not a config file; give a .yaml file or a preset"):
        (tmp_path / "data").mkdir() or load_config("data")


def test_yaml_file_as_source(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("data:\n  label_column: y\nmodel:\n  word_hidden: 16\ntrain:\n  lr: 0.01\n")
    cfg = load_config(str(path), {"train.lr": 0.5})
    assert cfg.data.label_column == "y"
    assert cfg.model["word_hidden"] == 16
    assert cfg.train.lr == 0.5
    assert cfg.data.max_words == 50


def test_empty_section_in_file_is_accepted(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  # dropout: 0.3\ntrain:\n  batch_size: 8\n")
    assert load_config(str(path)).train.batch_size == 8


def test_to_dict_round_trip(tmp_path):
    cfg = load_config("imdb", {"model.word_hidden": 12, "train.devices": 1, "data.id_column": "id"})
    assert config_from_dict(cfg.to_dict()) == cfg
    # and through a saved YAML file, as a model directory's config.yaml is used again
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    assert load_config(str(path)) == cfg


def test_config_from_dict_ignores_data_decided_model_fields():
    values = default_config().to_dict()
    values["model"].update(vocab_size=123, num_classes=4)
    assert config_from_dict(values) == default_config()


def test_han_config_uses_model_section():
    han = load_config(None, {"model.embed_dim": 8}).han_config(vocab_size=30, num_classes=5)
    assert (han.vocab_size, han.num_classes, han.embed_dim) == (30, 5, 8)
