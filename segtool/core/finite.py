"""Non-finite pixel values (NaN, +-inf) in float images and volumes are refused, not handled.

A NaN voxel makes every mean and standard deviation over it NaN: MONAI's ``NormalizeIntensity``
and nnU-Net's z-score both let it spread through the whole volume (a prediction of all
background, a training loss of NaN). nnU-Net's dataset check refuses such images and asks the
user to replace the values with something that makes sense for the image; segtool does the
same, naming the file and the first bad voxel, so no statistic is ever computed over them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def non_finite(array: np.ndarray) -> tuple[tuple[int, ...], float, int] | None:
    """(index of the first non-finite element, its value, how many there are), or None when
    every element is finite. Integer arrays are always finite."""
    import numpy as np

    if not np.issubdtype(array.dtype, np.floating):
        return None
    # The float64 sum of finite float32/float16 values cannot overflow: a cheap first look.
    if array.dtype != np.float64 and np.isfinite(np.sum(array, dtype=np.float64)):
        return None
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    index = np.unravel_index(int(np.argmax(bad)), array.shape)
    return tuple(int(i) for i in index), float(array[index]), int(np.count_nonzero(bad))


def non_finite_problem(array: np.ndarray, unit: str = "voxel") -> str | None:
    """One sentence naming the first non-finite value and where (`unit` ``voxel`` for volume
    indices, ``pixel`` for an image's ``(row, column)``, said as x, y), and the fix; or None."""
    found = non_finite(array)
    if found is None:
        return None
    index, value, count = found
    where = f"pixel (x={index[1]}, y={index[0]})" if unit == "pixel" else f"voxel {index}"
    return (
        f"{count:,} non-finite value(s), the first {value} at {where}; statistics over them "
        f"would be NaN: replace them with values that make sense for the image (e.g. 0 "
        f"outside the body) and save it again"
    )
