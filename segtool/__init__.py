"""segtool: polygon annotations to a trained segmentation model and an honest score."""

__version__ = "0.1.0"
