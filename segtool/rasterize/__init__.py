"""Rasterize: shapes drawn onto label arrays (draw) and a folder of annotations made into a
dataset folder (folder: `rasterize_dir`)."""
