"""ROS 2 nodes: thin wrappers over :mod:`solar_ros.runtime`, :mod:`solar_ros.core` and
:mod:`solar_ros.envs`. Each module is its own process (``python -m solar_ros.nodes.<name>`` or
``ros2 run solar_ros <name>``); topic names and QoS live in :mod:`solar_ros.nodes.contract`."""
