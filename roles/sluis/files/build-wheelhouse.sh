#!/usr/bin/env bash
# Build the Sluis wheelhouse on the control node (run by the sluis role, delegated to localhost):
# the sluis wheel from the repository and every dependency as a wheel, pinned by the
# constraints file, so that the box installs with `pip install --no-index --find-links`.
#
#   build-wheelhouse.sh SOURCE_DIR REF WHEELHOUSE CONSTRAINTS PYTHON [PIP_WHEEL_ARGS...]
#
# REF "" builds the working tree as it is (tracked and new files, not ignored ones: no stale
# build/ or egg-info); a git ref builds exactly that commit (git archive). The sluis wheel is
# reproducible (SOURCE_DATE_EPOCH), so an unchanged source gives an unchanged wheel and the box
# sees no change. Each distinct build lives in WHEELHOUSE.d/<digest> with a reproducible
# archive of it beside (<digest>.tar, what goes to the boxes in one copy); WHEELHOUSE is a link
# to the current one, swapped atomically, so a concurrent run never sees half a wheelhouse.
# Prints one JSON object: wheelhouse (the real directory), archive, wheel (the sluis wheel's
# file name), python (major.minor of PYTHON), changed (whether WHEELHOUSE now points elsewhere).
set -euo pipefail

src=$1 ref=$2 out=$3 constraints=$4 python=$5
shift 5

work=$(mktemp -d "${TMPDIR:-/tmp}/sluis-wheelhouse.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/wheels"

if [ -n "$ref" ]; then
    git -C "$src" archive --format=tar "$ref" | tar -x -C "$work/src"
elif git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
    # Files deleted in the working tree are still listed by git; skip them quietly.
    (cd "$src" && git ls-files -z --cached --others --exclude-standard \
        | tar --null --files-from=- --ignore-failed-read --warning=no-failed-read -cf -) \
        | tar -x --warning=no-timestamp -C "$work/src"
else
    cp -a "$src/." "$work/src/"
fi

# A fixed timestamp inside the wheel (zip entries): the same source gives the same bytes.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$work/wheels" \
    --constraint "$constraints" "$@" "$work/src" >&2
cp "$constraints" "$work/wheels/constraints.txt"

(cd "$work/wheels" && sha256sum -- * | sort -k 2) > "$work/SHA256SUMS"
digest=$(sha256sum "$work/SHA256SUMS" | cut -c1-16)
target="$out.d/$digest"
mkdir -p "$out.d"
if [ ! -d "$target" ] || [ ! -f "$target.tar" ]; then
    mv "$work/SHA256SUMS" "$work/wheels/SHA256SUMS"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --mode=go-w \
        -C "$work/wheels" -cf "$work/wheelhouse.tar" .
    rm -rf "$target.tmp.$$"
    mv "$work/wheels" "$target.tmp.$$"
    mv "$work/wheelhouse.tar" "$target.tar.tmp.$$"
    rm -rf "$target"
    mv -T "$target.tmp.$$" "$target"
    mv -T "$target.tar.tmp.$$" "$target.tar"
fi

changed=false
if [ "$(readlink "$out" 2>/dev/null || true)" != "$target" ]; then
    ln -sfn "$target" "$out.tmp.$$"
    mv -T "$out.tmp.$$" "$out"
    changed=true
fi
# Keep the three newest builds (a concurrent run may still be copying an older one).
find "$out.d" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn | tail -n +4 \
    | cut -d' ' -f2- | while read -r old; do [ "$old" = "$target" ] || rm -rf -- "$old" "$old.tar"; done

wheel=$(cd "$target" && ls sluis-*.whl)
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
printf '{"wheelhouse": "%s", "archive": "%s", "wheel": "%s", "python": "%s", "changed": %s}\n' \
    "$target" "$target.tar" "$wheel" "$version" "$changed"
