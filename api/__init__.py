"""The nero-study HTTP API. :func:`api.main.create_app` builds the app; importing connects to nothing."""

from api.main import create_app

__all__ = ["create_app"]
