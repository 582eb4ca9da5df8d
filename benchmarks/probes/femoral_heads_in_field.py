"""How many synthetic lumbopelvic images show both femoral heads, per field of view.

    python benchmarks/probes/femoral_heads_in_field.py OUT [--num-images 8] [--size 256]

Runs ``spinelandmarks synth --schema lumbopelvic_sagittal`` with the default field (450,500 mm
for this schema) and with the generator's lumbar field (260,330 mm), and counts the images
whose two femoral head centres are labelled and inside the image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spinelandmarks.cli import main
from spinelandmarks.data.annotations import read_coco
from spinelandmarks.schema import LUMBOPELVIC_SAGITTAL as S


def heads_in_field(folder: Path) -> tuple[int, int]:
    """(images with both femoral heads labelled and inside, images)."""
    idx = S.level_indices("FH")
    recs = read_coco(folder / "annotations.json", S)
    inside = 0
    for r in recs:
        p = r.points[idx]
        inside += bool((r.visibility[idx] > 0).all()
                       and ((p >= 0) & (p <= [r.width, r.height])).all())
    return inside, len(recs)


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--num-images", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    for name, fov in (("default", []), ("lumbar_field", ["--fov-mm", "260,330"])):
        folder = Path(args.out) / name
        main(["synth", str(folder), "--num-images", str(args.num_images), "--size",
              str(args.size), "--schema", "lumbopelvic_sagittal", *fov])
        n_in, n = heads_in_field(folder)
        print(f"{name}: femoral heads in the field in {n_in} of {n} images")


if __name__ == "__main__":
    run()
