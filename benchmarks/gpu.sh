#!/usr/bin/env bash
# The prepared GPU check, for a short lease of a bare GPU machine (Python 3.12
# with CUDA 13 libraries, no TensorFlow, no network; files arrive with the
# working tree, at most 64 MiB a call). benchmarks/README.md ("GPU check")
# gives the sequence of calls.
#
#   bash benchmarks/gpu.sh pack          here: wheels -> .gpu/manifest, .gpu/p01, .gpu/p02, ...
#   bash benchmarks/gpu.sh split         here: the same bundle in pieces sized to today's tree
#   bash benchmarks/gpu.sh calls         here: the calls to make, checked against the tree's size
#   bash benchmarks/gpu.sh receive       there: stores the carried pieces in /tmp/gpu
#   bash benchmarks/gpu.sh run [MINUTES] there: receives, installs, checks the GPU, times
#                                        speed.py's GPU rows with and without XLA, then
#                                        trains dmc_walker_walk until MINUTES (default 8)
#                                        have passed; results under $OUT
#
# Settings (environment): GPU_STORE (/tmp/gpu), GPU_PYTHON (python3), OUT
# (GPU_STORE/out), GPU_CUDA_DIRS (more directories of CUDA libraries, searched
# first), GPU_SPEED_S (150: most seconds for the rows without XLA),
# GPU_XLA_S (360: with XLA, from their start beside the checks),
# GPU_TRAIN_MIN_S (150: seconds kept for training),
# GPU_TRAIN_FLAGS (more dreamer.py flags), GPU_XZ_LEVEL (9). For trying the
# script on a machine without a GPU: GPU_DRY=1 (run stops after the install and
# the environment's setup), GPU_PROBE_DEVICE=CPU, GPU_SPEED_ARGS (more
# arguments of both speed runs, e.g. '--batch 4 10 --quick --configs debug').
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PACK=$ROOT/.gpu
WHEELS=$ROOT/benchmarks/gpu_wheels.txt
STORE=${GPU_STORE:-/tmp/gpu}
PY=${GPU_PYTHON:-python3}
LIMIT_MIB=64  # What one call may carry: the working tree plus the carried paths.
# The glvnd loaders for MuJoCo's EGL, unpacked there only if it lacks them.
DEBS=(libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
          --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# TensorFlow's CUDA 12 build loads these by name; where the machine has only
# another major version, a link of that name points to it.
CUDA12_NAMES=(libcublas.so.12 libcublasLt.so.12 libcufft.so.11 libcusolver.so.11
              libcusparse.so.12 libcurand.so.10 libcudnn.so.9)

log() { printf '[gpu.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf 'gpu.sh: error: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 is not installed"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# ---------------------------------------------------------------- here: pack

# Files that travel with every call: tracked and untracked-not-ignored ones.
tree_bytes() {
  (cd "$ROOT" && git ls-files -z -co --exclude-standard \
     | xargs -0 -r stat -c %s -- 2>/dev/null || true) | awk '{ s += $1 } END { print s + 0 }'
}

ignore_pack_dir() {
  (cd "$ROOT" && git check-ignore -q .gpu/x) && return 0
  local exclude
  exclude=$(cd "$ROOT" && git rev-parse --git-path info/exclude)
  [[ $exclude = /* ]] || exclude=$ROOT/$exclude
  mkdir -p "$(dirname "$exclude")"
  echo "/.gpu/" >>"$exclude"
  log "added /.gpu/ to $exclude"
}

# Drops what neither TensorFlow nor the project loads, and the static symbol
# tables of TensorFlow's libraries (their dynamic symbols stay): C headers,
# console scripts, dm_control's locomotion assets and test models, MuJoCo's
# Studio app, the JAX and numpy substrates of TensorFlow Probability.
prune_tree() {
  local site=$1 before after
  [[ -d $site/tensorflow ]] || die "prune: no tensorflow in $site"
  before=$(du -sb "$site" | cut -f1)
  rm -rf "$site/bin" "$site/tensorflow/include" "$site"/nvidia/*/include \
    "$site/dm_control/locomotion" "$site/dm_control/mujoco/testing" \
    "$site/dm_control/blender" "$site/dm_control/mjcf/test_assets" \
    "$site/mujoco/experimental/studio" "$site/tensorflow_probability/substrates/jax" \
    "$site/tensorflow_probability/substrates/numpy"
  find "$site/tensorflow" -type f \( -name '*.so' -o -name '*.so.*' \) -print0 \
    | xargs -0 -r strip --strip-unneeded
  after=$(du -sb "$site" | cut -f1)
  log "pruned $site: $(mib "$before") -> $(mib "$after") MiB"
}

# What the bundle is made of: the wheel list, the pruning, the packages.
bundle_source() {
  { cat "$WHEELS"; declare -f prune_tree; echo "${DEBS[*]}"; } | sha256sum | cut -d' ' -f1
}

pack() {
  local py=${PACK_PYTHON:-python3} level=${GPU_XZ_LEVEL:-9} source
  for t in "$py" git xz tar split sha256sum strip; do need "$t"; done
  ignore_pack_dir
  source=$(bundle_source)
  if [[ -f $PACK/bundle.tar.xz && -f $PACK/bundle.info ]] \
     && grep -qx "source $source" "$PACK/bundle.info"; then
    log "$PACK/bundle.tar.xz is up to date with gpu_wheels.txt and gpu.sh: splitting it again"
    split_bundle
    return
  fi
  mkdir -p "$PACK/wheels" "$PACK/debs"
  log "wheels for Python 3.12 (manylinux x86-64) into $PACK/wheels"
  "$py" -m pip download -q --no-deps "${PLATFORM[@]}" -d "$PACK/wheels" -r "$WHEELS"
  if ! compgen -G "$PACK/debs/*.deb" >/dev/null; then
    need apt-get
    log "glvnd packages (EGL, OpenGL loaders) into $PACK/debs"
    local o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64
             -oDir::State::Lists="$PACK/apt-lists")
    mkdir -p "$PACK/apt-lists/partial"
    apt-get "${o[@]}" update -qq
    (cd "$PACK/debs" && apt-get "${o[@]}" download "${DEBS[@]}")
  fi
  log "installing them for Python 3.12 into $PACK/stage/site (pip --target)"
  rm -rf "$PACK/stage"
  mkdir -p "$PACK/stage"
  "$py" -m pip install -q --no-index --find-links "$PACK/wheels" --no-deps --no-compile \
    --target "$PACK/stage/site" "${PLATFORM[@]}" -r "$WHEELS"
  prune_tree "$PACK/stage/site"
  cp "$PACK"/debs/*.deb "$PACK/stage/"
  (cd "$PACK/wheels" && sha256sum -- *.whl) >"$PACK/stage/WHEELS.sha256"
  log "xz -$level of $(mib "$(du -sb "$PACK/stage" | cut -f1)") MiB (takes a while on few cores)"
  rm -f "$PACK/bundle.info"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$PACK/stage" -cf - . \
    | xz "-$level" -T2 -c >"$PACK/bundle.tar.xz.part"
  mv "$PACK/bundle.tar.xz.part" "$PACK/bundle.tar.xz"
  printf 'source %s\nunpacked %s\n' "$source" "$(du -sb "$PACK/stage" | cut -f1)" \
    >"$PACK/bundle.info"
  split_bundle
}

# Pieces of equal size, as few as fit beside today's working tree (with 1 MiB
# to spare for its growth), and the manifest of their checksums.
split_bundle() {
  local bundle=$PACK/bundle.tar.xz size tree room n f
  [[ -f $bundle ]] || die "no $bundle: run 'bash benchmarks/gpu.sh pack'"
  ignore_pack_dir  # Else the pieces would all travel with every call.
  size=$(stat -c %s "$bundle")
  tree=$(tree_bytes)
  room=$(( LIMIT_MIB * 1048576 - tree - 1048576 - 4096 ))
  (( room >= 8 * 1048576 )) || die "the working tree ($(mib "$tree") MiB) leaves no room for pieces"
  n=$(( (size + room - 1) / room ))
  rm -f "$PACK"/p[0-9][0-9] "$PACK/manifest"
  split -n "$n" --numeric-suffixes=1 -a 2 "$bundle" "$PACK/p"
  {
    echo "# benchmarks/gpu.sh bundle, split $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "bundle $(sha256sum "$bundle" | cut -d' ' -f1) $size" \
         "$(awk '$1 == "unpacked" { print $2 }' "$PACK/bundle.info" 2>/dev/null)"
    for f in "$PACK"/p[0-9][0-9]; do
      echo "piece $(basename "$f") $(sha256sum "$f" | cut -d' ' -f1) $(stat -c %s "$f")"
    done
  } >"$PACK/manifest"
  log "$n pieces of $(mib $(( size / n ))) MiB, $(mib "$size") MiB in all"
  calls
}

# The calls to make, after checking that each fits with today's tree.
calls() {
  [[ -f $PACK/manifest ]] || die "no $PACK/manifest: run 'bash benchmarks/gpu.sh pack' first"
  local tree largest names last i=0
  tree=$(tree_bytes)
  largest=$(awk '$1 == "piece" { if ($4 > m) m = $4 } END { print m + 0 }' "$PACK/manifest")
  if (( tree + largest + 65536 > LIMIT_MIB * 1048576 )); then
    die "the tree ($(mib "$tree") MiB) and a piece ($(mib "$largest") MiB) exceed" \
        "$LIMIT_MIB MiB: run 'bash benchmarks/gpu.sh split' (it sizes the pieces to the tree)"
  fi
  for f in "$PACK"/p[0-9][0-9]; do
    [[ -f $f ]] || die "$f is missing: run 'bash benchmarks/gpu.sh split'"
  done
  mapfile -t names < <(awk '$1 == "piece" { print $2 }' "$PACK/manifest")
  last=${names[-1]}
  echo "Calls (the working tree is $(mib "$tree") MiB; each call carries the manifest and one"
  echo "piece of at most $(mib "$largest") MiB); make them back to back, since the machine"
  echo "goes back after about 30 s idle. MINUTES: 12 minus the minutes the lease has held"
  echo "so far (lease.held_s in the last reply), at most 9; timeout_s: MINUTES x 60 + 60."
  for name in "${names[@]}"; do
    i=$((i + 1))
    if [[ $name != "$last" ]]; then
      echo "$i. run(command='bash benchmarks/gpu.sh receive', carry=['.gpu/manifest', '.gpu/$name'], timeout_s=120)"
    else
      echo "$i. run(command='bash benchmarks/gpu.sh run MINUTES', carry=['.gpu/manifest', '.gpu/$name'], timeout_s=MINUTES*60+60)"
    fi
  done
  echo "If a reply says pieces are missing (a fresh machine), carry those again, then the last call."
}

# -------------------------------------------------------- there: receive, run

receive() {
  local f name want got have=() missing=()
  mkdir -p "$STORE/pieces"
  if [[ -f $PACK/manifest ]]; then
    if [[ -f $STORE/manifest ]] \
       && ! cmp -s <(grep -v '^#' "$PACK/manifest") <(grep -v '^#' "$STORE/manifest"); then
      log "a new bundle: dropping the stored pieces of the old one"
      rm -rf "$STORE/pieces" "$STORE/site"
      mkdir -p "$STORE/pieces"
    fi
    cp "$PACK/manifest" "$STORE/manifest"
  fi
  [[ -f $STORE/manifest ]] || die "no manifest: carry .gpu/manifest with each piece"
  for f in "$PACK"/p[0-9][0-9]; do
    [[ -f $f ]] || continue
    name=$(basename "$f")
    want=$(awk -v n="$name" '$1 == "piece" && $2 == n { print $3 }' "$STORE/manifest")
    [[ -n $want ]] || die "$name is not in the manifest: pieces and manifest of different packs"
    if [[ -f $STORE/pieces/$name ]]; then
      rm -f "$f"
      continue
    fi
    got=$(sha256sum "$f" | cut -d' ' -f1)
    [[ $got == "$want" ]] || die "$name arrived damaged (sha256 $got, not $want): carry it again"
    mv "$f" "$STORE/pieces/$name.part"
    mv "$STORE/pieces/$name.part" "$STORE/pieces/$name"
    log "stored $name"
  done
  while read -r name; do
    if [[ -f $STORE/pieces/$name ]]; then have+=("$name"); else missing+=("$name"); fi
  done < <(awk '$1 == "piece" { print $2 }' "$STORE/manifest")
  echo "pieces stored in $STORE/pieces: ${#have[@]} of $(( ${#have[@]} + ${#missing[@]} ))" \
       "(${have[*]:-none}); still to carry: ${missing[*]:-none}"
  MISSING=${missing[*]:-}
}

unxz_stream() {
  if command -v xz >/dev/null; then
    # Several threads where xz has them (5.4 on), one block of the bundle each.
    if xz --help 2>/dev/null | grep -q -- --threads; then xz -dc -T0; else xz -dc; fi
  else
    "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer, 1 << 20)'
  fi
}

install_bundle() {
  local want got
  want=$(awk '$1 == "bundle" { print $2 }' "$STORE/manifest")
  if [[ -f $STORE/site/.bundle && $(cat "$STORE/site/.bundle") == "$want" ]]; then
    log "bundle already installed in $STORE/site"
    return
  fi
  got=$(awk '$1 == "piece" { print $2 }' "$STORE/manifest" \
        | sed "s|^|$STORE/pieces/|" | xargs cat | sha256sum | cut -d' ' -f1)
  [[ $got == "$want" ]] || die "the joined pieces do not make the bundle (sha256 $got, not $want)"
  rm -rf "$STORE/new" "$STORE/site" "$STORE/debs"
  mkdir -p "$STORE/new"
  awk '$1 == "piece" { print $2 }' "$STORE/manifest" | sed "s|^|$STORE/pieces/|" | xargs cat \
    | unxz_stream | tar -x -C "$STORE/new"
  mkdir -p "$STORE/debs"
  mv "$STORE"/new/*.deb "$STORE/debs/"
  mv "$STORE/new/site" "$STORE/site"
  mv "$STORE/new/WHEELS.sha256" "$STORE/site/"
  rm -rf "$STORE/new"
  echo "$want" >"$STORE/site/.bundle"
  log "installed $(du -sm "$STORE/site" | cut -f1) MiB into $STORE/site"
}

# The machine's CUDA 13 libraries: directories on the loader's path, and links
# under the CUDA 12 names that TensorFlow asks for.
cuda_setup() {
  local dirs=() d name stem found links=$STORE/cuda12
  [[ -n ${GPU_CUDA_DIRS:-} ]] && IFS=: read -r -a dirs <<<"$GPU_CUDA_DIRS"
  mapfile -t -O ${#dirs[@]} dirs < <("$PY" - <<'EOF'
import glob, os, site
roots = [*site.getsitepackages(), site.getusersitepackages()]
dirs = []
for root in roots:
    for pattern in ("nvidia/*/lib", "nvidia/cu*/lib64"):
        dirs += sorted(glob.glob(os.path.join(root, pattern)))
dirs += [d for d in ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib")
         if os.path.isdir(d)]
print("\n".join(dict.fromkeys(dirs)))
EOF
)
  rm -rf "$links"
  mkdir -p "$links"
  for name in "${CUDA12_NAMES[@]}"; do
    found=""
    for d in "${dirs[@]}"; do
      [[ -e $d/$name ]] && found=$d/$name && break
    done
    if [[ -n $found ]]; then
      echo "  $name: $found"
      continue
    fi
    stem=${name%%.so.*}
    # The highest major version present, by its soname file (libcufft.so.12).
    found=$(for d in "${dirs[@]}"; do compgen -G "$d/$stem.so.[0-9]*" || true; done \
            | { grep -E "/$stem\.so\.[0-9]+$" || true; } \
            | sed -E 's/.*\.so\.([0-9]+)$/\1\t&/' | sort -n | tail -1 | cut -f2)
    if [[ -n $found ]]; then
      ln -s "$found" "$links/$name"
      echo "  $name -> $found"
    else
      echo "  $name: not found; TensorFlow will run without it"
    fi
  done
  local path=$STORE/site/nvidia/cuda_runtime/lib:$links
  for d in "${dirs[@]}"; do path+=:$d; done
  export LD_LIBRARY_PATH=$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
}

# XLA compiles for the GPU with ptxas and libdevice: the machine's CUDA 13
# ones, gathered under one directory that --xla_gpu_cuda_data_dir names.
xla_setup() {
  local dir=$STORE/cuda-data roots=() found ptxas libdevice
  roots=(/usr/local/cuda /usr/local/cuda-* /usr/local /opt)
  mapfile -t -O ${#roots[@]} roots < <("$PY" -c 'import site; print("\n".join(site.getsitepackages()))')
  rm -rf "$dir"
  mkdir -p "$dir/bin" "$dir/nvvm/libdevice"
  ptxas=$(command -v ptxas || true)
  found=$(for r in "${roots[@]}"; do
            [[ -d $r ]] && find "$r" -maxdepth 7 \( -name ptxas -o -name nvlink \
              -o -name libdevice.10.bc \) \( -type f -o -type l \) 2>/dev/null
          done || true)
  [[ -n $ptxas ]] || ptxas=$(grep -m1 '/ptxas$' <<<"$found" || true)
  libdevice=$(grep -m1 '/libdevice\.10\.bc$' <<<"$found" || true)
  local flags=""
  if [[ -n $ptxas ]]; then
    ln -s "$ptxas" "$dir/bin/ptxas"
    local nvlink
    nvlink=$(grep -m1 "^$(dirname "$ptxas")/nvlink$" <<<"$found" || true)
    [[ -n $nvlink ]] && ln -s "$nvlink" "$dir/bin/nvlink"
    echo "  ptxas: $ptxas ($("$ptxas" --version 2>/dev/null | grep -o 'release [0-9.]*' || echo '?'))"
  else
    flags+=" --xla_gpu_unsafe_fallback_to_driver_on_ptxas_not_found=true"
    echo "  ptxas: not found; XLA falls back to the driver's PTX compiler"
  fi
  if [[ -n $libdevice ]]; then
    ln -s "$libdevice" "$dir/nvvm/libdevice/libdevice.10.bc"
    echo "  libdevice: $libdevice"
  else
    echo "  libdevice.10.bc: not found; XLA on the GPU will fail (--jit, --jit_policy)"
  fi
  export PATH=$dir/bin:$PATH
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_cuda_data_dir=$dir$flags"
}

# MuJoCo renders through EGL with NVIDIA's driver: glvnd's loaders (carried as
# Debian packages, unpacked into / only where missing) and the vendor file.
egl_setup() {
  if ! ldconfig -p | grep -q 'libEGL\.so\.1 ' || ! ldconfig -p | grep -q 'libOpenGL\.so\.0 '; then
    need dpkg-deb
    echo "  no EGL or OpenGL loader: unpacking ${DEBS[*]} into /"
    for f in "$STORE"/debs/*.deb; do dpkg-deb -x "$f" /; done
    ldconfig
  fi
  local vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  if [[ -z ${__EGL_VENDOR_LIBRARY_FILENAMES:-} && -f $vendor ]] \
     && ! compgen -G '/usr/share/glvnd/egl_vendor.d/*nvidia*' >/dev/null; then
    export __EGL_VENDOR_LIBRARY_FILENAMES=$vendor
    echo "  EGL vendor file: $vendor"
  fi
  export MUJOCO_GL=egl PYOPENGL_PLATFORM=egl
}

remaining() { echo $(( DEADLINE - $(date +%s) )); }
min() { (( $1 < $2 )) && echo "$1" || echo "$2"; }

run_check() {
  local minutes=${1:-8} start
  [[ $minutes =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "run MINUTES: a number, not '$minutes'"
  start=$(date +%s)
  DEADLINE=$(awk -v s="$start" -v m="$minutes" 'BEGIN { printf "%d", s + m * 60 - 20 }')
  OUT=${OUT:-$STORE/out}
  mkdir -p "$OUT" "$STORE"
  receive
  [[ -z $MISSING ]] || die "pieces missing: $MISSING; carry them (receive), then run again"
  install_bundle
  stage_done install

  if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    local wrong="$PY is Python $("$PY" -V 2>&1 | cut -d' ' -f2), the bundle is for 3.12"
    [[ ${GPU_DRY:-0} == 1 || ${GPU_PROBE_DEVICE:-GPU} == CPU ]] || die "$wrong: set GPU_PYTHON"
    log "$wrong (a trial without a GPU: going on)"
  fi
  export PYTHONPATH=$STORE/site:$ROOT PYTHONNOUSERSITE=1 PYTHONUNBUFFERED=1
  log "CUDA libraries"
  cuda_setup
  log "XLA"
  xla_setup
  log "EGL"
  egl_setup
  if [[ ${GPU_DRY:-0} == 1 ]]; then
    log "GPU_DRY=1: stopping before the checks"
    env | grep -E '^(LD_LIBRARY_PATH|PYTHONPATH|XLA_FLAGS|PATH|MUJOCO_GL|__EGL)=' | sort
    return
  fi
  # Byte-compiles what the runs import, with 8 workers, while the checks run
  # (stopped before the timings; each .pyc is written atomically).
  "$PY" -m compileall -q -j 8 "$STORE/site/tensorflow/python" "$STORE/site/keras" \
    "$STORE/site/tensorflow_probability" "$STORE/site/dm_control" >/dev/null 2>&1 &
  local compiling=$!
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
    | tee "$STORE/card.txt" || echo "unknown" >"$STORE/card.txt"
  stage_done setup

  # XLA's compilation of the train step took more than 150 s on the H200
  # (RESULTS.md), so it starts now, beside the checks and the rows without
  # XLA, in its own process; its timed calls wait for those rows to end
  # (the file $hold). It ends in time to leave GPU_TRAIN_MIN_S for training.
  local check=benchmarks/gpu_check.py train_min=${GPU_TRAIN_MIN_S:-150} t xla_pid=""
  local hold=$STORE/hold speed_args=()
  read -r -a speed_args <<<"${GPU_SPEED_ARGS:-}"
  rm -f "$hold" "$OUT/speed_jit.json" "$OUT/speed_nojit.json"
  trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
  t=$(min "${GPU_XLA_S:-360}" $(( $(remaining) - train_min )))
  if (( t >= 60 )); then
    log "speed.py's GPU rows with XLA (--jit True), in the background: at most $t s"
    TF_FORCE_GPU_ALLOW_GROWTH=true timeout -k 10 "$t" "$PY" "$ROOT/$check" speed \
      --out "$OUT/speed_jit.json" --precision 32 16 --hold "$hold" \
      --note "compiled while other processes ran; timed alone" "${speed_args[@]}" --jit True \
      >"$STORE/xla.log" 2>&1 &
    xla_pid=$!
  else
    log "no time for the rows with XLA ($t s)"
  fi

  log "checks: TensorFlow on the GPU (and XLA), MuJoCo through EGL"
  local egl_ok=1
  # All of TensorFlow's messages here (the libraries it opened or missed, the
  # device it made); memory as needed, since other processes share the GPU.
  TF_CPP_MIN_LOG_LEVEL=0 TF_FORCE_GPU_ALLOW_GROWTH=true timeout -k 5 180 \
    "$PY" "$ROOT/$check" probe --out "$OUT/probe.json" --device "${GPU_PROBE_DEVICE:-GPU}" &
  local probe=$!
  timeout -k 5 120 "$PY" "$ROOT/$check" egl --out "$STORE/egl.json" || egl_ok=0
  wait "$probe" || die "TensorFlow does not run on the GPU (its messages are above)"
  [[ $egl_ok == 1 ]] || die "MuJoCo cannot render through EGL (its messages are above)"
  local xla_ok nojit_flags=()
  xla_ok=$("$PY" -c 'import json, sys; print(int(json.load(open(sys.argv[1]))["xla_ok"]))' \
           "$OUT/probe.json")
  if (( ! xla_ok )); then
    nojit_flags=(--jit_policy False)
    [[ -n $xla_pid ]] && kill "$xla_pid" 2>/dev/null && log "XLA fails: rows with XLA stopped"
  fi
  pkill -P "$compiling" 2>/dev/null || true
  kill "$compiling" 2>/dev/null || true
  stage_done checks

  t=$(min "${GPU_SPEED_S:-150}" $(( $(remaining) - train_min )))
  if (( t >= 40 )); then
    log "speed.py's GPU rows without XLA (at most $t s)"
    # 16 first: the policy row uses the last agent, float32 like the likely training.
    TF_FORCE_GPU_ALLOW_GROWTH=true timeout -k 10 "$t" "$PY" "$ROOT/$check" speed \
      --out "$OUT/speed_nojit.json" --precision 16 32 --matmul --policy \
      --note "an XLA compilation ran in another process meanwhile" "${speed_args[@]}" \
      "${nojit_flags[@]}" \
      || log "the rows without XLA stopped early"
  else
    log "no time for the rows without XLA ($t s)"
  fi
  touch "$hold"
  stage_done speed_nojit
  if [[ -n $xla_pid ]]; then
    log "waiting for the rows with XLA (at most $(( DEADLINE - train_min - $(date +%s) )) s)"
    wait "$xla_pid" || log "the rows with XLA stopped (exit $?; 124: the time was up)"
    echo "--- their log:"
    tail -n 60 "$STORE/xla.log"
    echo "---"
  fi
  stage_done speed_jit

  t=$(remaining)
  local flags
  read -r -a flags <<<"$("$PY" "$ROOT/$check" choose --train-seconds "$t" \
      --speed "$OUT/speed_nojit.json" "$OUT/speed_jit.json" --xla-ok "$xla_ok" \
      --why "$STORE/choice.json")"
  read -r -a extra <<<"${GPU_TRAIN_FLAGS:-}"
  local logdir=$STORE/walker_$(date -u +%Y%m%d_%H%M%S)
  if (( t >= 60 )); then
    log "training dmc_walker_walk for $t s: ${flags[*]} ${extra[*]}"
    local rc=0
    timeout -k 20 "$t" "$PY" "$ROOT/dreamer.py" --logdir "$logdir" --task dmc_walker_walk \
      "${flags[@]}" "${extra[@]}" || rc=$?
    log "training stopped (exit $rc; 124: the time was up)"
    # A failure of its own (EGL in the env workers short of GPU memory, say)
    # gets one more try, with TensorFlow taking memory only as needed.
    t=$(remaining)
    if (( rc != 124 && rc != 137 && t >= 90 )); then
      log "training once more, with TF_FORCE_GPU_ALLOW_GROWTH=true, for $t s"
      logdir+=_growth
      rc=0
      TF_FORCE_GPU_ALLOW_GROWTH=true timeout -k 20 "$t" "$PY" "$ROOT/dreamer.py" \
        --logdir "$logdir" --task dmc_walker_walk "${flags[@]}" "${extra[@]}" || rc=$?
      log "training stopped (exit $rc; 124: the time was up)"
    fi
  else
    log "no time left to train ($t s)"
  fi
  stage_done train
  [[ -f $logdir/metrics.jsonl ]] && cp "$logdir/metrics.jsonl" "$OUT/metrics.jsonl"
  [[ -f $logdir/config.yaml ]] && cp "$logdir/config.yaml" "$OUT/config.yaml"
  "$PY" "$ROOT/$check" summary --out "$OUT/summary.json" --card "$(cat "$STORE/card.txt")" \
    --metrics "$OUT/metrics.jsonl" --speed "$OUT/speed_nojit.json" "$OUT/speed_jit.json" \
    --probe "$OUT/probe.json" --egl "$STORE/egl.json" --choice "$STORE/choice.json" \
    --stages "$STORE/stages.txt" --minutes "$minutes" --train-flags "${flags[*]} ${extra[*]}"
}

STAGE_START=$(date +%s)
stage_done() {
  local now
  now=$(date +%s)
  echo "$1 $(( now - STAGE_START )) $now" >>"$STORE/stages.txt"
  log "$1: $(( now - STAGE_START )) s"
  STAGE_START=$now
}

main() {
  local cmd=${1:-help}
  shift || true
  case $cmd in
    pack) pack ;;
    split) split_bundle ;;
    calls) calls ;;
    prune) prune_tree "${1:?prune DIR}" ;;
    receive) receive ;;
    run)
      mkdir -p "$STORE" "${OUT:-$STORE/out}"
      rm -f "$STORE/stages.txt"
      # Everything also to the log that comes back with the results.
      run_check "$@" 2>&1 | tee "${OUT:-$STORE/out}/log.txt"
      ;;
    *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; [[ $cmd == help ]] ;;
  esac
}

# On one line, so that bash has read all of it before running: the script
# may be replaced while a long pack runs.
main "$@"; exit
