#!/usr/bin/env bash
# Prepare what scripts/gpu_run.sh needs on the GPU machine, in two ignored folders beside the tree:
#   .whl/      cp312 manylinux wheels of the packages the GPU image lacks (zstandard, constriction,
#              threadpoolctl)
#   .gpu/data/ train crops (copied) and validation photos (as lossless WebP, to fit the 64 MiB carry)
# Usage: scripts/prepare_gpu_carry.sh [SHARED_DATA_DIR]   (default ../shared/data)
# Then: run tool with carry [".gpu", ".whl"] and `bash scripts/gpu_run.sh $OUT 6.5 --batch 64 --crop 192 ...`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${1:-$ROOT/../shared/data}
cd "$ROOT"
for path in /.whl/ /.gpu/; do
    grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude
done
versions=$(python3 -c "import zstandard, constriction, threadpoolctl, importlib.metadata as m; \
print(' '.join(f'{p}=={m.version(p)}' for p in ('zstandard', 'constriction', 'threadpoolctl')))")
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $versions
mkdir -p .gpu/data/train .gpu/data/val
cp -u "$DATA"/train/*.webp .gpu/data/train/
python3 - "$DATA/val" .gpu/data/val <<'PY'
import sys
from pathlib import Path

from PIL import Image

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for path in sorted(src.iterdir()):
    if path.suffix.lower() in {".png", ".webp", ".jpg", ".jpeg"} and not (dst / f"{path.stem}.webp").exists():
        with Image.open(path) as im:
            im.convert("RGB").save(dst / f"{path.stem}.webp", lossless=True, quality=100, method=4)
PY
# Fit the 64 MiB carry (tracked files + .whl + .gpu), with 2 MiB to spare: keep 4 validation photos,
# then drop evenly spaced training crops until it fits.
python3 - <<'PY'
import subprocess
from pathlib import Path

budget = 62 * 2**20
tracked = sum(Path(p).stat().st_size for p in subprocess.run(
    ["git", "ls-files", "-z"], capture_output=True, text=True, check=True).stdout.split("\0") if p and Path(p).is_file())
wheels = sum(p.stat().st_size for p in Path(".whl").iterdir())
val = sorted(Path(".gpu/data/val").iterdir())
for extra in val[4:]:
    extra.unlink()
data = lambda: sum(p.stat().st_size for p in Path(".gpu/data").rglob("*") if p.is_file())  # noqa: E731
crops = sorted(Path(".gpu/data/train").glob("*.webp"))
while tracked + wheels + data() > budget and len(crops) > 1:
    step = max(2, len(crops) // 32)
    for victim in crops[::step]:
        victim.unlink()
    crops = sorted(Path(".gpu/data/train").glob("*.webp"))
total = tracked + wheels + data()
print(f"carry: {total / 2**20:.1f} MiB ({len(crops)} training crops, {min(len(val), 4)} validation photos)")
PY
