"""What a region input can add at most, from an image-only model's out-of-fold predictions.

When every species lives in one region, knowing the region can only remove the species of other
regions. The best use of it is Bayes' rule on the image model's probabilities:
p(species | image, region) ∝ p(species | image) · [species lives in region]. The accuracy of that
masked prediction is the ceiling of what the region can add to this image model; the share of its
errors that name a species of another region is what the region can fix.

    python findings/location_ceiling.py results/conus-location --candidate image-only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.evidence import out_of_fold
from harness.leaderboard import build_leaderboard
from harness.records import RECORDS_FILE, read_records
from harness.search import RUN_FILE


def ceiling(results_dir: Path, candidate: str) -> dict:
    info = json.loads((results_dir / RUN_FILE).read_text())
    classes = info["classes"]
    folds = pd.read_csv(results_dir / "folds.csv", dtype={"id": str}, keep_default_na=False)
    board = build_leaderboard(results_dir)
    row = board[board["candidate"] == candidate]
    if row.empty:
        raise HarnessError(f"{results_dir}: no candidate {candidate!r}; it has {', '.join(board['candidate'])}.")
    records = [r for r in read_records(results_dir / RECORDS_FILE)
               if r.candidate == candidate and r.config_id == row.iloc[0]["config_id"]]
    oof = out_of_fold(results_dir, records)
    if oof is None:
        raise HarnessError(f"{results_dir}: no out-of-fold predictions stored for {candidate}.")
    region = folds["id"].str.split("/").str[0].to_numpy()  # Conus/<REGION>/...: ids are paths under the root
    species_region = pd.Series(region, index=folds["label"]).groupby(level=0).first()
    if (pd.Series(region).groupby(folds["label"].to_numpy()).nunique() > 1).any():
        raise HarnessError("a species lives in more than one region: the mask below assumes one region per species.")
    lives_in = np.array([[species_region[c] == r for c in classes] for r in region[oof.rows]])
    masked = np.where(lives_in, oof.probabilities, 0.0)
    image_only = oof.predicted == oof.labels
    with_region = masked.argmax(axis=1) == oof.labels
    wrong = ~image_only
    crosses = wrong & ~lives_in[np.arange(len(oof.rows)), oof.predicted]
    return {
        "images": int(len(oof.rows)),
        "image_only": float(image_only.mean()),
        "masked": float(with_region.mean()),
        "errors": int(wrong.sum()),
        "errors_in_other_region": int(crosses.sum()),
        "species_per_region": species_region.value_counts().to_dict(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--candidate", default="image-only")
    args = parser.parse_args()
    try:
        c = ceiling(args.results, args.candidate)
    except (HarnessError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.results} · {args.candidate}: {c['images']} out-of-fold predictions")
    print(f"species per region: {c['species_per_region']}")
    print(f"image only:                      accuracy {c['image_only']:.3f}")
    print(f"errors naming another region's species: {c['errors_in_other_region']} of {c['errors']}")
    print(f"ceiling with the region (masked): accuracy {c['masked']:.3f} (+{c['masked'] - c['image_only']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
