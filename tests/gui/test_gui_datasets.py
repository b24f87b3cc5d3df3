"""The dataset browser's API against a real server: the listing grouped by `N_name` folder, thumbnails, paths outside
the datasets root refused, caption edits read back as the pipeline reads them and undone byte for byte, bulk tag
actions that give what the `tags` command gives, the doctor's findings per image, and the form's doctor report naming
files inside the datasets root."""

from __future__ import annotations

import io
import os
import shutil

import pytest
from gui_datasets import XSS_CAPTION, caption_files, dataset_gui_folders, fresh_dataset
from PIL import Image

from library.data.captions import read_caption_for
from library.gui.thumbnails import CACHE_FOLDER, THUMBNAIL_SIDE
from preprocess.__main__ import main as preprocess_main

pytestmark = pytest.mark.slow  # a server process


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return dataset_gui_folders(tmp_path_factory.mktemp("gui-datasets"))


def captions(client, path: str, extension: str = ".txt") -> dict[str, str | None]:
    listing = client.get("/api/datasets/0/listing", params={"path": path, "caption_extension": extension})
    assert listing.status_code == 200, listing.text
    return {image["name"]: image["caption"] for group in listing.json()["groups"] for image in group["images"]}


def test_the_listing_groups_repeat_folders_with_each_caption_and_the_tag_frequencies(client):
    assert {"root": 0, "path": "pets", "label": "datasets/pets"} in client.get("/api/datasets").json()
    listing = client.get("/api/datasets/0/listing", params={"path": "pets"}).json()
    groups = {group["name"]: group for group in listing["groups"]}
    assert [(name, group["repeats"], group["class_tokens"]) for name, group in groups.items()] == [
        ("10_sks dog", 10, "sks dog"), ("2_cat", 2, "cat")]
    assert captions(client, "pets") == {"a.png": "dog, running", "b.png": XSS_CAPTION, "bad.png": None,
                                        "c.png": None, "d.jpg": "cat, sitting"}
    assert dict(listing["tags"]) == {"dog": 2, "running": 1, "<img src=x onerror=alert(1)>": 1, "cat": 1,
                                     "sitting": 1}
    assert listing["images"] == 5 and listing["undo"] == 0


def test_thumbnails_are_small_jpegs_cached_under_the_runs_root(client, folders):
    answer = client.get("/api/datasets/0/thumbnail", params={"path": "pets/2_cat/d.jpg"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(answer.content)).size == (THUMBNAIL_SIDE, THUMBNAIL_SIDE // 2)
    cached = [path.read_bytes() for path in (folders.runs / CACHE_FOLDER).glob("*.jpg")]
    assert cached == [answer.content]
    assert client.get("/api/datasets/0/thumbnail", params={"path": "pets/2_cat/d.jpg"}).content == answer.content
    bad = client.get("/api/datasets/0/thumbnail", params={"path": "pets/10_sks dog/bad.png"})
    assert bad.status_code == 404 and "not an image" in bad.json()["detail"]


def test_paths_outside_the_datasets_root_are_refused(client, folders):
    secret = folders.runs.parent / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    escape = folders.datasets / "escape"
    escape.mkdir()
    (escape / "leak.png").symlink_to(secret)
    os.symlink(folders.runs.parent, folders.datasets / "outside")
    offered = {item["path"] for item in client.get("/api/datasets").json()}
    assert {"escape", "pets"} <= offered and "outside" not in offered
    refused = [("thumbnail", "../secret.png"), ("thumbnail", str(secret)), ("thumbnail", "escape/leak.png"),
               ("thumbnail", "pets/2_cat/d.txt"), ("listing", ".."), ("listing", "outside"),
               ("findings", "outside/runs")]
    for route, path in refused:
        answer = client.get(f"/api/datasets/0/{route}", params={"path": path})
        assert answer.status_code == 403, (route, path, answer.text)
    assert client.get("/api/datasets/3/listing", params={"path": "pets"}).status_code == 403
    writes = [{"dataset": "pets", "image": "../secret.png", "caption": "x"},
              {"dataset": "escape", "image": "escape/leak.png", "caption": "x"},
              {"dataset": "pets", "image": "pets/2_cat/d.jpg", "caption": "x", "caption_extension": ".png"},
              {"dataset": "pets", "image": "pets/2_cat/d.jpg", "caption": "x", "caption_extension": "/../../x"},
              {"dataset": "pets/2_cat", "image": "pets/10_sks dog/a.png", "caption": "x"}]
    for body in writes:
        assert client.put("/api/datasets/0/caption", json=body).status_code == 403, body
    assert not (folders.runs.parent / "secret.txt").exists() and not (folders.datasets / "pets/2_cat/d.png").exists()
    assert captions(client, "pets")["a.png"] == "dog, running"


def test_a_saved_caption_is_what_the_pipeline_reads_and_undo_puts_back_the_exact_bytes(client, folders):
    dataset = fresh_dataset(folders, "edit")
    original = caption_files(dataset)
    a, c = dataset / "10_sks dog/a.png", dataset / "10_sks dog/c.png"
    body = {"dataset": "edit", "image": "edit/10_sks dog/a.png", "caption": "dog, jumping \n\n outdoors "}
    assert client.put("/api/datasets/0/caption", json=body).json() == {"caption": "dog, jumping, outdoors", "undo": 1}
    assert read_caption_for(a) == "dog, jumping, outdoors"
    body = {"dataset": "edit", "image": "edit/10_sks dog/c.png", "caption": "dog", "caption_extension": "caption"}
    assert client.put("/api/datasets/0/caption", json=body).json()["undo"] == 2
    assert read_caption_for(c, ".caption") == "dog" and captions(client, "edit", ".caption")["c.png"] == "dog"

    assert client.post("/api/datasets/0/undo", json={"dataset": "edit"}).json() == {
        "undone": "caption of c.png", "files": 1, "undo": 1}
    assert not c.with_suffix(".caption").exists()
    client.post("/api/datasets/0/undo", json={"dataset": "edit"})
    assert caption_files(dataset) == original
    nothing = client.post("/api/datasets/0/undo", json={"dataset": "edit"})
    assert nothing.status_code == 409 and "nothing to undo" in nothing.json()["detail"]

    client.put("/api/datasets/0/caption", json={"dataset": "edit", "image": "edit/10_sks dog/a.png", "caption": "x"})
    a.with_suffix(".txt").write_text("changed by hand", encoding="utf-8")
    conflict = client.post("/api/datasets/0/undo", json={"dataset": "edit"})
    assert conflict.status_code == 409 and "a.txt was changed since" in conflict.json()["detail"]
    assert read_caption_for(a) == "changed by hand"


def test_bulk_rename_remove_and_prepend_edit_every_caption_as_the_tags_command_does(client, folders, tmp_path):
    dataset = fresh_dataset(folders, "bulk")
    by_cli = shutil.copytree(dataset, tmp_path / "bulk")
    original = caption_files(dataset)

    def bulk(action: str, tag: str, new: str = "") -> dict:
        answer = client.post("/api/datasets/0/tags", json={"dataset": "bulk", "action": action, "tag": tag, "new": new})
        assert answer.status_code == 200, answer.text
        return answer.json()

    assert bulk("rename", "dog", "canine")["changed"] == 2
    assert bulk("remove", "sitting")["changed"] == 1
    assert bulk("prepend", "sks") == {"changed": 5, "problems": [], "undo": 3}
    assert captions(client, "bulk") == {"a.png": "sks, canine, running", "b.png": "sks, canine, <img src=x onerror=alert(1)>",
                                        "bad.png": "sks", "c.png": "sks", "d.jpg": "sks, cat"}
    assert preprocess_main(["tags", str(by_cli), "--in-place", "--replace", "dog", "canine", "--remove", "sitting",
                            "--prepend", "sks"]) == 0
    assert caption_files(dataset) == caption_files(by_cli)

    for action, tag, new in (("rename", "cat", ""), ("prepend", "a, b", ""), ("shuffle", "cat", "")):
        answer = client.post("/api/datasets/0/tags", json={"dataset": "bulk", "action": action, "tag": tag, "new": new})
        assert answer.status_code == 409, (action, answer.text)
    undone = [client.post("/api/datasets/0/undo", json={"dataset": "bulk"}).json()["undone"] for _ in range(3)]
    assert undone == ["prepend 'sks'", "remove 'sitting'", "rename 'dog' to 'canine'"]
    assert caption_files(dataset) == original


def test_the_doctors_findings_are_given_per_image(client, folders):
    report = client.get("/api/datasets/0/findings", params={"path": "pets", "resolution": 80}).json()
    kinds = {path: sorted(item["kind"] for item in items) for path, items in report["images"].items()}
    assert kinds == {"pets/10_sks dog/a.png": ["duplicate", "small"], "pets/10_sks dog/b.png": ["duplicate", "small"],
                     "pets/10_sks dog/bad.png": ["unreadable"], "pets/10_sks dog/c.png": ["no_caption"]}
    messages = {item["message"] for items in report["images"].values() for item in items}
    assert {"near-duplicate of b.png", "smaller than 80x80", "no caption file"} <= messages
    assert not report["ok"] and any(problem["severity"] == "error" and "unreadable" in problem["message"]
                                    for problem in report["problems"])
    shown = {(problem["folder"], problem["message"]) for problem in report["problems"]}   # named inside the dataset
    assert ("10_sks dog", "1 unreadable image(s): 10_sks dog/bad.png (not an image or an unsupported format)") in shown
    assert ("", "near-duplicate images: 10_sks dog/a.png, 10_sks dog/b.png") in shown
    assert not any(str(folders.datasets) in folder + message for folder, message in shown)
    assert client.get("/api/datasets/0/findings", params={"path": "pets", "resolution": 2}).status_code == 422


def test_the_form_doctors_report_names_folders_and_images_inside_the_datasets_root(client, folders):
    dataset = folders.datasets / "pets"
    answer = client.post("/api/doctor", json={"path": str(dataset), "dataset": {"resolution": 80}})
    assert answer.status_code == 200, answer.text
    assert str(folders.datasets) not in answer.text   # no path of the machine's, anywhere in the answer
    result = answer.json()
    assert result["dataset"] == {"root": 0, "path": "pets"}
    dog, cat = result["report"]["folders"]
    assert (dog["path"], cat["path"]) == ("pets/10_sks dog", "pets/2_cat")
    assert dog["missing_captions"] == ["pets/10_sks dog/c.png"]
    assert dog["below_resolution_images"] == ["pets/10_sks dog/a.png", "pets/10_sks dog/b.png"]
    assert [entry["path"] for entry in dog["unreadable_images"]] == ["pets/10_sks dog/bad.png"]
    assert result["report"]["near_duplicates"] == [["pets/10_sks dog/a.png", "pets/10_sks dog/b.png"]]
    assert dog["top_tags"] == [["dog", 2], ["running", 1], ["<img src=x onerror=alert(1)>", 1]]
