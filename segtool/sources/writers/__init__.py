"""Annotation writers: predicted masks -> files the annotation tools open (one module a format)."""
