# Sourced by the other scripts: puts Swift on PATH where this kind of machine installs it.
if ! command -v swift >/dev/null 2>&1; then
    for d in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
        [ -x "$d/swift" ] && export PATH="$d:$PATH" && break
    done
fi
command -v swift >/dev/null 2>&1 || { echo "swift not found: install Swift 6.x (https://swift.org/install) and put it on PATH" >&2; exit 1; }
