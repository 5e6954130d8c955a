"""GET /: the search page, static/index.html as it is (no build step)."""

import functools
import importlib.resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@functools.cache
def read_page() -> str:
    """The page's HTML, read once (app.create_app reads it at start: a missing page
    fails there, not at the first visit)."""
    page = importlib.resources.files("wsdhash.service") / "static" / "index.html"
    return page.read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse)
def index_page():
    return HTMLResponse(read_page())
