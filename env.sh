# Source this file (bash or zsh) after ./setup.sh:   source env.sh
# It activates .venv, points ROS 2 at the right prefix (the system ROS 2 if one was sourced at set-up,
# the PyPI wheels in .venv otherwise) and overlays the built workspace (install/).

_carbon_ai_root="$(cd "$(dirname "${BASH_SOURCE[0]:-${(%):-%x}}")" && pwd)"
if [ ! -f "$_carbon_ai_root/.venv/bin/activate" ] || [ ! -f "$_carbon_ai_root/install/local_setup.bash" ]; then
  echo "carbon_ai: not set up yet; run ./setup.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
if [ -f "$_carbon_ai_root/.venv/ros-distro" ]; then
  # set-up found a system ROS 2: source it again (a new shell does not have it)
  . "/opt/ros/$(cat "$_carbon_ai_root/.venv/ros-distro")/setup.bash"
fi
. "$_carbon_ai_root/.venv/bin/activate"
if [ ! -f "$_carbon_ai_root/.venv/ros-distro" ]; then
  # the venv is the ROS prefix
  export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi
if [ -f "$_carbon_ai_root/.venv/ros2-tools/install/local_setup.bash" ]; then
  # launch_ros imports composition_interfaces, built by set-up from ../shared/ros2-tools
  . "$_carbon_ai_root/.venv/ros2-tools/install/local_setup.bash"
fi
. "$_carbon_ai_root/install/local_setup.bash"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
unset _carbon_ai_root
