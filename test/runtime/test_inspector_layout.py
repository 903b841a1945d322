"""The Foxglove layout file is what solar_ros.runtime.inspector_layout builds, refers only to the stack's
topics, and a recorded episode carries every topic it plots except the live-only ones (documented in
docs/inspection.md)."""
from __future__ import annotations

import json

from solar_ros.nodes import contract
from solar_ros.nodes.recorder_node import DEFAULT_TOPICS
from solar_ros.runtime.inspector import FRAMES_TOPIC, GOAL_MARKER_TOPIC
from solar_ros.runtime.inspector_layout import LAYOUT_PATH, layout_text, main, topics_in

LIVE_ONLY = {contract.CAMERA_RAW, contract.FEATURE_POINTS, contract.RECONSTRUCTION, FRAMES_TOPIC, GOAL_MARKER_TOPIC,
             "/rosout"}


def test_the_layout_file_is_up_to_date():
    assert main(["--check"]) == 0, "run python -m solar_ros.runtime.inspector_layout"
    layout = json.loads(LAYOUT_PATH.read_text())
    assert layout["version"] == 1 and layout["content"]["tabs"][0]["title"] == "Learning"


def test_the_layout_shows_the_stack_and_a_recording_replays_all_but_the_live_only_topics():
    topics = topics_in(layout_text())
    contract_topics = {v for k, v in vars(contract).items() if k.isupper() and isinstance(v, str) and v.startswith("/")}
    assert topics <= contract_topics | LIVE_ONLY, topics - contract_topics - LIVE_ONLY
    assert {contract.CAMERA_RAW, contract.FEATURE_POINTS, contract.RECONSTRUCTION, contract.LATENT, contract.COST,
            contract.COMMANDS, contract.EPISODE, FRAMES_TOPIC, GOAL_MARKER_TOPIC} <= topics
    recorded = {entry.split()[0] for entry in DEFAULT_TOPICS}
    assert topics - recorded == LIVE_ONLY


def test_the_rviz_config_shows_what_the_layout_shows():
    import yaml

    rviz = yaml.safe_load((LAYOUT_PATH.parents[1] / "rviz" / "solar.rviz").read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if "Topic" in d}
    classes = {d["Class"] for d in displays}
    assert rviz["Visualization Manager"]["Global Options"]["Fixed Frame"] == "base"
    assert {f"rviz_default_plugins/{c}" for c in ("RobotModel", "TF", "PointStamped")} <= classes
    # the images of the Foxglove layout, and the goal its marker is drawn from
    assert {contract.CAMERA_RAW, contract.FEATURE_POINTS, contract.RECONSTRUCTION, contract.GOAL} <= topics
    assert all(d["Enabled"] for d in displays if d["Class"] != "rviz_default_plugins/Grid")
