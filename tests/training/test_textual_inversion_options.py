"""Textual-inversion options: sd-scripts' flat flags, what a run refuses before any model loads, and the caption
templates that replace a dataset's captions (seeded per batch, so a resumed run sees the same ones)."""

from __future__ import annotations

import pytest

from library.config import ConfigError, parse_cli
from library.data.caption_templates import OBJECT_TEMPLATES, STYLE_TEMPLATES
from library.data.pipeline import build_training_data
from library.training.embedding_main import check_embedding_run


def _config(dataset, *flags: str):
    return parse_cli(["--pretrained_model_name_or_path", "model.safetensors", "--train_data_dir", str(dataset),
                      "--resolution", "64", "--train_batch_size", "4", *flags], program="train_textual_inversion.py")


def test_sd_scripts_flags_map_onto_the_section(concept_dataset):
    config = _config(concept_dataset, "--token_string", "frnc", "--init_word", "circle", "--num_vectors_per_token",
                     "3", "--use_style_template", "true")
    section = config.textual_inversion
    assert (section.token_string, section.init_word, section.num_vectors_per_token) == ("frnc", "circle", 3)
    assert section.use_style_template and not section.use_object_template
    check_embedding_run(config)


def test_refusals_name_the_key(concept_dataset):
    with pytest.raises(ConfigError, match="use_style_template: cannot be combined with use_object_template"):
        _config(concept_dataset, "--use_object_template", "true", "--use_style_template", "true")
    with pytest.raises(ConfigError) as refused:
        check_embedding_run(_config(concept_dataset, "--sample.compare_at_end", "true",
                                    "--sample_prompts", "prompts.txt", "--cache_text_encoder_outputs", "true",
                                    "--network_train_unet_only", "true", "--embedding_file", "separate"))
    messages = str(refused.value)
    assert "textual_inversion.embedding_file: is for pivotal tuning" in messages
    assert "textual_inversion.token_string: is required" in messages
    assert "textual_inversion.init_word: is required" in messages and "sample.compare_at_end" in messages
    assert "dataset.cache_text_encoder_outputs" in messages


@pytest.mark.parametrize(("flag", "templates"), [("--use_object_template", OBJECT_TEMPLATES),
                                                 ("--use_style_template", STYLE_TEMPLATES)])
def test_templates_replace_the_captions_reproducibly(concept_dataset, flag, templates):
    config = _config(concept_dataset, "--token_string", "frnc", flag, "true", "--validation_split", "0.25")
    data = build_training_data(config)
    expected = {template.format("frnc") for template in templates}
    batches = data.epoch_batches(0)[:3]
    captions = [caption for number, batch in enumerate(batches) for caption in data.load_batch(batch, 0, number).captions]
    assert set(captions) <= expected and len(set(captions)) > 1
    again = [caption for number, batch in enumerate(batches) for caption in data.load_batch(batch, 0, number).captions]
    assert again == captions
    assert {caption for batch in data.validation_batches() for caption in batch.captions} == {templates[0].format("frnc")}


def test_without_templates_the_dataset_captions_train(concept_dataset):
    data = build_training_data(_config(concept_dataset, "--token_string", "frnc"))
    batch = data.load_batch(data.epoch_batches(0)[0], 0, 0)
    assert all(caption.startswith("frnc, red circle") for caption in batch.captions)
