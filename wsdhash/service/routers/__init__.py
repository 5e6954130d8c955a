"""The service's routes, one `APIRouter` per group (app.create_app includes them in
this order): search.py (POST /search), items.py (database thumbnails and images),
status.py (/healthz, /info, /metrics), page.py (the web page at /). Handlers are named
module-level functions given what they need as dependencies (dependencies.py)."""
