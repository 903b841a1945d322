"""Episode storage: one rosbag2-style MCAP bag per episode, a training ``.npz``, and an index.

Layout of a recording directory::

    <root>/index.jsonl                 one JSON object per finished episode (appended, fsynced)
    <root>/<episode>/metadata.yaml     rosbag2 bag metadata (``ros2 bag info <root>/<episode>``)
    <root>/<episode>/<episode>_0.mcap  every recorded message, CDR-encoded (ros2 bag, Foxglove)
    <root>/<episode>/episode.npz       arrays aligned to the controller's time steps
    <root>/.<episode>.partial/         the episode being recorded

Crash safety: an episode is written into its ``.partial`` directory, every file is fsynced, the
directory is renamed to its final name (atomic) and only then is the index line appended and
fsynced. A crash loses at most the episode in flight; readers only trust ``index.jsonl``, and
:func:`read_index` skips a torn last line.

Time alignment of the ``.npz``: the controller reports each time index t with the stamp of the
data its state x_t came from (``source_stamps``). Every other stream (images, joint states, latents,
costs) is sampled at those stamps, taking the newest message at or before the stamp (sample and
hold), so row t of every array describes the same instant.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter

from .msgdefs import message_definition

INDEX_NAME = "index.jsonl"
NPZ_NAME = "episode.npz"
COMPLETE = "complete"
ABORTED = "aborted"


def safe_name(name: str) -> str:
    """A file-system-safe version of an episode id (letters, digits, ``._-``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".")
    if not cleaned:
        raise ValueError(f"episode id {name!r} has no usable characters")
    return cleaned


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# ---- MCAP bag -----------------------------------------------------------------------------------

class McapBagWriter:
    """Writes already CDR-serialised ROS 2 messages to one MCAP file (``ros2`` profile)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "wb")
        # Uncompressed chunks: readable with no extra codec packages installed.
        self._writer = McapWriter(self._file, compression=CompressionType.NONE)
        self._writer.start(profile="ros2", library="solar_ros")
        self._channels: dict[str, int] = {}
        self.topic_types: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self._closed = False

    def add_topic(self, topic: str, type_name: str) -> None:
        """Register a topic's channel and schema (idempotent)."""
        if topic in self._channels:
            return
        schema_id = self._writer.register_schema(name=type_name, encoding="ros2msg",
                                                 data=message_definition(type_name).encode())
        self._channels[topic] = self._writer.register_channel(topic=topic, message_encoding="cdr",
                                                              schema_id=schema_id)
        self.topic_types[topic] = type_name
        self.counts[topic] = 0

    def write(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int | None = None) -> None:
        """Append one serialised message (the topic must have been added)."""
        seq = self.counts[topic]
        self._writer.add_message(channel_id=self._channels[topic], log_time=int(log_time_ns), data=bytes(data),
                                 publish_time=int(publish_time_ns if publish_time_ns is not None else log_time_ns),
                                 sequence=seq)
        self.counts[topic] = seq + 1
        self.start_ns = log_time_ns if self.start_ns is None else min(self.start_ns, log_time_ns)
        self.end_ns = log_time_ns if self.end_ns is None else max(self.end_ns, log_time_ns)

    def close(self) -> None:
        """Write the summary section and fsync the file."""
        if self._closed:
            return
        self._writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._closed = True

    def abandon(self) -> None:
        if not self._closed:
            self._file.close()
            self._closed = True


def rosbag2_metadata(bag: McapBagWriter) -> dict[str, Any]:
    """rosbag2 ``metadata.yaml`` content (version 5 layout, which current ``ros2 bag`` reads)."""
    start = bag.start_ns or 0
    duration = (bag.end_ns - start) if bag.end_ns is not None else 0
    total = sum(bag.counts.values())
    return {"rosbag2_bagfile_information": {
        "version": 5,
        "storage_identifier": "mcap",
        "duration": {"nanoseconds": int(duration)},
        "starting_time": {"nanoseconds_since_epoch": int(start)},
        "message_count": int(total),
        "topics_with_message_count": [
            {"topic_metadata": {"name": t, "type": bag.topic_types[t], "serialization_format": "cdr",
                                "offered_qos_profiles": ""},
             "message_count": int(bag.counts[t])}
            for t in bag.topic_types
        ],
        "compression_format": "",
        "compression_mode": "",
        "relative_file_paths": [bag.path.name],
        "files": [{"path": bag.path.name, "starting_time": {"nanoseconds_since_epoch": int(start)},
                   "duration": {"nanoseconds": int(duration)}, "message_count": int(total)}],
    }}


# ---- time-aligned arrays -------------------------------------------------------------------------

def align_indices(query_ns: np.ndarray, stamps_ns: np.ndarray) -> np.ndarray:
    """For each query stamp, the index of the newest sample at or before it (the first sample if none).

    ``stamps_ns`` must be sorted ascending (``ValueError`` if it is empty).
    """
    stamps_ns = np.asarray(stamps_ns, dtype=np.int64)
    if stamps_ns.size == 0:
        raise ValueError("cannot align to an empty stream")
    idx = np.searchsorted(stamps_ns, np.asarray(query_ns, dtype=np.int64), side="right") - 1
    return np.clip(idx, 0, stamps_ns.size - 1)


@dataclass
class Stream:
    """Samples of one sensor stream: stamps (ns) and one tuple of arrays per sample."""

    stamps: list[int] = field(default_factory=list)
    values: list[tuple] = field(default_factory=list)

    def add(self, stamp_ns: int, *values) -> None:
        self.stamps.append(int(stamp_ns))
        self.values.append(values)

    def __len__(self) -> int:
        return len(self.stamps)

    def aligned(self, query_ns: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """(stamps of the chosen samples, one stacked array per value slot) at ``query_ns``."""
        order = np.argsort(np.asarray(self.stamps, dtype=np.int64), kind="stable")
        stamps = np.asarray(self.stamps, dtype=np.int64)[order]
        pick = order[align_indices(query_ns, stamps)]
        chosen = np.asarray(self.stamps, dtype=np.int64)[pick]
        slots = len(self.values[0])
        return chosen, [np.stack([np.asarray(self.values[i][s]) for i in pick]) for s in range(slots)]


@dataclass
class EpisodeBuffers:
    """What the ``.npz`` is built from, filled by the recorder as messages arrive."""

    steps: list[Any] = field(default_factory=list)
    """Per time index: objects with time_index, start_ns, source_ns, state, action, noise, commands, clipped."""
    images: Stream = field(default_factory=Stream)
    """(image uint8 (H, W, C),)"""
    joints: Stream = field(default_factory=Stream)
    """(q (7,), dq (7,), effort (7,))"""
    latents: Stream = field(default_factory=Stream)
    """(mean (n,), covariance (n, n))"""
    costs: Stream = field(default_factory=Stream)
    """(cost, distance)"""

    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays aligned to the time steps (see the module docstring); streams with no data are left out."""
        steps = sorted(self.steps, key=lambda s: s.time_index)
        out: dict[str, np.ndarray] = {}
        if not steps:
            return out
        out["time_index"] = np.array([s.time_index for s in steps], dtype=np.int64)
        out["step_stamps"] = np.array([s.start_ns for s in steps], dtype=np.int64)
        source = np.array([s.source_ns if s.source_ns > 0 else s.start_ns for s in steps], dtype=np.int64)
        out["source_stamps"] = source
        out["states"] = np.stack([np.asarray(s.state, dtype=np.float64) for s in steps])
        out["actions"] = np.stack([np.asarray(s.action, dtype=np.float64) for s in steps])
        out["noise"] = np.stack([np.asarray(s.noise, dtype=np.float64) for s in steps])
        out["commands"] = np.array([s.commands for s in steps], dtype=np.int64)
        out["clipped"] = np.array([bool(s.clipped) for s in steps])
        if len(self.images):
            stamps, (images,) = self.images.aligned(source)
            out["images"], out["image_stamps"] = images.astype(np.uint8), stamps
        if len(self.joints):
            stamps, (q, dq, effort) = self.joints.aligned(source)
            out["joint_positions"], out["joint_velocities"], out["joint_efforts"] = q, dq, effort
            out["joint_stamps"] = stamps
        if len(self.latents):
            stamps, (mean, cov) = self.latents.aligned(source)
            out["latent_mean"], out["latent_covariance"], out["latent_stamps"] = mean, cov, stamps
        if len(self.costs):
            stamps, (cost, distance) = self.costs.aligned(source)
            out["costs"] = cost.astype(np.float64)
            out["distances"] = distance.astype(np.float64)
            out["cost_stamps"] = stamps
        return out


# ---- one episode on disk -------------------------------------------------------------------------

class EpisodeRecording:
    """The files of one episode being recorded (in ``<root>/.<name>.partial`` until finalised)."""

    def __init__(self, root: str | os.PathLike, episode_id: str, meta: dict[str, Any] | None = None,
                 write_mcap: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.episode_id = episode_id
        base = safe_name(episode_id)
        name, n = base, 0
        while (self.root / name).exists() or (self.root / f".{name}.partial").exists():
            n += 1
            name = f"{base}_{n}"
        self.name = name
        self.partial_dir = self.root / f".{name}.partial"
        self.partial_dir.mkdir()
        self.meta = dict(meta or {})
        self.buffers = EpisodeBuffers()
        self.bag = McapBagWriter(self.partial_dir / f"{name}_0.mcap") if write_mcap else None
        self.wall_start = time.time()

    def write(self, topic: str, type_name: str, data: bytes, log_time_ns: int,
              publish_time_ns: int | None = None) -> None:
        """Add one serialised message to the bag."""
        if self.bag is None:
            return
        self.bag.add_topic(topic, type_name)
        self.bag.write(topic, data, log_time_ns, publish_time_ns)

    def finalize(self, status: str, reason: str = "", extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the npz and metadata, fsync, rename into place, append the index; returns the index entry."""
        arrays = self.buffers.arrays()
        npz_path = self.partial_dir / NPZ_NAME
        with open(npz_path, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        counts = {}
        if self.bag is not None:
            self.bag.close()
            counts = dict(self.bag.counts)
            _write_file_synced(self.partial_dir / "metadata.yaml",
                               yaml.safe_dump(rosbag2_metadata(self.bag), sort_keys=False).encode())
        _fsync_dir(self.partial_dir)
        final = self.root / self.name
        os.rename(self.partial_dir, final)
        _fsync_dir(self.root)
        entry = {
            "episode_id": self.episode_id,
            "path": self.name,
            "status": status,
            "reason": reason,
            "steps": int(arrays["time_index"].size) if "time_index" in arrays else 0,
            "npz": f"{self.name}/{NPZ_NAME}",
            "mcap": f"{self.name}/{self.bag.path.name}" if self.bag is not None else None,
            "message_counts": counts,
            "arrays": sorted(arrays),
            "wall_time": self.wall_start,
            **self.meta,
            **(extra or {}),
        }
        append_index(self.root, entry)
        return entry

    def discard(self) -> None:
        """Delete the partial files (e.g. an episode that never really started)."""
        if self.bag is not None:
            self.bag.abandon()
        shutil.rmtree(self.partial_dir, ignore_errors=True)


# ---- the index -----------------------------------------------------------------------------------

def append_index(root: str | os.PathLike, entry: dict[str, Any]) -> None:
    """Append one JSON line to ``<root>/index.jsonl`` and fsync it."""
    line = json.dumps(entry, sort_keys=True) + "\n"
    path = Path(root) / INDEX_NAME
    with open(path, "a", encoding="utf-8") as f:
        # A torn line from an earlier crash must not swallow this one.
        if f.tell() > 0:
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write("\n")
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_index(root: str | os.PathLike, status: str | None = COMPLETE) -> list[dict[str, Any]]:
    """Entries of ``<root>/index.jsonl`` (only those with ``status``; None: all), oldest first.

    Malformed lines (a write torn by a crash) are skipped with a warning. A missing index means no
    episodes yet (empty list); a missing directory is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"episode directory {root} does not exist")
    path = root / INDEX_NAME
    if not path.exists():
        return []
    entries = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or "episode_id" not in entry or "path" not in entry:
                    raise ValueError("not an episode entry")
            except ValueError as err:
                warnings.warn(f"{path}:{n}: skipping malformed index line ({err})", stacklevel=2)
                continue
            if status is None or entry.get("status") == status:
                entries.append(entry)
    return entries


def load_episode(root: str | os.PathLike, entry: dict[str, Any] | str) -> dict[str, np.ndarray]:
    """The ``.npz`` arrays of one indexed episode (an index entry, or an episode id to look up)."""
    root = Path(root)
    if isinstance(entry, str):
        matches = [e for e in read_index(root, status=None) if e["episode_id"] == entry]
        if not matches:
            raise ValueError(f"episode {entry!r} is not in {root / INDEX_NAME}")
        entry = matches[-1]
    path = root / entry["npz"]
    if not path.is_file():
        raise ValueError(f"episode {entry['episode_id']!r}: file {path} is missing")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # a truncated/foreign file is not a zip
        raise ValueError(f"episode {entry['episode_id']!r}: cannot read {path}: {err}") from err


def incomplete_episodes(root: str | os.PathLike) -> list[Path]:
    """``.partial`` directories left by a crash (not in the index; safe to inspect or delete)."""
    root = Path(root)
    return sorted(root.glob(".*.partial")) if root.is_dir() else []


def iter_mcap_messages(path: str | os.PathLike, topics: Iterable[str] | None = None):
    """Decoded (topic, message, log_time_ns) from one episode's MCAP file (for tools and tests)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _schema, channel, message, decoded in reader.iter_decoded_messages(
                topics=list(topics) if topics is not None else None):
            yield channel.topic, decoded, message.log_time
