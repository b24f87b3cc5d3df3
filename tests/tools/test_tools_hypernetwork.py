"""A1111 hypernetwork files in the tools: ``convert`` turns a ``.pt`` (read with weights_only) into the
``.safetensors`` form with the same tensors, widths and entries, ``inspect`` reports both alike, and a ``.pt`` that
would run code is refused."""

from __future__ import annotations

import json

import torch

from library.networks.hypernetwork import Hypernetwork, HypernetworkOptions
from library.networks.hypernetwork_file import a1111_dict, load_hypernetwork, read_hypernetwork, write_pt
from library.tools.__main__ import main

OPTIONS = HypernetworkOptions(layer_structure=(1.0, 2.0, 1.0), activation_func="relu", add_layer_norm=True,
                              use_dropout=True, dropout_structure=(0.0, 0.3, 0.0), last_layer_dropout=True)
INFO = {"step": 250, "name": "style", "sd_checkpoint": "0123456789", "sd_checkpoint_name": "v1-5",
        "optional_info": "a comment"}


def _a1111_pt(path, widths=(768, 320, 640, 1280)):
    """A hypernetwork .pt as A1111 saves one with its default modules (the widths it enables by default)."""
    hypernetwork = Hypernetwork(widths, OPTIONS)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in hypernetwork.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    write_pt(path, a1111_dict(hypernetwork, INFO, torch.float16))
    return path


def test_convert_pt_to_safetensors_keeps_tensors_widths_and_entries(tmp_path, capsys):
    pt = _a1111_pt(tmp_path / "style.pt")
    out = tmp_path / "style.safetensors"
    assert main(["convert", str(pt), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out} (hypernetwork, widths 320, 640, 768, 1280) from {pt}"
    before, after = read_hypernetwork(pt), read_hypernetwork(out)
    assert after.options == before.options == OPTIONS
    assert {key: after.info[key] for key in INFO} == INFO
    assert sorted(after.pairs) == [320, 640, 768, 1280]
    for width, pair in before.pairs.items():
        for state, converted in zip(pair, after.pairs[width]):
            assert state.keys() == converted.keys()
            assert all(torch.equal(converted[key], tensor) and converted[key].dtype == torch.float16
                       for key, tensor in state.items())
    loaded = load_hypernetwork(out)  # the form Furnace's loader takes, as from the .pt
    assert loaded.widths == load_hypernetwork(pt).widths

    reports = []
    for path in (pt, out):
        assert main(["inspect", str(path), "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    for report in reports:
        assert report["type"] == "hypernetwork" and report["widths"] == [320, 640, 768, 1280]
        assert report["step"] == 250 and report["layer_structure"] == [1.0, 2.0, 1.0]
    assert reports[0]["parameters"] == reports[1]["parameters"]

    as_float = tmp_path / "float.safetensors"
    assert main(["convert", str(pt), "--save-precision", "float", "--out", str(as_float)]) == 0
    assert read_hypernetwork(as_float).pairs[768][0]["linear.0.weight"].dtype == torch.float32


class _RunsCode:
    """Unpickling this calls a function: what a malicious .pt does (here a harmless print)."""

    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_a_pt_that_runs_code_is_refused_and_a_wrong_output_named(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({768: ({}, {}), "payload": _RunsCode()}, evil)
    assert main(["convert", str(evil), "--out", str(tmp_path / "x.safetensors")]) == 2
    captured = capsys.readouterr()
    assert "unpickled code ran" not in captured.out
    assert captured.err.strip().startswith(f"error: {evil}: refused to load") and not (tmp_path / "x.safetensors").exists()
    pt = _a1111_pt(tmp_path / "style.pt", widths=(768,))
    assert main(["convert", str(pt), "--out", str(tmp_path / "folder")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'folder'}: a hypernetwork converts to a .safetensors file"
