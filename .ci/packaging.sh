#!/usr/bin/env bash
# Packaging checks (run by .ci/run, root needed for chroot and network namespaces):
#   1. the static Linux build (static glibc) of mtg-multi: no shared libraries, and it serves
#      and passes its own healthcheck in an empty root holding only the binary and a config;
#   2. the image FROM scratch builds from that binary and runs `--version` (when podman works);
#   3. contrib/systemd/mtg-multi.service passes `systemd-analyze verify`.
# PROFILE=release|debug (default debug: CI time; the Dockerfile builds release the same way).
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${PROFILE:-debug}"
target="$(rustc -vV | sed -n 's/^host: //p')"
work=$(mktemp -d)
pid_file="$work/pid"
cleanup() {
  if [ -s "$pid_file" ]; then kill "$(cat "$pid_file")" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "-- static build ($PROFILE, $target)"
start=$(date +%s)
profile_flag=()
[ "$PROFILE" = release ] && profile_flag=(--release)
# crt-static links glibc in; with --target the flag skips build scripts and proc macros.
# No debug info in the CI build: it is only run, and that halves the time.
CARGO_PROFILE_DEV_DEBUG=0 RUSTFLAGS="-C target-feature=+crt-static" cargo build "${profile_flag[@]}" --locked -p mtg-app --target "$target"
bin="${CARGO_TARGET_DIR:-target}/$target/$PROFILE/mtg-multi"
echo "built in $(( $(date +%s) - start ))s: $bin ($(du -h "$bin" | cut -f1))"
ldd_out=$(ldd "$bin" 2>&1 || true)
case "$ldd_out" in
  *"not a dynamic executable"*|*"statically linked"*) echo "ldd: $ldd_out" ;;
  *) echo "the binary is dynamic:"; echo "$ldd_out"; exit 1 ;;
esac

echo "-- serves from an empty root (only the binary and its config)"
root="$work/root"
mkdir -p "$root/config"
cp "$bin" "$root/mtg-multi"
secret=$("$bin" generate-secret --hex front.example)
cat > "$root/config/config.toml" <<EOF
bind-to = "127.0.0.1:3128"
api-bind-to = "127.0.0.1:3129"
log-format = "json"
secret = "$secret"
EOF
find "$root" | sort
# A network namespace of its own (loopback only), the empty root as /.
unshare --net --fork -- sh -c "
  ip link set lo up
  chroot '$root' /mtg-multi --version
  chroot '$root' /mtg-multi run /config/config.toml 2>'$work/log' &
  echo \$! > '$pid_file'
  for _ in \$(seq 1 300); do
    grep -q '\"serving\"' '$work/log' && break
    kill -0 \$(cat '$pid_file') 2>/dev/null || break
    sleep 0.1
  done
  chroot '$root' /mtg-multi healthcheck /config/config.toml
  rc=\$?
  kill -TERM \$(cat '$pid_file'); wait \$(cat '$pid_file') || true
  exit \$rc
" || { echo "the static binary did not serve from an empty root:"; cat "$work/log"; exit 1; }
grep '"serving"' "$work/log"
: > "$pid_file"

echo "-- image FROM scratch"
if command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then
  context="$work/image"
  mkdir -p "$context"
  cp "$bin" "$context/mtg-multi"
  cp contrib/docker/config.toml "$context/config.toml"
  # docker format: the OCI one drops HEALTHCHECK.
  podman build -q --format docker -f contrib/docker/Dockerfile.prebuilt -t localhost/mtg-multi:ci "$context"
  # Inside a container (as CI may be), crun may not set rlimits or use hybrid cgroups: explicit
  # limits, and runc when crun cannot start the container at all.
  run_opts=(--no-healthcheck --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network none)
  runtime=()
  if ! podman run --rm "${run_opts[@]}" localhost/mtg-multi:ci --version; then
    command -v runc >/dev/null 2>&1 || { echo "podman cannot run a container here, and runc is missing"; exit 1; }
    runtime=(--runtime runc)
    podman "${runtime[@]}" run --rm "${run_opts[@]}" localhost/mtg-multi:ci --version
  fi
  # The image's own config (port 443, as nobody) with the secret from the environment: it
  # serves, and its HEALTHCHECK command passes. Docker allows unprivileged ports below 1024 in
  # a container by default; podman needs the sysctl.
  name="mtg-multi-ci-$$"
  podman "${runtime[@]}" run -d --name "$name" "${run_opts[@]}" \
    --sysctl net.ipv4.ip_unprivileged_port_start=0 -e SECRET="$secret" localhost/mtg-multi:ci >/dev/null
  served=no
  for _ in $(seq 1 300); do
    if podman logs "$name" 2>&1 | grep -q ' serving '; then served=yes; break; fi
    [ "$(podman inspect -f '{{.State.Running}}' "$name")" = true ] || break
    sleep 0.1
  done
  health=$(podman image inspect localhost/mtg-multi:ci | tr -d ' \n' | grep -o '"Healthcheck":{"Test":\[[^]]*\]' || true)
  echo "HEALTHCHECK: $health"
  rc=0
  [ "$served" = yes ] && podman "${runtime[@]}" exec "$name" /mtg-multi healthcheck /config/config.toml || rc=1
  podman logs "$name" 2>&1 | tail -3
  podman "${runtime[@]}" rm -f "$name" >/dev/null
  podman image rm -f localhost/mtg-multi:ci >/dev/null
  [ "$rc" = 0 ] || { echo "the image did not serve and pass its healthcheck"; exit 1; }
  case "$health" in *healthcheck*) ;; *) echo "the image has no HEALTHCHECK"; exit 1 ;; esac
  echo "ok: image built, serves on 443 as nobody, healthcheck passes"
else
  echo "skipped: podman is not usable here"
fi

echo "-- systemd unit"
unit_dir="$work/unit"
mkdir -p "$unit_dir/mtg-multi.service.d" "$unit_dir/man/man1"
cp contrib/systemd/mtg-multi.service "$unit_dir/"
# verify needs ExecStart's binary to exist: a drop-in points it at the one just built.
printf '[Service]\nExecStart=\nExecStart=%s run /etc/mtg-multi/config.toml\n' "$(realpath "$bin")" \
  > "$unit_dir/mtg-multi.service.d/ci.conf"
# Documentation=man:mtg-multi(1) is looked up: the page the binary prints.
"$bin" manpage > "$unit_dir/man/man1/mtg-multi.1"
MANPATH="$unit_dir/man" systemd-analyze verify "$unit_dir/mtg-multi.service"
# Exposure shows as 0-10 and --threshold takes 0-100: fail above 2.0 (the unit scores 1.4).
systemd-analyze security --offline=yes --threshold=20 "$unit_dir/mtg-multi.service" | tail -1
echo "ok: packaging"
