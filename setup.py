"""Python packaging for solar_ros.

On a full ROS 2 install the package is built by colcon through CMakeLists.txt (ament_cmake: it
generates the interfaces and installs these sources into the same Python package). This file
installs the Python code and its console scripts with pip (scripts/setup_env.sh does so, editable).
"""
from setuptools import find_packages, setup

NODES = [
    "camera_node",
    "encoder_node",
    "controller_node",
    "recorder_node",
    "model_fitting_node",
    "trainer_node",
    "sim_arm_node",
    "inspector_node",
    "labeller_node",
    "label_keyboard",
]

setup(
    name="solar_ros",
    version="0.1.0",
    description="Model-based RL from images (SOLAR, deep spatial autoencoders) as a ROS 2 node stack",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["solar_ros", "solar_ros.*"]),
    package_data={"solar_ros": ["*.so", "msg/*", "srv/*", "action/*"]},
    entry_points={
        "console_scripts": ["solar-ros = solar_ros.cli:main"]
        + [f"{n} = solar_ros.nodes.{n}:main" for n in NODES],
    },
)
