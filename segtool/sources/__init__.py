"""Annotation readers: each turns one source format into `Shape` records (sources.shapes)."""
