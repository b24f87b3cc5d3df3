"""A base model's sizes read from headers and configs agree with the model the loader builds from the same files."""

from __future__ import annotations

import pytest

from library.models.errors import ModelLoadError
from library.models.loader import load_base_model
from library.models.sizes import read_model_sizes


def _loaded_counts(path) -> tuple[str, dict[str, int], dict, dict]:
    model = load_base_model(path)
    counts = {"unet": model.unet, "vae": model.vae}
    counts |= {spec.component: encoder for spec, encoder in zip(model.family.text_encoders, model.text_encoders)}
    parameters = {name: sum(p.numel() for p in module.parameters()) for name, module in counts.items()}
    return model.family.name, parameters, dict(model.unet.config), dict(model.vae.config)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("layout", ["folder", "single_file"])
def test_sizes_match_the_loaded_model(tiny_model_factory, family, layout):
    path = getattr(tiny_model_factory(family), layout)
    name, parameters, unet_config, vae_config = _loaded_counts(path)

    sizes = read_model_sizes(path)

    assert sizes.family.name == name
    assert sizes.parameters == parameters
    for key in ("block_out_channels", "layers_per_block", "down_block_types", "transformer_layers_per_block"):
        assert sizes.unet_config.get(key, 1) == unet_config.get(key, 1), key
    assert list(sizes.vae_config["block_out_channels"]) == list(vae_config["block_out_channels"])
    assert sum(shape[0] * shape[1] for shape in sizes.unet_shapes.values() if len(shape) == 2) > 0


def test_a_ckpt_is_sized_as_its_family_reference(tmp_path):
    """A pickle is not opened before loading: its sizes are the reference model's of the family named."""
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"not read")

    sizes = read_model_sizes(checkpoint, family="sd1")

    assert sizes.family.name == "sd1"
    assert list(sizes.unet_config["block_out_channels"]) == [320, 640, 1280, 1280]
    assert 800_000_000 < sizes.parameters["unet"] < 900_000_000  # SD1's UNet has about 860 million
    assert "reference" in sizes.source


def test_a_missing_model_is_the_loaders_error(tmp_path):
    with pytest.raises(ModelLoadError, match="model not found"):
        read_model_sizes(tmp_path / "absent.safetensors")
