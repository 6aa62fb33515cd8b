"""The forecasters' viewer: static files served at ``/ui`` (no build step, nothing from a CDN).

``service/static/`` holds the page (``index.html``, ``viewer.js``, ``viewer.css``) and Leaflet
(``vendor/leaflet/``, with its licence). The page itself is public; everything it shows comes
from the API with the user's ``X-API-Key``, as any other client. ``/ui/config.json`` gives the
operator's choices that are not secrets (base-map tiles, when stale input is flagged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from service.deps import SettingsDep

STATIC = Path(__file__).resolve().parent / "static"

router = APIRouter(tags=["viewer"], include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui")


@router.get("/ui")
async def viewer() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/ui/config.json")
async def viewer_config(settings: SettingsDep) -> dict[str, Any]:
    """Operator settings the viewer needs (``NOWCAST_UI__*``)."""
    ui = settings.ui
    return {"tile_url": ui.tile_url, "tile_attribution": ui.tile_attribution,
            "stale_minutes": ui.stale_minutes, "api_key_required": bool(settings.auth.api_keys)}


def mount(app: FastAPI) -> None:
    """Serve the viewer at ``/ui`` and its files at ``/ui/static``."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
