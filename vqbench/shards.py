"""WebDataset shards: which samples a process reads, in which order, for training and evaluation.

A dataset is a list of tar shards (`data.urls`, brace patterns expanded as webdataset expands
them: `shards/train-{000000..000146}.tar`; local paths and anything `webdataset.gopen` opens).
A sample is the tar members sharing a key (`000123.jpg`, `000123.cls`); this module hands out
raw samples (bytes, nothing decoded), `vqbench.data.ShardImages` decodes them.

* Sizes: `vqbench-shards.json` beside the shards (written by `vqbench data shards` or
  `vqbench data index`) gives each shard's sample count and classes; a shard it does not list
  is counted when the dataset is first opened, by every process (one read of the shard).
* An epoch is the N samples of all shards (shards may differ in size): N // B global batches
  of B images, the remainder dropped, as with the folder loader (`EpochBatches`).
* Training order of epoch e (`process_samples`): the shards are permuted with a generator
  seeded by (seed, e); the concatenation of their samples is cut into W equal contiguous
  ranges of N // W samples, one per process (so each process reads about 1/W of the shards,
  disjoint from the others, plus the skipped head of at most one shard it shares with its
  neighbour); each process shuffles its range through a bounded buffer seeded by
  (seed, e, rank) and takes micro-batches from it in turn. The order depends on the number of
  processes W (unlike the folder loader's); on the same W it is reproducible.
* Resuming at step k of an epoch skips the samples the process consumed before k: they are
  read again and shuffled (to rebuild the buffer) but not decoded, i.e. it costs reading up
  to one epoch's share of this process's bytes, not training on them.
* Evaluation order (`strided_samples`): shards in URL order, members in tar order; process r
  decodes samples r, r + W, r + 2W, ... (the folder loader's `shard_indices`), reading every
  shard (W times the bytes over the processes, each decoding 1/W).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vqbench.errors import VQBenchError
from vqbench.files import atomic_write_json

#: The index file beside the shards.
INDEX_NAME = "vqbench-shards.json"
INDEX_FORMAT = 1
#: Member extensions that hold the image of a sample, in order of preference.
IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class RawSample:
    """One sample as stored: where it is, its image bytes and its class (or None)."""

    url: str
    member: str  # the image member's name in the tar file, e.g. `000123.jpg`
    data: bytes
    label: int | None
    position: int  # its position in the stream it came from (crop seeds)


@dataclass(frozen=True)
class ShardInfo:
    url: str
    count: int
    labels: list[int] | None  # class of each sample in tar order, None without `cls`


@dataclass(frozen=True)
class ShardSet:
    """The shards of one split, with their sizes and labels, in URL order."""

    shards: list[ShardInfo]
    classes: list[str] | None  # class names by `cls` value, where an index records them

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.shards]

    @property
    def total(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def labels(self) -> list[int] | None:
        """Class of every sample in URL order, or None unless every shard has `cls` fields."""
        if any(s.labels is None for s in self.shards):
            return None
        return [label for s in self.shards for label in s.labels]

    def digest(self) -> str:
        """Hash of the shard names and sizes (what a resumed run checks it trains on)."""
        text = "\n".join(f"{os.path.basename(s.url)} {s.count}" for s in self.shards)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- URLs and opening ------------------------------------------------------------------------
def expand_urls(pattern: str, key: str = "data.urls") -> list[str]:
    """The shard URLs of a pattern: `::`-separated lists and brace ranges, as webdataset."""
    from webdataset.shardlists import expand_urls as wds_expand

    urls = [u for u in wds_expand(pattern) if u]
    if not urls:
        raise VQBenchError(
            f"{key} {pattern!r} names no shards; give e.g. 'shards/train-{{000000..000009}}.tar'"
        )
    return urls


def local_path(url: str) -> Path | None:
    """The file a URL names on this machine, or None (`pipe:`, `http://`, ...)."""
    if url.startswith("file:"):
        return Path(url.removeprefix("file:"))
    if "://" in url or url.startswith("pipe:"):
        return None
    return Path(url)


def _open(url: str):
    from webdataset.gopen import gopen

    path = local_path(url)
    if path is not None and not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise VQBenchError(f"shard '{url}' {what}; check data.urls (brace ranges included)")
    try:
        return gopen(url, "rb")
    except Exception as err:  # webdataset raises plain Exceptions for unknown schemes
        raise VQBenchError(f"shard '{url}' cannot be opened ({_reason(err)})") from None


def _reason(err: BaseException) -> str:
    """The first line of an error's message (webdataset appends ` @ <stream>` and more
    arguments to errors it passes on)."""
    text = str(err.args[0]) if err.args and str(err.args[0]) else type(err).__name__
    return text.splitlines()[0].split(" @ ")[0]


def _damaged(url: str, member: str | None, err: BaseException) -> VQBenchError:
    where = f"after member '{member}'" if member else "at its start"
    return VQBenchError(
        f"shard '{url}' is damaged {where} ({_reason(err)}); rewrite it (vqbench data shards) "
        f"or leave it out of the urls"
    )


def read_shard(url: str, expected: int | None = None) -> Iterator[RawSample]:
    """The samples of one shard in tar order (webdataset's tar reader and key grouping).

    A damaged tar file, a sample without an image member, a bad `cls` field or fewer samples
    than `expected` (the index's count: a tar cut at a member boundary ends cleanly) is one
    line naming the shard and the member.
    """
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    last: list[str | None] = [None]

    def members(stream) -> Iterator[dict[str, Any]]:
        for member in tar_file_iterator(stream):
            last[0] = member["fname"]
            yield {**member, "__url__": url}

    stream = _open(url)
    count = 0
    try:
        try:
            for sample in group_by_keys(members(stream)):
                yield _raw_sample(url, sample, count)
                count += 1
        except VQBenchError:
            raise
        except (tarfile.TarError, OSError, EOFError, ValueError) as err:
            raise _damaged(url, last[0], err) from None
    finally:
        stream.close()
    if expected is not None and count != expected:
        raise VQBenchError(
            f"shard '{url}' holds {count} samples but {INDEX_NAME} says {expected} (it was "
            f"changed or cut short after member '{last[0]}'); rewrite it or its index "
            f"(vqbench data index)"
        )


def _raw_sample(url: str, sample: dict[str, Any], position: int) -> RawSample:
    key = sample["__key__"]
    field = next((f for f in IMAGE_FIELDS if f in sample), None)
    if field is None:
        fields = ", ".join(sorted(k for k in sample if not k.startswith("__")))
        raise VQBenchError(
            f"shard '{url}' member '{key}' has no image ({', '.join(IMAGE_FIELDS)}; it has "
            f"{fields}); rewrite the shard with vqbench data shards"
        )
    label = None
    if "cls" in sample:
        try:
            label = int(sample["cls"].decode().strip())
        except (UnicodeDecodeError, ValueError):
            raise VQBenchError(
                f"shard '{url}' member '{key}.cls' is not an integer class; rewrite the shard"
            ) from None
    return RawSample(url, f"{key}.{field}", sample[field], label, position)


# ---- sizes: the index, or counting -----------------------------------------------------------
_INDEXES: dict[str, dict[str, Any]] = {}
_COUNTED: dict[str, ShardInfo] = {}


def read_index(folder: Path) -> dict[str, Any]:
    """The index of a folder of shards (`{}` when there is none), read once per process."""
    key = str(folder.resolve())
    if key not in _INDEXES:
        path = folder / INDEX_NAME
        data: dict[str, Any] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise VQBenchError(
                    f"shard index '{path}' cannot be read ({_reason(err)}); delete it and "
                    f"write it again with vqbench data index"
                ) from None
            if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
                raise VQBenchError(
                    f"shard index '{path}' is not a vqbench shard index (format "
                    f"{INDEX_FORMAT}); delete it and write it again with vqbench data index"
                )
        _INDEXES[key] = data
    return _INDEXES[key]


def _indexed(url: str) -> tuple[ShardInfo | None, list[str] | None]:
    """The index's record of a local shard (checked against the file's size), or None."""
    path = local_path(url)
    if path is None:
        return None, None
    index = read_index(path.parent)
    entry = index.get("shards", {}).get(path.name)
    if entry is None:
        return None, None
    if not (isinstance(entry, dict) and isinstance(entry.get("count"), int)
            and isinstance(entry.get("bytes"), int)):  # fmt: skip
        raise VQBenchError(
            f"{INDEX_NAME} beside '{url}' has a damaged record of it; delete the index and "
            f"write it again with vqbench data index"
        )
    size = path.stat().st_size if path.is_file() else None
    if size is not None and size != entry["bytes"]:
        for _ in read_shard(url, int(entry["count"])):  # names the member where it breaks
            pass
        raise VQBenchError(
            f"shard '{url}' has {size} bytes but {INDEX_NAME} says {entry['bytes']} (it was "
            f"changed or cut short); rewrite it, or its index with vqbench data index"
        )
    return ShardInfo(url, int(entry["count"]), entry.get("labels")), index.get("classes")


def count_shard(url: str) -> ShardInfo:
    """Read a shard through to count its samples and collect their classes."""
    if url not in _COUNTED:
        labels: list[int | None] = [s.label for s in read_shard(url)]
        known = all(label is not None for label in labels)
        _COUNTED[url] = ShardInfo(url, len(labels), labels if known else None)  # type: ignore[arg-type]
    return _COUNTED[url]


def open_shards(pattern: str, key: str = "data.urls") -> ShardSet:
    """The shards a pattern names, sized from their index or counted (once per process)."""
    infos, classes = [], None
    for url in expand_urls(pattern, key):
        info, names = _indexed(url)
        if info is None:
            _open(url).close()  # a missing shard is named before anything is read
            info = count_shard(url)
        infos.append(info)
        classes = classes or names
    shard_set = ShardSet(infos, classes)
    if shard_set.total == 0:
        raise VQBenchError(f"{key} {pattern!r}: the shards hold no samples; check the files")
    return shard_set


def index_entries(infos: Iterable[ShardInfo]) -> dict[str, dict[str, Any]]:
    """Index records of local shards: name to bytes, count and labels."""
    entries = {}
    for info in infos:
        path = local_path(info.url)
        if path is None:
            raise VQBenchError(
                f"shard '{info.url}' is not a local file; an index is written beside local "
                f"shards only"
            )
        entries[path.name] = {
            "bytes": path.stat().st_size,
            "count": info.count,
            "labels": info.labels,
        }
    return entries


def write_index(folder: Path, entries: dict[str, dict[str, Any]], classes: list[str] | None):
    """Write (or extend) the index of a folder of shards."""
    old = read_index(folder) if (folder / INDEX_NAME).is_file() else {}
    data = {
        "format": INDEX_FORMAT,
        "classes": classes if classes is not None else old.get("classes"),
        "shards": {**old.get("shards", {}), **entries},
    }
    atomic_write_json(folder / INDEX_NAME, data, indent=None)
    _INDEXES.pop(str(folder.resolve()), None)


def index_shards(pattern: str) -> list[Path]:
    """`vqbench data index`: count local shards and write the index beside them."""
    by_folder: dict[Path, list[ShardInfo]] = {}
    for url in expand_urls(pattern, "URLS"):
        _open(url).close()
        path = local_path(url)
        if path is None:
            raise VQBenchError(f"shard '{url}' is not a local file; index local shards only")
        by_folder.setdefault(path.parent, []).append(count_shard(url))
    for folder, infos in by_folder.items():
        write_index(folder, index_entries(infos), None)
    return [folder / INDEX_NAME for folder in by_folder]


# ---- training order --------------------------------------------------------------------------
def epoch_generator_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s shard order (the folder loader's formula)."""
    return seed * 100_003 + epoch


def buffer_rng(seed: int, epoch: int, rank: int) -> random.Random:
    """The shuffle buffer's generator of one process in one epoch."""
    digest = hashlib.sha256(f"vqbench-shards/{seed}/{epoch}/{rank}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def process_range(total: int, world: int, rank: int) -> tuple[int, int]:
    """Positions `[start, stop)` of the epoch's sample sequence that process `rank` reads."""
    share = total // world
    return rank * share, (rank + 1) * share


def _range_samples(shards: ShardSet, order: list[int], start: int, stop: int):
    """Samples at positions `[start, stop)` of the shards concatenated in `order`."""
    offset = 0
    for i in order:
        info = shards.shards[i]
        if offset + info.count > start and offset < stop:
            for sample in read_shard(info.url, info.count):
                position = offset + sample.position
                if position >= stop:
                    break
                if position >= start:
                    yield RawSample(sample.url, sample.member, sample.data, sample.label, position)
        offset += info.count
        if offset >= stop:
            return


def process_samples(
    shards: ShardSet, *, seed: int, epoch: int, world: int, rank: int, buffer: int
) -> Iterator[RawSample]:
    """Process `rank`'s samples of epoch `epoch` in training order (see the module's doc)."""
    from webdataset.filters import shuffle

    generator = torch.Generator().manual_seed(epoch_generator_seed(seed, epoch))
    order = torch.randperm(len(shards.shards), generator=generator).tolist()
    start, stop = process_range(shards.total, world, rank)
    samples = iter(_range_samples(shards, order, start, stop))
    rng = buffer_rng(seed, epoch, rank)
    return iter(shuffle(bufsize=buffer, initial=buffer, rng=rng)(samples))


# ---- evaluation order ------------------------------------------------------------------------
def strided_samples(shards: ShardSet, world: int, rank: int) -> Iterator[RawSample]:
    """Samples `rank, rank + world, ...` of the shards in URL order (every sample once over the
    processes, each in a fixed order)."""
    position = 0
    for info in shards.shards:
        for sample in read_shard(info.url, info.count):
            if position % world == rank:
                yield RawSample(sample.url, sample.member, sample.data, sample.label, position)
            position += 1


# ---- writing shards --------------------------------------------------------------------------
def write_tar(path: Path, samples: Iterable[dict[str, bytes | str]]) -> int:
    """A tar file of samples (`{"__key__": ..., "jpg": bytes, "cls": "3"}`) with fixed
    metadata (mtime 0, one owner, members in key then field order): identical input gives
    identical bytes. Returns the number of samples."""
    from webdataset.writer import TarWriter

    count = 0
    with open(path, "wb") as stream, TarWriter(stream, encoder=False, mtime=0.0) as sink:
        for sample in samples:
            sink.write(sample)
            count += 1
    return count


def tar_bytes(samples: Iterable[dict[str, bytes | str]]) -> bytes:
    """`write_tar` into memory (tests build damaged shards from it)."""
    from webdataset.writer import TarWriter

    buffer = io.BytesIO()
    with TarWriter(buffer, encoder=False, mtime=0.0) as sink:
        for sample in samples:
            sink.write(sample)
    return buffer.getvalue()
