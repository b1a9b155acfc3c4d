"""Pixels for viewers and programs: DeepZoom and IIIF geometry, rendering from stored tiles,
and encoding. Knows slides (the reader interface), never the catalogue or the web."""
