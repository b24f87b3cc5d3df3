"""inspect recognises textual-inversion embeddings: ours (SD1 and SDXL) and A1111's .pt, read without unpickling;
convert turns a .pt one into .safetensors."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from library.networks.embedding_file import EmbeddingFileError, read_embedding_file, write_embedding_file
from library.tools.__main__ import main


def _report(path, capsys) -> dict:
    assert main(["inspect", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_sd1_and_sdxl_embeddings(tmp_path, capsys):
    sd1, sdxl = tmp_path / "tok.safetensors", tmp_path / "xl.safetensors"
    write_embedding_file(sd1, {"emb_params": torch.randn(3, 768)},
                         {"ss_token_string": "frnc", "ss_steps": "40", "ss_base_model_version": "sd_v1"})
    write_embedding_file(sdxl, {"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, {})
    report = _report(sd1, capsys)
    assert (report["type"], report["family"], report["token"], report["vectors"]) == ("embedding", "sd1", "frnc", 3)
    assert report["widths"] == {"emb_params": 768} and report["step"] == "40" and report["hashes_verified"] is True
    report = _report(sdxl, capsys)
    assert (report["family"], report["token"], report["vectors"]) == ("sdxl", "xl", 2)
    assert report["widths"] == {"clip_l": 768, "clip_g": 1280} and len(report["encoders"]) == 2


def test_a1111_pt_embedding_is_read_with_weights_only(tmp_path, capsys):
    path = tmp_path / "old.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(4, 1024)}, "name": "old",
                "step": 3000, "sd_checkpoint": "abc", "sd_checkpoint_name": "v2"}, path)
    report = _report(path, capsys)
    assert (report["family"], report["token"], report["vectors"], report["step"]) == ("sd2", "old", 4, "3000")


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pt_that_needs_unpickling_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"string_to_param": {"*": _Payload()}}))
    with pytest.raises(EmbeddingFileError, match="nothing that runs code"):
        read_embedding_file(path)


def test_convert_turns_a_pt_embedding_into_safetensors(tmp_path, capsys):
    vectors = torch.randn(2, 768)
    source, out = tmp_path / "old.pt", tmp_path / "old.safetensors"
    torch.save({"string_to_param": {"*": vectors}, "name": "oldtok", "step": 500}, source)
    assert main(["convert", str(source), "--out", str(out), "--save-precision", "float"]) == 0
    converted = read_embedding_file(out)
    assert torch.equal(converted.vectors["emb_params"], vectors)
    assert converted.metadata["ss_token_string"] == "oldtok" and converted.metadata["ss_steps"] == "500"
    assert _report(out, capsys)["hashes_verified"] is True
