"""Annotations at whole-slide scale: the model and the spatial stores (one interface, an
in-memory reference and the SQL store)."""
