"""Predict: a trained model and a folder of images -> label masks (folder: `predict_dir`)."""
