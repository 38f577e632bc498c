# Cache entries written by the shell tools (sourced by tools/debian-fetch.sh, tools/uapi-headers.sh and
# tools/kernel/build.sh). An entry is a folder built under a temporary name and moved into place only when it is
# complete; its ".complete" file lists every file with its size, and the entry is checked against that list before
# each use. A bad entry (missing files, a changed size, an unfinished or older-format entry) is deleted, with one line
# saying so, and built again.

# The sorted "size path" list of the regular files under $1 (without .complete).
cache_manifest() {
  (cd "$1" && find . -type f ! -path ./.complete -printf '%s %p\n' | LC_ALL=C sort)
}

# cache_ok DIR WHAT [AGAIN]: true if DIR is a complete entry matching its list; a bad one is deleted, with one line
# on stderr ending in AGAIN (default "building it again").
cache_ok() {
  local dir="$1" what="$2" again="${3:-building it again}"
  [ -e "$dir" ] || return 1
  if [ -s "$dir/.complete" ] && cache_manifest "$dir" | cmp -s - "$dir/.complete"; then
    return 0
  fi
  echo "cache: the cached $what $dir is incomplete or changed; deleting it and $again" >&2
  rm -rf "$dir"
  return 1
}

# cache_commit TMP DEST WHAT: record TMP's file list, check it is not empty, and move TMP into place as DEST.
cache_commit() {
  local tmp="$1" dest="$2" what="$3" list
  list=$(cache_manifest "$tmp")
  if [ -z "$list" ]; then
    echo "cache: the $what just built in $tmp is empty; not caching it" >&2
    rm -rf "$tmp"
    return 1
  fi
  printf '%s\n' "$list" > "$tmp/.complete"
  rm -rf "$dest"
  mv "$tmp" "$dest"
}

# bzimage_problem FILE: prints why FILE is not an x86 bzImage (nothing if it is one): the boot sector signature
# 0x55AA at 510, "HdrS" at 0x202 and at least 512 KiB. Same checks as bzImageProblem in tools/kernel/cache.ts.
bzimage_problem() {
  local file="$1" size
  [ -f "$file" ] || { echo "missing"; return; }
  size=$(stat -c %s "$file")
  if [ "$size" -lt 524288 ]; then echo "$size bytes, too small for a kernel"; return; fi
  [ "$(od -An -tx1 -j510 -N2 "$file" | tr -d ' \n')" = 55aa ] || { echo "no 0x55AA boot signature at 510"; return; }
  [ "$(dd if="$file" bs=1 skip=514 count=4 2>/dev/null)" = HdrS ] || { echo 'no "HdrS" setup header at 0x202'; return; }
}

# arm64_image_problem FILE: prints why FILE is not an arm64 kernel Image (nothing if it is one): the Image header's
# magic "ARM\x64" at 0x38 and at least 512 KiB. Same checks as arm64ImageProblem in tools/kernel/cache.ts.
arm64_image_problem() {
  local file="$1" size
  [ -f "$file" ] || { echo "missing"; return; }
  size=$(stat -c %s "$file")
  if [ "$size" -lt 524288 ]; then echo "$size bytes, too small for a kernel"; return; fi
  [ "$(od -An -tx1 -j56 -N4 "$file" | tr -d ' \n')" = 41524d64 ] || { echo 'no arm64 Image magic "ARM\x64" at 0x38'; return; }
}
