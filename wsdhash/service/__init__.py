"""The image-search service (`python -m wsdhash.serve`): engine.py checks an exported
SavedModel against an index and searches; app.py is the FastAPI application;
uploads.py checks uploads and makes thumbnails; static/index.html is the page."""
