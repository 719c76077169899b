#!/usr/bin/env bash
# Fill the 64 MiB carry of a GPU visit (tree + carried folders) with as much training data as fits.
#
#   scripts/prepare_gpu_carry.sh [SHARED_DATA_DIR]   prepare (default ../shared/data)
#   scripts/prepare_gpu_carry.sh --restore           put the retired models back (after the call)
#
# Prepare leaves, in ignored folders beside the tree:
#   .whl/      cp312 manylinux wheels of the packages the GPU image lacks (zstandard, constriction,
#              threadpoolctl)
#   .gpu/data/ training crops and 4 validation photos (lossless WebP)
# and moves the retired model files (every catalog model but the default, with their side files:
# kept only to decode old archives, not needed to train) into the ignored .retired/, which does not
# travel, so that more data does. It prints what it moved. Restore after the call, whatever it
# returned: `--restore`, or the next prepare, puts them back first (both are idempotent); a prepare
# that fails puts them back itself.
#
# Training data: the 256² crops of train-q95 (JPEG q95 4:4:4, 42.5 dB against the lossless crops;
# 2.3x as many crops per MiB as the lossless train/ crops of the same photos), evenly thinned until
# the carry fits with 2 MiB to spare. One crop size keeps the sampler's single stacked tensor on the
# GPU (the 192² clothing crops would force a per-image loop). If room is left, lossless train/ crops
# fill it.
# Then: run tool with carry [".gpu", ".whl"] and `bash scripts/gpu_run.sh $OUT MINUTES --batch 64 --crop 192 ...`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RETIRED=.retired

restore() {
    [ -d "$RETIRED" ] || return 0
    local f
    for f in "$RETIRED"/*; do
        [ -e "$f" ] || continue
        mv -f "$f" aezip/model/weights/
        echo "restored aezip/model/weights/$(basename "$f")"
    done
    rmdir "$RETIRED"
}

restore
if [ "${1:-}" = "--restore" ]; then
    exit 0
fi
DATA=${1:-$ROOT/../shared/data}
trap 'echo "prepare failed: putting the retired models back" >&2; restore' ERR

for path in /.whl/ /.gpu/ /.retired/; do
    grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude
done
versions=$(python3 -c "import zstandard, constriction, threadpoolctl, importlib.metadata as m; \
print(' '.join(f'{p}=={m.version(p)}' for p in ('zstandard', 'constriction', 'threadpoolctl')))")
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $versions

# The retired models: every catalog entry but the default, and its context tables.
mkdir -p "$RETIRED"
python3 - "$RETIRED" <<'PY'
import json
import shutil
import sys
from pathlib import Path

weights = Path("aezip/model/weights")
catalog = json.loads((weights / "catalog.json").read_text())
for entry in catalog["models"]:
    if entry["name"] == catalog["default"]:
        continue
    for name in [entry["file"], entry.get("context_tables", {}).get("file")]:
        if name and (weights / name).is_file():
            shutil.move(weights / name, Path(sys.argv[1]) / name)
            print(f"moved out for the call: aezip/model/weights/{name}")
PY

rm -rf .gpu/data
mkdir -p .gpu/data/train .gpu/data/val
python3 - "$DATA" <<'PY'
import subprocess
import sys
from pathlib import Path

from PIL import Image

data, dst = Path(sys.argv[1]), Path(".gpu/data")
for path in sorted((data / "val").iterdir())[:4]:
    if path.suffix.lower() in {".png", ".webp", ".jpg", ".jpeg"}:
        with Image.open(path) as im:
            im.convert("RGB").save(dst / "val" / f"{path.stem}.webp", lossless=True, quality=100, method=4)


def size(path: Path) -> int:
    return path.stat().st_size


def square(path: Path, side: int = 256) -> bool:
    with Image.open(path) as im:
        return im.size == (side, side)


listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                        capture_output=True, text=True, check=True).stdout.split("\0")
tree = sum(size(Path(p)) for p in listed if p and Path(p).is_file())
wheels = sum(size(p) for p in Path(".whl").iterdir())
val = sum(size(p) for p in (dst / "val").iterdir())
room = 62 * 2**20 - tree - wheels - val
q95 = sorted(p for p in (data / "train-q95").glob("*.jpg") if square(p))
# Evenly thin the q95 crops until they fit: keep every k-th of n (a fraction, not a prefix).
keep = list(q95)
while keep and sum(size(p) for p in keep) > room:
    keep = [p for i, p in enumerate(keep) if i % 16 != 15]
left = room - sum(size(p) for p in keep)
lossless = []
for path in sorted((data / "train").glob("*.webp")):
    if size(path) <= left:
        lossless.append(path)
        left -= size(path)
for path in keep + lossless:
    (dst / "train" / path.name).write_bytes(path.read_bytes())
total = tree + wheels + val + sum(size(p) for p in keep + lossless)
print(f"carry: {total / 2**20:.1f} MiB: tree {tree / 2**20:.1f}, wheels {wheels / 2**20:.1f}, "
      f"{len(keep)} of {len(q95)} q95 crops of 256², {len(lossless)} lossless crops, 4 validation photos")
PY
trap - ERR
echo "after the call: scripts/prepare_gpu_carry.sh --restore"
