"""A small, dependency-free language guess: fr, it, en, or `other`.

Counts frequent function words (accents optional, since buyers often drop them). Spanish, German,
Portuguese and Dutch have their own lists so that they come out as `other` rather than as the nearest
supported language.
"""

from __future__ import annotations

import re
import unicodedata

from serving.labels import Language

_WORDS: dict[str, frozenset[str]] = {
    "fr": frozenset(
        "le la les un une des du de et est je j il elle nous vous ils pas ne n mon ma mes votre vos "
        "ce cette ces qui que quoi pour avec sans sur dans au aux mais ou donc car bonjour merci "
        "colis commande toujours rien recu livre livraison deja avoir ete etait suis sont fait tres "
        "rembourse remboursement depuis jours avez aucun aucune chez moi toi c qu d l s y en".split()
    ),
    "it": frozenset(
        "il lo la gli le un una uno di da del della dei delle che e non ho ha hanno sono mi ti ci "
        "per con su nel nella al alla ai ma perche piu gia ancora buongiorno grazie salve ordine "
        "pacco arrivato consegna rimborso niente nessun nessuna questo questa come quando dove io "
        "voi vostro vostra mio mia sto stato stata dopo prima giorni essere avere".split()
    ),
    "en": frozenset(
        "the a an and is are was were i you he she it we they my your our not no of to in on for "
        "with this that have has had be been still never order parcel package item refund received "
        "delivered hi hello thanks thank please can could would will what where when why "
        "there here me its just yet days".split()
    ),
    "es": frozenset(
        "el los las una unos es y no mi mis su por para con pedido paquete todavia gracias hola "
        "he recibido aun nada cuando donde porque muy tambien esta estoy".split()
    ),
    "de": frozenset(
        "der die das und ist ich nicht ein eine mein meine bestellung paket noch kein keine "
        "danke hallo bitte mit fur auf wurde habe sie wir".split()
    ),
    "pt": frozenset(
        "o os as um uma e nao meu minha pedido encomenda ainda nada obrigado obrigada ola com "
        "para por voce recebi entregue muito".split()
    ),
    "nl": frozenset("de het een en is ik niet mijn bestelling pakket nog geen bedankt hallo met".split()),
}
SUPPORTED: dict[str, Language] = {"fr": "fr", "it": "it", "en": "en"}
_TOKEN = re.compile(r"[a-z]+")


def _fold(text: str) -> str:
    lowered = text.lower()
    if lowered.isascii():  # most messages: nothing to decompose
        return lowered
    decomposed = unicodedata.normalize("NFKD", lowered)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def detect_language(text: str) -> Language:
    """The most likely of fr/it/en, or `other` when no supported language clearly leads."""
    tokens = _TOKEN.findall(_fold(text))
    if not tokens:
        return "other"
    scores = {lang: sum(t in words for t in tokens) for lang, words in _WORDS.items()}
    best = max(scores, key=lambda lang: scores[lang])
    if scores[best] == 0 or best not in SUPPORTED:
        return "other"
    # a supported language must beat every unsupported one outright
    if any(scores[o] >= scores[best] for o in _WORDS if o not in SUPPORTED):
        return "other"
    return SUPPORTED[best]
