"""Episode storage: MCAP schemas readable by the mcap ROS 2 decoder, sample-and-hold alignment,
crash-safe finalisation, index reading with torn lines, clear errors for missing/corrupt files."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from mcap_ros2._dynamic import serialize_dynamic

from solar_ros.runtime.episode_store import (
    EpisodeRecording,
    McapBagWriter,
    align_indices,
    append_index,
    incomplete_episodes,
    iter_mcap_messages,
    load_episode,
    read_index,
    safe_name,
)
from solar_ros.runtime.msgdefs import field_types, message_definition


def encode(type_name: str, value: dict) -> bytes:
    """CDR bytes of a message given as nested dicts (the mcap package's own encoder, not rclpy's)."""
    return serialize_dynamic(type_name, message_definition(type_name))[type_name](value)


def test_field_types_resolves_nested_types():
    text = "Header header\nfloat64[] a\nstring<=5 s\ngeometry_msgs/Point p\nPolicyStep[3] steps\nuint8 K=3 # c\n"
    assert field_types(text, "solar_ros") == ["std_msgs/Header", "geometry_msgs/Point", "solar_ros/PolicyStep"]
    definition = message_definition("solar_ros/msg/PolicyStep")
    assert "MSG: std_msgs/Header" in definition and "MSG: builtin_interfaces/Time" in definition


def test_mcap_round_trip_decodes_every_message(tmp_path):
    bag = McapBagWriter(tmp_path / "b.mcap")
    image = {"header": {"stamp": {"sec": 3, "nanosec": 5}, "frame_id": "cam"}, "height": 2, "width": 2,
             "encoding": "rgb8", "is_bigendian": 0, "step": 6, "data": bytes(range(12))}
    step = {"header": {"stamp": {"sec": 1, "nanosec": 0}, "frame_id": ""}, "episode_id": "e", "time_index": 4,
            "source_stamp": {"sec": 0, "nanosec": 9}, "state": [1.5, -2.0], "action": [0.25] * 7, "noise": [0.0] * 7,
            "commands": 25, "clipped": True}
    for i in range(3):
        bag.add_topic("/img", "sensor_msgs/msg/Image")
        bag.write("/img", encode("sensor_msgs/msg/Image", image), 100 + i)
    bag.add_topic("/steps", "solar_ros/msg/PolicyStep")
    bag.write("/steps", encode("solar_ros/msg/PolicyStep", step), 200)
    bag.close()
    decoded = list(iter_mcap_messages(tmp_path / "b.mcap"))
    assert [(t, lt) for t, _, lt in decoded] == [("/img", 100), ("/img", 101), ("/img", 102), ("/steps", 200)]
    img = decoded[0][1]
    assert (img.header.stamp.sec, img.header.frame_id, img.encoding, bytes(img.data)) == (3, "cam", "rgb8",
                                                                                           bytes(range(12)))
    s = decoded[3][1]
    assert (s.episode_id, s.time_index, list(s.state), s.clipped) == ("e", 4, [1.5, -2.0], True)
    assert bag.counts == {"/img": 3, "/steps": 1} and (bag.start_ns, bag.end_ns) == (100, 200)


def test_align_indices_is_sample_and_hold():
    stamps = np.array([10, 20, 30])
    query = np.array([5, 10, 15, 20, 29, 30, 99])
    expected = [max([i for i, s in enumerate(stamps) if s <= q], default=0) for q in query]
    np.testing.assert_array_equal(align_indices(query, stamps), expected)
    with pytest.raises(ValueError, match="empty"):
        align_indices(query, [])


def _step(t, start, source):
    return SimpleNamespace(time_index=t, start_ns=start, source_ns=source, state=np.array([t, 0.0]),
                           action=np.full(7, t / 10), noise=np.zeros(7), commands=5, clipped=False)


def test_recording_is_finalised_atomically_with_aligned_arrays(tmp_path):
    rec = EpisodeRecording(tmp_path, "run 1/ep:0", {"policy_id": "p"})
    assert rec.partial_dir.name == ".run_1_ep_0.partial"
    b = rec.buffers
    for t in range(3):
        b.steps.append(_step(t, 1000 + 100 * t, 990 + 100 * t))
    b.steps.reverse()  # arrival order does not matter
    for s in (985, 1090, 1100, 1190):   # images: 990 -> 985, 1090 -> 1090, 1190 -> 1190
        b.images.add(s, np.full((2, 2, 3), s % 256, np.uint8))
    for s in (1200, 995):               # out of order; 990 has no sample before it -> the first one (995)
        b.joints.add(s, np.full(7, s), np.zeros(7), np.zeros(7))
    b.costs.add(1000, 1.0, 0.1)
    rec.write("/img", "sensor_msgs/msg/Image", encode("sensor_msgs/msg/Image", {
        "header": {"stamp": {"sec": 0, "nanosec": 0}, "frame_id": ""}, "height": 0, "width": 0, "encoding": "",
        "is_bigendian": 0, "step": 0, "data": b""}), 5)
    entry = rec.finalize("complete", "horizon reached", {"extra": 1})
    assert not rec.partial_dir.exists() and incomplete_episodes(tmp_path) == []
    assert entry["path"] == "run_1_ep_0" and entry["steps"] == 3 and entry["policy_id"] == "p" and entry["extra"] == 1
    data = load_episode(tmp_path, "run 1/ep:0")
    np.testing.assert_array_equal(data["time_index"], [0, 1, 2])
    np.testing.assert_array_equal(data["images"][:, 0, 0, 0], [985 % 256, 1090 % 256, 1190 % 256])
    np.testing.assert_array_equal(data["joint_positions"][:, 0], [995, 995, 995])
    np.testing.assert_array_equal(data["costs"], [1.0, 1.0, 1.0])
    assert "successes" not in data, "a cost stream without the success flag records none"
    np.testing.assert_array_equal(data["source_stamps"], [990, 1090, 1190])
    assert "latent_mean" not in data, "streams with no data are left out"
    meta = yaml.safe_load((tmp_path / "run_1_ep_0" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["message_count"] == 1 and meta["relative_file_paths"] == ["run_1_ep_0_0.mcap"]
    again = EpisodeRecording(tmp_path, "run 1/ep:0")
    assert again.name == "run_1_ep_0_1", "an existing episode directory is never overwritten"
    again.discard()
    assert incomplete_episodes(tmp_path) == []


def test_read_index_skips_torn_lines_and_filters_status(tmp_path):
    append_index(tmp_path, {"episode_id": "a", "path": "a", "status": "complete"})
    with open(tmp_path / "index.jsonl", "a") as f:
        f.write('{"episode_id": "b", "pa')  # a crash in the middle of a line
    append_index(tmp_path, {"episode_id": "c", "path": "c", "status": "aborted"})
    with pytest.warns(UserWarning, match="malformed"):
        entries = read_index(tmp_path, status=None)
    assert [e["episode_id"] for e in entries] == ["a", "c"]
    with pytest.warns(UserWarning):
        assert [e["episode_id"] for e in read_index(tmp_path)] == ["a"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert read_index(empty) == [], "no index yet: no episodes"
    with pytest.raises(ValueError, match="does not exist"):
        read_index(tmp_path / "nope")


def test_load_episode_errors(tmp_path):
    with pytest.raises(ValueError, match="not in"):
        load_episode(tmp_path, "ghost")
    append_index(tmp_path, {"episode_id": "gone", "path": "gone", "status": "complete", "npz": "gone/episode.npz"})
    with pytest.raises(ValueError, match="missing"):
        load_episode(tmp_path, "gone")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "episode.npz").write_bytes(b"not a zip file")
    entry = {"episode_id": "bad", "path": "bad", "status": "complete", "npz": "bad/episode.npz"}
    with pytest.raises(ValueError, match="cannot read"):
        load_episode(tmp_path, entry)


def test_safe_name():
    assert safe_name("ep-1_a.b") == "ep-1_a.b"
    assert safe_name("../x y") == "_x_y"
    with pytest.raises(ValueError):
        safe_name("..")
    assert json.loads(json.dumps({"k": safe_name("é")})) == {"k": "_"}


def _finished(root, episode_id):
    rec = EpisodeRecording(root, episode_id, {"policy_id": "p"}, write_mcap=False)
    rec.buffers.steps.append(_step(0, 1000, 1000))
    rec.buffers.costs.add(1000, 1.0, 0.1)
    return rec


def test_recover_episodes_completes_what_a_killed_recorder_left(tmp_path, monkeypatch):
    from solar_ros.runtime import episode_store
    from solar_ros.runtime.episode_store import RECORDER_KILLED, recover_episodes

    _finished(tmp_path, "done").finalize("complete", "horizon reached")
    # killed between the rename and the index line
    real_append = episode_store.append_index
    monkeypatch.setattr(episode_store, "append_index", lambda *a: None)
    _finished(tmp_path, "renamed").finalize("complete", "horizon reached")
    # killed between writing its entry and the rename
    monkeypatch.setattr(episode_store.os, "rename", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _finished(tmp_path, "written").finalize("complete", "horizon reached")
    monkeypatch.undo()
    assert episode_store.append_index is real_append
    # in flight: only its start was written
    flying = EpisodeRecording(tmp_path, "flying", {"policy_id": "p2", "horizon": 50})
    flying.write("/img", "sensor_msgs/msg/Image", encode("sensor_msgs/msg/Image", {
        "header": {"stamp": {"sec": 0, "nanosec": 0}, "frame_id": ""}, "height": 0, "width": 0, "encoding": "",
        "is_bigendian": 0, "step": 0, "data": b""}), 5)

    assert [e["episode_id"] for e in read_index(tmp_path, status=None)] == ["done"]
    added = recover_episodes(tmp_path)
    assert sorted((e["episode_id"], e["status"]) for e in added) == [
        ("flying", "aborted"), ("renamed", "complete"), ("written", "complete")]
    assert incomplete_episodes(tmp_path) == []
    index = {e["episode_id"]: e for e in read_index(tmp_path, status=None)}
    assert sorted(index) == ["done", "flying", "renamed", "written"]
    for name in ("renamed", "written"):  # kept as recorded, usable for training
        assert load_episode(tmp_path, name)["costs"].tolist() == [1.0]
    fly = index["flying"]
    assert fly["reason"] == RECORDER_KILLED and fly["steps"] == 0 and fly["policy_id"] == "p2"
    assert (tmp_path / fly["mcap"]).is_file(), "what was recorded of it is kept"
    with pytest.raises(ValueError, match="has no arrays"):
        load_episode(tmp_path, "flying")
    assert [e["episode_id"] for e in read_index(tmp_path)] == ["done", "renamed", "written"]
    assert recover_episodes(tmp_path) == [], "nothing twice"


def test_an_episode_that_cannot_be_written_is_indexed_as_aborted(tmp_path):
    rec = _finished(tmp_path, "bad")
    rec.buffers.steps.append(SimpleNamespace(**{**vars(_step(1, 1100, 1100)), "state": np.zeros(3)}))
    with pytest.raises(ValueError):
        rec.finalize("complete", "horizon reached")
    entry = rec.fail("shapes differ")
    assert entry["status"] == "aborted" and "recording failed: shapes differ" in entry["reason"]
    assert read_index(tmp_path, status=None)[0]["episode_id"] == "bad" and incomplete_episodes(tmp_path) == []


def test_images_and_latents_of_a_stray_shape_are_left_out(tmp_path):
    rec = _finished(tmp_path, "mixed")
    rec.buffers.steps.append(_step(1, 1100, 1100))
    for s in (990, 1090):
        rec.buffers.images.add(s, np.full((2, 2, 3), 7, np.uint8))
        rec.buffers.latents.add(s, np.zeros(2), np.eye(2))
    rec.buffers.images.add(1095, np.zeros((3, 3, 3), np.uint8))  # a stray publisher's frame of another size
    rec.buffers.latents.add(1095, np.zeros(4), np.eye(4))
    rec.finalize("complete", "horizon reached")
    data = load_episode(tmp_path, "mixed")
    assert data["images"].shape == (2, 2, 2, 3) and data["latent_mean"].shape == (2, 2)
