#!/usr/bin/env bash
# The host's part of the test command, checked before a long run starts: every command and
# file that scripts/host-requirements lists for the given groups (default: all) must be there.
# Names each one that is missing with the Debian package that brings it, and exits 1.
#
#   scripts/preflight.sh [GROUP...]             check (groups: base, molecule)
#   scripts/preflight.sh --packages GROUP       the group's packages from bookworm, one a line
#   scripts/preflight.sh --backports GROUP      the group's packages from bookworm-backports
#
# The setup scripts install from the same list, so what is installed and what is checked
# cannot drift apart.
set -euo pipefail
# SLUIS_HOST_REQUIREMENTS: another manifest (the tests of this script).
manifest=${SLUIS_HOST_REQUIREMENTS:-"$(dirname "$0")/host-requirements"}

# The manifest's lines as "group package need", comments and blank lines dropped.
entries() {
    sed -e 's/#.*//' "$manifest" | awk 'NF >= 3 { print $1, $2, $3 }'
}

list_packages() {
    local group=$1 suite=$2
    entries | awk -v g="$group" -v s="$suite" '
        $1 != g { next }
        {
            n = split($2, part, "@")
            if ((n == 2 && part[2] == s) || (n == 1 && s == "")) print part[1]
        }' | sort -u
}

present() {
    local need=$1
    if [[ $need == /* ]]; then
        [ -e "$need" ]
    else
        command -v "$need" >/dev/null 2>&1
    fi
}

case "${1:-}" in
--packages)
    list_packages "${2:?group}" ""
    exit 0
    ;;
--backports)
    list_packages "${2:?group}" bookworm-backports
    exit 0
    ;;
esac

groups=("$@")
[ "${#groups[@]}" -gt 0 ] || groups=(base molecule)
missing=0
checked=0
while read -r group package need; do
    [[ " ${groups[*]} " == *" $group "* ]] || continue
    checked=$((checked + 1))
    if ! present "$need"; then
        suite=""
        [[ $package == *@* ]] && suite=" -t ${package#*@}"
        echo "preflight: missing $need: apt-get install$suite ${package%@*} (scripts/$([ "$group" = molecule ] && echo setup-molecule.sh || echo setup.sh) installs it)" >&2
        missing=$((missing + 1))
    fi
done < <(entries)
if [ "$missing" -gt 0 ]; then
    echo "preflight: $missing of $checked host requirements missing (${groups[*]}): nothing was run" >&2
    exit 1
fi
echo "preflight: $checked host requirements present (${groups[*]})"
