"""Write the English, freely licensed quote text of Debian's fortune packages beyond `fortunes`
as fortune files (quotes between `%` lines) in one folder, for `pocketgpt train --extra FOLDER`.

    python bench/extra_corpus.py ROOT OUT

ROOT is where the packages' files are: `/` when they are installed, or a folder the .deb files
were unpacked into (`dpkg-deb -x PKG.deb ROOT`). Which packages are taken and why: docs/models.md.
  fortune-anarchism   /usr/share/games/fortunes/anarchism (fortune format, public domain)
  tfortunes           /usr/share/games/tfortunes/epigrams/en.tfortunes (`---- tags` after each
                      epigram; the tags are dropped; public domain)
  display-dhammapada  /usr/share/display-dhammapada/dhammapada-english-transl.txt (423 numbered
                      verses; the number is dropped, each verse one quote; public domain)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def anarchism(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"^%\s*$", text, flags=re.M) if p.strip()]


def tfortunes(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"^----.*$", text, flags=re.M) if p.strip()]


def dhammapada(text: str) -> list[str]:
    start = text.index("1. The Pairs")
    end = text.index("The End.", start)
    out = []
    for para in re.split(r"\n\s*\n", text[start:end]):
        m = re.match(r"(?s)(.*\S)\s+(\d+)\s*$", para.strip())
        if m and not re.match(r"^\d+\. ", para.strip()):
            out.append(re.sub(r"\s+", " ", m.group(1)).replace("self- ", "self-"))
    return out


SOURCES = (
    ("anarchism", "usr/share/games/fortunes/anarchism", anarchism),
    ("epigrams", "usr/share/games/tfortunes/epigrams/en.tfortunes", tfortunes),
    ("dhammapada", "usr/share/display-dhammapada/dhammapada-english-transl.txt", dhammapada),
)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    root, out = Path(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, rel, parse in SOURCES:
        src = root / rel
        if not src.is_file():
            print(f"{src}: missing; install its package (see this script's docstring)", file=sys.stderr)
            return 1
        quotes = parse(src.read_text(encoding="utf-8"))
        tmp = out / f".{name}.tmp"
        tmp.write_text("\n%\n".join(quotes) + "\n", encoding="utf-8")
        tmp.replace(out / name)
        print(f"{name}: {len(quotes)} quotes, {sum(len(q.encode()) for q in quotes):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
