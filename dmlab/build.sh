#!/usr/bin/env bash
# Builds DeepMind Lab's Python module (deepmind_lab) from its source with Bazel and Debian's
# libraries, and installs it into .venv. DeepMind Lab (GPL-2.0) stays outside this repository:
# DMLAB_SRC names a checkout of github.com/google-deepmind/lab, else the script clones one.
# Its WORKSPACE downloads zlib, libpng, libjpeg, Lua, Eigen, GLib, libxml2 and Abseil; here each
# is overridden (--override_repository) by a small BUILD file of dmlab/system/ over the Debian
# package, so that Bazel needs no network. The source tree itself is only read.
#   DMLAB_SRC    source tree (default: a clone under DMLAB_BUILD)
#   DMLAB_BUILD  Bazel's output, the wheel (default: ~/.cache/dmlab, about 1.3 GiB)
#   DMLAB_JOBS   parallel compile jobs (default: all cores)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-$(dirname "$HERE")/.venv/bin/python}
WORK=${DMLAB_BUILD:-$HOME/.cache/dmlab}
JOBS=${DMLAB_JOBS:-$(nproc)}
die() { echo "dmlab/build.sh: $*" >&2; exit 1; }

[[ -x $PY ]] || die "no $PY: build the project's venv first (make test does)"

# A DMLAB_SRC is checked before anything is installed; without it, a clone comes after.
is_lab() { grep -qs 'name = "org_deepmind_lab"' "$1/WORKSPACE"; }
[[ -z ${DMLAB_SRC:-} ]] || is_lab "$DMLAB_SRC" || die "DMLAB_SRC=$DMLAB_SRC is not DeepMind Lab's \
source tree (a checkout of github.com/google-deepmind/lab, whose WORKSPACE names org_deepmind_lab)"
"$PY" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
  || die "$PY has no C headers (Python.h): install its -dev package (Debian: python3-dev)"

# Bazel and its platforms, the libraries DeepMind Lab's WORKSPACE would download, OSMesa
# (renderer='software') and EGL (renderer='hardware').
PKGS=(bazel-bootstrap bazel-platforms g++ git zip unzip libsdl2-dev libosmesa6-dev libegl-dev libgl-dev
      zlib1g-dev libpng-dev libjpeg-dev libglib2.0-dev libxml2-dev libeigen3-dev libabsl-dev
      liblua5.1-0-dev)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  command -v apt-get >/dev/null || die "needs the Debian packages ${missing[*]} and there is no apt-get"
  echo "Installing ${missing[*]} (apt-get)."
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
    >/dev/null || die "apt-get install ${missing[*]} failed: run it as root on Debian 12 or newer"
fi

SRC=${DMLAB_SRC:-$WORK/lab}
if ! is_lab "$SRC"; then
  echo "Cloning DeepMind Lab into $SRC."
  rm -rf "$SRC"
  git clone -q --depth 1 https://github.com/google-deepmind/lab "$SRC" 2>/dev/null || { rm -rf "$SRC"
    die "no DeepMind Lab source and no network to clone it: set DMLAB_SRC=/path/to/a/checkout of github.com/google-deepmind/lab"; }
fi
SRC=$(cd "$SRC" && pwd)
# The assets are globbed, so a tree without them still builds, into untextured levels.
[[ -f $SRC/assets/textures/model/hr_hat_d.tga ]] \
  || echo "Warning: $SRC lacks texture files (e.g. assets/textures/model/hr_hat_d.tga): levels will render untextured." >&2

# One local repository per download: the rule sets Bazel 4 itself fetches (only their macros
# are loaded), then the libraries, where links give the headers' folders fixed names.
ARCH=$(gcc -dumpmachine)
SYS=$WORK/system
rm -rf "$SYS"
overrides=(--override_repository=platforms=/usr/share/bazel/tools/platforms
           "--override_repository=rules_cc=$SYS/rules_cc"
           "--override_repository=rules_java=$SYS/rules_java")
for lang in cc java; do
  mkdir -p "$SYS/rules_$lang/$lang"
  touch "$SYS/rules_$lang/WORKSPACE" "$SYS/rules_$lang/BUILD" "$SYS/rules_$lang/$lang/BUILD"
  cp "$HERE/system/rules_${lang}_defs.bzl" "$SYS/rules_$lang/$lang/defs.bzl"
done
for repo in zlib_archive png_archive jpeg_archive lua_archive eigen_archive glib_archive libxml_archive; do
  mkdir -p "$SYS/$repo"
  touch "$SYS/$repo/WORKSPACE"
  cp "$HERE/system/$repo.BUILD" "$SYS/$repo/BUILD"
  overrides+=("--override_repository=$repo=$SYS/$repo")
done
ln -s /usr/include/lua5.1 "$SYS/lua_archive/include"
ln -s /usr/include/eigen3 "$SYS/eigen_archive/include"
ln -s /usr/include/glib-2.0 "$SYS/glib_archive/include"
ln -s "/usr/lib/$ARCH/glib-2.0/include" "$SYS/glib_archive/libinclude"
# Debian's libxml2 headers pull in ICU's, whose <stdbool.h> breaks q3map2's `typedef qboolean
# bool`; q3map2 never touches the ICU members, so its copy of the headers says ICU is off.
mkdir -p "$SYS/libxml_archive/include"
cp -r /usr/include/libxml2/libxml "$SYS/libxml_archive/include/"
sed -i 's/^#define LIBXML_ICU_ENABLED$//' "$SYS/libxml_archive/include/libxml/xmlversion.h"

# Abseil: every target DeepMind Lab names links all of Debian's Abseil libraries; absl/log is
# newer than Debian's Abseil, so its CHECK and LOG come from dmlab/system/absl_log.h.
ABSL=$SYS/com_google_absl
mkdir -p "$ABSL/absl/log"
touch "$ABSL/WORKSPACE"
libs=$(cd "/usr/lib/$ARCH" && ls libabsl_*.so | sed -E 's/^lib(.*)\.so$/"-l\1", /' | tr -d '\n')
echo "cc_library(name = \"absl\", linkopts = [$libs], visibility = [\"//visibility:public\"])" > "$ABSL/BUILD"
for spec in strings:strings,str_format log:log,check container:flat_hash_map,node_hash_map \
            types:span,variant meta:type_traits memory:memory flags:flag; do
  pkg=${spec%%:*} targets=${spec#*:} hdrs=
  [[ $pkg == log ]] && hdrs='hdrs = ["check.h", "log.h"], '
  mkdir -p "$ABSL/absl/$pkg"
  for t in ${targets//,/ }; do
    echo "cc_library(name = \"$t\", ${hdrs}deps = [\"//:absl\"], visibility = [\"//visibility:public\"])"
  done > "$ABSL/absl/$pkg/BUILD"
done
cp "$HERE/system/absl_log.h" "$ABSL/absl/log/check.h"
cp "$HERE/system/absl_log.h" "$ABSL/absl/log/log.h"
overrides+=("--override_repository=com_google_absl=$ABSL")

# python_system.bzl asks `python3` for the Python and NumPy headers: make that the venv's.
export PATH="$(dirname "$PY"):$PATH"
bazel() { command bazel --output_user_root="$WORK/bazel" "$@"; }
trap 'bazel shutdown 2>/dev/null' EXIT  # No idle Bazel server left holding memory.
FLAGS=(-c opt --cxxopt=-std=c++17 --copt=-w --symlink_prefix=/ --spawn_strategy=processwrapper-sandbox --define graphics=osmesa_or_egl
       --jobs="$JOBS" --local_cpu_resources="$JOBS" "${overrides[@]}")
cd "$SRC"
start=$SECONDS
bazel build "${FLAGS[@]}" //python/pip_package:build_pip_package \
  || die "bazel build failed (the error is above); sources: $SRC, output: $WORK/bazel"
BIN=$(bazel info "${FLAGS[@]}" bazel-bin 2>/dev/null)

# DeepMind Lab's own packaging script wants bazel-bin/ and python/ in its working folder.
STAGE=$WORK/stage
rm -rf "$STAGE" "$WORK/dist"
mkdir -p "$STAGE"
ln -s "$BIN" "$STAGE/bazel-bin"
ln -s "$SRC/python" "$STAGE/python"
(cd "$STAGE" && PYTHON_BIN_PATH=$PY bash python/pip_package/build_pip_package.sh "$WORK/dist") >/dev/null
"$PY" -m pip install -q --no-deps --force-reinstall "$WORK"/dist/deepmind_lab-*.whl
"$PY" -c "import deepmind_lab" || die "deepmind_lab was installed but does not import (the error is above)"
echo "deepmind_lab installed into $("$PY" -c 'import sys; print(sys.prefix)') (build: $((SECONDS - start)) s)."
