"""The HTTP service: JSON API, DeepZoom and IIIF tiles, and the web interface (FastAPI)."""
