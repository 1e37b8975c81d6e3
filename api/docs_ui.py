"""``/docs``: Swagger UI at one pinned version, loaded with Subresource Integrity and a page-specific CSP.

The browser fetches Swagger UI's two files from jsDelivr, which serves npm packages' files byte for byte, at
the exact version :data:`SWAGGER_UI_VERSION` of the npm package ``swagger-ui-dist``. Each ``<script>``/``<link>``
carries the SHA-384 of that file (``integrity=``), so a CDN or a network that changes one byte gets the file
refused by the browser, and nothing of it runs. The page's Content-Security-Policy allows scripts only from
those two URLs plus the one inline initialiser (by its hash), connections only to this origin, and no frames,
forms elsewhere or plugins.

Where the hashes come from: ``npm pack swagger-ui-dist@5.35.0`` (its tarball's SHA-512 equals the npm
registry's ``dist.integrity`` for that version,
``sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==``), then
``openssl dgst -sha384 -binary package/FILE | base64`` for each file. Changing the version means computing both
hashes again the same way. ReDoc (FastAPI's ``/redoc``) is not served: it loads fonts and code from further
hosts without integrity, and one reference page is enough.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json

from fastapi.responses import HTMLResponse

SWAGGER_UI_VERSION = "5.35.0"
_CDN = f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}"
#: (URL, SHA-384 subresource-integrity value) of the two files the page loads.
SWAGGER_JS = (f"{_CDN}/swagger-ui-bundle.js", "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9")
SWAGGER_CSS = (f"{_CDN}/swagger-ui.css", "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I")


def _initialiser(openapi_url: str) -> str:
    config = {
        "url": openapi_url,
        "dom_id": "#swagger-ui",
        "deepLinking": True,
        "validatorUrl": None,  # Swagger UI would otherwise send the schema to an outside validator
    }
    # json.dumps of plain strings, with "<" escaped so the text cannot close the <script> element.
    return "const ui = SwaggerUIBundle(" + json.dumps(config).replace("<", "\\u003c") + ");"


def docs_csp(openapi_url: str) -> str:
    """The Content-Security-Policy of the ``/docs`` page for ``openapi_url``."""
    digest = base64.b64encode(hashlib.sha256(_initialiser(openapi_url).encode()).digest()).decode()
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {SWAGGER_JS[0]} 'sha256-{digest}'",
            # Swagger UI sets style attributes from its code; its stylesheet is pinned by hash like its code.
            f"style-src {SWAGGER_CSS[0]} 'unsafe-inline'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        )
    )


def swagger_ui_response(*, title: str, openapi_url: str) -> HTMLResponse:
    """The ``/docs`` page: Swagger UI with integrity-checked files and its own CSP header."""
    js_url, js_integrity = SWAGGER_JS
    css_url, css_integrity = SWAGGER_CSS
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)} - API reference</title>
<link rel="stylesheet" href="{css_url}" integrity="{css_integrity}" crossorigin="anonymous">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{js_url}" integrity="{js_integrity}" crossorigin="anonymous"></script>
<script>{_initialiser(openapi_url)}</script>
</body>
</html>
"""
    return HTMLResponse(page, headers={"Content-Security-Policy": docs_csp(openapi_url)})
