"""export's defaults, free of torch (the command line shows them)."""

#: Images the parity check predicts by default (the first of the val split, by name).
CHECK_COUNT = 16
#: The parity check's default tolerances: the largest |logit difference| anywhere, and the
#: share of pixels whose label may differ (a pixel whose classes are tied to within the logit
#: tolerance can flip).
LOGIT_TOLERANCE = 1e-3
LABEL_TOLERANCE = 1e-4
