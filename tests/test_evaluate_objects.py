"""Object-level scores and bootstrap intervals in evaluate's summary: values by hand and from
the core functions, intervals from the core bootstrap on the same tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segtool.core.bootstrap import draws, mean_interval, ratio_interval
from segtool.core.errors import SegtoolError
from segtool.core.lesions import lesion_wise
from segtool.core.metrics import count
from segtool.core.objects import ObjectOptions, class_masks
from segtool.evaluate.intervals import add_objects_and_intervals
from segtool.evaluate.objects import score_objects
from segtool.evaluate.report import evaluate_dirs
from segtool.evaluate.score import ImageScore
from segtool.evaluate.spec import EvalSpec
from segtool.evaluate.summary import summarize

NAMES = ["background", "a", "b"]


def scored(stem: str, ref, pred, spec: ObjectOptions, instances=None, nsd: float | None = 1.0):
    counts = count(ref, pred, 3, 255)
    masks = (
        (c, r, p) for c, (r, p) in zip((1, 2), class_masks(ref, pred, (1, 2), 255), strict=True)
    )
    objects = score_objects(masks, 3, None, spec, nsd, instances)
    return ImageScore(stem, counts, np.full(3, np.nan), objects=objects)


def image_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = np.zeros((32, 32), np.uint8)
    pred = np.zeros_like(ref)
    for _ in range(int(rng.integers(1, 5))):
        y, x = rng.integers(0, 26, 2)
        c = int(rng.integers(1, 3))
        ref[y : y + 5, x : x + 5] = c
        if rng.random() < 0.7:  # found, a little off
            dy, dx = rng.integers(-1, 2, 2)
            pred[max(y + dy, 0) : y + dy + 5, max(x + dx, 0) : x + dx + 5] = c
    if rng.random() < 0.5:
        pred[30:32, 0:2] = 1  # a false positive
    ref[0, :] = 255  # an ignored row
    return ref, pred


def test_one_image_by_hand():
    ref = np.zeros((20, 20), np.uint8)
    ref[2:6, 2:6] = 1  # found exactly
    ref[14:18, 14:18] = 1  # missed (far enough not to be joined by the dilation)
    ref[2:6, 12:16] = 2
    pred = np.zeros_like(ref)
    pred[2:6, 2:6] = 1
    pred[2:6, 12:16] = 2
    pred[18:20, 0:2] = 2  # a false positive of b, far away
    instances = np.zeros_like(ref)
    instances[2:6, 2:6], instances[14:18, 14:18], instances[2:6, 12:16] = 1, 2, 3
    s = scored("x", ref, pred, ObjectOptions(min_size=0), instances)
    o = s.objects
    assert o.lesion[1, 0] == 0.5 and o.lesion[2, 0] == 0.5  # a: 1 of 2; b: 1 + a false positive
    assert o.lesion[1, 2:].tolist() == [2, 1, 0, 0] and o.lesion[2, 2:].tolist() == [1, 0, 1, 0]
    assert o.detected[1].tolist() == [1, 0, 1] and o.detected[2].tolist() == [1, 1, 0]
    # boundary points within 1 px: a: 12 predicted + 12 of 24 reference; b: 12 of 16 + 12
    assert o.nsd[1] == pytest.approx(24 / 36) and o.nsd[2] == pytest.approx(24 / 28)
    assert o.panoptic[1].tolist() == [1, 0, 1, 1.0] and o.panoptic[2].tolist() == [1, 1, 0, 1.0]
    assert math.isnan(o.lesion[0, 0]) and o.detected[0].tolist() == [0, 0, 0]


def test_summary_values_and_intervals_come_from_the_same_tables():
    spec = ObjectOptions(min_size=0)
    scores = [scored(f"i{n}", *image_pair(n), spec) for n in range(12)]
    summary = summarize(scores, NAMES, 255)
    add_objects_and_intervals(summary, scores, NAMES, resamples=300)
    stems = [s.stem for s in scores]
    for c, name in ((1, "a"), (2, "b")):
        entry = summary["per_class"][name]
        lesion = np.array([s.objects.lesion[c, 0] for s in scores])
        assert entry["lesion_dice"] == pytest.approx(np.nanmean(lesion))
        assert entry["ci95"]["lesion_dice"] == pytest.approx(
            mean_interval(lesion, resamples=300, keys=stems).tolist()
        )
        tp, fp, fn = np.array([s.objects.detected[c] for s in scores]).T
        assert entry["detection_f1"] == pytest.approx(
            2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
        )
        assert (entry["objects_tp"], entry["objects_fp"], entry["objects_fn"]) == (
            tp.sum(),
            fp.sum(),
            fn.sum(),
        )
        # the pooled Dice's interval is the ratio bootstrap of the images' counts
        counts = np.array([[s.counts.tp[c], s.counts.fp[c], s.counts.fn[c]] for s in scores])
        num, den = 2 * counts[:, 0], 2 * counts[:, 0] + counts[:, 1] + counts[:, 2]
        assert entry["ci95"]["dice"] == pytest.approx(
            ratio_interval(num, den, resamples=300, keys=stems).tolist()
        )
        for metric, ends in entry["ci95"].items():
            assert (ends is None) == (entry[metric] is None), metric
            if ends is not None:
                assert ends[0] - 1e-12 <= entry[metric] <= ends[1] + 1e-12, metric
    assert summary["mean"]["lesion_dice"] == pytest.approx(
        np.mean([summary["per_class"][n]["lesion_dice"] for n in ("a", "b")])
    )
    # the foreground mean's interval: per draw, the mean over classes of each class's Dice
    counts = np.array([[s.counts.tp, s.counts.fp, s.counts.fn] for s in scores], dtype=float)
    num, den = 2 * counts[:, 0, 1:], (2 * counts[:, 0] + counts[:, 1] + counts[:, 2])[:, 1:]
    per_draw = draws(num, den, resamples=300, keys=stems).mean(axis=1)
    assert summary["mean_ci95"]["dice"] == pytest.approx(np.percentile(per_draw, [2.5, 97.5]))
    for key, ends in summary["mean_ci95"].items():
        assert (ends is None) == (summary["mean"][key] is None), key
        if ends is not None:
            assert ends[0] - 1e-12 <= summary["mean"][key] <= ends[1] + 1e-12, key
    assert set(summary["mean_all_ci95"]) == set(summary["mean_all"])
    assert summary["bootstrap"] == {
        "method": "percentile",
        "level": 0.95,
        "resamples": 300,
        "seed": 0,
        "over": "images",
    }
    assert set(summary["per_image"][0]) >= {"lesion_dice", "lesion_hd95", "nsd"}


def test_intervals_do_not_depend_on_image_order():
    spec = ObjectOptions(min_size=0)
    scores = [scored(f"i{n}", *image_pair(n), spec) for n in range(9)]
    first = summarize(scores, NAMES, 255)
    add_objects_and_intervals(first, scores, NAMES, resamples=200)
    again = summarize(scores[::-1], NAMES, 255)
    add_objects_and_intervals(again, scores[::-1], NAMES, resamples=200)
    assert first["mean_ci95"] == again["mean_ci95"]
    assert first["per_class"]["a"]["ci95"] == again["per_class"]["a"]["ci95"]


def test_without_object_scores_only_intervals_are_added():
    scores = [ImageScore(f"i{n}", count(*image_pair(n), 3, 255), None) for n in range(5)]
    summary = summarize(scores, NAMES, 255)
    add_objects_and_intervals(summary, scores, NAMES, resamples=100)
    assert "lesion_dice" not in summary["per_class"]["a"]
    assert set(summary["per_class"]["a"]["ci95"]) == {
        "dice",
        "iou",
        "precision",
        "recall",
        "image_mean_dice",
    }


# --- through evaluate_dirs: images with instance masks, the gallery, volumes -----------------


def _write_dataset(root: Path, n: int = 5) -> tuple[Path, Path]:
    """masks/, instances/ (as rasterize --instances) and predictions that miss some objects."""
    rng = np.random.default_rng(4)
    for folder in ("ds/masks", "ds/instances", "pred"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        ref = np.zeros((48, 48), np.uint8)
        inst, pred = np.zeros_like(ref), np.zeros_like(ref)
        for j in range(3):
            y, x = 4 + 14 * j, int(rng.integers(2, 40))
            ref[y : y + 6, x : x + 6] = 1
            inst[y : y + 6, x : x + 6] = j + 1
            if j < i % 3 + 1:  # image i finds i % 3 + 1 objects
                pred[y + 1 : y + 7, x : x + 6] = 1
        for folder, mask in (("ds/masks", ref), ("ds/instances", inst), ("pred", pred)):
            Image.fromarray(mask).save(root / folder / f"m{i}.png")
    return root / "pred", root / "ds" / "masks"


def test_evaluate_writes_object_scores_and_intervals(tmp_path):
    pred, gt = _write_dataset(tmp_path)
    result = evaluate_dirs(pred, gt, jobs=1, nsd_tolerance=1.0, lesion_min_size=0)
    s = result.summary
    a = s["per_class"]["1"]
    # 15 objects, found 1 + 2 + 3 + 1 + 2 = 9, each with IoU 30/42 (one row off)
    assert (a["objects_tp"], a["objects_fp"], a["objects_fn"]) == (9, 0, 6)
    assert a["detection_recall"] == pytest.approx(9 / 15)
    assert a["pq"] == pytest.approx(9 * (30 / 42) / (9 + 6 / 2))
    assert (a["lesions"], a["lesions_missed"]) == (15, 6)
    assert s["objects"] == {
        "connectivity": "full",
        "lesion_dilation": 3,
        "lesion_min_size": 0,
        "iou_threshold": 0.5,
        "nsd_tolerance": 1.0,
        "unit": "px",
    }
    assert s["bootstrap"]["over"] == "images" and s["bootstrap"]["seed"] == 0
    header = result.per_image_path.read_text().splitlines()[0].split(",")
    assert header == [
        "image",
        "dice_1",
        "iou_1",
        "hd95_1",
        "lesion_dice_1",
        "lesion_hd95_1",
        "nsd_1",
        "pq_1",
    ]
    again = evaluate_dirs(pred, gt, jobs=1, nsd_tolerance=1.0, lesion_min_size=0, overwrite=True)
    assert again.summary["mean_ci95"] == s["mean_ci95"]  # seeded
    other = evaluate_dirs(pred, gt, jobs=1, seed=1, overwrite=True).summary
    assert other["mean_ci95"] != s["mean_ci95"]  # another seed, other draws


def test_no_objects_skips_them_and_keeps_the_intervals(tmp_path):
    pred, gt = _write_dataset(tmp_path)
    s = evaluate_dirs(pred, gt, jobs=1, objects=False).summary
    assert "lesion_dice" not in s["per_class"]["1"] and "objects" not in s
    assert s["per_class"]["1"]["ci95"]["dice"] is not None
    with pytest.raises(SegtoolError, match="drop --no-objects"):
        evaluate_dirs(pred, gt, jobs=1, objects=False, gallery=2, gallery_by="lesion_dice")


def test_gallery_ranks_by_lesion_dice(tmp_path):
    pred, gt = _write_dataset(tmp_path)
    result = evaluate_dirs(pred, gt, jobs=1, gallery=2, gallery_by="lesion_dice", lesion_min_size=0)
    rows = {r["image"]: r["lesion_dice"]["1"] for r in result.summary["per_image"]}
    worst = sorted(rows, key=lambda stem: (rows[stem], stem))[:2]
    assert [p.stem for p in result.gallery] == worst
    assert "lowest mean lesion-wise Dice" in (result.gallery[0].parent / "index.html").read_text()


def test_volumes_are_scored_in_mm_over_cases(tmp_path):
    from segtool.core.classes import make_class_map
    from tests.volumes import SPACING, affine, save

    for i in range(3):
        ref = np.zeros((16, 16, 6), np.uint8)
        ref[1:4, 1:4, 1:3] = 1
        ref[11:14, 11:14, 3:5] = 1  # a second lesion (beyond the dilation), missed in case 0
        pred = ref.copy()
        if i == 0:
            pred[11:14, 11:14, 3:5] = 0
        save(tmp_path / "gt" / f"c{i}.nii.gz", ref, affine())
        save(tmp_path / "pred" / f"c{i}.nii.gz", pred, affine())
    make_class_map(["background", "lesion"]).save(tmp_path / "classes.json")
    result = evaluate_dirs(
        tmp_path / "pred", tmp_path / "gt", classes=tmp_path / "classes.json", lesion_min_size=10
    )
    s = result.summary
    a = s["per_class"]["lesion"]
    assert (a["lesions"], a["lesions_missed"]) == (6, 1)  # 18 voxels of 0.9 x 1.1 x 3 mm each
    worst = float(np.sqrt(np.sum((np.array([16, 16, 6]) * np.array(SPACING)) ** 2)))
    assert a["lesion_hd95"] == pytest.approx((worst / 2 + 0 + 0) / 3)
    assert s["bootstrap"]["over"] == "cases" and s["objects"]["unit"] == "mm"
    assert "lesion_dice_lesion" in result.per_image_path.read_text().splitlines()[0]
    default = evaluate_dirs(
        tmp_path / "pred", tmp_path / "gt", classes=tmp_path / "classes.json", out=tmp_path / "d"
    ).summary  # volumes keep BraTS's 50 mm³: each lesion is 18 x 2.97 = 53.5 mm³, scored
    assert default["objects"]["lesion_min_size"] == 50
    assert default["per_class"]["lesion"]["lesions"] == 6


def test_bit_masks_leave_out_only_the_reference_ignore_bit():
    from segtool.evaluate.objects import bit_masks

    # 2 classes (bits 1, 2), ignore bit 128
    ref = np.array([[1, 3, 128, 2, 0]], np.uint8)
    pred = np.array([[128, 1, 3, 2, 2]], np.uint8)
    (r1, p1), (r2, p2) = bit_masks(ref, pred, [1, 2], 3)
    assert r1.tolist() == [[True, True, False, False, False]]
    assert p1.tolist() == [[False, True, False, False, False]]  # 128 predicts nothing
    assert r2.tolist() == [[False, True, False, True, False]]
    assert p2.tolist() == [[False, False, False, True, True]]  # under the reference's 128: out


def test_without_hd95_no_lesion_distance_is_computed(tmp_path, monkeypatch):
    import segtool.core.lesions as lesions

    def refuse(*args, **kwargs):
        raise AssertionError("a lesion distance was computed")

    pred, gt = _write_dataset(tmp_path)
    monkeypatch.setattr(lesions, "hd95", refuse)
    result = evaluate_dirs(pred, gt, jobs=1, with_hd95=False)
    entry = result.summary["per_class"]["1"]
    assert entry["lesion_dice"] is not None and entry.get("lesion_hd95") is None
    assert "lesion_hd95" not in result.summary["mean"]
    with pytest.raises(AssertionError, match="a lesion distance was computed"):
        evaluate_dirs(pred, gt, jobs=1, out=tmp_path / "with")  # the patch does bite


def test_images_count_every_lesion_and_volumes_keep_bratss_minimum(tmp_path):
    from segtool.evaluate.kinds import reader_for
    from segtool.evaluate.nifti_reader import NiftiLabels
    from segtool.evaluate.readers import PngLabels

    assert PngLabels.lesion_min_size == 0 and NiftiLabels.lesion_min_size == 50
    pred, gt = _write_dataset(tmp_path)
    spec = EvalSpec()
    assert spec.object_setup(reader_for(gt, spec).lesion_min_size).options.min_size == 0
    assert EvalSpec(lesion_min_size=9).object_setup(50.0).options.min_size == 9
    result = evaluate_dirs(pred, gt, jobs=1)
    assert result.summary["objects"]["lesion_min_size"] == 0


def test_missed_lesions_on_a_larger_volume_score_the_volumes_diagonal():
    """The worst distance (core/lesions.py): the whole array's diagonal in the spacing's unit,
    even though each class is scored inside its bounding box."""
    shape, spacing = (40, 30, 20), (1.0, 2.0, 3.0)
    ref = np.zeros(shape, dtype=bool)
    ref[5:9, 5:9, 5:9] = True  # 64 voxels x 6 mm³ = 384 mm³: scored (over 50)
    ref[30:34, 20:24, 12:16] = True  # a second lesion, also missed
    pred = np.zeros(shape, dtype=bool)
    worst = math.sqrt(40**2 + 60**2 + 60**2)  # sqrt(8800) = 93.81 mm
    direct = lesion_wise(ref, pred, spacing, ObjectOptions())
    assert (direct.lesions, direct.missed) == (2, 2)
    assert direct.dice == 0 and direct.hd95 == pytest.approx(worst)
    # through evaluate's per-class path, scored inside the box: still the volume's diagonal
    pred[36:38, 2:4, 2:4] = True  # a false positive far away: the worst distance too
    scores = score_objects([(1, ref, pred)], 2, spacing, ObjectOptions())
    lesion_dice, lesion_hd95, lesions, missed, false_positives, _ = scores.lesion[1]
    assert (lesions, missed, false_positives) == (2, 2, 1)
    assert lesion_hd95 == pytest.approx(worst) and lesion_dice == 0


def test_the_object_tables_title_names_the_minimum_lesion_size_only_when_there_is_one(
    tmp_path, capsys
):
    from segtool.cli.evaluate_tables import print_objects

    pred, gt = _write_dataset(tmp_path)
    print_objects(evaluate_dirs(pred, gt, jobs=1).summary)
    title = capsys.readouterr().out.splitlines()[0]
    assert "every lesion;" in title and "over" not in title
    print_objects(evaluate_dirs(pred, gt, jobs=1, lesion_min_size=9, overwrite=True).summary)
    assert "lesions over 9 px;" in capsys.readouterr().out.splitlines()[0]
