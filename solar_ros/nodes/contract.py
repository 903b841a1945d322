"""Topic, service and action names and QoS profiles of the node stack (docs/ros_interfaces.md).

Every node takes its names from here, so the contract lives in one place. Names are absolute and
can be remapped as usual (``--ros-args -r /camera/image_raw:=/io/internal_camera/...``).

QoS rules: sensor streams (camera images, joint states, latents) are subscribed best effort, which
matches both reliable and best-effort publishers; the model images are *published* with sensor-data
QoS (best effort), so their subscribers must be best effort too. Torque commands are reliable (the
ros2_control effort controller subscribes reliably). The policy is reliable + transient local so a
controller that starts late still gets the newest one.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

# ---- topics -------------------------------------------------------------------------------------
JOINT_STATES = "/joint_states"                      # sensor_msgs/msg/JointState
CAMERA_RAW = "/camera/image_raw"                    # sensor_msgs/msg/Image
MODEL_IMAGE = "/solar/image"                        # sensor_msgs/msg/Image (model input)
LATENT = "/solar/latent"                            # solar_ros/msg/LatentState
COMMANDS = "/effort_controller/commands"            # std_msgs/msg/Float64MultiArray, 7 torques (N m)
POLICY = "/solar/policy"                            # solar_ros/msg/LinearGaussianPolicy
EPISODE = "/solar/episode"                          # solar_ros/msg/EpisodeEvent
STEPS = "/solar/controller/steps"                   # solar_ros/msg/PolicyStep
COMMAND_INFO = "/solar/controller/command_info"     # solar_ros/msg/CommandInfo
COST = "/solar/cost"                                # solar_ros/msg/TaskCost
CLOCK = "/clock"                                    # rosgraph_msgs/msg/Clock
MODEL = "/solar/model"                              # std_msgs/msg/String: path of the newest model checkpoint
RECONSTRUCTION = "/solar/encoder/reconstruction"    # sensor_msgs/msg/Image: the model's reconstruction (diagnostics)
FEATURE_POINTS = "/solar/encoder/feature_points"    # sensor_msgs/msg/Image: feature points drawn on the input
GOAL = "/solar/goal"                                # geometry_msgs/msg/PointStamped: the task's goal (base frame)
ROBOT_DESCRIPTION = "/robot_description"            # std_msgs/msg/String: the URDF
SUCCESS_LABEL = "/solar/success_label"              # std_msgs/msg/Header: a success label given (frame_id: episode)

# ---- services and actions -----------------------------------------------------------------------
START_EPISODE = "/solar/controller/start_episode"   # solar_ros/srv/StartEpisode
STOP_EPISODE = "/solar/controller/stop_episode"     # std_srvs/srv/Trigger
ESTOP = "/solar/controller/estop"                   # std_srvs/srv/SetBool (true: engage, false: release)
SIM_RESET = "/sim/reset"                            # solar_ros/srv/ResetArm
SIM_PAUSE = "/sim/pause"                            # std_srvs/srv/SetBool (true: pause, false: resume)
FIT_MODEL = "/solar/fit_model"                      # solar_ros/action/FitModel
LABEL_SUCCESS = "/solar/label_success"              # std_srvs/srv/Trigger: "success now" (a person's sparse reward)

# ---- QoS ----------------------------------------------------------------------------------------
SENSOR_QOS: QoSProfile = qos_profile_sensor_data
"""Best effort, volatile, keep last 5: camera images (published and subscribed), sensor subscriptions."""

LATEST_SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                               reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
"""Best effort, depth 1: a real-time consumer only wants the newest sample."""

RECORDING_SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200,
                                  reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
"""Best effort with a deep queue: a recorder absorbs bursts instead of dropping samples."""

RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                          reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
"""Reliable, volatile, depth 10 (the ROS default): joint states, commands, clock, costs."""

EVENT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                       reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
"""Reliable, deep queue: episode events and per-step records must not be dropped."""

POLICY_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                        reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""Reliable + transient local, depth 1: late joiners get the newest policy."""

MODEL_QOS = POLICY_QOS
"""Reliable + transient local, depth 1: an encoder that starts late still learns the newest model."""

LATCHED_QOS = POLICY_QOS
"""Reliable + transient local, depth 1: the goal and the robot description (late joiners get them)."""

# ---- parameters ---------------------------------------------------------------------------------
ROS_PARAMETERS = ("use_sim_time", "start_type_description_service")
"""Parameters every rclpy node declares itself."""

PARAMETERS: dict[str, tuple[str, ...]] = {
    "camera_node": ("source", "input_topic", "width", "height", "encoding", "crop", "interpolation", "rate",
                    "publish_mode", "mono16_max", "frame_id", "loop_file", "log_period", "realtime_priority"),
    "controller_node": ("state_source", "rate", "clock", "hardware_timeout", "joint_names", "torque_limits",
                        "max_latent_age", "max_joint_age", "future_tolerance", "abort_on_fault",
                        "publish_command_info", "stats_period", "command_on_latent", "frame_locked",
                        "publish_when_estopped", "realtime_priority"),
    "inspector_node": ("host", "port", "max_rate", "message_backlog", "discovery_period", "exclude_topics",
                       "robot_description_file", "goal_radius"),
    "encoder_node": ("model_path", "device", "num_threads", "diagnostics_rate", "point_variance",
                     "swap_during_episode", "stats_period", "realtime_priority"),
    "model_fitting_node": ("method", "output_dir", "device", "num_threads", "niceness", "task", "horizon", "seed",
                           "config_yaml"),
    "recorder_node": ("output_dir", "topics", "write_mcap", "stop_grace", "max_episode_duration", "joint_names"),
    "labeller_node": ("success_distance", "delay", "miss_rate", "seed"),
    "sim_arm_node": ("task", "image_size", "control_rate", "camera_rate", "cost_rate", "clock_rate", "real_time_factor",
                     "command_timeout", "seed", "fixed_goal", "goal", "gravity_compensation", "camera_frame_id",
                     "start_time", "render_thread", "realtime_priority"),
    "trainer_node": ("task", "method", "seed", "iterations", "episodes_per_iteration", "first_iteration_episodes",
                     "eval_episodes", "fixed_goal",
                     "goal", "horizon", "fit_config", "episode_dir", "output_dir", "success_threshold",
                     "settle_frames", "bringup_timeout", "start_timeout", "episode_timeout", "record_timeout",
                     "fit_timeout", "max_retries", "fault_patience", "recovery_settle_time", "health_max_gap",
                     "resume", "pause_during_fits", "fit_retries", "max_failed_fits", "fit_silence_timeout"),
}
"""Node -> the parameters it declares (besides :data:`ROS_PARAMETERS`). The launcher rejects any other
name in a parameter file or an override, since ROS would silently ignore it; a test checks this
list against the ``declare(...)`` calls in each node's module."""


def node_parameters(node: str) -> tuple[str, ...]:
    """Every parameter name ``node`` accepts (its own and rclpy's); KeyError for an unknown node."""
    return PARAMETERS[node] + ROS_PARAMETERS
