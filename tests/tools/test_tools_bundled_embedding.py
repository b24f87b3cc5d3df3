"""LoRA files with a bundled textual-inversion embedding (pivotal tuning): the keys A1111 reads, our readers and
``inspect`` take them, the embedding taken out of the file is one diffusers loads, ``resize`` and ``merge-loras``
carry it into what they write (or refuse two different embeddings of one token), and ``convert --layout`` keeps it
bundled (kohya) or beside the file (diffusers); a companion without our metadata is named by its file's stem."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from token_rows import added_token_rows
from tool_helpers import make_lora_file

from library.models.families import get_family
from library.models.tiny import build_components, tiny_configs
from library.networks import LoraOptions, inject_lora, read_lora_file, verify_hashes, write_lora_file
from library.networks.bundled_embeddings import bundle_tensors, split_bundled
from library.networks.embedding_file import write_embedding_file
from library.tools.__main__ import main


def _bundled_lora(tmp_path, family: str, vectors: dict[str, torch.Tensor]):
    """A tiny ``family`` LoRA file, and the same file with ``vectors`` bundled as the embedding of 'frnc'."""
    plain = make_lora_file(family, tmp_path / "plain.safetensors")
    return plain, _bundle(plain, tmp_path / "bundled.safetensors", "frnc", vectors)


def _bundle(plain, bundled, token: str, vectors: dict[str, torch.Tensor]):
    """``bundled``: the LoRA file ``plain`` with ``vectors`` bundled as the embedding of ``token``."""
    with safe_open(str(plain), framework="pt") as handle:
        metadata = {key: value for key, value in handle.metadata().items() if not key.startswith("sshs_")}
    write_lora_file(bundled, {**load_file(str(plain)), **bundle_tensors(token, vectors)}, metadata)
    return bundled


def _vectors(seed: int, count: int = 2) -> dict[str, torch.Tensor]:
    return {"emb_params": torch.randn(count, 32, generator=torch.Generator().manual_seed(seed))}


def test_sd1_keys_are_a1111s_and_diffusers_loads_the_extracted_embedding(tiny_sd1, tmp_path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1.folder, safety_checker=None, local_files_only=True)
    vectors = torch.randn(2, pipe.text_encoder.config.hidden_size, generator=torch.Generator().manual_seed(3))
    plain, bundled = _bundled_lora(tmp_path, "sd1", {"emb_params": vectors})
    tensors = load_file(str(bundled))
    assert set(tensors) - set(load_file(str(plain))) == {"bundle_emb.frnc.string_to_param.*"}
    adapter, embeddings = split_bundled(tensors)
    assert set(adapter) == set(load_file(str(plain))) and list(embeddings) == ["frnc"]
    extracted = tmp_path / "frnc.safetensors"
    save_file(embeddings["frnc"], str(extracted))
    pipe.load_textual_inversion(str(extracted), token="frnc")
    ids = pipe.tokenizer.convert_tokens_to_ids(["frnc", "frnc_1"])
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids].detach(), vectors)


def test_sdxl_keys_name_both_encoders(tmp_path):
    vectors = {"clip_l": torch.randn(1, 768), "clip_g": torch.randn(1, 1280)}
    keys = bundle_tensors("frnc", vectors)
    assert set(keys) == {"bundle_emb.frnc.clip_l", "bundle_emb.frnc.clip_g"}
    _, embeddings = split_bundled(keys)
    assert embeddings == {"frnc": vectors}


def test_readers_set_the_embedding_aside_and_inspect_reports_it(tmp_path, capsys):
    plain, bundled = _bundled_lora(tmp_path, "sd1", {"emb_params": torch.randn(3, 32)})
    adapter = load_file(str(plain))
    read_lora_file(bundled)  # checked as a kohya LoRA: the bundled keys are not taken for broken modules
    family = get_family("sd1")
    components = build_components(family, tiny_configs(family), seed=0)
    network = inject_lora(family, components.unet, components.text_encoders, LoraOptions(dim=4, alpha=2.0))
    network.load_file(bundled)  # strict: every adapter module found, the embedding not taken for one
    loaded = network.state_dict_kohya()
    assert loaded.keys() == adapter.keys() and all(torch.equal(loaded[key], adapter[key]) for key in adapter)
    capsys.readouterr()  # drop what building the network logged
    assert main(["inspect", str(bundled), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["type"] == "lora" and report["hashes"]["verified"] is True
    assert report["bundled_embeddings"] == {"frnc": {"emb_params": [3, 32]}}
    assert main(["inspect", str(plain), "--json"]) == 0
    assert report["module_count"] == json.loads(capsys.readouterr().out)["module_count"]
    assert main(["inspect", str(bundled)]) == 0
    assert "bundled embedding: frnc, emb_params 3 x 32" in capsys.readouterr().out


def test_resize_keeps_the_bundled_embedding_unchanged(tmp_path, capsys):
    vectors = _vectors(5)
    _, bundled = _bundled_lora(tmp_path, "sd1", vectors)
    out = tmp_path / "resized.safetensors"
    assert main(["resize", str(bundled), "--rank", "2", "--save-precision", "fp16", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("bundled embedding(s) kept: frnc")
    written = load_file(str(out))
    assert written["bundle_emb.frnc.string_to_param.*"].dtype == torch.float32  # not cast to the adapter's fp16
    _, kept = split_bundled(written)
    assert list(kept) == ["frnc"] and torch.equal(kept["frnc"]["emb_params"], vectors["emb_params"])
    adapter, _ = split_bundled(written)
    assert {tensor.shape[0] for key, tensor in adapter.items() if key.endswith("lora_down.weight")} == {2}
    assert verify_hashes(out)


def test_merge_loras_keeps_each_token_once_and_refuses_two_different_embeddings(tmp_path, capsys):
    first, second = _vectors(5), _vectors(6, count=1)
    plain, with_frnc = _bundled_lora(tmp_path, "sd1", first)
    with_other = _bundle(plain, tmp_path / "other.safetensors", "qwrt", second)
    frnc_again = _bundle(plain, tmp_path / "again.safetensors", "frnc", _vectors(5))
    out = tmp_path / "merged.safetensors"
    argv = ["merge-loras", str(with_frnc), str(with_other), str(frnc_again), str(plain), "--ratios", "0.5", "1", "1",
            "-1", "--save-precision", "float", "--out", str(out)]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().endswith("bundled embedding(s) kept: frnc, qwrt")
    _, kept = split_bundled(load_file(str(out)))
    assert sorted(kept) == ["frnc", "qwrt"]  # the same 'frnc' in two files is kept once, whatever the ratios
    assert torch.equal(kept["frnc"]["emb_params"], first["emb_params"])
    assert torch.equal(kept["qwrt"]["emb_params"], second["emb_params"])
    assert verify_hashes(out)

    different = _bundle(plain, tmp_path / "different.safetensors", "frnc", _vectors(7))
    clash = tmp_path / "clash.safetensors"
    capsys.readouterr()  # what writing the inputs logged
    assert main(["merge-loras", str(with_frnc), str(different), "--out", str(clash)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "'frnc'" in error and str(with_frnc) in error and str(different) in error
    assert not clash.exists()


def test_convert_layout_keeps_the_embedding_bundled_or_beside_the_diffusers_file(tiny_sd1, tmp_path, capsys):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1.folder, safety_checker=None, local_files_only=True)
    vectors = {"emb_params": torch.randn(2, pipe.text_encoder.config.hidden_size,
                                         generator=torch.Generator().manual_seed(4))}
    _, bundled = _bundled_lora(tmp_path, "sd1", vectors)
    as_diffusers = tmp_path / "peft.safetensors"
    assert main(["convert", str(bundled), "--layout", "diffusers", "--out", str(as_diffusers)]) == 0
    companion = tmp_path / "peft_emb.safetensors"
    said = capsys.readouterr().out
    assert f"'frnc' written beside it as {companion}" in said
    assert not any(key.startswith("bundle_emb.") for key in load_file(str(as_diffusers)))
    with safe_open(str(companion), framework="pt") as handle:
        assert handle.metadata()["ss_token_string"] == "frnc"
    pipe.load_textual_inversion(str(companion), token="frnc")
    ids = pipe.tokenizer.convert_tokens_to_ids(["frnc", "frnc_1"])
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids].detach(), vectors["emb_params"])

    back = tmp_path / "back.safetensors"  # the companion beside a diffusers file is bundled again
    assert main(["convert", str(as_diffusers), "--layout", "kohya", "--out", str(back)]) == 0
    assert capsys.readouterr().out.strip().endswith("bundled embedding(s) kept: frnc")
    adapter, kept = split_bundled(load_file(str(back)))
    original, _ = split_bundled(load_file(str(bundled)))
    assert adapter.keys() == original.keys() and torch.equal(kept["frnc"]["emb_params"], vectors["emb_params"])
    assert not (tmp_path / "back_emb.safetensors").exists() and verify_hashes(back)


def test_convert_to_diffusers_refuses_two_embeddings_for_one_companion(tmp_path, capsys):
    plain, with_frnc = _bundled_lora(tmp_path, "sd1", _vectors(5))
    both = _bundle(with_frnc, tmp_path / "both.safetensors", "qwrt", _vectors(6))
    out = tmp_path / "peft.safetensors"
    assert main(["convert", str(both), "--layout", "diffusers", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "frnc, qwrt" in error and "--layout kohya" in error
    assert not out.exists() and not (tmp_path / "peft_emb.safetensors").exists()


def test_compare_renders_each_pivotal_file_with_its_own_embedding(tiny_sd1, tmp_path, capsys):
    width = 64  # the tiny SD1 text encoder's
    first, second = ({"emb_params": torch.randn(2, width, generator=torch.Generator().manual_seed(seed))}
                     for seed in (8, 9))
    plain, with_first = _bundled_lora(tmp_path, "sd1", first)
    with_second = tmp_path / "second.safetensors"  # the other way a run saves it: beside the file
    with_second.write_bytes(plain.read_bytes())
    write_embedding_file(tmp_path / "second_emb.safetensors", second, {"ss_token_string": "frnc"})
    argv = ["compare", str(tiny_sd1.folder), str(with_first), str(with_second), "--strengths", "0", "1",
            "--prompt", "a frnc disc --d 1", "--width", "64", "--height", "64", "--steps", "2", "--out",
            str(tmp_path / "grid")]
    with added_token_rows() as looked_up:
        assert main(argv) == 0
    assert "2 LoRA(s) x 2 strength(s) x 1 prompt(s)" in capsys.readouterr().out
    expected = [first, first, second, second]  # the embedding is the file's at every strength
    assert len(looked_up) == len(expected)
    for rows, vectors in zip(looked_up, expected):
        assert torch.equal(rows, vectors["emb_params"])


def test_merge_into_says_the_embedding_is_not_in_the_checkpoint_and_where_it_is(tiny_sd1, tmp_path, capsys):
    plain, bundled = _bundled_lora(tmp_path, "sd1", _vectors(5))
    beside = tmp_path / "beside.safetensors"
    beside.write_bytes(plain.read_bytes())
    write_embedding_file(tmp_path / "beside_emb.safetensors", _vectors(6), {"ss_token_string": "qwrt"})
    out = tmp_path / "merged.safetensors"
    capsys.readouterr()
    assert main(["merge-into", str(tiny_sd1.single_file), str(bundled), str(beside), "--ratios", "0.5", "0.5",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out.strip().splitlines()
    assert said[-1].startswith("not in the merged checkpoint, which cannot hold a new token")
    assert f"'frnc' in {bundled}" in said[-1] and f"'qwrt' in {tmp_path / 'beside_emb.safetensors'}" in said[-1]
    assert load_file(str(out)).keys() == load_file(str(tiny_sd1.single_file)).keys()  # no row for a new token
    capsys.readouterr()
    assert main(["merge-into", str(tiny_sd1.single_file), str(plain), "--out", str(tmp_path / "plain.safetensors")]) == 0
    assert "not in the merged checkpoint" not in capsys.readouterr().out


def test_a_companion_without_metadata_is_named_by_its_stem_as_a1111_and_comfyui_do(tmp_path, capsys):
    plain = make_lora_file("sd1", tmp_path / "plain.safetensors")
    beside = tmp_path / "beside.safetensors"
    beside.write_bytes(plain.read_bytes())
    vectors = _vectors(6)
    companion = tmp_path / "beside_emb.safetensors"
    save_file(vectors, str(companion))  # another program's embedding: no metadata at all
    out = tmp_path / "bundled.safetensors"
    capsys.readouterr()
    assert main(["convert", str(beside), "--layout", "kohya", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("bundled embedding(s) kept: beside_emb")
    _, kept = split_bundled(load_file(str(out)))
    assert list(kept) == ["beside_emb"] and torch.equal(kept["beside_emb"]["emb_params"], vectors["emb_params"])
    assert main(["inspect", str(companion), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["token"] == "beside_emb"  # inspect names it the same way
