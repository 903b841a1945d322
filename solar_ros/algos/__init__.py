"""Learning loops behind ``solar-ros train`` (ROS-free): one plain function per method."""
