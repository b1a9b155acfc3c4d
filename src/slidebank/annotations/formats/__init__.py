"""Annotation file formats: one module per format, each a reader and a writer."""
