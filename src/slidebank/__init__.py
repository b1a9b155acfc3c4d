"""Slidebank: a repository of annotated pathology whole-slide images with AI alongside."""

__version__ = "0.1.0"
