"""The image-search service (`python -m wsdhash.serve`): engine.py checks an exported
SavedModel against an index and searches; app.py assembles the FastAPI application
from routers/ (one `APIRouter` per route group, given the engine and the rest through
dependencies.py), the guard middleware (guard.py) and its metrics (metrics.py);
workers.py runs searches in a bounded pool; uploads.py checks uploads and makes
thumbnails; protocols.py caps request heads in uvicorn; static/index.html is the page."""
