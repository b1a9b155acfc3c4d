"""The interactive API documentation at ``/docs``, served from this server.

FastAPI's default page loads Swagger UI from a public CDN, which fails on the closed networks
hospitals run; Swagger UI comes from npm instead (``swagger-ui-dist``, beside OpenSeadragon).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from slidebank.web.pages import STATIC_DIR

SWAGGER_UI = STATIC_DIR / "node_modules" / "swagger-ui-dist"
PREFIX = "/static/vendor/swagger-ui"


def install(app: FastAPI) -> None:
    app.mount(PREFIX, StaticFiles(directory=SWAGGER_UI, check_dir=False), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/favicon-32x32.png",
        )
