"""Stage reuse: a record that is malformed counts as stale; outputs are checked writable before a stage runs."""

from __future__ import annotations

import json

import pytest

from resnet_deploy.errors import EnvironmentFailure
from resnet_deploy.stages import run_stage, stage_record_path


def make_stage(tmp_path):
    source, output = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("input")
    calls = []

    def make():
        calls.append(1)
        output.write_text("made from " + source.read_text())

    return lambda: run_stage("copy", [output], {"source": source}, {"n": 1}, make), output, calls


@pytest.mark.parametrize("record", [b"[]", b"\x80binary", b"{}", b'{"stage": "copy", "inputs": [], "settings": {},'
                                    b' "outputs": {}}'])
def test_malformed_record_reruns_the_stage_and_is_rewritten(tmp_path, record):
    stage, output, calls = make_stage(tmp_path)
    assert not stage().skipped and stage().skipped and len(calls) == 1
    stage_record_path(output).write_bytes(record)
    assert not stage().skipped and len(calls) == 2
    assert json.loads(stage_record_path(output).read_text())["stage"] == "copy" and stage().skipped


def test_folder_in_place_of_an_output_stops_before_the_work(tmp_path):
    stage, output, calls = make_stage(tmp_path)
    stage_record_path(output).mkdir()
    with pytest.raises(EnvironmentFailure, match="out.txt.stage.json: cannot write: it is a folder"):
        stage()
    assert calls == [] and not output.exists()
