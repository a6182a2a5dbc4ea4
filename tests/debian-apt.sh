# Sourced by the scripts that take real files from Debian: a private apt configuration built
# from the machine's own apt sources (the same mirror URIs; nothing is hard-coded), with its own
# lists and archives, so the machine's apt state is never touched.
#
# usage: private_apt DIR TYPE SUITES...   (TYPE: deb-src or deb); sets the array apt_opts and
# runs `apt-get update` with it.
private_apt() {
    local apt_dir=$1/.apt type=$2
    shift 2
    mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/archives/partial"
    local uris keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    uris=$( { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p';
              grep -h -E '^deb[[:space:]]' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' || true; } \
            | tr ' ' '\n' | grep -E '^https?://' | grep -v -- '-security' | sort -u || true)
    if [ -z "$uris" ]; then
        echo "error: no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list" >&2
        exit 1
    fi
    {
        echo "Types: $type"
        echo "URIs: $(echo $uris)"
        echo "Suites: $*"
        echo "Components: main"
        [ -f "$keyring" ] && echo "Signed-By: $keyring"
    } > "$apt_dir/sources.list.d/$type.sources"
    apt_opts=(
        -o "Dir::Etc::SourceList=/dev/null"
        -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache::Archives=$apt_dir/archives"
        -o "APT::Sandbox::User=root"
    )
    apt-get "${apt_opts[@]}" -qq update >&2
}
