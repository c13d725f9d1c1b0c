# Sourced by the scripts in benches/ (from the repository root), through
# common.sh or on its own by those that need no gateway build.

# machine -> one line naming what the figures were measured on: cores, CPU
# model (family/model numbers too: the same brand string covers several
# generations) and kernel. Two runs on different CPUs are not one machine
# in two moods, so every script prints this before its results.
machine() {
  awk -F': *' -v cores="$(nproc)" -v kernel="$(uname -r)" '
    /^model name/ && !name { name = $2 } /^cpu family/ && !fam { fam = $2 } /^model\t/ && !mod { mod = $2 }
    END { printf "== machine: %s cores, %s (family %s, model %s), kernel %s\n", cores, name, fam, mod, kernel }' /proc/cpuinfo
}
