"""Evaluate: scores of predicted masks against references (report: `evaluate_dirs`), of a
run on a held-out split (model: `evaluate_model`), and the gallery of the worst images."""
