#!/bin/sh
# Installs the kbundle executable of this image (Kairos pulls the image built for the node's
# architecture) to /usr/local/bin/kbundle, atomically: copy beside it, then rename over it.
# Under `kbundle install --root DIR` (a dry run, possibly for another architecture) KBUNDLE_ROOT
# is DIR and the executable is not started.
set -eu
dest="${KBUNDLE_ROOT:-}/usr/local/bin"
mkdir -p "$dest"
tmp="$dest/.kbundle.new.$$"
trap 'rm -f "$tmp"' EXIT
cp kbundle "$tmp"
chmod 0755 "$tmp"
if [ -z "${KBUNDLE_ROOT:-}" ]; then
  # On the node: never replace a working kbundle with one that does not start here.
  "$tmp" --version >/dev/null
fi
# The V8 code cache belongs to the old executable (the new one would ignore it anyway).
rm -f "$dest/kbundle.v8cache"
mv -f "$tmp" "$dest/kbundle"
trap - EXIT
echo "installed /usr/local/bin/kbundle"
if [ -z "${KBUNDLE_ROOT:-}" ]; then
  # Compiled CLI for faster starts, made by this node's kbundle for itself. Optional: without it
  # kbundle works the same, compiling its JavaScript on every start.
  "$dest/kbundle" --write-code-cache || echo "kbundle: no code cache written; kbundle works, starting slower" >&2
fi
