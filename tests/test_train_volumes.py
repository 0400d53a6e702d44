"""segtool train on a volume folder: slices of train cases only, in_channels from the
sequences, validation Dice per case in 3-D, the loss falls, resume continues."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segtool.core.errors import SegtoolError
from segtool.split.assign import make_split, split_dataset
from segtool.train.checkpoint import load_checkpoint
from segtool.train.config import TrainConfig
from segtool.train.curves import read_metrics
from segtool.train.distributed import Dist
from segtool.train.loop import fit
from segtool.train.model import load_model
from segtool.train.volume_data import VolumeData, load_volume_data
from tests.volumes import make_msd

FAST = {
    "encoder": "resnet18",
    "workers": 0,
    "batch_size": 8,
    "augment": "none",
    "lr": 3e-3,
    "decoder_channels": "32,16,16,16,16",
}


@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    root = make_msd(tmp_path_factory.mktemp("mri"), n=8, test=1)
    split_dataset(root, val=0.25, test=0.15, seed=3, jobs=1)
    return root


@pytest.fixture(scope="module")
def trained(mri, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    result = fit(mri, run, epochs=6, **FAST)
    return run, result


def test_split_and_slices_keep_cases_apart(mri, tmp_path):
    split = json.loads((mri / "split.json").read_text())
    cases = [f"BRATS_{i:03d}" for i in range(8)]
    assert split == make_split(cases, 0.25, 0.15, 3)
    data = load_volume_data(mri, tmp_path, TrainConfig(**FAST), False, Dist())
    assert isinstance(data, VolumeData)
    assert [v.case for v in data.train] == split["train"]
    assert [v.case for v in data.val] == split["val"]
    train_cases = {v.case for v in data.train}
    val_cases = {v.case for v in data.val}
    test_cases = set(split["test"])
    assert not (train_cases & val_cases) and not (train_cases & test_cases)
    assert not (val_cases & test_cases) and val_cases and train_cases


def test_loss_falls_and_model_takes_every_sequence(trained):
    run, _ = trained
    rows = read_metrics(run / "metrics.csv")
    assert float(rows[-1]["train_loss"]) < 0.7 * float(rows[0]["train_loss"]), rows
    model = load_model(run / "model")
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 2
    config = json.loads((run / "config.json").read_text())
    volumes = config["volumes"]
    assert volumes["channels"] == ["FLAIR", "T1"] and volumes["axis"] == "axial"
    assert "non-zero" in volumes["standardization"]
    split = json.loads((run / "split.json").read_text())
    assert set(volumes["statistics"]) == set(split["train"]) | set(split["val"])
    assert (run / "cache").is_dir()


def test_validation_dice_is_the_mean_of_3d_case_dice(trained, mri, tmp_path):
    run, result = trained
    model = load_model(run / "model").eval()
    data = load_volume_data(
        mri, tmp_path, TrainConfig(**FAST, cache=str(run / "cache")), False, Dist()
    )
    per_case = []
    for volume in data.val:
        with torch.no_grad():
            logits = model(torch.from_numpy(np.asarray(volume.image, dtype=np.float32)))
        pred = logits.argmax(1).numpy()  # (S, H, W)
        ref = np.asarray(volume.label)
        scores = []
        for c in (1, 2):
            a, b = ref == c, pred == c
            total = a.sum() + b.sum()
            scores.append(2 * (a & b).sum() / total if total else np.nan)
        per_case.append(scores)
    per_class = np.nanmean(np.array(per_case, dtype=float), axis=0)
    expected = float(np.nanmean(per_class))
    rows = read_metrics(run / "metrics.csv")
    best = rows[result.best_epoch - 1]
    assert float(best["val_dice"]) == pytest.approx(expected, abs=1e-6)
    assert result.best_dice == pytest.approx(expected, abs=1e-6)


def test_resume_continues(trained, mri, tmp_path):
    import shutil

    run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = fit(mri, copy, resume=True, epochs=7, **FAST)
    assert result.epochs_done == 7
    assert load_checkpoint(copy / "checkpoints" / "last.pt")["epoch"] == 7
    assert [int(r["epoch"]) for r in read_metrics(copy / "metrics.csv")] == list(range(1, 8))


def test_bad_axis(mri, tmp_path):
    with pytest.raises(
        SegtoolError, match="--axis 'upward' is not one of axial, coronal, sagittal"
    ):
        fit(mri, tmp_path / "run", axis="upward", **FAST)


# --- predict and evaluate with the trained run ------------------------------------------------


def test_predict_writes_volumes_on_the_input_grid(trained, mri, tmp_path):
    import nibabel as nib

    from tests.cli import invoke

    run, _ = trained
    out = tmp_path / "pred"
    result = invoke(
        [
            "predict",
            str(run),
            str(mri / "imagesTs"),
            str(out),
            "--probabilities",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    source = nib.load(str(mri / "imagesTs" / "BRATS_500.nii.gz"))
    written = nib.load(str(out / "BRATS_500.nii.gz"))
    assert written.shape == source.shape[:3]
    np.testing.assert_array_equal(written.affine, source.affine)
    np.testing.assert_allclose(written.header.get_zooms(), source.header.get_zooms()[:3])
    labels = np.asanyarray(written.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    probs = nib.load(str(out / "BRATS_500_probabilities.nii.gz")).get_fdata()
    assert probs.shape == (*source.shape[:3], 3)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(probs.argmax(axis=-1), labels)


def test_predict_never_replaces_the_volume_folder(trained, mri):
    """OUT = the input volumes with --overwrite would delete them: refused, nothing touched."""

    from tests.cli import invoke

    run, _ = trained
    volumes = mri / "imagesTs"
    before = {p.name: p.read_bytes() for p in volumes.iterdir()}
    args = ["predict", str(run), str(volumes), str(volumes), "--overwrite", "--device", "cpu"]
    result = invoke(args)
    assert result.exit_code == 1
    assert "is the volume folder" in result.output and "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in volumes.iterdir()} == before


def test_evaluate_volume_folders_against_a_numpy_oracle(mri, tmp_path):
    import nibabel as nib

    from segtool.evaluate.report import evaluate_dirs

    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    expected = {}
    for i in range(3):
        case = f"BRATS_{i:03d}"
        img = nib.load(str(mri / "labelsTr" / f"{case}.nii.gz"))
        ref = np.asanyarray(img.dataobj)
        pred = ref.copy()
        if i == 1:
            pred[pred == 2] = 1  # the core predicted as edema
        if i == 2:
            pred = np.roll(pred, 2, axis=0)  # shifted by 2 voxels of 0.9 mm
        nib.save(nib.Nifti1Image(pred, img.affine, img.header), str(pred_dir / f"{case}.nii.gz"))
        expected[case] = [
            2 * ((ref == c) & (pred == c)).sum() / ((ref == c).sum() + (pred == c).sum())
            for c in (1, 2)
        ]
    result = evaluate_dirs(
        pred_dir, mri / "labelsTr", out=tmp_path / "report", jobs=1, only=set(expected)
    )
    summary = result.summary
    assert summary["n_images"] == 3 and summary["hd95_unit"] == "mm"
    for row in summary["per_image"]:
        assert [row["dice"]["edema"], row["dice"]["core"]] == pytest.approx(expected[row["image"]])
    mean_core = np.mean([expected[c][1] for c in expected])
    assert summary["per_class"]["core"]["image_mean_dice"] == pytest.approx(mean_core)
    hd = {row["image"]: row["hd95"]["edema"] for row in summary["per_image"]}
    assert hd["BRATS_000"] == 0.0
    assert hd["BRATS_002"] == pytest.approx(1.8)  # 2 voxels x 0.9 mm
    assert (tmp_path / "report" / "per_case.csv").is_file()


def test_evaluate_refuses_a_prediction_on_another_grid(mri, tmp_path):
    import nibabel as nib

    from tests.cli import invoke

    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    img = nib.load(str(mri / "labelsTr" / "BRATS_000.nii.gz"))
    moved = img.affine.copy()
    moved[0, 3] += 5
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), moved), str(pred_dir / "BRATS_000.nii.gz"))
    result = invoke(
        ["evaluate", str(pred_dir), str(mri / "labelsTr"), "--allow-missing", "-j", "1"]
    )
    assert result.exit_code == 1
    assert "BRATS_000.nii.gz: not on its reference's grid" in result.output


def test_evaluate_model_on_the_test_cases(trained, mri):
    from segtool.evaluate.model import evaluate_model

    run, _ = trained
    result = evaluate_model(run, mri, split="test", device="cpu", jobs=1)
    test_cases = json.loads((run / "split.json").read_text())["test"]
    assert [row["image"] for row in result.summary["per_image"]] == sorted(test_cases)
    assert result.summary["volumes"] is True
    assert sorted(p.name for p in (run / "evaluation" / "test" / "predictions").iterdir()) == [
        f"{c}.nii.gz" for c in sorted(test_cases)
    ]


def test_evaluate_regions_on_volumes_against_a_numpy_oracle(mri, tmp_path):
    import nibabel as nib

    from segtool.evaluate.report import evaluate_dirs

    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    expected = {}
    for i in range(2):
        case = f"BRATS_{i:03d}"
        img = nib.load(str(mri / "labelsTr" / f"{case}.nii.gz"))
        ref = np.asanyarray(img.dataobj)
        pred = np.where(ref == 1, 2, ref).astype(np.uint8) if i else np.roll(ref, 1, axis=1)
        nib.save(nib.Nifti1Image(pred, img.affine, img.header), str(pred_dir / f"{case}.nii.gz"))
        whole = [ref > 0, pred > 0]
        core = [ref == 2, pred == 2]
        expected[case] = [2 * (a & b).sum() / (a.sum() + b.sum()) for a, b in (whole, core)]
    result = evaluate_dirs(
        pred_dir, mri / "labelsTr", jobs=1, only=set(expected), regions="whole=1,2;core=2"
    )
    summary = result.summary
    assert summary["multilabel"] is True and list(summary["per_class"]) == ["whole", "core"]
    for row in summary["per_image"]:
        assert [row["dice"]["whole"], row["dice"]["core"]] == pytest.approx(expected[row["image"]])
    assert summary["per_image"][0]["hd95"]["whole"] == pytest.approx(1.1)  # 1 voxel of 1.1 mm


def test_a_regions_run_on_volumes_predicts_and_scores_regions(mri, tmp_path):
    from segtool.evaluate.model import evaluate_model

    run = tmp_path / "run"
    fit(mri, run, epochs=1, regions="whole=1,2;core=2", **FAST)
    result = evaluate_model(run, mri, split="test", device="cpu", jobs=1, with_hd95=False)
    assert list(result.summary["per_class"]) == ["whole", "core"]
    assert result.summary["multilabel"] is True


def test_volume_gallery_shows_the_worst_cases_most_wrong_slice(mri, tmp_path):
    import nibabel as nib
    from PIL import Image

    from segtool.evaluate.nifti_reader import most_wrong_slice
    from segtool.evaluate.report import evaluate_dirs

    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    wrong_slice = {}
    for i in range(3):
        case = f"BRATS_{i:03d}"
        img = nib.load(str(mri / "labelsTr" / f"{case}.nii.gz"))
        pred = np.asanyarray(img.dataobj).copy()
        if i:  # cases 1 and 2 get a false-positive block in slice 2 * i
            pred[2:12, 2:12, 2 * i] = 1
            wrong_slice[case] = 2 * i
        nib.save(nib.Nifti1Image(pred, img.affine, img.header), str(pred_dir / f"{case}.nii.gz"))
    result = evaluate_dirs(
        pred_dir,
        mri / "labelsTr",
        out=tmp_path / "report",
        jobs=1,
        only={f"BRATS_{i:03d}" for i in range(3)},
        gallery=2,
    )
    names = sorted(p.stem for p in result.gallery)
    assert names == ["BRATS_001", "BRATS_002"]  # the two cases with errors, not the perfect one
    html_text = (tmp_path / "report" / "gallery" / "index.html").read_text()
    for case, index in wrong_slice.items():
        ref = np.asanyarray(nib.load(str(mri / "labelsTr" / f"{case}.nii.gz")).dataobj)
        pred = np.asanyarray(nib.load(str(pred_dir / f"{case}.nii.gz")).dataobj)
        assert most_wrong_slice(ref, pred, 2, 255) == index
        assert f"<td>{case}</td>" in html_text and f"<td>{index}</td>" in html_text
        with Image.open(tmp_path / "report" / "gallery" / f"{case}.png") as sheet:
            assert sheet.width > 3 * 32  # image, reference, prediction, error map


def test_volume_reports_and_predictions_are_replaced_only_with_overwrite(trained, mri, tmp_path):
    """The volume paths use the one output mechanism: an existing summary.json or a
    predictions/ folder holding the user's files is kept unless --overwrite is given."""
    from segtool.evaluate.model import evaluate_model
    from segtool.evaluate.report import evaluate_dirs

    run, _ = trained
    out = tmp_path / "ev"
    mine = out / "predictions" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my own file")
    with pytest.raises(SegtoolError, match=r"predictions: already exists; pass --overwrite"):
        evaluate_model(run, mri, split="test", out=out, device="cpu", jobs=1)
    assert mine.read_text() == "my own file"
    assert sorted(p.name for p in out.iterdir()) == ["predictions"]

    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.json").write_text("{}")
    labels = mri / "labelsTr"
    with pytest.raises(SegtoolError, match=r"summary.json: already exists; pass --overwrite"):
        evaluate_dirs(labels, labels, out=report, jobs=1, only={"BRATS_000"})
    assert (report / "summary.json").read_text() == "{}"
    evaluate_dirs(labels, labels, out=report, jobs=1, only={"BRATS_000"}, overwrite=True)
    assert json.loads((report / "summary.json").read_text())["n_images"] == 1


def test_split_all_needs_the_runs_split(trained, mri, tmp_path):
    """Without split.json the training cases are unknown: --split all is refused, not scored."""
    import shutil

    from segtool.evaluate.model import evaluate_model

    run, _ = trained
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("evaluation", "cache"))
    (bare / "split.json").unlink()
    with pytest.raises(SegtoolError, match=r"no split.json.*--split all would score them"):
        evaluate_model(bare, mri, split="all", out=tmp_path / "ev", device="cpu", jobs=1)
    assert not (tmp_path / "ev").exists()
