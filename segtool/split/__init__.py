"""Split: a dataset's stems assigned to train, val and test (assign: `split_dataset`)."""
