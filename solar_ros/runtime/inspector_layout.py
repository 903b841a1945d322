"""The Foxglove layout of the stack (``config/foxglove_layout.json``), built with ``foxglove.layouts``.

    python -m solar_ros.runtime.inspector_layout           # write config/foxglove_layout.json
    python -m solar_ros.runtime.inspector_layout --check   # exit 1 if the file differs from this code

One tab, "Learning", for a live connection to inspector_node and for a recorded episode alike:
the 3D view (the arm from /robot_description, posed from /joint_states, the goal marker and the
arm's frames), the camera, the model input with the feature points drawn on it, the reconstruction,
plots of the latent, the task cost and distance, the seven torques, the episode events and the log.
The arm is posed from /joint_states (the URDF layer's ``jointStates`` mode) so the same layout
replays a recording, which carries the joint states and the robot description but not the
inspector's computed frames.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import foxglove.layouts as fl

from ..nodes import contract
from .inspector import FRAMES_TOPIC, GOAL_MARKER_TOPIC

LAYOUT_PATH = Path(__file__).resolve().parents[2] / "config" / "foxglove_layout.json"
LATENT_PLOTTED = 8
"""Latent dimensions plotted (the first ones; a DSAE's first 4 feature points, x and y)."""
TORQUE_COLORS = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0")


def _image(topic: str, title: str) -> fl.ImagePanel:
    return fl.ImagePanel(title=title, config=fl.ImageConfig(image_mode=fl.ImageModeConfig(image_topic=topic)))


def _plot(title: str, series: list[fl.PlotSeries]) -> fl.PlotPanel:
    return fl.PlotPanel(title=title, config=fl.PlotConfig(paths=series, show_legend=True, legend_display="top",
                                                          time_window_mode="sliding", following_view_width=30.0))


def _split(direction: str, *items: tuple[float, object]) -> fl.SplitContainer:
    return fl.SplitContainer(direction=direction, items=[fl.SplitItem(proportion=p, content=c) for p, c in items])


def build_layout() -> fl.Layout:
    three_d = fl.ThreeDeePanel(title="Arm, goal and frames", config=fl.ThreeDeeConfig(
        fixed_frame="base", follow_tf="base",
        layers={"sawyer": fl.BaseRendererUrdfLayerSettings(
            instance_id="sawyer", label="Sawyer", source_type="topic",
            topic=contract.ROBOT_DESCRIPTION, control_mode="jointStates",
            joint_states_topic=contract.JOINT_STATES)},
        topics={GOAL_MARKER_TOPIC: fl.BaseRendererSceneUpdateTopicSettings(visible=True),
                FRAMES_TOPIC: fl.BaseRendererBaseSettings(visible=True)}))
    latent = _plot("Latent (first dimensions)", [
        fl.PlotSeries(value=f"{contract.LATENT}.mean[{i}]", label=f"z{i}") for i in range(LATENT_PLOTTED)])
    cost = _plot("Task cost and distance", [
        fl.PlotSeries(value=f"{contract.COST}.cost", label="cost"),
        fl.PlotSeries(value=f"{contract.COST}.distance", label="distance (m)", use_right_y_axis=True)])
    torques = _plot("Torque commands (N m)", [
        fl.PlotSeries(value=f"{contract.COMMANDS}.data[{i}]", label=f"right_j{i}", color=TORQUE_COLORS[i])
        for i in range(7)])
    events = fl.StateTransitionsPanel(title="Episode events", config=fl.StateTransitionsConfig(
        paths=[fl.StateTransitionsSeries(value=f"{contract.EPISODE}.event", label="event"),
               fl.StateTransitionsSeries(value=f"{contract.EPISODE}.episode_id", label="episode")]))
    last_event = fl.RawMessagesPanel(title="Last episode event",
                                     config=fl.RawMessagesConfig(topic_path=contract.EPISODE))
    log = fl.LogPanel(title="Log", config=fl.LogConfig(topic_to_render="/rosout"))
    images = _split("column",
                    (1, _image(contract.CAMERA_RAW, "Camera")),
                    (1, _image(contract.FEATURE_POINTS, "Model input and feature points")),
                    (1, _image(contract.RECONSTRUCTION, "Reconstruction")))
    plots = _split("column", (1, latent), (1, cost), (1, torques))
    bottom = _split("row", (2, events), (1, last_event), (2, log))
    top = _split("row", (2, three_d), (1, images), (2, plots))
    return fl.Layout(content=fl.TabContainer(tabs=[fl.TabItem(title="Learning", content=_split(
        "column", (3, top), (1, bottom)))]))


def layout_text() -> str:
    """The layout file's content (indented JSON, stable)."""
    return json.dumps(json.loads(build_layout().to_json()), indent=2, sort_keys=True) + "\n"


def topics_in(layout_json: str) -> set[str]:
    """Every topic a layout refers to (topic settings, image topics, message paths)."""
    found: set[str] = set()

    def walk(node, key=""):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "topics" and isinstance(v, dict):
                    found.update(v)
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and node.startswith("/") and key in (
                "imageTopic", "topic", "jointStatesTopic", "value", "topicPath", "topicToRender"):
            found.add(node.split(".", 1)[0])

    walk(json.loads(layout_json))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = layout_text()
    if args.check:
        same = LAYOUT_PATH.is_file() and LAYOUT_PATH.read_text() == text
        print(f"{LAYOUT_PATH}: {'up to date' if same else 'differs from solar_ros.runtime.inspector_layout'}")
        return 0 if same else 1
    LAYOUT_PATH.write_text(text)
    print(f"wrote {LAYOUT_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
