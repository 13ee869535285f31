"""The shipped guard on images it was never chosen on: scikit-image sample images that are *not* in ood_data/
(cells, coins, moon, page, Shepp-Logan phantom, logo, ...). Evidence that the guard was not fitted to ood_data/ alone.

Run: python benchmarks/guard_heldout.py SKIMAGE_DATA_DIR [CHECKPOINT]   (skimage/data of a scikit-image source tree or
wheel: pip download scikit-image --only-binary :all: --no-deps, then unzip; nothing is copied)
"""
import sys
from pathlib import Path

from edgecxr.data.layouts import Sample
from edgecxr.resources import default_checkpoint
from edgecxr.train.evaluate import checkpoint_outputs, guard_accepts

USED = {"astronaut", "brick", "camera", "chelsea", "clock_motion", "coffee", "grass", "gravel", "horse",
        "hubble_deep_field", "microaneurysms", "retina", "rocket", "text"}  # already in ood_data/natural
files = sorted(p for p in Path(sys.argv[1]).iterdir()
               if p.suffix in (".png", ".jpg") and p.stem not in USED and not p.stem.startswith("motorcycle_right"))
ck = Path(sys.argv[2]) if len(sys.argv) > 2 else default_checkpoint()
outs, m = checkpoint_outputs(ck, [Sample(p, "Normal") for p in files])
acc = guard_accepts(outs, m)
for p, s, r, a in zip(files, outs["guard"].reshape(-1), outs["image_rules_ok"], acc):
    print(f"{p.name:28s} score {s:8.3g}  image rules {'pass' if r else 'refuse'}  -> {'ACCEPTED' if a else 'rejected'}")
print(f"rejected {int((~acc).sum())}/{len(acc)} (threshold {m['guard']['threshold']:.3g}, {m['guard']['method']})")
