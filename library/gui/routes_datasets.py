"""API for the dataset browser: datasets under the configured roots, their images and captions, thumbnails, the
doctor's findings per image, caption edits, bulk tag actions and undo. Every path is relative to one datasets root
(`root` is its number) and confined to it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from library.data.captions import DEFAULT_CAPTION_EXTENSION
from library.data.images import ImageLoadError

from .caption_edits import CaptionHistory, bulk_edits
from .datasets import (
    caption_suffix,
    dataset_findings,
    dataset_folder,
    dataset_image,
    dataset_listing,
    dataset_root,
    list_datasets,
)
from .paths import PathRefused
from .routes_config import REQUEST_BODY
from .settings import GuiSettings
from .thumbnails import ThumbnailCache

router = APIRouter()


class CaptionBody(BaseModel):
    """One image's new caption; `dataset` is the folder whose undo history keeps the edit."""

    model_config = REQUEST_BODY

    dataset: str
    image: str
    caption: str = Field(max_length=20_000)
    caption_extension: str = DEFAULT_CAPTION_EXTENSION


class BulkBody(BaseModel):
    """A bulk tag action over every caption of the dataset: rename `tag` to `new`, remove `tag`, prepend `tag`."""

    model_config = REQUEST_BODY

    dataset: str
    action: str
    tag: str
    new: str = ""
    caption_extension: str = DEFAULT_CAPTION_EXTENSION


class UndoBody(BaseModel):
    model_config = REQUEST_BODY

    dataset: str


def _settings(request: Request) -> GuiSettings:
    return request.app.state.settings


def _history(request: Request) -> CaptionHistory:
    return request.app.state.caption_history


def _thumbnails(request: Request) -> ThumbnailCache:
    return request.app.state.thumbnails


def _folder(request: Request, root: int, path: str):
    base = dataset_root(_settings(request).dataset_roots, root)
    return base, dataset_folder(base, path)


@router.get("/datasets")
def datasets(request: Request) -> list[dict[str, Any]]:
    """The dataset folders the picker offers: those directly inside each configured datasets root."""
    return list_datasets(_settings(request).dataset_roots)


@router.get("/datasets/{root}/listing")
def listing(root: int, request: Request, path: str, caption_extension: str = DEFAULT_CAPTION_EXTENSION) -> dict:
    """The dataset's image groups with each image's caption, its tag frequencies and the edits undo can revert."""
    base, folder = _folder(request, root, path)
    view = dataset_listing(base, folder, caption_suffix(caption_extension))
    return {**view, "undo": _history(request).depth(folder)}


@router.get("/datasets/{root}/findings")
def findings(root: int, request: Request, path: str, resolution: int = 512,
             caption_extension: str = DEFAULT_CAPTION_EXTENSION) -> dict:
    """The doctor's findings per image (decodes every image: asked for after the listing is shown)."""
    if not 8 <= resolution <= 8192:
        raise HTTPException(422, f"resolution {resolution}: give a side between 8 and 8192 px")
    base, folder = _folder(request, root, path)
    return dataset_findings(base, folder, caption_suffix(caption_extension), resolution)


@router.get("/datasets/{root}/thumbnail")
def image_thumbnail(root: int, request: Request, path: str) -> FileResponse:
    """A small JPEG of one image inside the root, made once and cached; 404 when the image cannot be decoded."""
    image = dataset_image(dataset_root(_settings(request).dataset_roots, root), path)
    try:
        return FileResponse(_thumbnails(request).thumbnail(image), media_type="image/jpeg")
    except ImageLoadError as error:
        raise HTTPException(404, f"{path}: {error.reason}") from None


@router.put("/datasets/{root}/caption")
def save_caption(root: int, body: CaptionBody, request: Request) -> dict:
    """Write one image's caption file (the pipeline's extension rules) atomically; undoable."""
    base, folder = _folder(request, root, body.dataset)
    image = dataset_image(base, body.image)
    if not image.is_relative_to(folder):
        raise PathRefused(f"{body.image}: not inside the dataset {body.dataset}")
    history = _history(request)
    caption = history.save_caption(folder, image, body.caption, caption_suffix(body.caption_extension))
    return {"caption": caption, "undo": history.depth(folder)}


@router.post("/datasets/{root}/tags")
def bulk_tags(root: int, body: BulkBody, request: Request) -> dict:
    """Rename, remove or prepend a tag in every caption of the dataset with the `tags` command's edits; undoable
    (409 for an action without its tag)."""
    _, folder = _folder(request, root, body.dataset)
    history = _history(request)
    edits = bulk_edits(body.action, body.tag, body.new)
    label = f"{body.action} '{body.tag.strip()}'" + (f" to '{body.new.strip()}'" if body.action == "rename" else "")
    changed, problems = history.bulk(folder, edits, label, caption_suffix(body.caption_extension))
    return {"changed": changed, "problems": problems, "undo": history.depth(folder)}


@router.post("/datasets/{root}/undo")
def undo(root: int, body: UndoBody, request: Request) -> dict:
    """Revert the dataset's last caption edit or bulk action (409 when there is none, or a file changed since)."""
    _, folder = _folder(request, root, body.dataset)
    history = _history(request)
    label, restored = history.undo(folder)
    return {"undone": label, "files": restored, "undo": history.depth(folder)}
