"""Atomic files and folders: complete under their final name or absent, never half-written, no leftovers."""

from __future__ import annotations

import os
import threading
import time

import pytest

from library.atomic_files import (
    STALE_AFTER_SECONDS,
    atomic_folder,
    atomic_path,
    atomic_write,
    is_temporary,
    recover_folder,
    remove_stale_temporaries,
    replace_folder,
    staging_folder,
    write_bytes_atomic,
    write_text_atomic,
)


class Boom(Exception):
    pass


def test_success_replaces_the_target_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    assert write_bytes_atomic(target, b"new bytes") == target
    assert target.read_bytes() == b"new bytes"
    write_text_atomic(tmp_path / "caption.txt", "frnc, red circle ü\n")
    assert (tmp_path / "caption.txt").read_text(encoding="utf-8") == "frnc, red circle ü\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["caption.txt", "model.safetensors"]


def test_a_new_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    write_text_atomic(tmp_path / "config.toml", "x = 1\n")
    assert (tmp_path / "config.toml").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_an_exception_mid_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, error):
    target = tmp_path / "config.toml"
    target.write_text("old = 1\n", encoding="utf-8")
    with pytest.raises(error):
        with atomic_write(target, "w") as handle:
            handle.write("new = ")
            handle.flush()
            assert any(is_temporary(path) for path in tmp_path.iterdir())
            raise error()
    assert target.read_text(encoding="utf-8") == "old = 1\n"
    assert [path.name for path in tmp_path.iterdir()] == ["config.toml"]


def test_a_failed_first_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(Boom):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"half")
            raise Boom()
    assert list(tmp_path.iterdir()) == []


def test_a_library_writing_to_the_path_commits_on_success(tmp_path):
    target = tmp_path / "latent.safetensors"
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".") and is_temporary(temporary)
        assert not target.exists()
        temporary.write_bytes(b"written by a library")
    assert target.read_bytes() == b"written by a library"
    assert not temporary.exists()


def test_concurrent_writers_of_one_target_never_mix(tmp_path):
    """All writers hold their temporaries open at once; each must finish whole, the target being one of them."""
    target = tmp_path / "lora.safetensors"
    payloads = [bytes([index]) * 200_000 for index in range(6)]
    inside = threading.Barrier(len(payloads))
    temporaries: list[str] = []
    errors: list[BaseException] = []

    def write(payload: bytes) -> None:
        try:
            with atomic_write(target) as handle:
                temporaries.append(handle.name)
                inside.wait(timeout=10)
                for start in range(0, len(payload), 10_000):
                    handle.write(payload[start : start + 10_000])
                    time.sleep(0)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(payload,)) for payload in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(temporaries)) == len(payloads)
    assert target.read_bytes() in payloads
    assert [path.name for path in tmp_path.iterdir()] == [target.name]


def test_atomic_write_refuses_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", "ab"):
            pass


def test_atomic_folder_replaces_the_whole_folder(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.json").write_text("{}")
    with atomic_folder(target) as staging:
        assert is_temporary(staging) and staging.is_dir() and not any(staging.iterdir())
        (staging / "unet").mkdir()
        (staging / "unet" / "config.json").write_text('{"new": 1}')
    assert sorted(str(path.relative_to(target)) for path in target.rglob("*")) == ["unet", "unet/config.json"]
    assert [path.name for path in tmp_path.iterdir()] == ["model"]


def test_a_failed_folder_write_keeps_the_old_folder(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights.bin").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(target) as staging:
            (staging / "weights.bin").write_bytes(b"ne")
            raise KeyboardInterrupt()
    assert (target / "weights.bin").read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["model"]


def test_a_folder_swap_killed_between_its_renames_is_recovered(tmp_path, monkeypatch):
    """Simulate the kill: the second rename never happens, so the old folder is aside and the new one staged."""
    import library.atomic_files as atomic_files

    target = tmp_path / "state"
    target.mkdir()
    (target / "position.json").write_text('{"step": 3}')
    staging = staging_folder(target)
    staging.mkdir()
    (staging / "position.json").write_text('{"step": 4}')
    real_replace = os.replace

    def killed_at_second_rename(source, destination):
        if os.fspath(source) == os.fspath(staging):
            raise KeyboardInterrupt("killed")
        real_replace(source, destination)

    monkeypatch.setattr(atomic_files.os, "replace", killed_at_second_rename)
    with pytest.raises(KeyboardInterrupt):
        replace_folder(staging, target)
    monkeypatch.undo()
    assert not target.exists()

    assert recover_folder(target)
    assert (target / "position.json").read_text() == '{"step": 3}'
    assert not recover_folder(target)
    replace_folder(staging, target)  # the next save goes through
    assert (target / "position.json").read_text() == '{"step": 4}'
    assert [path.name for path in tmp_path.iterdir()] == ["state"]


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    old = time.time() - STALE_AFTER_SECONDS - 60
    stale_file = tmp_path / ".lora.safetensors.0a1b2c3d.tmp"
    stale_file.write_bytes(b"half")
    stale_folder = tmp_path / ".state.tmp"
    (stale_folder / "sub").mkdir(parents=True)
    (stale_folder / "sub" / "x.bin").write_bytes(b"x")
    live = tmp_path / ".lora.safetensors.99999999.tmp"
    live.write_bytes(b"being written")
    kept = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "lora.safetensors"]
    for path in kept:
        path.write_bytes(b"mine")
    for path in (stale_file, stale_folder, *kept):
        os.utime(path, (old, old))

    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale_file, stale_folder])
    assert sorted(tmp_path.iterdir()) == sorted([live, *kept])
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_missing_folders_are_created(tmp_path):
    write_text_atomic(tmp_path / "a" / "b" / "config.toml", "x = 1\n")
    with atomic_folder(tmp_path / "c" / "model") as staging:
        (staging / "model_index.json").write_text("{}")
    assert (tmp_path / "a" / "b" / "config.toml").read_text() == "x = 1\n"
    assert (tmp_path / "c" / "model" / "model_index.json").is_file()
