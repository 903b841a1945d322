"""encoder_node in its own process: one LatentState per image with the image's stamp and the model's
numbers, SVAE filtering during episodes (NaN/Inf torque commands kept out), bad images dropped without
a crash, hot reload of an announced model without dropping frames, diagnostics images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray, String

from solar_ros.models import DeepSpatialAutoencoder, DSAEConfig, StructuredVAE, SVAEConfig, save_checkpoint
from solar_ros.msg import EpisodeEvent, LatentState
from solar_ros.nodes import contract

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

SIZE = 32


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny SVAE (with a non-trivial LDS) and a tiny DSAE checkpoint, and the in-process references."""
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    svae = StructuredVAE(SVAEConfig(image_size=SIZE, latent_dim=3, action_dim=7, encoder_hidden=32, decoder_hidden=64))
    rng = np.random.default_rng(1)
    A = 0.9 * np.eye(3) + 0.05 * rng.standard_normal((3, 3))
    svae.set_dynamics(A, 0.1 * rng.standard_normal((3, 7)), 0.1 * np.ones(3), 0.2 * np.eye(3), np.zeros(3), np.eye(3))
    svae.eval()
    dsae = DeepSpatialAutoencoder(DSAEConfig(image_size=SIZE, conv_channels=(8, 8, 4))).eval()
    paths = {"svae": d / "svae.pt", "dsae": d / "dsae.pt"}
    save_checkpoint(paths["svae"], svae, extra={"model_id": "svae-test-a"})
    save_checkpoint(paths["dsae"], dsae, extra={"model_id": "dsae-test-b"})
    return {"paths": paths, "svae": svae, "dsae": dsae}


def frame(i: int) -> np.ndarray:
    return np.random.default_rng(100 + i).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


class Feed:
    def __init__(self, ros):
        self.ros = ros
        n = ros.node
        self.latents: list[LatentState] = []
        self.recons: list[Image] = []
        self.image_pub = n.create_publisher(Image, contract.MODEL_IMAGE, contract.SENSOR_QOS)
        self.event_pub = n.create_publisher(EpisodeEvent, contract.EPISODE, contract.EVENT_QOS)
        self.model_pub = n.create_publisher(String, contract.MODEL, contract.MODEL_QOS)
        n.create_subscription(LatentState, contract.LATENT, self.latents.append, contract.SENSOR_QOS)
        n.create_subscription(Image, contract.RECONSTRUCTION, self.recons.append, contract.SENSOR_QOS)
        self.stamp = 1_000_000_000

    def image(self, pixels: np.ndarray, encoding: str = "rgb8", step: int | None = None, data=None) -> int:
        """Publish one image with a fresh stamp; returns the stamp (ns)."""
        self.stamp += 50_000_000
        msg = Image()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(self.stamp, 1_000_000_000)
        msg.header.frame_id = "camera"
        msg.height, msg.width = pixels.shape[:2]
        msg.encoding = encoding
        msg.step = step if step is not None else pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1)
        msg.data = data if data is not None else pixels.tobytes()
        self.image_pub.publish(msg)
        return self.stamp

    def event(self, kind: int, episode_id: str = "ep") -> None:
        msg = EpisodeEvent(event=kind, episode_id=episode_id)
        self.event_pub.publish(msg)

    def latent_for(self, stamp: int, timeout: float = 10.0) -> LatentState:
        def find():
            return [m for m in self.latents if m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == stamp]
        self.ros.spin_until(lambda: find(), timeout, f"the latent of the image stamped {stamp}")
        return find()[0]


@pytest.fixture(scope="module")
def rig(ros, start_node, models):
    node = start_node("encoder_node", {"model_path": str(models["paths"]["svae"]), "diagnostics_rate": 50.0,
                                       "stats_period": 1.0})
    feed = Feed(ros)
    ros.wait_for_subscribers(feed.image_pub, timeout=30)
    ros.wait_for_subscribers(feed.event_pub)
    ros.wait_for_publishers(contract.LATENT)
    # Discovery completes on each side separately: best-effort frames sent before the encoder has
    # matched this publisher are lost, so warm up until one comes back.
    for _ in range(100):
        feed.image(frame(0))
        ros.spin(0.1)
        if feed.latents:
            break
    assert feed.latents, node.log()
    feed.latents.clear()
    yield feed, node
    assert node.alive(), node.log()


def test_one_latent_per_image_with_its_stamp_and_the_models_numbers(rig, models):
    feed, node = rig
    svae = models["svae"]
    for i in range(5):
        stamp = feed.image(frame(i))
        msg = feed.latent_for(stamp)
        # Between episodes every frame is a first-step belief: prior N(mu0, V0) conditioned on the frame.
        mean, cov = svae.filter_step(frame(i))
        assert msg.model_id == "svae-test-a" and msg.dim == 3 and not msg.filtered
        np.testing.assert_allclose(msg.mean, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.reshape(msg.covariance, (3, 3)), cov, rtol=1e-5, atol=1e-8)
        assert msg.header.frame_id == "camera"


def test_svae_filters_through_the_dynamics_during_an_episode(rig, models, ros):
    feed, node = rig
    svae = models["svae"]
    feed.event(EpisodeEvent.START)
    ros.spin(0.5)  # the event and the images come on different topics: let the event arrive first
    s0 = feed.image(frame(10))
    m0 = feed.latent_for(s0)
    s1 = feed.image(frame(11))
    m1 = feed.latent_for(s1)
    assert m1.filtered
    # One Kalman step from the previous belief; no torques were commanded, so u = 0.
    mean, cov = svae.filter_step(frame(11), np.array(m0.mean), np.reshape(m0.covariance, (3, 3)), np.zeros(7))
    np.testing.assert_allclose(m1.mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.reshape(m1.covariance, (3, 3)), cov, rtol=1e-5, atol=1e-8)
    first_step, _ = svae.filter_step(frame(11))
    assert not np.allclose(m1.mean, first_step, atol=1e-4), "filtering must differ from a first-step belief"
    feed.event(EpisodeEvent.STOP)
    ros.spin(0.5)
    s2 = feed.image(frame(12))
    assert not feed.latent_for(s2).filtered


def test_svae_filters_with_the_mean_of_the_torques_commanded_since_the_previous_frame(rig, models, ros):
    feed, node = rig
    svae = models["svae"]
    # The encoder polls the command queue once per frame (no callback per 500 Hz command).
    cmd_pub = ros.node.create_publisher(Float64MultiArray, contract.COMMANDS, contract.RELIABLE_QOS)
    ros.wait_for_subscribers(cmd_pub)
    feed.event(EpisodeEvent.START, "torques")
    ros.spin(0.5)
    m0 = feed.latent_for(feed.image(frame(30)))
    torques = [np.linspace(0.5, 3.5, 7), np.linspace(-2.0, 1.0, 7), np.full(7, 0.25)]
    for u in torques:
        cmd_pub.publish(Float64MultiArray(data=u.tolist()))
    ros.spin(0.3)  # let the commands arrive before the next frame
    m1 = feed.latent_for(feed.image(frame(31)))
    assert m1.filtered
    mean, cov = svae.filter_step(frame(31), np.array(m0.mean), np.reshape(m0.covariance, (3, 3)),
                                 np.mean(torques, axis=0))
    np.testing.assert_allclose(m1.mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.reshape(m1.covariance, (3, 3)), cov, rtol=1e-5, atol=1e-8)
    # The queue was drained: the next frame sees no torques (u = 0).
    m2 = feed.latent_for(feed.image(frame(32)))
    mean, _ = svae.filter_step(frame(32), np.array(m1.mean), np.reshape(m1.covariance, (3, 3)), np.zeros(7))
    np.testing.assert_allclose(m2.mean, mean, rtol=1e-5, atol=1e-6)
    feed.event(EpisodeEvent.STOP, "torques")
    ros.spin(0.5)
    ros.node.destroy_publisher(cmd_pub)


def test_nan_inf_and_wrong_length_torque_commands_are_not_fed_to_the_filter(rig, models, ros):
    feed, node = rig
    svae = models["svae"]
    cmd_pub = ros.node.create_publisher(Float64MultiArray, contract.COMMANDS, contract.RELIABLE_QOS)
    ros.wait_for_subscribers(cmd_pub)
    feed.event(EpisodeEvent.START, "bad-torques")
    ros.spin(0.5)
    m0 = feed.latent_for(feed.image(frame(40)))
    good = [np.linspace(-1.0, 1.0, 7), np.full(7, 2.0)]
    for data in (good[0], [float("nan")] * 7, [0.0] * 6 + [float("inf")], [1.0] * 6, good[1], [-float("inf")] * 7):
        cmd_pub.publish(Float64MultiArray(data=list(map(float, data))))
    ros.spin(0.3)
    m1 = feed.latent_for(feed.image(frame(41)))
    assert m1.filtered and np.all(np.isfinite(m1.mean)) and np.all(np.isfinite(m1.covariance))
    mean, _ = svae.filter_step(frame(41), np.array(m0.mean), np.reshape(m0.covariance, (3, 3)), np.mean(good, axis=0))
    np.testing.assert_allclose(m1.mean, mean, rtol=1e-5, atol=1e-6)
    # The filter goes on from a finite belief: the next frame is fine too.
    m2 = feed.latent_for(feed.image(frame(42)))
    assert np.all(np.isfinite(m2.mean))
    log = node.log()
    assert "torque command ignored for filtering: torque command contains NaN or Inf" in log
    assert "has 6 values, the model takes 7" in log
    feed.event(EpisodeEvent.STOP, "bad-torques")
    ros.spin(0.5)
    ros.node.destroy_publisher(cmd_pub)


def test_bad_images_are_dropped_without_a_crash(rig, ros):
    feed, node = rig
    before = len(feed.latents)
    feed.image(frame(0)[:, :, :1].copy(), encoding="mono8")                # wrong encoding for the model
    feed.image(np.zeros((16, 16, 3), np.uint8))                              # wrong size
    feed.image(frame(0), data=b"\x00" * 100)                                # data does not match step*height
    feed.image(frame(0), encoding="yuv422")                                 # unknown encoding
    ros.spin(1.0)
    good = feed.image(frame(1))
    feed.latent_for(good)
    assert len(feed.latents) == before + 1, "only the good image gives a latent"
    log = node.log()
    assert "frame dropped" in log and "reads rgb8 images" in log and "32x32x3" in log
    assert node.alive()


def test_diagnostics_reconstruction_is_published_while_subscribed(rig, ros):
    feed, _node = rig
    ros.wait_for_publishers(contract.RECONSTRUCTION)
    feed.recons.clear()
    for i in range(100):
        feed.image(frame(3))
        ros.spin(0.05)
        if feed.recons:
            break
    assert feed.recons, "no reconstruction image within 5 s"
    img = feed.recons[-1]
    assert (img.height, img.width, img.encoding) == (SIZE, SIZE, "rgb8") and len(img.data) == SIZE * SIZE * 3


def test_hot_reload_swaps_the_model_without_dropping_frames(rig, models, ros):
    feed, node = rig
    feed.latents.clear()
    stamps = []
    announced = False
    # 20 Hz images for 3 s; the new model (another kind, another latent size) is announced after 0.5 s.
    for i in range(60):
        stamps.append(feed.image(frame(20 + i)))
        ros.spin(0.05)
        if i == 10 and not announced:
            feed.model_pub.publish(String(data=str(models["paths"]["dsae"])))
            announced = True
    ros.spin_until(lambda: len(feed.latents) >= len(stamps), 10, "a latent for every image")
    got = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m for m in feed.latents}
    missing = [s for s in stamps if s not in got]
    assert not missing, f"{len(missing)} frames without a latent during the reload"
    ids = [got[s].model_id for s in stamps]
    switch = ids.index("dsae-test-b")
    assert switch > 10 and set(ids[:switch]) == {"svae-test-a"} and set(ids[switch:]) == {"dsae-test-b"}
    m = got[stamps[-1]]
    assert m.dim == 8 and len(m.covariance) == 64
    np.testing.assert_allclose(m.mean, models["dsae"].encode(frame(20 + 59)), rtol=1e-5, atol=1e-6)
    assert "replaced svae-test-a" in node.log()


def test_a_model_announced_mid_episode_waits_for_the_episode_end(rig, models, ros):
    feed, node = rig
    feed.event(EpisodeEvent.START, "mid")
    ros.spin(0.5)
    feed.model_pub.publish(String(data=str(models["paths"]["svae"])))
    ros.spin_until(lambda: node.log().count("model svae-test-a loaded") >= 1, 15, "the announced model to load")
    during = [feed.latent_for(feed.image(frame(90 + i))).model_id for i in range(3)]
    assert set(during) == {"dsae-test-b"}, "a running episode keeps the latent space its policy was fitted for"
    feed.event(EpisodeEvent.STOP, "mid")
    ros.spin(0.5)
    assert feed.latent_for(feed.image(frame(95))).model_id == "svae-test-a"
    assert "encode latency p50" in node.log()
