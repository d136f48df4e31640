"""The web console: static pages written by the project (no build step, no CDN, no third-party
code), served at /console by every API process. They sign in with an API key kept in the tab's
session storage (never a cookie, so no other site can ride it) and show only what the API lets
that key see; model output and stored data are put into the page as text, never as HTML, under
a Content-Security-Policy that allows nothing but this server's own scripts and styles."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

# Nothing from elsewhere: no inline script or style, no frames, no form posts, no base tag.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
ASSETS = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}


def _asset(name: str) -> bytes:
    return resources.files("genloom.console").joinpath("static", name).read_bytes()


def build_console_router() -> APIRouter:
    """/console (the page) and /console/assets/NAME (its script and style): public, like any
    static page; what they fetch needs a key."""
    router = APIRouter(include_in_schema=False)
    page = _asset("index.html")
    assets = {name: _asset(name) for name in ASSETS}

    @router.get("/console")
    @router.get("/console/")
    async def console_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=HEADERS)

    @router.get("/console/assets/{name}")
    async def console_asset(name: str) -> Response:
        if name not in assets:
            error = {"message": f"the console has no asset {name!r}", "type": "invalid_request_error", "param": None,
                     "code": "not_found"}
            return JSONResponse({"error": error}, status_code=404)
        return Response(assets[name], media_type=ASSETS[name], headers=HEADERS)

    return router
