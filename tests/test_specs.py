"""The typed specs (parsed once, frozen), the run folder's one reader, and the budget's
arithmetic: hand-worked values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from segtool.core.classes import make_class_map
from segtool.core.errors import SegtoolError
from segtool.predict.spec import PredictSpec
from segtool.train.budget import Budget
from segtool.train.config import Given, TrainConfig
from segtool.train.runfolder import RunFolder


def test_the_config_parses_what_users_type_once():
    config = TrainConfig(size="256,448", decoder_channels="64,32,16", time_budget="1h30m")
    assert config.size == (256, 448) and config.decoder_channels == (64, 32, 16)
    assert config.time_budget == 5400.0
    assert TrainConfig(size=32).size == (32, 32) and TrainConfig(size="96x160").size == (96, 160)
    assert TrainConfig(split_file="s.json", cache="c").split_file == Path("s.json")
    # Typed values pass through unchanged; a copy with new values is parsed the same way.
    assert TrainConfig(size=(64, 96)).size == (64, 96)
    assert dataclasses.replace(config, size="32").size == (32, 32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("size", "wide", "--size 'wide'"),
        ("decoder_channels", "64,x", "--decoder-channels '64,x'"),
        ("time_budget", "soon", "--time-budget 'soon'"),
        ("time_budget", -5, "--time-budget -5"),
    ],
)
def test_a_bad_value_is_refused_when_the_config_is_built(option, value, says):
    with pytest.raises(SegtoolError, match=says):
        TrainConfig(**{option: value})


def test_the_config_round_trips_through_json_and_reads_old_text():
    config = TrainConfig(size="256,448", decoder_channels="64,32", split_file="s.json")
    doc = json.loads(json.dumps(config.to_json()))
    assert doc["size"] == [256, 448] and doc["split_file"] == "s.json"
    assert TrainConfig.from_json(doc) == config
    # Runs written before kept sizes and widths as text; an option since removed is left out.
    old = {**doc, "size": "256,448", "decoder_channels": "64,32", "gone": 1}
    assert TrainConfig.from_json(old) == config


def test_given_options_win_over_the_plan_and_the_rest_is_planned():
    given = Given.parse(epochs=3, size="32,64", lr=None)
    assert given.names == {"epochs", "size"} and given.get("size") == (32, 64)
    assert given.get("lr") is None  # None: not given
    config = given.over({"epochs": 50, "encoder": "tu-resnet10t", "size": (96, 96)})
    assert (config.epochs, config.size, config.encoder) == (3, (32, 64), "tu-resnet10t")


def test_the_training_share_is_what_val_and_test_leave():
    assert TrainConfig().train_share == pytest.approx(0.7)
    assert TrainConfig(val=0.5, test=0.3).train_share == pytest.approx(0.2)


def test_the_predict_spec_checks_its_values_and_takes_options_or_a_spec():
    assert PredictSpec.build(None, tta=True).tta
    spec = PredictSpec(tile=256)
    assert PredictSpec.build(spec) is spec
    with pytest.raises(SegtoolError, match="--threshold 1.5 must be a probability"):
        PredictSpec(threshold=1.5)
    with pytest.raises(SegtoolError, match="--batch-size 0"):
        PredictSpec(batch_size=0)
    with pytest.raises(TypeError, match="not both"):
        PredictSpec.build(spec, tta=True)
    with pytest.raises(TypeError, match="unknown predict options"):
        PredictSpec.build(None, tiles=3)


def test_the_run_folder_reads_and_writes_a_runs_records(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert run.options() == {} and run.config() is None and run.split() is None
    class_map = make_class_map(["_background_", "cat"])
    config = TrainConfig(size="32,64", regions=None)
    split = {"seed": 0, "train": ["a"], "val": ["b"], "test": []}
    facts = {"dataset": "/data", "dataset_files": "abc", "volumes": None}
    run.write_records(config, class_map, split, facts, {"choices": []})
    again = RunFolder(tmp_path / "run")  # a fresh reader sees what was written
    assert again.config() == config and again.options()["size"] == [32, 64]
    assert again.class_map().names == class_map.names and again.split() == split
    assert again.dataset() == Path("/data") and again.dataset_files() == "abc"
    assert again.plan() == {"choices": []} and again.volume_settings() is None


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "not a readable run config.json"),
        (b'{"options": 3}', 'no "options" object'),
        (b'{"options": {"size": "huge"}}', "--size 'huge'"),
    ],
)
def test_a_damaged_run_config_is_one_line_naming_the_file_and_the_fix(tmp_path, content, says):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(SegtoolError) as error:
        RunFolder(tmp_path).config()
    message = str(error.value)
    assert message.startswith(str(tmp_path / "config.json")) and says in message
    assert message.endswith("restore it, or train the run again (--overwrite)")
    assert "\n" not in message


def test_thresholds_must_fit_the_class_map(tmp_path):
    class_map = make_class_map(["_background_", "a", "b"], multilabel=True)
    run = RunFolder(tmp_path)
    run.write_thresholds({"thresholds": {"a": 0.3, "b": 0.6}})
    assert run.thresholds(class_map) == {"a": 0.3, "b": 0.6}
    run.write_thresholds({"thresholds": {"a": 0.3}})
    with pytest.raises(SegtoolError, match="do not match classes"):
        run.thresholds(class_map)
    run.write_thresholds(None)
    assert run.thresholds(class_map) is None


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_budget_refits_the_epochs_to_the_time_left():
    clock = FakeClock(1000.0)
    budget = Budget(100.0, started=956.0, clock=clock)
    # 56 s left, epochs of 10 s: 5.6 more epochs, less the 0.3-epoch margin -> round(5.3) = 5.
    assert budget.epochs_after(2, [10.0, 10.0], 30) == 7
    clock.now = 1051.0  # 5 s left: half an epoch -> round(0.2) = 0 more
    assert budget.epochs_after(2, [10.0, 10.0], 30) == 2
    clock.now = 1200.0  # over budget: never fewer than the epochs done
    assert budget.epochs_after(4, [10.0], 30) == 4
    assert Budget(None).epochs_after(2, [10.0], 30) == 30  # no budget: the epochs as set
