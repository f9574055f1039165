"""Credentials never reach a message: URLs lose their user info and query, texts their secrets."""

from __future__ import annotations

import pytest

from serving.masking import mask_text, mask_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://triage:s3cr3t-pw@db.internal:5432/triage",
            "postgresql+psycopg://***@db.internal:5432/triage",
        ),
        ("https://token123@mlflow.example.com/api", "https://***@mlflow.example.com/api"),
        ("http://127.0.0.1:8080/?token=abc#frag", "http://127.0.0.1:8080/"),
        ("sqlite:////var/lib/triage/triage.db", "sqlite:////var/lib/triage/triage.db"),
    ],
)
def test_urls_are_shown_without_credentials(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_texts_lose_url_credentials_and_every_given_secret() -> None:
    text = "failed at http://u:pw@host:5001/x with token tok-123 (tok-123 again)"
    assert mask_text(text, ["tok-123", ""]) == "failed at http://***@host:5001/x with token <secret> (<secret> again)"
