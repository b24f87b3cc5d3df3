"""User presets through the JSON API of a real server: saved beside the shipped ones under the runs root, listed after
them, read back as form values, deleted; bad names, paths and shipped names refused without touching a file."""

from __future__ import annotations

import tomllib

import pytest
from gui_server import make_gui_folders, quick_run_values

from library.gui.presets import PRESETS_FOLDER

pytestmark = pytest.mark.slow  # a server process


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_model_factory):
    return make_gui_folders(tmp_path_factory.mktemp("gui-presets"), tiny_model_factory("sd1").folder)


def listed(client) -> list[dict]:
    answer = client.get("/api/presets")
    assert answer.status_code == 200
    return answer.json()


def test_a_saved_preset_is_listed_after_the_shipped_ones_reads_back_and_is_deleted(client, folders):
    values = quick_run_values(folders, steps=12, sample_every=6)
    values["dreambooth"] = {"instance_prompt": "a frnc circle", "train_method": "lora"}
    assert client.post("/api/presets", json={"name": "my-circle_2", "values": values}).status_code == 201

    saved = folders.runs / PRESETS_FOLDER / "my-circle_2.toml"
    assert tomllib.loads(saved.read_text(encoding="utf-8"))["training"]["max_train_steps"] == 12
    presets = listed(client)
    shipped = sorted(path.stem for path in folders.configs.glob("*.toml"))
    assert [p["name"] for p in presets] == [*shipped, "my-circle_2"]
    assert [p["user"] for p in presets] == [False] * len(shipped) + [True]
    mine = presets[-1]
    assert mine["values"] == values and mine["trainer"] == "dreambooth" and mine["messages"] == []

    values["training"]["max_train_steps"] = 20   # saving again under the same name needs `replace`
    again = client.post("/api/presets", json={"name": "my-circle_2", "values": values})
    assert again.status_code == 409 and "already saved" in again.json()["detail"]
    assert client.post("/api/presets", json={"name": "my-circle_2", "values": values, "replace": True}).status_code == 201
    assert listed(client)[-1]["values"]["training"]["max_train_steps"] == 20

    assert client.delete("/api/presets/my-circle_2").json() == {"deleted": "my-circle_2"}
    assert not saved.exists() and "my-circle_2" not in [p["name"] for p in listed(client)]
    assert client.delete("/api/presets/my-circle_2").status_code == 404


def test_paths_bad_names_unknown_keys_and_shipped_presets_are_refused(client, folders):
    shipped = {path: path.read_bytes() for path in folders.configs.glob("*.toml")}
    values = {"training": {"max_train_steps": 5}}
    for name in ("../escaped", "..", "sub/inner", "..\\up", str(folders.configs / "quickstart")):
        refused = client.post("/api/presets", json={"name": name, "values": values})
        assert refused.status_code == 403, name
        assert "not a path" in refused.json()["detail"]
    for name in ("", "-dash-first", "with space", "x" * 65, "<script>", "naïve"):
        refused = client.post("/api/presets", json={"name": name, "values": values})
        assert refused.status_code == 422, name
        assert refused.json()["messages"][0]["message"].startswith("request: name: a preset name is 1-64 letters")
    unknown = client.post("/api/presets", json={"name": "typo", "values": {"training": {"max_train_stepz": 5}}})
    assert unknown.status_code == 422 and "max_train_stepz" in unknown.json()["detail"]

    overwrite = client.post("/api/presets", json={"name": "quickstart", "values": values, "replace": True})
    assert overwrite.status_code == 409 and "shipped preset" in overwrite.json()["detail"]
    assert client.delete("/api/presets/quickstart").status_code == 409
    assert client.delete("/api/presets/%2E%2E").status_code == 403

    assert {path: path.read_bytes() for path in folders.configs.glob("*.toml")} == shipped
    written = folders.runs / PRESETS_FOLDER
    assert not written.exists() or list(written.iterdir()) == []
    assert not (folders.runs.parent / "escaped.toml").exists()
