"""The preprocess page's path check: a refused folder is answered with how to allow it, and that advice works."""

from __future__ import annotations

import re
import shlex

import pytest

from library.gui.paths import PathRefused
from library.gui.preprocess_jobs import check_arguments, describe_commands
from library.gui.settings import parse_settings


def test_outside_folder_error_says_how_to_allow_it_and_the_advice_works(tmp_path):
    (tmp_path / "datasets").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = parse_settings(["--workdir", str(tmp_path)])
    with pytest.raises(PathRefused) as refused:
        check_arguments("doctor", [str(elsewhere)], settings)
    message = str(refused.value)
    assert f"{elsewhere} is outside" in message and str(tmp_path / "datasets") in message
    kept = re.search(r"repeat the flag to keep these: (.*)\)$", message).group(1)
    advised = parse_settings(["--workdir", str(tmp_path), *shlex.split(kept), "--datasets-root", str(elsewhere)])
    check_arguments("doctor", [str(elsewhere)], advised)
    check_arguments("doctor", [str(tmp_path / "datasets")], advised)
    with pytest.raises(PathRefused, match="--models-root FOLDER"):
        check_arguments("tag", [str(tmp_path / "datasets"), "--in-place", "--model", str(elsewhere)], advised)


def test_fixed_groups_of_values_are_described_part_by_part():
    options = {option["flag"]: option for option in describe_commands()["tags"]["options"]}
    assert options["--replace"]["parts"] == ["OLD", "NEW"] and options["--replace"]["repeat"]
    assert options["--remove"]["parts"] is None


def test_a_jobs_result_is_its_out_folder_or_its_source_inside_a_datasets_root(tmp_path):
    """Where the page looks for a finished job's images: named as the dataset browser names folders."""
    settings = parse_settings(["--workdir", str(tmp_path), "--datasets-root", "data", "--datasets-root", "more"])
    assert check_arguments("crop", ["data/pets", "--out", "more/pets-512", "--size", "512"], settings) == {
        "root": 1, "path": "pets-512"}
    assert check_arguments("tags", [str(tmp_path / "data" / "pets" / "2_cat"), "--in-place", "--remove", "x"],
                           settings) == {"root": 0, "path": "pets/2_cat"}
    assert check_arguments("doctor", ["data/pets"], settings) is None   # writes nothing
