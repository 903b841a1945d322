"""PolledSubscription (solar_ros.nodes.common): messages are read in batches, in order, and never
wake the executor."""
from __future__ import annotations

import time

import pytest
from std_msgs.msg import Float64MultiArray

from solar_ros.nodes import contract
from solar_ros.nodes.common import PolledSubscription

pytestmark = [pytest.mark.ros, pytest.mark.timeout(60)]


def test_polled_messages_come_in_order_and_never_wake_the_executor(ros):
    n = ros.node
    polled = PolledSubscription(n, Float64MultiArray, "/test_polled", contract.RECORDING_SENSOR_QOS)
    pub = n.create_publisher(Float64MultiArray, "/test_polled", contract.RELIABLE_QOS)
    ros.wait_for_subscribers(pub)
    assert polled.take_all() == []
    for i in range(20):
        pub.publish(Float64MultiArray(data=[float(i)]))
    time.sleep(0.2)
    # The executor has nothing to do: the polled subscription is not in its wait set.
    t0 = time.monotonic()
    ros.executor.spin_once(timeout_sec=0.2)
    assert time.monotonic() - t0 >= 0.15
    got = polled.take_all(with_info=True)
    assert [m.data[0] for m, _ in got] == [float(i) for i in range(20)]
    assert all(info["received_timestamp"] > 0 for _, info in got)
    assert polled.take_all() == []
    polled.destroy()
    n.destroy_publisher(pub)
