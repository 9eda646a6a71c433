"""Rebuild the bundled multilingual emoji image–text dataset.

Sources (Debian packages, no network needed):

* ``unicode-data``           – ``emoji-test.txt`` (emoji list, group, subgroup, order)
* ``fonts-noto-color-emoji`` – ``NotoColorEmoji.ttf`` (rendered images)
* ``unicode-cldr-core``      – CLDR ``annotations`` / ``annotationsDerived`` (names, keywords)

Usage::

    python scripts/build_emoji.py [--out DIR]   # default: mm_st/data/emoji/

A maintainer script (it calls ``dpkg-query`` for the package versions), not part of the mm_st package.

Writes ``train.parquet``, ``test.parquet`` and ``LICENSES.md``. The output is
deterministic: rows follow emoji-test.txt order, and an emoji is in the test split
iff ``int(sha1(emoji).hexdigest(), 16) % 5 == 0``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
CLDR = Path("/usr/share/unicode/cldr/common")
LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "pl", "tr", "ru", "ar", "hi", "sw", "ja", "zh", "ko")
PACKAGES = ("unicode-data", "fonts-noto-color-emoji", "unicode-cldr-core")
FONT_SIZE = 109  # the only size the CBDT bitmap font provides
CANVAS = (136, 128)
IMAGE_SIZE = 64
MAX_BYTES = 10 * 1024 * 1024
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "mm_st" / "data" / "emoji"


def is_test(emoji: str) -> bool:
    """Split rule: test iff sha1(emoji) mod 5 == 0."""
    return int(hashlib.sha1(emoji.encode("utf-8")).hexdigest(), 16) % 5 == 0


def read_emoji_test(path: Path = EMOJI_TEST) -> list[dict]:
    """Fully-qualified emoji (no skin-tone variants, no components), in file order."""
    rows, group, subgroup = [], None, None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            cps, rest = line.split(";", 1)
            status, comment = rest.split("#", 1)
            if status.strip() != "fully-qualified" or group == "Component" or "skin tone" in comment:
                continue
            cps = cps.split()
            rows.append({
                "emoji": "".join(chr(int(c, 16)) for c in cps),
                "codepoints": " ".join(cps),
                "group": group,
                "subgroup": subgroup,
            })
    return rows


def read_annotations(lang: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(tts names, keywords) for one language; base annotations win over derived ones."""
    names: dict[str, str] = {}
    keywords: dict[str, list[str]] = {}
    for sub in ("annotations", "annotationsDerived"):
        path = CLDR / sub / f"{lang}.xml"
        if not path.exists():
            continue
        for el in ET.parse(path).iter("annotation"):
            cp, text = el.get("cp"), (el.text or "").strip()
            if not cp or not text or text == "↑↑↑":  # ↑↑↑ = inherit (i.e. missing)
                continue
            if el.get("type") == "tts":
                names.setdefault(cp, text)
            else:
                kws = [k.strip() for k in text.split("|") if k.strip()]
                if kws:
                    keywords.setdefault(cp, kws)
    return names, keywords


def lookup(table: dict, emoji: str):
    """Look up by the emoji string, then with U+FE0F removed."""
    if emoji in table:
        return table[emoji]
    return table.get(emoji.replace("\ufe0f", ""))


def render(emoji: str, font) -> bytes:
    """PNG bytes of a 64x64 RGB rendering of ``emoji`` (cropped, on white)."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGBA", CANVAS, (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), emoji, font=font, embedded_color=True)
    bbox = canvas.getbbox()
    if bbox is None:
        raise RuntimeError(f"font rendered nothing for {emoji!r} (U+{ord(emoji[0]):04X}...)")
    glyph = canvas.crop(bbox)
    # Centre on a white square so non-square glyphs (flags, arrows) keep their aspect ratio.
    side = max(glyph.size)
    img = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    img.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    img = img.convert("RGB")
    img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
    if img.getextrema() == ((255, 255), (255, 255), (255, 255)):
        raise RuntimeError(f"blank image for {emoji!r}")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def package_versions() -> dict[str, str]:
    try:
        out = subprocess.run(["dpkg-query", "-W", *PACKAGES], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return {}
    return dict(line.split("\t", 1) for line in out.strip().splitlines() if "\t" in line)


def features():
    import datasets

    feats = {
        "emoji": datasets.Value("string"),
        "codepoints": datasets.Value("string"),
        "image": datasets.Image(),
        "group": datasets.Value("string"),
        "subgroup": datasets.Value("string"),
    }
    feats.update({f"name_{lang}": datasets.Value("string") for lang in LANGUAGES})
    feats.update({f"keywords_{lang}": datasets.List(datasets.Value("string")) for lang in LANGUAGES})
    return datasets.Features(feats)


def write_licenses(out: Path, counts: dict[str, int], coverage: dict[str, float]) -> None:
    versions = package_versions()
    pkg_lines = "\n".join(f"- `{p}` {versions.get(p, '(version unknown)')}" for p in PACKAGES)
    cov = ", ".join(f"{lang} {coverage[lang]:.0f}%" for lang in LANGUAGES)
    text = f"""# Emoji image–text dataset (bundled)

{counts['train'] + counts['test']} emoji rendered as 64x64 RGB images with names and keywords in
{len(LANGUAGES)} languages. Splits: train {counts['train']}, test {counts['test']}.

## Columns

- `emoji` (str), `codepoints` (str, e.g. `1F600` or `1F1E9 1F1EA`)
- `image` (`datasets.Image`, 64x64 RGB PNG: glyph cropped to its bounding box, centred on a white square)
- `group`, `subgroup` (str, from emoji-test.txt)
- `name_<lang>` (str or None): CLDR short name (`type="tts"`)
- `keywords_<lang>` (list of str, `[]` when missing): CLDR keywords

Languages: {", ".join(LANGUAGES)}. Name coverage: {cov}.

Rows: fully-qualified emoji from emoji-test.txt, without skin-tone variants and the
Component group, with an English CLDR name, in emoji-test.txt order.
Split rule (by emoji): test iff `int(sha1(emoji.encode("utf-8")).hexdigest(), 16) % 5 == 0`.

Rebuild: `python scripts/build_emoji.py` (needs the Debian packages below).

## Sources and licenses

{pkg_lines}

- Images are rendered from the **Noto Color Emoji** font (`fonts-noto-color-emoji`),
  licensed under the **SIL Open Font License 1.1** (OFL-1.1).
- Names and keywords come from **Unicode CLDR** annotations (`unicode-cldr-core`), and the
  emoji list, groups and subgroups from **Unicode emoji data** `emoji-test.txt`
  (`unicode-data`); both under the **Unicode License v3** (Unicode-3.0).
  © Unicode, Inc. Unicode and the Unicode Logo are registered trademarks of Unicode, Inc.
"""
    (out / "LICENSES.md").write_text(text, encoding="utf-8")


def build(out: Path = DEFAULT_OUT) -> dict[str, int]:
    import datasets
    from PIL import ImageFont

    t0 = time.perf_counter()
    for path in (EMOJI_TEST, FONT, CLDR / "annotations" / "en.xml"):
        if not path.exists():
            raise FileNotFoundError(f"{path} missing; install unicode-data fonts-noto-color-emoji unicode-cldr-core")
    font = ImageFont.truetype(str(FONT), FONT_SIZE)
    annotations = {lang: read_annotations(lang) for lang in LANGUAGES}

    rows = {"train": [], "test": []}
    entries = read_emoji_test()
    for entry in entries:
        emoji = entry["emoji"]
        if lookup(annotations["en"][0], emoji) is None:
            continue
        row = {**entry, "image": {"bytes": render(emoji, font), "path": None}}
        for lang in LANGUAGES:
            names, kws = annotations[lang]
            row[f"name_{lang}"] = lookup(names, emoji)
            row[f"keywords_{lang}"] = list(lookup(kws, emoji) or [])
        rows["test" if is_test(emoji) else "train"].append(row)
    n = len(rows["train"]) + len(rows["test"])
    print(f"{len(entries)} emoji in emoji-test.txt, {n} kept (with an English name)")

    out.mkdir(parents=True, exist_ok=True)
    feats = features()
    for split, split_rows in rows.items():
        split_rows = [{k: row[k] for k in feats} for row in split_rows]  # column order
        ds = datasets.Dataset.from_list(split_rows, features=feats)
        ds.to_parquet(str(out / f"{split}.parquet"))
    counts = {split: len(r) for split, r in rows.items()}
    all_rows = rows["train"] + rows["test"]
    coverage = {lang: 100 * sum(r[f"name_{lang}"] is not None for r in all_rows) / n for lang in LANGUAGES}
    write_licenses(out, counts, coverage)

    size = sum((out / f"{s}.parquet").stat().st_size for s in rows)
    print(f"train={counts['train']} test={counts['test']}")
    print("name coverage: " + " ".join(f"{lang}={coverage[lang]:.1f}%" for lang in LANGUAGES))
    print(f"parquet size: {size / 1024 / 1024:.2f} MB in {out}; took {time.perf_counter() - t0:.1f}s")
    if size > MAX_BYTES:
        raise RuntimeError(f"parquet files are {size} bytes > {MAX_BYTES}")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output dir (default: %(default)s)")
    build(parser.parse_args(argv).out)


if __name__ == "__main__":
    main()
