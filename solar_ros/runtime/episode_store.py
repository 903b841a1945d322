"""Episode storage: one rosbag2-style MCAP bag per episode, a training ``.npz``, and an index.

Layout of a recording directory::

    <root>/index.jsonl                 one JSON object per finished episode (appended, fsynced)
    <root>/<episode>/metadata.yaml     rosbag2 bag metadata (``ros2 bag info <root>/<episode>``)
    <root>/<episode>/<episode>_0.mcap  every recorded message, CDR-encoded (ros2 bag, Foxglove)
    <root>/<episode>/episode.npz       arrays aligned to the controller's time steps
    <root>/.<episode>.partial/         the episode being recorded

Crash safety: an episode is written into its ``.partial`` directory (with ``episode.json``, its
id and metadata, from the start), every file is fsynced, its index entry is written into the
directory too (``entry.json``), the directory is renamed to its final name (atomic) and only then
is the index line appended and fsynced. A crash loses at most the episode in flight; readers only
trust ``index.jsonl``, and :func:`read_index` skips a torn last line. :func:`recover_episodes`, run
by a restarted recorder, completes what a crash interrupted: an episode that was written but not
yet indexed gets its index line, and the episode that was in flight is indexed as ``aborted``.

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
META_NAME = "episode.json"
"""In every episode directory from its start: the episode id and the START's metadata."""
ENTRY_NAME = "entry.json"
"""In a finished episode directory: its index entry (written before the rename, for recovery)."""
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

    def keep_common_shape(self) -> int:
        """Drop the samples whose arrays' shapes differ from the most common ones (e.g. a stray
        publisher's images of another size among the camera's); returns how many were dropped."""
        if not self.values:
            return 0
        shapes = [tuple(np.shape(v) for v in value) for value in self.values]
        counts: dict[tuple, int] = {}
        for shape in shapes:
            counts[shape] = counts.get(shape, 0) + 1
        common = max(counts, key=lambda k: counts[k])
        keep = [i for i, shape in enumerate(shapes) if shape == common]
        dropped = len(shapes) - len(keep)
        if dropped:
            self.stamps = [self.stamps[i] for i in keep]
            self.values = [self.values[i] for i in keep]
        return dropped

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
    """(cost, distance) or (cost, distance, success): the task's success criterion where the simulator sent it"""
    labels: list[int] = field(default_factory=list)
    """The time index of each success label given during the episode (a person's "success now")."""

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
        # success labels per time index: how many times "success now" was said during it
        rows = np.clip(np.searchsorted(out["time_index"], np.asarray(self.labels, dtype=np.int64), side="right") - 1,
                       0, len(steps) - 1)
        out["success_labels"] = np.bincount(rows, minlength=len(steps)).astype(np.int64)
        for stream in (self.images, self.latents):
            stream.keep_common_shape()
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
            stamps, values = self.costs.aligned(source)
            out["costs"] = values[0].astype(np.float64)
            out["distances"] = values[1].astype(np.float64)
            if len(values) > 2:
                out["successes"] = values[2].astype(bool)
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
        self.wall_start = time.time()
        _write_file_synced(self.partial_dir / META_NAME, json.dumps(
            {"episode_id": episode_id, "wall_time": self.wall_start, **self.meta}, sort_keys=True).encode())
        _fsync_dir(self.root)
        self.buffers = EpisodeBuffers()
        self.bag = McapBagWriter(self.partial_dir / f"{name}_0.mcap") if write_mcap else None

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
            "success_labels": len(self.buffers.labels),
            "wall_time": self.wall_start,
            **self.meta,
            **(extra or {}),
        }
        _write_file_synced(self.partial_dir / ENTRY_NAME, json.dumps(entry, sort_keys=True).encode())
        _fsync_dir(self.partial_dir)
        os.rename(self.partial_dir, self.root / self.name)
        _fsync_dir(self.root)
        append_index(self.root, entry)
        return entry

    def fail(self, reason: str) -> dict[str, Any]:
        """The episode could not be written (e.g. its data did not fit together): index it as aborted
        with the reason and keep what was recorded, so nobody waits for it. Returns the entry."""
        if self.bag is not None:
            self.bag.abandon()
        return _index_unfinished(self.root, self.partial_dir, f"recording failed: {reason}")

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
    if not entry.get("npz"):
        raise ValueError(f"episode {entry['episode_id']!r} has no arrays (status {entry.get('status')!r}: "
                         f"{entry.get('reason', '')})")
    path = root / entry["npz"]
    if not path.is_file():
        raise ValueError(f"episode {entry['episode_id']!r}: file {path} is missing")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # a truncated/foreign file is not a zip
        raise ValueError(f"episode {entry['episode_id']!r}: cannot read {path}: {err}") from err


def incomplete_episodes(root: str | os.PathLike) -> list[Path]:
    """``.partial`` directories left by a crash (not in the index; :func:`recover_episodes` indexes them)."""
    root = Path(root)
    return sorted(root.glob(".*.partial")) if root.is_dir() else []


RECORDER_KILLED = "the recorder stopped while recording it (process killed); indexed when it restarted"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _free_name(root: Path, base: str) -> str:
    name, n = base, 0
    while (root / name).exists():
        n += 1
        name = f"{base}_{n}"
    return name


def _index_unfinished(root: Path, partial_dir: Path, reason: str) -> dict[str, Any]:
    """Index an episode directory that was never finalised as ``aborted`` (``reason``), moved to its
    final name with whatever was recorded (the bag without its summary section, no npz)."""
    base = partial_dir.name[1:-len(".partial")] if partial_dir.name.endswith(".partial") else partial_dir.name
    meta = _read_json(partial_dir / META_NAME) or {}
    name = _free_name(root, base)
    mcaps = sorted(p.name for p in partial_dir.glob("*.mcap"))
    entry = {
        **{k: v for k, v in meta.items() if k not in ("path", "status", "reason")},
        "episode_id": str(meta.get("episode_id", base)),
        "path": name,
        "status": ABORTED,
        "reason": reason,
        "steps": 0,
        "npz": None,
        "mcap": f"{name}/{mcaps[0]}" if mcaps else None,
        "mcap_finished": False,
        "message_counts": {},
        "arrays": [],
    }
    _write_file_synced(partial_dir / ENTRY_NAME, json.dumps(entry, sort_keys=True).encode())
    _fsync_dir(partial_dir)
    os.rename(partial_dir, root / name)
    _fsync_dir(root)
    append_index(root, entry)
    return entry


def recover_episodes(root: str | os.PathLike) -> list[dict[str, Any]]:
    """Finish what a crashed recorder left undone in ``root``; returns the index entries it appended.

    * an episode directory with its ``entry.json`` but no index line (killed between the rename and
      the index append): the line is appended, the episode is kept as it was recorded;
    * a ``.partial`` directory with its ``entry.json`` (killed just before the rename): renamed into
      place and indexed as recorded;
    * a ``.partial`` directory without (the episode in flight): indexed as ``aborted`` with
      :data:`RECORDER_KILLED` as the reason, and moved to its final name with what it holds.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    indexed = {e.get("path") for e in read_index(root, status=None)}
    added = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entry = _read_json(d / ENTRY_NAME)
        if entry is not None and d.name not in indexed and entry.get("path") == d.name:
            append_index(root, entry)
            added.append(entry)
    for partial in incomplete_episodes(root):
        entry = _read_json(partial / ENTRY_NAME)
        if entry is not None and not (root / str(entry.get("path"))).exists() and entry.get("path") not in indexed:
            os.rename(partial, root / entry["path"])
            _fsync_dir(root)
            append_index(root, entry)
            added.append(entry)
        else:
            added.append(_index_unfinished(root, partial, RECORDER_KILLED))
    return added


def iter_mcap_messages(path: str | os.PathLike, topics: Iterable[str] | None = None):
    """Decoded (topic, message, log_time_ns) from one episode's MCAP file (for tools and tests)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _schema, channel, message, decoded in reader.iter_decoded_messages(
                topics=list(topics) if topics is not None else None):
            yield channel.topic, decoded, message.log_time
