"""Evaluate: one pipeline for every kind of mask (PNG labels, bit sets, NIfTI volumes): a
reader per kind (`readers`, `nifti_reader`, chosen by `kinds`), one counting path (`score`),
the report (`report.evaluate_dirs`), a run on a held-out split (`model.evaluate_model`), the
gallery of the worst items; the options travel as one `spec.EvalSpec`."""
