"""serving.ngrams: char n-gram TF-IDF features computed the same way in training and serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.ngrams import MAX_CHARS, CharNgrams, grams, normalize


def test_normalize_drops_case_accents_and_numbers() -> None:
    assert normalize("  Colis  REÇU le 12/03, commande 171-2233445 ") == "colis recu le 0/0, commande 0-0"


def test_grams_stay_inside_words() -> None:
    got = grams("pas reçu", 2, 3)
    assert got[" p"] == 1 and got["cu "] == 1 and "s r" not in got


def test_a_long_text_is_read_up_to_the_cap() -> None:
    head = "le colis est arrive casse, je veux un remboursement. " * (MAX_CHARS // 50)
    long = head[:MAX_CHARS] + " pas recu, fuite, mauvaise taille" * 500
    assert grams(long, 2, 5) == grams(long[:MAX_CHARS], 2, 5)
    assert " fuit" not in grams(long, 2, 5) and " fuit" in grams(long[MAX_CHARS:], 2, 5)


def test_transform_pads_and_normalises() -> None:
    ng = CharNgrams.fit(["arrivé cassé", "arrived broken", "not arrived", "cassé en deux"], min_df=2)
    ids, weights = ng.transform(["arrivé cassé !", "zzz", ""])
    assert ids.shape == weights.shape and ids.dtype == np.int64 and weights.dtype == np.float32
    assert abs(float(np.linalg.norm(weights[0])) - 1.0) < 1e-5
    assert not weights[1].any() and not weights[2].any()  # nothing known: all padding
    assert ng.features("arrive casse") == ng.features("ARRIVÉ CASSÉ")


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    ng = CharNgrams.fit(["the mug arrived broken", "the mug arrived fine", "broken again"], min_df=1, max_features=50)
    spec = ng.save(tmp_path)
    again = CharNgrams.load(tmp_path, spec)
    assert again.vocab == ng.vocab and np.allclose(again.idf, ng.idf)
    assert again.features("mug broken") == ng.features("mug broken")
