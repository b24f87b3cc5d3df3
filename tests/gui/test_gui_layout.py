"""The GUI's trainer table names real schema options: a typo would silently drop an essential from the form."""

from __future__ import annotations

from library.config.keys import FIELD_PATHS
from library.config.schema import SECTIONS
from library.gui.forms import sd_scripts_flags
from library.gui.settings import TRAINERS, GuiSettings


def test_each_trainers_sections_and_essentials_are_schema_options_and_its_script_exists():
    for name, trainer in TRAINERS.items():
        assert set(trainer.sections) <= set(SECTIONS), name
        assert set(trainer.essentials) <= set(FIELD_PATHS), name
        assert len(set(trainer.essentials)) == len(trainer.essentials), name
        assert GuiSettings.trainer_script(name).is_file()
        others = {section for other in TRAINERS.values() if other is not trainer for section in other.sections}
        hidden = others - set(trainer.sections)
        assert not any(path.split(".")[0] in hidden for path in trainer.essentials), name
    assert "textual_inversion" in TRAINERS["lora"].sections  # pivotal tuning's options (train_network.py) are shown


def test_sd_scripts_flags_name_the_schema_path_they_set():
    flags = sd_scripts_flags()
    assert (flags["network.dim"], flags["dataset.batch_size"], flags["optimizer.learning_rate"]) == (
        "--network_dim", "--train_batch_size", "--learning_rate")
    assert set(flags) <= set(FIELD_PATHS)
