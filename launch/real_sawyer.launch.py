"""The node stack on a physical Sawyer, reached through the Intera SDK (ROS 1) and ros1_bridge.

    ros2 launch solar_ros real_sawyer.launch.py [bridge:=true] [output_dir:=runs/episodes]
        [inspector:=false] [labeller:=false]

Intera is ROS 1 only. The path (docs/ros_interfaces.md, "Real Sawyer"):

* ROS 1 side (the robot's network, Intera SDK sourced): ``roscore`` from the robot, and
  ``bin/intera_torque_relay`` (rospy + intera_interface) turning /effort_controller/commands
  (std_msgs/Float64MultiArray) into ``Limb.set_joint_torques`` (JointCommand, TORQUE_MODE).
* This launch file: ``ros1_bridge dynamic_bridge --bridge-all-topics`` (with ROS 1 and ROS 2 both
  sourced) carries /robot/joint_states and the wrist camera into ROS 2 and the torque commands
  out; the node stack with /joint_states remapped to /robot/joint_states and the camera node
  reading /io/internal_camera/right_hand_camera/image_raw.

The node list, parameter files and remappings come from ``solar_ros.launcher.PROFILES["real_sawyer"]``.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from solar_ros.launcher import get_profile, middleware_env, optional_launch_actions, validate_params_files

PROFILE = "real_sawyer"


def generate_launch_description():
    config = os.path.join(get_package_share_directory("solar_ros"), "config")
    # Unknown node sections or parameter names in the parameter files stop the launch here, listing the
    # valid ones (as `solar-ros launch` does), instead of being ignored by rclpy.
    validate_params_files(get_profile(PROFILE), config)
    actions = [
        DeclareLaunchArgument("bridge", default_value="true", description="start ros1_bridge's dynamic_bridge"),
        DeclareLaunchArgument("output_dir", default_value="runs/episodes", description="where episodes are recorded"),
        Node(package="ros1_bridge", executable="dynamic_bridge", output="screen",
             arguments=["--bridge-all-topics"], condition=IfCondition(LaunchConfiguration("bridge"))),
    ]
    profile = get_profile(PROFILE)
    for spec in profile.nodes:
        params = [os.path.join(config, f) for f in spec.params_files]
        if spec.name == "recorder_node":
            params.append({"output_dir": LaunchConfiguration("output_dir")})
        # A node that dies is started again, as `solar-ros launch` does (the profile's respawn settings).
        actions.append(Node(package="solar_ros", executable=spec.name, name=spec.name, output="screen",
                            additional_env=middleware_env(config),
                            emulate_tty=True, parameters=params, remappings=list(spec.remappings),
                            respawn=profile.respawn, respawn_delay=profile.respawn_delay,
                            respawn_max_retries=profile.max_respawns))
    # inspector:=true adds the Foxglove WebSocket inspector (docs/inspection.md), labeller:=true the scripted labeller
    actions += optional_launch_actions(get_profile(PROFILE), config)
    return LaunchDescription(actions)
