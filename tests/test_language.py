"""serving.language.detect_language: fr / it / en with or without accents, `other` for anything else."""

from __future__ import annotations

import pytest

from serving.language import detect_language

CASES = {
    "fr": [
        "Bonjour, je n'ai toujours pas reçu ma commande, la livraison était prévue le 12 mars.",
        "Bonjour, je n'ai toujours pas recu ma commande, la livraison etait prevue le 12 mars.",
        "Le casque est arrivé cassé, je veux être remboursé.",
        "le casque est arrive casse je veux etre rembourse",
        "Merci beaucoup, tout est parfait !",
        "Une réclamation au titre de la garantie A à Z a été déposée pour la commande 405-4012433-6167519.",
    ],
    "it": [
        "Buongiorno, il pacco risulta consegnato ma non ho ricevuto nulla. Ordine 402-9988776-5544332.",
        "La macchina del caffè non funziona dal primo giorno, voglio il reso e il rimborso.",
        "la macchina del caffe non funziona dal primo giorno voglio il rimborso",
        "Ciao, posso avere la fattura per il mio ordine?",
        "Perché non è ancora arrivato? Sono già passati dieci giorni.",
        "Perche non e ancora arrivato? Sono gia passati dieci giorni.",
    ],
    "en": [
        "Where is my parcel? It has been in transit for ten days.",
        "Thanks, arrived fine!",
        "The buyer has filed an A-to-z Guarantee claim for order 111-2222222-3333333.",
        "i still havent received my order and its been 3 weeks",
        "Hello, can you send me the invoice please?",
    ],
    "other": [
        "Hola, todavía no he recibido mi pedido, ¿dónde está el paquete?",
        "Hola, todavia no he recibido mi pedido, donde esta el paquete?",
        "Muchas gracias, el pedido llegó muy bien.",
        "Hallo, ich habe meine Bestellung noch nicht erhalten. Wo ist das Paket?",
        "Danke, das Paket ist angekommen, aber die Rechnung fehlt.",
        "",
        "   ",
        "12345",
        "171-2233445-6677889 89,90 €",
        "!!! ???",
    ],
}


@pytest.mark.parametrize(("text", "expected"), [(t, lang) for lang, texts in CASES.items() for t in texts])
def test_detect_language(text: str, expected: str) -> None:
    assert detect_language(text) == expected
