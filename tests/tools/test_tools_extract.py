"""extract: from (base, base with a LoRA merged in) the SVD recovers that LoRA's update."""

from __future__ import annotations

import json

from safetensors import safe_open
from tool_helpers import lora_deltas, relative_error, run_tool

from library.networks import verify_hashes


def test_extract_recovers_a_merged_locon(tiny_sd1, lora_factory, tmp_path):
    lora = lora_factory("sd1", "a", dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0)
    tuned = tmp_path / "tuned.safetensors"
    run_tool("merge-into", tiny_sd1.single_file, lora, "--save-precision", "float", "--out", tuned)
    out = tmp_path / "extracted.safetensors"
    run_tool(
        "extract",
        tuned,
        tiny_sd1.single_file,
        "--rank",
        "4",
        "--conv-rank",
        "2",
        "--save-precision",
        "float",
        "--out",
        out,
    )

    expected, recovered = lora_deltas(lora), lora_deltas(out)
    assert recovered.keys() == expected.keys()
    for name, delta in expected.items():
        assert relative_error(recovered[name], delta) < 1e-3, name
    assert verify_hashes(out)
    with safe_open(str(out), framework="pt") as handle:
        metadata = handle.metadata()
        ranks = {handle.get_tensor(key).shape[0] for key in handle.keys() if key.endswith("lora_down.weight")}
    assert ranks <= {2, 4}
    assert metadata["ss_base_model_version"] == "sd_v1"
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert json.loads(metadata["furnace.tool"])["tuned"] == "tuned.safetensors"


def test_identical_models_have_nothing_to_extract(tiny_sd1, tmp_path):
    result = run_tool(
        "extract",
        tiny_sd1.single_file,
        tiny_sd1.folder,
        "--rank",
        "4",
        "--out",
        tmp_path / "x.safetensors",
        check=False,
    )
    assert result.returncode == 2
    assert "do not differ in any adaptable module" in result.stderr.strip().splitlines()[-1]
