"""Training wall time: the embedding + heads stage (`training.train.fit`) on BANKING77 subsets.

Cold: an empty embedding cache (every text goes through the encoder); warm: the same cache again (the
embeddings are read back, only the heads are fitted). Raw data is never changed: the subset is written
to a temporary CSV.
"""

from __future__ import annotations

import csv
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_subset(source: Path, rows: int | None, dest: Path) -> int:
    """Copy the header and the first `rows` records (all if None) of `source` to `dest`; return the count."""
    with source.open(newline="", encoding="utf-8") as f_in, dest.open("w", newline="", encoding="utf-8") as f_out:
        reader, writer = csv.reader(f_in), csv.writer(f_out)
        writer.writerow(next(reader))
        n = 0
        for record in reader:
            if rows is not None and n >= rows:
                break
            writer.writerow(record)
            n += 1
    return n


@contextmanager
def stage_timers(module: Any, names: tuple[str, ...]) -> Iterator[dict[str, float]]:
    """Time the stage functions `fit` calls (looked up in its module) without changing them."""
    spent: dict[str, float] = {}
    originals = {name: getattr(module, name) for name in names}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    for name, fn in originals.items():
        setattr(module, name, timed(name, fn))
    try:
        yield spent
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)


def training_time(source: Path, sizes: list[int | None], target: str = "category") -> list[dict[str, Any]]:
    """fit() wall time for each size (None = every row), cache cold then warm, one fresh cache per size.

    Also split into its stages: loading the encoder, embedding (or reading the cache), fitting the head.
    """
    import torch

    from serving.settings import Settings
    from training import train as train_mod

    results = []
    with tempfile.TemporaryDirectory(prefix="triage-bench-train-") as tmp:
        for size in sizes:
            data = Path(tmp) / f"train-{size or 'all'}.csv"
            rows = write_subset(source, size, data)
            cache = Path(tmp) / f"cache-{size or 'all'}"
            for state in ("cold", "warm"):
                cfg = train_mod.TrainConfig.from_settings(
                    Settings(), data=data, test=None, target=target, cache_dir=cache, progress=False
                )
                with stage_timers(train_mod, ("load_encoder", "embed_texts", "fit_head")) as spent:
                    t0 = time.perf_counter()
                    trained = train_mod.fit(cfg)
                    wall = time.perf_counter() - t0
                results.append(
                    {
                        "rows": rows,
                        "cache": state,
                        "wall_s": round(wall, 2),
                        "messages_per_s": round(rows / wall, 1),
                        "classes": len(trained.heads[0].labels),
                        "stages_s": {k: round(v, 2) for k, v in spent.items()},
                        "torch_threads": torch.get_num_threads(),
                    }
                )
    return results
