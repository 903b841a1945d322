"""ROS-free logic behind the nodes: image preprocessing, torque safety and input watchdogs, the
linear-Gaussian policy executor, policy (de)serialisation, episode storage (MCAP + npz + index).

Nothing here imports rclpy, so every piece is unit-tested on its own; the nodes in
:mod:`solar_ros.nodes` only move data between these objects and ROS topics.
"""
