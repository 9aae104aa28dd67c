"""Text sources and batches: a byte-level tokenizer over real text that every machine has.

The default corpus is this Python's own standard-library source files, split into train and
validation by file (never by position inside a file, so validation text is truly unseen).
"""

from __future__ import annotations

import os
import stat
import sysconfig
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from profiler.errors import DataError

TEXT_SUFFIXES = {".py", ".txt", ".md", ".rst", ".json", ".toml", ".cfg", ".ini", ".html",
                 ".css", ".js", ".c", ".h", ".cpp", ".rs", ".go", ".java", ".csv", ".tex", ""}


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255: no vocabulary file, works on any text."""

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, tokens: list[int]) -> str:
        return bytes(t for t in tokens if 0 <= t < 256).decode("utf-8", errors="replace")


@dataclass
class Corpus:
    train: torch.Tensor  # uint8 bytes, or int32 ids of a model's own tokenizer
    val: torch.Tensor
    description: str
    train_files: int = 0
    val_files: int = 0


def _is_val(name: str, val_fraction: float) -> bool:
    # A stable hash of the relative path: the split does not move when files are added.
    return (zlib.crc32(name.encode("utf-8")) % 1000) < val_fraction * 1000


def _read_text_file(path: Path, max_bytes: int | None = None) -> bytes | None:
    """A text file's bytes (at most max_bytes of them, cut back to a whole UTF-8 character);
    None for a binary or non-UTF-8 file, or one that cannot be read. Only what is used is
    read: a 20 GB file costs max_bytes of memory, not 20 GB."""
    try:
        with path.open("rb") as fh:
            raw = fh.read() if max_bytes is None else fh.read(max_bytes)
    except OSError:
        return None
    if b"\x00" in raw[:4096]:
        return None  # binary
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A cut through a multi-byte character at the end is ours, not the file's fault.
        if max_bytes is None or len(raw) < max_bytes or exc.start < len(raw) - 3:
            return None
        raw = raw[:exc.start]
    return raw


def _from_files(root: Path, files: list[Path], max_train: int, val_fraction: float, label: str) -> Corpus:
    train_parts: list[bytes] = []
    val_parts: list[bytes] = []
    train_bytes = val_bytes = 0
    n_train = n_val = skipped = 0
    max_val = max(int(max_train * val_fraction / (1 - val_fraction)), 20_000)
    for path in files:
        if train_bytes >= max_train and val_bytes >= max_val:
            break
        rel = str(path.relative_to(root))
        to_val = _is_val(rel, val_fraction)
        if (to_val and val_bytes >= max_val) or (not to_val and train_bytes >= max_train):
            continue
        room = (max_val - val_bytes) if to_val else (max_train - train_bytes)
        raw = _read_text_file(path, max(room, 0) + 1)
        if not raw:
            skipped += 1
            continue
        if to_val:
            val_parts.append(raw)
            val_bytes += len(raw)
            n_val += 1
        else:
            train_parts.append(raw)
            train_bytes += len(raw)
            n_train += 1
    if not train_parts or not val_parts:
        binary = f", {skipped} files skipped as binary, empty or not UTF-8" if skipped else ""
        raise DataError(
            f"{label} holds too little UTF-8 text to split into train and validation files "
            f"({n_train} train, {n_val} validation{binary}); give a folder with more text files, "
            "or a single text file"
        )
    train = torch.frombuffer(bytearray(b"\n".join(train_parts)), dtype=torch.uint8)
    val = torch.frombuffer(bytearray(b"\n".join(val_parts)), dtype=torch.uint8)
    desc = f"{label}: {n_train} train files ({train.numel():,} bytes), {n_val} validation files ({val.numel():,} bytes)"
    return Corpus(train, val, desc, n_train, n_val)


def stdlib_corpus(max_train_bytes: int, val_fraction: float) -> Corpus:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subfolders, names in os.walk(root):
        # Installed packages may live inside the stdlib folder: prune them, they are not stdlib.
        subfolders[:] = sorted(d for d in subfolders if d not in ("site-packages", "__pycache__"))
        files.extend(Path(folder, n) for n in names if n.endswith(".py"))
    files.sort()
    return _from_files(root, files, max_train_bytes, val_fraction, f"Python standard library ({root})")


def path_corpus(path: str, max_train_bytes: int, val_fraction: float) -> Corpus:
    target = Path(path).expanduser()
    shown = str(target) if len(str(target)) <= 120 else f"{str(target)[:80]}... ({len(str(target)):,} characters)"
    try:
        info = target.stat()
    except FileNotFoundError:
        raise DataError(f"data.path: {shown} does not exist; give an existing text file or folder") from None
    except OSError as exc:
        raise DataError(f"data.path: {shown} cannot be read ({exc.strerror or exc}); give an "
                        "existing text file or folder") from None
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise DataError(f"data.path: {shown} is not a regular file or folder (a device or a "
                        "pipe); give a text file or folder")
    if target.is_file():
        raw = _read_text_file(target, int(max_train_bytes / (1 - val_fraction)))
        if raw is None:
            raise DataError(f"data.path: {target} is not UTF-8 text; give a text file or folder")
        cut = int(len(raw) * (1 - val_fraction))
        if cut < 1000 or len(raw) - cut < 200:
            raise DataError(f"data.path: {target} holds only {len(raw)} bytes; give at least 2 kB of text")
        train = torch.frombuffer(bytearray(raw[:cut]), dtype=torch.uint8)
        val = torch.frombuffer(bytearray(raw[cut:]), dtype=torch.uint8)
        return Corpus(train, val, f"{target}: {train.numel():,} train bytes, last {val.numel():,} bytes held out", 1, 1)
    if target.is_dir():
        files = sorted(p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"data.path: {target} has no text files; give a folder with .txt, .md or source files")
        try:
            return _from_files(target, files, max_train_bytes, val_fraction, str(target))
        except DataError as exc:
            raise DataError(f"data.path: {exc}") from None
    raise DataError(f"data.path: {target} does not exist; give an existing text file or folder")


def random_corpus(vocab_size: int, seed: int) -> Corpus:
    gen = torch.Generator().manual_seed(seed)
    high = min(vocab_size, 256)
    train = torch.randint(0, high, (1_000_000,), generator=gen, dtype=torch.int64).to(torch.uint8)
    val = torch.randint(0, high, (100_000,), generator=gen, dtype=torch.int64).to(torch.uint8)
    return Corpus(train, val, "uniform random tokens (loss cannot fall below ln 256)")


def load_corpus(source: str, path: str, max_train_bytes: int, val_fraction: float,
                vocab_size: int, seed: int, tokenizer: Any = None) -> Corpus:
    """Text as tokens: UTF-8 bytes, or the ids of `tokenizer` (a Hugging Face model's own)."""
    if source == "random" and tokenizer is not None:
        return random_ids(vocab_size, seed)
    if source == "stdlib":
        corpus = stdlib_corpus(max_train_bytes, val_fraction)
    elif source == "path":
        corpus = path_corpus(path, max_train_bytes, val_fraction)
    elif source == "random":
        return random_corpus(vocab_size, seed)
    else:
        raise DataError(f"data.source: {source!r} is not a data source; use stdlib, path or random")
    return corpus if tokenizer is None else tokenize_corpus(corpus, tokenizer)


def tokenize_corpus(corpus: Corpus, tokenizer: Any, chunk_chars: int = 65_536) -> Corpus:
    """The same train / validation text as token ids of `tokenizer` (int32), encoded in chunks
    cut at line ends (one call per batch of chunks keeps the Rust tokenizer busy)."""
    def encode(tokens: torch.Tensor) -> torch.Tensor:
        text = bytes(tokens.numpy()).decode("utf-8", errors="replace")
        chunks, start = [], 0
        while start < len(text):
            end = text.find("\n", start + chunk_chars)
            end = len(text) if end < 0 else end + 1
            chunks.append(text[start:end])
            start = end
        ids: list[int] = []
        for batch in (chunks[i:i + 64] for i in range(0, len(chunks), 64)):
            for row in tokenizer(batch, add_special_tokens=False)["input_ids"]:
                ids.extend(row)
        return torch.tensor(ids, dtype=torch.int32)

    train, val = encode(corpus.train), encode(corpus.val)
    name = type(tokenizer).__name__
    return Corpus(train, val, f"{corpus.description}; {train.numel():,} train and "
                  f"{val.numel():,} validation tokens of the model's tokenizer ({name}, "
                  f"{len(tokenizer):,} tokens)", corpus.train_files, corpus.val_files)


def random_ids(vocab_size: int, seed: int) -> Corpus:
    """Uniform random ids over a model's whole vocabulary, for pure speed runs."""
    gen = torch.Generator().manual_seed(seed)
    train = torch.randint(0, vocab_size, (1_000_000,), generator=gen, dtype=torch.int32)
    val = torch.randint(0, vocab_size, (100_000,), generator=gen, dtype=torch.int32)
    return Corpus(train, val, f"uniform random token ids (loss cannot fall below ln {vocab_size})")


class BatchSampler:
    """Random windows of seq_len + 1 tokens, reproducible from the seed.

    batch_size: sequences per batch, or a callable read at every draw (a train run's micro-batch
    follows train.batch_size, which a mid-run `set train` may change)."""

    def __init__(self, tokens: torch.Tensor, batch_size: int | Callable[[], int], seq_len: int,
                 seed: int, device: torch.device, rank: int = 0, world_size: int = 1):
        if tokens.numel() <= seq_len + 1:
            raise DataError(
                f"the text has {tokens.numel()} tokens, fewer than one sequence of {seq_len + 1}; "
                "give more text or a shorter train.seq_len"
            )
        self.tokens = tokens
        self._size = batch_size
        self.seq_len = seq_len
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self.rank = rank
        self.world_size = world_size

    @property
    def batch_size(self) -> int:
        return int(self._size()) if callable(self._size) else self._size

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Every rank draws the same global batch and keeps its own slice of it.
        batch_size = self.batch_size
        starts = torch.randint(0, self.tokens.numel() - self.seq_len - 1,
                               (batch_size * self.world_size,), generator=self.generator)
        starts = starts[self.rank * batch_size:(self.rank + 1) * batch_size]
        offsets = torch.arange(self.seq_len + 1)
        window = self.tokens[starts[:, None] + offsets].long()
        x, y = window[:, :-1], window[:, 1:]
        if self.device.type == "cuda":
            return (x.pin_memory().to(self.device, non_blocking=True),
                    y.pin_memory().to(self.device, non_blocking=True))
        return x, y
