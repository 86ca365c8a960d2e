"""Training and evaluation text: plain files, folders, and fortune files (`%` lines between quotes)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pocketgpt.errors import PocketError

_OVERSTRIKE = re.compile(r".\x08")  # "_\bA" underlines and "A\bA" bold in old fortune files


def _decode(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PocketError(f"{path}: not UTF-8 text (byte {exc.start}); convert it with iconv -t UTF-8") from None
    return _OVERSTRIKE.sub("", text.replace("\r\n", "\n"))


def split_documents(text: str) -> list[str]:
    """A fortune file's quotes (lines of a lone `%` separate them), or the whole text as one document."""
    if re.search(r"^%\s*$", text, flags=re.M):
        parts = re.split(r"^%\s*$", text, flags=re.M)
        return [p.strip("\n") for p in parts if p.strip()]
    return [text] if text.strip() else []


def _is_strfile_index(path: Path) -> bool:
    """fortune's `NAME.dat` index beside `NAME`: binary, not text."""
    return path.suffix == ".dat" and path.with_suffix("").exists()


def corpus_files(paths: list[str]) -> list[Path]:
    """Files named, plus every text file below named folders (sorted; links to files already taken skipped)."""
    files: list[Path] = []
    seen: set[str] = set()
    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise PocketError(f"{p}: no such corpus file or folder")
        candidates = [path] if path.is_file() else sorted(x for x in path.rglob("*") if x.is_file())
        for f in candidates:
            if path.is_dir() and (_is_strfile_index(f) or f.name.startswith(".")):
                continue
            real = os.path.realpath(f)
            if real in seen:
                continue
            seen.add(real)
            files.append(f)
    return files


def read_documents(paths: list[str]) -> list[str]:
    """All documents of a corpus. Named files must be UTF-8; binary files inside folders are skipped."""
    docs: list[str] = []
    for f in corpus_files(paths):
        data = f.read_bytes()
        if b"\x00" in data[:4096]:
            if any(Path(p).expanduser() == f for p in paths):
                raise PocketError(f"{f}: binary file, not a text corpus")
            continue
        docs.extend(split_documents(_decode(f, data)))
    if not docs:
        raise PocketError(f"corpus {' '.join(paths)} holds no text; give text files, folders or fortune files")
    return docs


def read_text(path: str) -> str:
    """One evaluation text file (must be UTF-8 and non-empty)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PocketError(f"{path}: no such text file")
    text = _decode(p, p.read_bytes())
    if not text.strip():
        raise PocketError(f"{path}: empty text; nothing to evaluate")
    return text
