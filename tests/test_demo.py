"""Specifications of `genrec demo`'s parts that run without training: its schedule and its clock."""

from __future__ import annotations

import json
import time

from app.demo import StageClock, demo_schedule
from genrec.config import RunConfig


def test_the_demo_schedule_is_shorter_than_the_defaults_and_says_so():
    config = RunConfig(name="demo")
    defaults = RunConfig(name="demo")
    line = demo_schedule(config)
    assert config.train.pretrain_epochs < defaults.train.pretrain_epochs
    assert config.train.epochs <= defaults.train.epochs
    assert str(config.train.pretrain_epochs) in line and "--full" in line


def test_the_stage_clock_charges_each_stage_its_own_time_and_saves_them(tmp_path):
    clock = StageClock()
    clock.stage("index")
    time.sleep(0.05)
    clock.stage("train")
    time.sleep(0.1)
    clock.stage("index")  # a stage entered twice accumulates
    time.sleep(0.05)
    clock.stage("done")
    assert clock.stages["train"] >= 0.1 and clock.stages["index"] >= 0.1
    assert "done" not in clock.stages  # the running stage is not charged until it ends
    assert sum(clock.stages.values()) <= clock.total()
    clock.save(tmp_path / "logs" / "stages.json")
    saved = json.loads((tmp_path / "logs" / "stages.json").read_text())
    assert set(saved["stages_s"]) == {"index", "train"} and saved["total_s"] >= 0.2
