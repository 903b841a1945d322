"""solar_ros: model-based RL from images (SOLAR, deep spatial autoencoders) as a ROS 2 node stack.

Layers (each usable without the one above it):
  solar_ros.core   ROS-free math: Gaussian/LDS inference, dynamics fitting, LQR-FLM, iLQR, costs
  solar_ros.envs   ROS-free image-observation tasks (point, reacher, MuJoCo Sawyer)
  solar_ros.algos  learning loops behind ``solar-ros train``
  solar_ros.nodes  thin ROS 2 nodes over the layers above
"""

__version__ = "0.1.0"
