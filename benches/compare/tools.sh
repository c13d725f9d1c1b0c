# Sourced by the scripts in benches/ before anything else they need.

# install_missing COMMAND... -> installs, in one apt-get run, the Debian
# packages of those commands that are not on the machine (each package is
# named like its command: nginx, haproxy, wrk, curl, strace, valgrind, gcc)
install_missing() {
  local tool missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
}
