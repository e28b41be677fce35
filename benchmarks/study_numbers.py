"""The five studies' own numbers as counts: k of n, with the exact (Clopper–Pearson) 95 % interval.

Every study number quoted in docs/findings.md comes from this table. A study states a percentage;
n is the size of the part it was scored on, stated by the study or, where it is not, the smallest
n for which every figure scored on that part is a whole count (printed by ``--sizes``). Not a test:

    python benchmarks/study_numbers.py            # the table (markdown)
    python benchmarks/study_numbers.py --sizes    # which n fit each group of percentages
"""

from __future__ import annotations

import argparse

from harness.evaluation.stats import binomial_interval

#: (study, claim, k, n, where n comes from). Files: ../shared/studies/<file>, cited by section.
NUMBERS = [
    ("rocks", "ResNet50 fine-tuned, test accuracy 88 %", 241, 274, "stated: 274 test images, 33 wrong (V)"),
    ("rocks", "errors made with > 90 % confidence", 15, 33, "stated: 15 of the 33 errors (V)"),
    ("minerals", "Model 1 (5-block CNN), test 0.8250", 33, 40, "not stated: 10 % of 398 ≈ 40; 33/40 = 0.8250"),
    ("minerals", "Model 2 (4-block CNN), test 0.8311", 123, 148, "not stated: smallest n fitting all four (--sizes)"),
    ("minerals", "Model 2.1 (+ dropout, augmentation), test 0.8919", 132, 148, "as above"),
    ("minerals", "VGG16 frozen + augmentation, test 0.8446", 125, 148, "as above (split not stated)"),
    ("minerals", "VGG16 last 4 layers fine-tuned, 0.9054", 134, 148, "as above (split not stated)"),
    ("gems", "initial VGG16, validation 0.50", 25, 50, "stated: support 50 (Figura 5)"),
    ("gems", "initial VGG16, test 0.77", 33, 43, "stated: support 43 (Figura 7)"),
    ("gems", "improved VGG16, validation 0.84", 42, 50, "stated: support 50 (Figura 11)"),
    ("gems", "improved VGG16, test 0.95", 41, 43, "stated: support 43 (Figura 13)"),
    ("gems", "Bloodstone recall, initial test", 0, 4, "stated: support 4 (Figura 7)"),
    ("gems", "Bloodstone recall, initial validation", 0, 5, "5 a class (Conjunto de datos)"),
    ("gems", "Bloodstone recall, improved test", 3, 4, "stated: 0.75 of 4 (Figura 13)"),
    ("gems", "Opal recall, improved validation", 1, 5, "stated: 0.20 of 5 (Figura 11)"),
    ("sports", "initial (frozen, 1e-5), test 0.6133", 46, 75, "stated: 75 test images"),
    ("sports", "initial, val_accuracy 0.6562 (last epoch)", 42, 64, "2 steps of 32: 64 of the 75 valid images"),
    ("sports", "final (last 3 layers, 1e-4), test 0.9067", 68, 75, "stated: 68 out of 75"),
    ("sports", "final, val_accuracy 0.9531 (last epoch)", 61, 64, "2 steps of 32: 64 of the 75 valid images"),
    ("conus", "Xception, no location, top-1 92.9 %", 182, 196, "the thesis's val list: 196 (conus_layout)"),
    ("conus", "Xception, no location, top-2 96.9 %", 190, 196, "as above"),
    ("conus", "Xception, no location, top-5 100 %", 196, 196, "as above"),
    ("conus", "+ location, head 1024, top-1 95.4 %", 187, 196, "as above"),
    ("conus", "+ location, head 1024, top-2 98.5 %", 193, 196, "as above"),
    ("conus", "+ location, head 1024, top-3 99.0 %", 194, 196, "as above"),
    ("conus", "+ location, head 600, top-1 93.9 % (epoch 41)", 184, 196, "as above"),
    ("conus", "+ location, head 600, top-1 93.4 % (epoch 50)", 183, 196, "as above"),
    ("conus", "+ location, head 2000, top-1 91.8 % (epoch 38)", 180, 196, "as above"),
    ("conus", "+ location, head 2000, top-1 90.8 % (epoch 50)", 178, 196, "as above"),
    ("conus", "+ location, heads 1024 + 600, top-1 92.9 % (epochs 45, 50)", 182, 196, "as above"),
]

#: Percentages the studies print for one scored part, to find the n they fit (``--sizes``).
GROUPS = {
    "minerals test parts (Models 2, 2.1, VGG16 ×2)": [0.8311, 0.8919, 0.8446, 0.9054],
    "minerals Model 1 test part": [0.8250],
    "sports valid (val_accuracy of both logs)": [0.1250, 0.2188, 0.3125, 0.4844, 0.5469, 0.6562, 0.9531],
    "conus val list (every top-k table, 1 decimal)": [
        0.929, 0.969, 0.954, 0.985, 0.990, 0.939, 0.934, 0.959, 0.980, 0.918, 0.908, 0.964, 0.944, 0.995, 0.974
    ],
}


def fits(value: float, n: int) -> bool:
    """Whether some k/n rounds to ``value`` at the value's printed precision."""
    decimals = len(f"{value}".split(".")[1])
    return any(round(k / n, decimals) == round(value, decimals) for k in range(n + 1))


def sizes(values: list[float], low: int = 20, high: int = 400) -> list[int]:
    """Every n in [low, high] for which all ``values`` are whole counts."""
    return [n for n in range(low, high + 1) if all(fits(v, n) for v in values)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", action="store_true", help="print which n fit each group of percentages")
    args = parser.parse_args()
    if args.sizes:
        for name, values in GROUPS.items():
            print(f"{name}: n in {sizes(values)[:12]}")
        print("conus top-3 96.7 % (head 2000, epoch 38) fits n = 196:", fits(0.967, 196))
        return
    print("| study | number | k / n | % | exact 95 % interval | n from |")
    print("|---|---|---:|---:|---:|---|")
    for study, claim, k, n, source in NUMBERS:
        low, high = binomial_interval(k, n)
        print(f"| {study} | {claim} | {k} / {n} | {100 * k / n:.1f} | {100 * low:.1f}–{100 * high:.1f} | {source} |")


if __name__ == "__main__":
    main()
