"""Train: config, data, transforms, losses, model, checkpoint, run folder and the loop (`fit`).

Importing this package loads nothing heavy; torch comes with the modules that need it.
"""
