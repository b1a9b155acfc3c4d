"""Realistic sample slides for the demo, tests and benchmarks, made from real tissue."""

from slidebank.samples.svs import SvsSpec, write_svs
from slidebank.samples.tissue import Tissue, demo_tissue, tissue_from_slide

__all__ = ["SvsSpec", "Tissue", "demo_tissue", "tissue_from_slide", "write_svs"]
