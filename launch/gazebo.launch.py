"""The node stack with the Sawyer in Gazebo (Harmonic) and ros2_control, for a full ROS 2 install.

    ros2 launch solar_ros gazebo.launch.py [world:=empty.sdf] [output_dir:=runs/episodes]
        [inspector:=false] [labeller:=false]

Gazebo runs the arm with ``gz_ros2_control`` (effort command interfaces, controllers from
config/gazebo_controllers.yaml): ``effort_controller`` (JointGroupEffortController) listens on
/effort_controller/commands and ``joint_state_broadcaster`` publishes /joint_states, the same
topics sim_arm_node uses. ``ros_gz_bridge`` brings /clock and the scene camera's
/camera/image_raw into ROS. Gazebo has no task cost, so /solar/cost is absent here: costs are
evaluated from the recorded states by the learner. The node list and parameter files come from
``solar_ros.launcher.PROFILES["gazebo"]``.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from solar_ros.envs.sawyer_model import build_urdf
from solar_ros.launcher import get_profile, middleware_env, optional_launch_actions, validate_params_files

PROFILE = "gazebo"


def generate_launch_description():
    share = get_package_share_directory("solar_ros")
    config = os.path.join(share, "config")
    # Unknown node sections or parameter names in the parameter files stop the launch here, listing the
    # valid ones (as `solar-ros launch` does), instead of being ignored by rclpy.
    validate_params_files(get_profile(PROFILE), config)
    robot_description = build_urdf(controllers_config=os.path.join(config, "gazebo_controllers.yaml"))
    gz_launch = os.path.join(get_package_share_directory("ros_gz_sim"), "launch", "gz_sim.launch.py")
    actions = [
        DeclareLaunchArgument("world", default_value="empty.sdf", description="Gazebo world"),
        DeclareLaunchArgument("output_dir", default_value="runs/episodes", description="where episodes are recorded"),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(gz_launch),
                                 launch_arguments={"gz_args": ["-r ", LaunchConfiguration("world")]}.items()),
        Node(package="robot_state_publisher", executable="robot_state_publisher", output="screen",
             parameters=[{"robot_description": robot_description, "use_sim_time": True}]),
        Node(package="ros_gz_sim", executable="create", output="screen",
             arguments=["-topic", "robot_description", "-name", "sawyer"]),
        Node(package="ros_gz_bridge", executable="parameter_bridge", output="screen",
             arguments=["/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock",
                        "/camera/image_raw@sensor_msgs/msg/Image[gz.msgs.Image"]),
        Node(package="controller_manager", executable="spawner", output="screen",
             arguments=["joint_state_broadcaster", "--controller-manager", "/controller_manager"]),
        Node(package="controller_manager", executable="spawner", output="screen",
             arguments=["effort_controller", "--controller-manager", "/controller_manager"]),
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
