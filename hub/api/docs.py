"""The API's interactive docs (Swagger UI) at ``/v1/docs``, served entirely by the hub.

FastAPI's own docs page loads Swagger UI from a CDN: every HQ operator who opened it would tell
that CDN when (and from where) they use the hub, and the CDN could run any script in the page
of a hub that holds defenders' positions. Here the page, its stylesheet, the Swagger UI bundle
and the few lines that start it all come from the hub: the assets from the ``fastapi-offline``
package (Swagger UI's own build, MIT; updated with the dependency), the start-up script from
this module, so the page needs no inline script and its policy allows scripts from the hub only.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from hub.api.errors import NotFound

#: The page's own policy (the default of ``hub.api.headers`` allows no script at all). Swagger
#: UI sets inline styles, shows data: images and reads the OpenAPI document from the hub.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)

#: The assets the page uses, by name: (file in fastapi-offline's ``static`` folder, media type).
_PACKAGED = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}

_START = """\
window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.openapi,
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
});
"""

_PAGE = """\
<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" href="{assets}/favicon.png">
</head><body>
<div id="swagger-ui" data-openapi="{openapi}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/start.js"></script>
</body></html>
"""


def install(app: FastAPI, docs_url: str, openapi_url: str) -> None:
    """Serve the page at ``docs_url`` and its assets under ``docs_url/assets/``."""
    assets = f"{docs_url}/assets"
    page = _PAGE.format(title=f"{app.title} - docs", assets=assets, openapi=openapi_url)
    headers = {"Content-Security-Policy": DOCS_CSP}

    @app.get(docs_url, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    @app.get(f"{assets}/{{name}}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name == "start.js":
            return Response(_START, media_type="text/javascript", headers=headers)
        media_type = _PACKAGED.get(name)
        if media_type is None:
            raise NotFound(f"no docs asset {name!r}")
        content = files("fastapi_offline").joinpath("static", name).read_bytes()
        return Response(content, media_type=media_type, headers=headers)
