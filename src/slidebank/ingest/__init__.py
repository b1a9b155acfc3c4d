"""Ingest: scanner files in, one slide at a time, through a pipeline of small steps.

discovery (find and group files) → identify (open by content) → validate (read tiles) →
store (hash and copy in one pass) → duplicate check → describe (metadata) → thumbnail →
commit blob → register (one catalogue transaction).
"""
