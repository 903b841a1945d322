"""The node stack with the MuJoCo Sawyer (sim_arm_node owns /clock).

    ros2 launch solar_ros sim.launch.py [real_time_factor:=1.0] [output_dir:=runs/episodes]

Which nodes run with which parameter files comes from ``solar_ros.launcher.PROFILES["sim"]`` (the
same description ``solar-ros launch sim`` uses where ``ros2 launch`` is not available).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from solar_ros.launcher import get_profile

PROFILE = "sim"


def generate_launch_description():
    config = os.path.join(get_package_share_directory("solar_ros"), "config")
    overrides = {
        "sim_arm_node": {"real_time_factor": LaunchConfiguration("real_time_factor")},
        "recorder_node": {"output_dir": LaunchConfiguration("output_dir")},
    }
    actions = [
        DeclareLaunchArgument("real_time_factor", default_value="1.0",
                              description="simulated seconds per wall second (0: as fast as possible)"),
        DeclareLaunchArgument("output_dir", default_value="runs/episodes", description="where episodes are recorded"),
    ]
    for spec in get_profile(PROFILE).nodes:
        params = [os.path.join(config, f) for f in spec.params_files]
        if spec.name in overrides:
            params.append(overrides[spec.name])
        actions.append(Node(package="solar_ros", executable=spec.name, name=spec.name, output="screen",
                            emulate_tty=True, parameters=params, remappings=list(spec.remappings)))
    return LaunchDescription(actions)
