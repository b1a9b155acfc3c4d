"""Use cases: each opens what it needs, owns its transactions, and returns plain results."""
