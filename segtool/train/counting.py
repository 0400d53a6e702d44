"""Validation's TP/FP/FN counted on the device, read once per validation pass.

The counts are the metrics module's (`segtool.core.metrics.count` and `count_multilabel`),
computed with torch where the logits are, so validation never waits for the device batch by
batch: exclusive classes through the same K x (K + 1) confusion matrix that `count` reduces
(`core.metrics.counts_from_confusion` turns it into counts on the host, for both), multi-label
masks class by class as `count_multilabel` does. `tests/test_counting.py` holds both to the
numpy functions digit for digit on random masks with ignore pixels on either side.
"""

from __future__ import annotations

import numpy as np
import torch

from segtool.core.metrics import Counts, counts_from_confusion
from segtool.core.multilabel import ignore_value


class DeviceCounter:
    """Per-item count rows of a batch on the device, and their reading as `Counts`.

    Args:
        num_classes: K.
        ignore_index: the ignore value (exclusive classes); multi-label masks use their bit.
        multilabel: masks are bit sets, each class its own binary problem.
    """

    def __init__(self, num_classes: int, ignore_index: int, multilabel: bool) -> None:
        self.k, self.ignore, self.multilabel = num_classes, ignore_index, multilabel
        #: the length of one item's row
        self.width = 3 * num_classes + 1 if multilabel else num_classes * (num_classes + 1)

    def rows(self, reference: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """``(N, width)`` int64 counts of each item of a batch, on the batch's device.

        Args:
            reference: ``(N, ...)`` integer masks (class ids, or bit values).
            prediction: integer masks of the same shape.
        """
        n = reference.shape[0]
        ref, pred = reference.reshape(n, -1).long(), prediction.reshape(n, -1).long()
        if self.multilabel:
            return self._bit_rows(ref, pred)
        k, width = self.k, self.width
        pred = torch.where(pred == self.ignore, k, pred)  # column K: "predicted the ignore value"
        codes = torch.where(
            ref == self.ignore, width, ref * (k + 1) + pred
        )  # bin `width`: left out
        codes = codes + torch.arange(n, device=codes.device)[:, None] * (width + 1)
        # A fixed-size sum, not bincount: bincount reads the largest code back to size its
        # output, a wait for the device on every batch.
        flat = torch.zeros(n * (width + 1), dtype=torch.int64, device=codes.device)
        flat.index_add_(0, codes.reshape(-1), torch.ones_like(codes).reshape(-1))
        return flat.view(n, width + 1)[:, :width]

    def _bit_rows(self, ref: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """`count_multilabel`'s rule: pixels left out where the reference has the ignore bit; a
        predicted ignore bit predicts no class (counted as abstained where scored)."""
        c = self.k - 1
        ignore = ignore_value(c)
        ignore = ignore - 2**64 if ignore >= 2**63 else ignore  # the top bit of an int64
        counted = (ref & ignore) == 0
        predicted_ignore = (pred & ignore) != 0
        abstained = (predicted_ignore & counted).sum(dim=1)
        pred = torch.where(predicted_ignore, 0, pred)
        bits = torch.ones(c, dtype=torch.int64, device=ref.device) << torch.arange(
            c, device=ref.device
        )
        ref_c = ((ref[:, None, :] & bits[None, :, None]) != 0) & counted[:, None, :]
        pred_c = ((pred[:, None, :] & bits[None, :, None]) != 0) & counted[:, None, :]
        tp = (ref_c & pred_c).sum(dim=2)
        zero = torch.zeros_like(tp[:, :1])  # background is not a class of a bit set
        parts = (tp, pred_c.sum(dim=2) - tp, ref_c.sum(dim=2) - tp)
        return torch.cat([*(torch.cat([zero, p], dim=1) for p in parts), abstained[:, None]], 1)

    def counts(self, row: np.ndarray) -> Counts:
        """One row (or a sum of rows), read on the host, as `Counts`."""
        row = np.asarray(row).astype(np.int64)
        if not self.multilabel:
            return counts_from_confusion(row.reshape(self.k, self.k + 1))
        k = self.k
        tp, fp, fn = (row[i * k : (i + 1) * k] for i in range(3))
        return Counts(tp, fp, fn, abstained=int(row[3 * k]))
