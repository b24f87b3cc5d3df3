"""Textual inversion on tiny models: only the new rows train (bitwise), the file is what diffusers loads and
encodes prompts with exactly as we do, SDXL writes both encoders' vectors, and a resumed run is exact."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from trainer_cli import base_args, read_events, run_cli

from library.config import parse_cli
from library.models.loader import load_base_model
from library.models.text_encoding import encode_captions
from library.models.token_embeddings import input_embeddings
from library.networks import verify_hashes
from library.networks.embedding_file import load_embedding
from library.training.embedding_weights import EmbeddingWeights
from library.training.state import ADAPTER_FILE
from library.training.trainer import Trainer

pytestmark = pytest.mark.slow  # these tests start trainers

PROMPT = "a frnc circle on a white background"


def _args(model, dataset, output, **overrides) -> list[str]:
    settings = {"output_name": "emb", "token_string": "frnc", "init_word": "circle", "learning_rate": 5e-2,
                "optimizer_args": "weight_decay=0.1", "max_train_steps": 6}
    settings.update(overrides)
    args = base_args(model, dataset, output, **settings)
    for lora_only in ("--network_dim", "--network_alpha"):
        index = args.index(lora_only)
        del args[index : index + 2]
    return args


def _train_in_process(args: list[str]) -> Trainer:
    trainer = Trainer(parse_cli(args, program="train_textual_inversion.py"), EmbeddingWeights)
    trainer.setup()
    trainer.run()
    return trainer


@pytest.fixture(scope="module")
def sd1_run(tiny_model_factory, concept_dataset, tmp_path_factory):
    """Two vectors, weight decay on (which would shrink every row the restore did not put back), a file every
    3 steps."""
    tiny = tiny_model_factory("sd1")
    output = tmp_path_factory.mktemp("ti-sd1")
    trainer = _train_in_process(_args(tiny.folder, concept_dataset, output, num_vectors_per_token=2,
                                      save_every_n_steps=3))
    return tiny, output, trainer


def test_only_the_new_rows_change(sd1_run):
    tiny, _, trainer = sd1_run
    base = load_base_model(tiny.folder)
    trained_encoder, base_encoder = trainer.model.text_encoders[0], base.text_encoders[0]
    table = input_embeddings(trained_encoder).weight.detach()
    base_table = input_embeddings(base_encoder).weight
    rows = base_table.shape[0]
    assert table.shape[0] == rows + 2
    assert torch.equal(table[:rows], base_table), "a row of the base vocabulary changed"
    start = base_table[trainer.model.tokenizers[0]("circle", add_special_tokens=False).input_ids[0]]
    assert not torch.equal(table[rows], start), "the new row did not train"
    trained = dict(trained_encoder.named_parameters())
    for name, parameter in base_encoder.named_parameters():
        if parameter is not base_table:
            assert torch.equal(trained[name], parameter), name
    unet = dict(trainer.model.unet.named_parameters())
    assert all(torch.equal(unet[name], parameter) for name, parameter in base.unet.named_parameters())


def test_files_keys_metadata_and_step_files(sd1_run):
    tiny, output, trainer = sd1_run
    assert sorted(path.name for path in output.glob("*.safetensors")) == ["emb-step00000003.safetensors",
                                                                           "emb.safetensors"]
    final = output / "emb.safetensors"
    tensors = load_file(final)
    width = trainer.model.text_encoders[0].config.hidden_size
    assert list(tensors) == ["emb_params"] and tensors["emb_params"].shape == (2, width)
    with safe_open(str(final), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_token_string"] == "frnc" and metadata["ss_init_word"] == "circle"
    assert metadata["ss_num_vectors_per_token"] == "2" and metadata["ss_steps"] == "6"
    assert metadata["ss_base_model_version"] == "sd_v1"
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1/textual-inversion"
    assert verify_hashes(final)
    events = read_events(output)
    assert [event["step"] for event in events if event["event"] == "checkpoint"] == [3, 6]


def _diffusers_hidden_states(pipe, prompt: str, tokenizer, encoder) -> torch.Tensor:
    text = pipe.maybe_convert_prompt(prompt, tokenizer)
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids, output_hidden_states=True)


def test_diffusers_loads_the_file_and_encodes_the_prompt_as_we_do(sd1_run):
    from diffusers import StableDiffusionPipeline

    tiny, output, trainer = sd1_run
    pipe = StableDiffusionPipeline.from_pretrained(tiny.folder, safety_checker=None, local_files_only=True)
    pipe.load_textual_inversion(str(output / "emb.safetensors"), token="frnc")
    theirs = _diffusers_hidden_states(pipe, PROMPT, pipe.tokenizer, pipe.text_encoder).last_hidden_state
    ours = load_base_model(tiny.folder)
    load_embedding(ours.family, ours.tokenizers, ours.text_encoders, output / "emb.safetensors", "frnc")
    with torch.no_grad():
        mine = encode_captions(ours.family, ours.tokenizers, ours.text_encoders, [PROMPT]).hidden_states
        live = encode_captions(trainer.model.family, trainer.model.tokenizers, trainer.model.text_encoders,
                               [PROMPT]).hidden_states
    assert torch.equal(mine, live), "the saved file does not hold the trained vectors"
    torch.testing.assert_close(theirs, mine, rtol=0, atol=1e-6)
    base = load_base_model(tiny.folder)
    with torch.no_grad():
        untouched = encode_captions(base.family, base.tokenizers, base.text_encoders, [PROMPT]).hidden_states
    assert not torch.allclose(untouched, mine), "the token changed nothing"


def test_sdxl_writes_clip_l_and_clip_g_that_diffusers_loads(tiny_model_factory, concept_dataset, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    tiny = tiny_model_factory("sdxl")
    trainer = _train_in_process(_args(tiny.folder, concept_dataset, tmp_path, max_train_steps=2))
    file = tmp_path / "emb.safetensors"
    tensors = load_file(file)
    widths = [encoder.config.hidden_size for encoder in trainer.model.text_encoders]
    assert {key: list(value.shape) for key, value in tensors.items()} == {"clip_l": [1, widths[0]],
                                                                          "clip_g": [1, widths[1]]}
    base = load_base_model(tiny.folder)
    for trained, original in zip(trainer.model.text_encoders, base.text_encoders):
        base_table = input_embeddings(original).weight
        assert torch.equal(input_embeddings(trained).weight[: base_table.shape[0]], base_table)

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny.folder, local_files_only=True)
    pipe.load_textual_inversion(tensors["clip_l"], token="frnc", text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(tensors["clip_g"], token="frnc", text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    with torch.no_grad():
        ours = encode_captions(trainer.model.family, trainer.model.tokenizers, trainer.model.text_encoders,
                               [PROMPT])
    first = _diffusers_hidden_states(pipe, PROMPT, pipe.tokenizer, pipe.text_encoder).hidden_states[-2]
    second = _diffusers_hidden_states(pipe, PROMPT, pipe.tokenizer_2, pipe.text_encoder_2).hidden_states[-2]
    torch.testing.assert_close(torch.cat([first, second], dim=-1), ours.hidden_states, rtol=0, atol=1e-5)


def test_extended_run_resumes_exactly(sd1_run, concept_dataset, tmp_path):
    """Three steps with the state saved, then resumed to six: the same vectors, bit for bit, as six in one go."""
    tiny, reference, _ = sd1_run
    settings = {"num_vectors_per_token": 2, "save_every_n_steps": 3}
    run_cli("train_textual_inversion.py", [*_args(tiny.folder, concept_dataset, tmp_path, max_train_steps=3,
                                                  **settings), "--save_state_on_train_end", "true"])
    assert list(load_file(tmp_path / "state" / ADAPTER_FILE)) == ["emb_params"]
    run_cli("train_textual_inversion.py", [*_args(tiny.folder, concept_dataset, tmp_path, **settings),
                                           "--resume", "latest"])
    starts = [event for event in read_events(tmp_path) if event["event"] == "start"]
    assert starts[-1]["resumed"] is True and starts[-1]["step"] == 3
    assert torch.equal(load_file(reference / "emb.safetensors")["emb_params"],
                       load_file(tmp_path / "emb.safetensors")["emb_params"])
