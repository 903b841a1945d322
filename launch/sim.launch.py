"""The whole learning stack with the MuJoCo Sawyer (sim_arm_node owns /clock); ends when the trainer does.

    ros2 launch solar_ros sim.launch.py [real_time_factor:=1.0] [output_dir:=runs/episodes]
        [results_dir:=runs/node_train] [seed:=0] [inspector:=false] [labeller:=false]

The image method: add ``method:=solar state_source:=latent`` (the controller then acts on the
encoder's latent instead of the joint state).

Which nodes run with which parameter files comes from ``solar_ros.launcher.PROFILES["sim"]`` (the
same description ``solar-ros launch sim`` uses where ``ros2 launch`` is not available).

Every node is respawned when it dies (``respawn``, ``respawn_delay`` and ``respawn_max_retries`` from
the profile, as ``solar-ros launch`` does); the run ends when the trainer exits by itself (a trainer
killed by a signal is respawned and resumes the run from its persisted state).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from solar_ros.launcher import get_profile, middleware_env, optional_launch_actions, validate_params_files

PROFILE = "sim"


def generate_launch_description():
    config = os.path.join(get_package_share_directory("solar_ros"), "config")
    # Unknown node sections or parameter names in the parameter files stop the launch here, listing the
    # valid ones (as `solar-ros launch` does), instead of being ignored by rclpy.
    validate_params_files(get_profile(PROFILE), config)
    arg = LaunchConfiguration
    overrides = {
        "sim_arm_node": {"real_time_factor": arg("real_time_factor")},
        "controller_node": {"state_source": arg("state_source")},
        "recorder_node": {"output_dir": arg("output_dir")},
        "trainer_node": {"episode_dir": arg("output_dir"), "output_dir": arg("results_dir"),
                         "method": arg("method"), "seed": arg("seed")},
    }
    actions = [
        DeclareLaunchArgument("real_time_factor", default_value="1.0",
                              description="simulated seconds per wall second (0: as fast as possible)"),
        DeclareLaunchArgument("output_dir", default_value="runs/episodes", description="where episodes are recorded"),
        DeclareLaunchArgument("results_dir", default_value="runs/node_train",
                              description="where the trainer writes summary.json and learning_curve.png"),
        DeclareLaunchArgument("method", default_value="lqr_joints",
                              description="fit method: lqr_joints, solar, solar_mpc (the MPC ablation) or dsae"),
        DeclareLaunchArgument("state_source", default_value="joints",
                              description="controller state: joints (lqr_joints), latent (solar) "
                                          "or latent+joints (dsae)"),
        DeclareLaunchArgument("seed", default_value="0", description="run seed"),
    ]
    spec = get_profile(PROFILE)
    for node in spec.nodes:
        params = [os.path.join(config, f) for f in node.params_files]
        if node.name in overrides:
            params.append(overrides[node.name])
        # The run is over when the trainer exits by itself: that stops the rest of the stack.
        on_exit = end_launch_unless_killed if node.name == spec.main_node else None
        actions.append(Node(package="solar_ros", executable=node.name, name=node.name, output="screen",
                            additional_env=middleware_env(config),
                            emulate_tty=True, parameters=params, remappings=list(node.remappings), on_exit=on_exit,
                            respawn=spec.respawn, respawn_delay=spec.respawn_delay,
                            respawn_max_retries=spec.max_respawns))
    # inspector:=true adds the Foxglove WebSocket inspector (docs/inspection.md), labeller:=true the scripted labeller
    actions += optional_launch_actions(get_profile(PROFILE), config)
    return LaunchDescription(actions)


def end_launch_unless_killed(event, _context):
    """on_exit of the trainer: its own exit (status >= 0) ends the launch; killed by a signal
    (negative status) it is respawned instead and resumes the run."""
    if event.returncode is not None and event.returncode >= 0:
        return [Shutdown(reason=f"trainer_node finished with status {event.returncode}")]
    return None
