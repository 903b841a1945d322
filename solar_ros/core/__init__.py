"""ROS-free core library: numpy/torch only. Importing it must never import rclpy."""
