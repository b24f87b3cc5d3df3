"""Pivotal tuning on tiny models: train_network.py with a token_string trains the LoRA and the token's rows together
(every other row bitwise the base's), bundles the embedding in each LoRA file under A1111's keys and, as asked, writes
it beside each as a textual-inversion file diffusers loads (the same vectors; SDXL's for both encoders), inspect
reports it, old files are pruned with their embeddings, and a resumed run is exact."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from token_rows import added_token_rows
from trainer_cli import base_args, read_events, run_cli

from library.config import parse_cli
from library.models.loader import load_base_model
from library.models.token_embeddings import input_embeddings
from library.networks import verify_hashes
from library.networks.bundled_embeddings import is_bundled, split_bundled
from library.networks.embedding_file import read_embedding_file
from library.sampling.compare_grid import render_grid
from library.sampling.prompts import SamplePrompt
from library.tools.__main__ import main
from library.training.compare_at_end import live_adapters
from library.training.pivotal_weights import EMBEDDING_STATE_FILE, PivotalWeights
from library.training.trainer import Trainer

pytestmark = pytest.mark.slow  # these tests start trainers

BUNDLED = "bundle_emb.frnc.string_to_param.*"


def _args(model, dataset, output, **overrides) -> list[str]:
    settings = {"token_string": "frnc", "init_word": "circle", "num_vectors_per_token": 2, "embedding_lr": 5e-2,
                "optimizer_args": "weight_decay=0.1", "max_train_steps": 6, "save_every_n_steps": 3}
    settings.update(overrides)
    return base_args(model, dataset, output, **settings)


@pytest.fixture(scope="module")
def sd1_run(tiny_model_factory, concept_dataset, tmp_path_factory):
    """Six steps, weight decay on (which would shrink every row the restore did not put back), a file every 3, the
    embedding both bundled and beside each file."""
    tiny = tiny_model_factory("sd1")
    output = tmp_path_factory.mktemp("pivotal-sd1")
    args = _args(tiny.folder, concept_dataset, output, embedding_file="both")
    trainer = Trainer(parse_cli(args, program="train_network.py"), PivotalWeights)
    trainer.setup()
    trainer.run()
    return tiny, output, trainer


def test_rows_train_beside_the_lora_and_no_other_row_changes(sd1_run):
    tiny, _, trainer = sd1_run
    groups = {group["name"]: group["lr"] for group in trainer.optimizer.param_groups}
    assert groups["embedding"] == 5e-2 and groups["text_encoder"] != 5e-2
    base = load_base_model(tiny.folder)
    table = input_embeddings(trainer.model.text_encoders[0]).weight.detach()
    base_table = input_embeddings(base.text_encoders[0]).weight
    rows = base_table.shape[0]
    assert table.shape[0] == rows + 2
    assert torch.equal(table[:rows], base_table), "a row of the base vocabulary changed"
    start = base_table[trainer.model.tokenizers[0]("circle", add_special_tokens=False).input_ids[0]]
    assert not torch.equal(table[rows], start), "the new row did not train"


def test_each_lora_file_has_the_embedding_bundled_and_beside_it_and_diffusers_loads_it(sd1_run):
    from diffusers import StableDiffusionPipeline

    tiny, output, trainer = sd1_run
    assert sorted(path.name for path in output.glob("*.safetensors")) == [
        "lora-step00000003.safetensors", "lora-step00000003_emb.safetensors", "lora.safetensors", "lora_emb.safetensors"]
    step, final = load_file(output / "lora-step00000003.safetensors"), load_file(output / "lora.safetensors")
    assert not torch.equal(step[BUNDLED], final[BUNDLED])  # each file holds the embedding as it was then
    assert torch.equal(load_file(output / "lora-step00000003_emb.safetensors")["emb_params"], step[BUNDLED])
    assert verify_hashes(output / "lora.safetensors") and verify_hashes(output / "lora_emb.safetensors")
    adapter, embeddings = split_bundled(final)
    assert set(final) - set(adapter) == {BUNDLED}
    assert any(key.startswith("lora_te_") for key in adapter) and any(key.startswith("lora_unet_") for key in adapter)
    ids = trainer.model.tokenizers[0].convert_tokens_to_ids(["frnc", "frnc_1"])
    live = input_embeddings(trainer.model.text_encoders[0]).weight.detach()[ids]
    assert torch.equal(embeddings["frnc"]["emb_params"], live)
    separate = read_embedding_file(output / "lora_emb.safetensors")
    assert separate.metadata["ss_token_string"] == "frnc" and separate.metadata["ss_steps"] == "6"
    pipe = StableDiffusionPipeline.from_pretrained(tiny.folder, safety_checker=None, local_files_only=True)
    pipe.load_textual_inversion(str(output / "lora_emb.safetensors"), token="frnc")
    loaded = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids(["frnc", "frnc_1"])]
    assert torch.equal(loaded.detach(), embeddings["frnc"]["emb_params"])


def test_bf16_mixed_precision_trains_the_new_rows_alone(tiny_model_factory, concept_dataset, tmp_path,
                                                         fresh_accelerate_state):
    """Under bf16 autocast the frozen base is stored in bf16 and the embedding table in fp32: the new rows train,
    every other row is the base's bf16 value exactly, and the file holds the live rows."""
    tiny = tiny_model_factory("sd1")
    config = parse_cli(_args(tiny.folder, concept_dataset, tmp_path, mixed_precision="bf16", max_train_steps=2),
                       program="train_network.py")
    trainer = Trainer(config, PivotalWeights)
    trainer.setup()
    trainer.run()
    encoder = trainer.model.text_encoders[0]
    weight = input_embeddings(encoder).weight
    frozen = {param.dtype for name, param in encoder.named_parameters() if "lora_" not in name and param is not weight}
    table = weight.detach()
    assert table.dtype == torch.float32 and frozen == {torch.bfloat16}
    base = input_embeddings(load_base_model(tiny.folder, dtype=torch.bfloat16).text_encoders[0]).weight
    rows = base.shape[0]
    assert torch.equal(table[:rows], base.float()), "a row of the base vocabulary changed"
    ids = trainer.model.tokenizers[0].convert_tokens_to_ids(["frnc", "frnc_1"])
    start = base[trainer.model.tokenizers[0]("circle", add_special_tokens=False).input_ids[0]].float()
    assert torch.isfinite(table[ids]).all() and not torch.equal(table[ids[0]], start), "the new row did not train"
    assert torch.equal(load_file(tmp_path / "lora.safetensors")[BUNDLED], table[ids])


def test_inspect_reports_the_bundled_embedding(sd1_run, capsys):
    _, output, trainer = sd1_run
    capsys.readouterr()
    assert main(["inspect", str(output / "lora.safetensors"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    width = trainer.model.text_encoders[0].config.hidden_size
    assert report["type"] == "lora" and report["bundled_embeddings"] == {"frnc": {"emb_params": [2, width]}}


def test_compare_at_end_renders_each_file_with_the_rows_it_was_saved_with(sd1_run, tmp_path):
    """The run's compare grid applies each saved file as the run does (live adapters) with that file's embedding:
    the step-3 file prompts the token with its step-3 rows, not the final live ones, which are back afterwards."""
    _, output, trainer = sd1_run
    ids = trainer.model.tokenizers[0].convert_tokens_to_ids(["frnc", "frnc_1"])

    def live_rows() -> torch.Tensor:
        return input_embeddings(trainer.model.text_encoders[0]).weight.detach()[ids].clone()

    final = live_rows()
    files = [output / "lora-step00000003.safetensors", output / "lora.safetensors"]
    prompt = SamplePrompt(prompt="a frnc disc", width=64, height=64, steps=2, seed=1)
    with added_token_rows() as looked_up:
        render_grid(trainer.model, files, [1.0], [prompt], tmp_path,
                    apply=live_adapters(trainer.weights.network, trainer.model))
    step3 = load_file(files[0])[BUNDLED]
    assert not torch.equal(step3, final)
    assert len(looked_up) == 2 and torch.equal(looked_up[0], step3) and torch.equal(looked_up[1], final)
    assert torch.equal(live_rows(), final)


def test_extended_run_resumes_exactly(sd1_run, concept_dataset, tmp_path):
    """Three steps with the state saved, then resumed to six through the CLI: the same LoRA and embedding, bit for
    bit, as six in one go."""
    tiny, reference, _ = sd1_run
    run_cli("train_network.py", [*_args(tiny.folder, concept_dataset, tmp_path, max_train_steps=3),
                                 "--save_state_on_train_end", "true"])
    assert list(load_file(tmp_path / "state" / EMBEDDING_STATE_FILE)) == ["emb_params"]
    run_cli("train_network.py", [*_args(tiny.folder, concept_dataset, tmp_path), "--resume", "latest"])
    starts = [event for event in read_events(tmp_path) if event["event"] == "start"]
    assert starts[-1]["resumed"] is True and starts[-1]["step"] == 3
    expected, resumed = load_file(reference / "lora.safetensors"), load_file(tmp_path / "lora.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)


def test_sdxl_separate_embedding_holds_both_encoders_and_is_pruned_with_its_lora(tiny_model_factory, concept_dataset,
                                                                                 tmp_path):
    from diffusers import StableDiffusionXLPipeline

    tiny = tiny_model_factory("sdxl")
    run_cli("train_network.py", _args(tiny.folder, concept_dataset, tmp_path, num_vectors_per_token=1,
                                      embedding_file="separate", max_train_steps=3, save_every_n_steps=1,
                                      save_last_n_steps=1))
    names = sorted(path.name for path in tmp_path.glob("*.safetensors"))
    assert names == ["lora-step00000002.safetensors", "lora-step00000002_emb.safetensors", "lora.safetensors",
                     "lora_emb.safetensors"]  # step 1's LoRA file pruned with its embedding
    assert not any(is_bundled(key) for key in load_file(tmp_path / "lora.safetensors"))
    vectors = load_file(tmp_path / "lora_emb.safetensors")
    assert sorted(vectors) == ["clip_g", "clip_l"]
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny.folder, local_files_only=True)
    pipe.load_textual_inversion(vectors["clip_l"], token="frnc", text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(vectors["clip_g"], token="frnc", text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    for tokenizer, encoder, key in ((pipe.tokenizer, pipe.text_encoder, "clip_l"),
                                    (pipe.tokenizer_2, pipe.text_encoder_2, "clip_g")):
        row = encoder.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(["frnc"])]
        assert torch.equal(row.detach(), vectors[key])
