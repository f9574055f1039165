"""The whole loop on the REAL Label Studio and MLflow servers, as people run it.

The test owns one scenario: parcels that arrived soaked by water, their contents ruined. Its seed data
is a small stratified subset of data/train.csv with every water-related message left out, so the first
model has never seen the scenario, whatever the shipped data covers; the gate's test split holds 9 messages
of it, so the retrained model is judged on what the corrections taught. A real uvicorn serves the champion
from the registry; customers write about soaked parcels (the seed model gets some of them wrong: the
routine queue, or another ground than damage; how many depends on what the rest of the data teaches it);
an agent reports one misroute; `triage label push` sends
the tickets to Label Studio; a reviewer corrects them through the API; `triage label pull`; `triage
retrain` trains, passes the gate and becomes champion; POST /admin/reload; /classify now answers a
paraphrase it never saw the corrected way (Tier 1, damaged_defective), with more confidence in the
reviewers' ground than the seed model had.
"""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from serving.labels import normalize_message
from serving.settings import Settings
from tests.conftest import DATA, read_rows, stratified_subset, write_rows
from tests.processes import run_triage, triage_env, triage_server

pytestmark = [pytest.mark.services, pytest.mark.model]

URL_VAR, TOKEN_VAR = "TRIAGE_LABEL_STUDIO_URL", "TRIAGE_LABEL_STUDIO_TOKEN"
CORRECT = ("at_risk", "damaged_defective")
# one misrouted pattern: the parcel arrived wet and what is inside is ruined (a ground for an A-to-Z claim)
SOAKED = [
    "The package arrived soaked and the book inside is ruined.",
    "The box came completely wet from the rain and the cushion inside is mouldy.",
    "The carton was drenched when it arrived and the photo album inside is warped by the water.",
    "Il pacco è arrivato tutto bagnato e il libro dentro è rovinato.",
    "La scatola era fradicia di pioggia e il cuscino dentro ha la muffa.",
    "Le colis est arrivé trempé et le livre à l'intérieur est fichu.",
    "Le carton était mouillé à l'arrivée, les pages du livre sont toutes gondolées.",
    "Colis livré sous la pluie, complètement détrempé : la boîte de jeu à l'intérieur est gonflée d'eau.",
]
FINE = "Merci, tout est bien arrivé, le colis était en parfait état."  # the reviewer confirms: routine
ODD = "Can I pay with a gift card from another shop?"  # the reviewer picks a label the project does not know
PARAPHRASE = "The parcel arrived wet and the puzzle pieces are swollen."  # never labeled, never trained on
# the scenario in the gate's test split too: the retrained model is judged on what the corrections taught it,
# not only on 9 rows' worth of noise over a small model (other words than SOAKED and PARAPHRASE)
GATE_SOAKED = [
    ("My order came with the box soaking wet and the shoes inside are stained and stiff now.", "en"),
    ("Parcel was left out in the rain, everything inside is soggy, the notebook pages are stuck together", "en"),
    ("delivered today but the packaging is wet through and the lamp has water in it, won't switch on", "en"),
    ("Colis reçu mouillé, le pull à l'intérieur sent le moisi.", "fr"),
    ("Le paquet est arrivé trempé par la pluie et la boîte du puzzle est toute déformée.", "fr"),
    ("livraison faite mais carton plein d'eau, les cahiers sont inutilisables", "fr"),
    ("Il pacco è arrivato bagnato e le scarpe dentro sono macchiate.", "it"),
    ("Scatola consegnata sotto la pioggia, tutta fradicia: il quaderno dentro è da buttare.", "it"),
    ("il collo era pieno d'acqua e la lampada all'interno non si accende piu", "it"),
]
# the scenario the test owns: no seed message may speak of water
WATER = (
    "wet",
    "soak",
    "drench",
    "rain",
    "water",
    "damp",
    "mould",
    "mold",
    "flood",
    "swollen",
    "mouill",
    "tremp",
    "pluie",
    " eau",
    "humid",
    "moisi",
    "gondol",
    "bagnat",
    "fradic",
    "pioggia",
    "acqua",
    "umid",
    "muffa",
)


def without_water(src: Path, dst: Path, per_group: int) -> int:
    """A stratified subset of `src` with every message that mentions water left out; rows kept."""
    stratified_subset(src, dst, per_group)
    fields, rows = read_rows(dst)
    kept = [r for r in rows if not any(w in normalize_message(r["text"]) for w in WATER)]
    write_rows(dst, fields, kept)
    return len(kept)


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    root: Path
    name: str


@pytest.fixture(scope="module")
def stack(mlflow_uri: str, embedding_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (os.environ.get(URL_VAR) and os.environ.get(TOKEN_VAR)):
        pytest.skip(
            f"{URL_VAR} / {TOKEN_VAR} are not set: scripts/label-studio start, then source "
            "var/label-studio/env (`make test` does both)"
        )
    root = tmp_path_factory.mktemp("loop")
    data = root / "data"
    data.mkdir()
    assert without_water(DATA / "train.csv", data / "train.csv", per_group=8) > 250
    assert without_water(DATA / "test.csv", data / "test.csv", per_group=3) > 90
    fields, rows = read_rows(data / "test.csv")
    scenario = {
        "risk": CORRECT[0],
        "claim_type": CORRECT[1],
        "channel": "amazon",
        "source": "challenge",
        "slice": "complaint",
    }
    soaked = [dict.fromkeys(fields, "") | scenario | {"text": t, "language": lang} for t, lang in GATE_SOAKED]
    write_rows(data / "test.csv", fields, rows + soaked)
    session = uuid.uuid4().hex[:8]
    name = f"triage-e2e-{session}"
    env = triage_env(
        {
            "TRIAGE_DATA_DIR": data,
            "TRIAGE_VAR_DIR": root / "var",
            "TRIAGE_CACHE_DIR": embedding_cache,
            "TRIAGE_DATABASE_URL": f"sqlite:///{root / 'var' / 'triage.db'}",
            "TRIAGE_MLFLOW_EXPERIMENT": "triage-tests",
            "TRIAGE_REGISTERED_MODEL": name,
            "TRIAGE_LABEL_STUDIO_PROJECT": f"triage e2e {session}",
            "TRIAGE_FINETUNE": "false",  # the loop's mechanics are under test here, not the recipe
            # nor the risk head's hidden layer: on 308 rows its fit moves more between two near-identical data
            # sets (9 corrections apart) than the gate's zero slack on overall recall allows
            "TRIAGE_RISK_HIDDEN": "0",
            "MLFLOW_TRACKING_URI": mlflow_uri,
            URL_VAR: os.environ[URL_VAR],
            TOKEN_VAR: os.environ[TOKEN_VAR],
        }
    )
    settings = Settings(
        _env_file=None,
        data_dir=data,
        var_dir=root / "var",  # type: ignore[call-arg]
        database_url=env["TRIAGE_DATABASE_URL"],
        mlflow_tracking_uri=mlflow_uri,
        mlflow_experiment="triage-tests",
        registered_model=name,
        label_studio_url=env[URL_VAR],
        label_studio_token=SecretStr(env[TOKEN_VAR]),
        label_studio_project=env["TRIAGE_LABEL_STUDIO_PROJECT"],
    )
    yield Stack(settings, env, root, name)
    from loop.labelstudio import LabelStudioClient

    ls = LabelStudioClient.from_settings(settings)
    project = ls.find_project(settings.label_studio_project)
    if project is not None:
        ls.delete_project(project)


def choice(name: str, value: str) -> dict[str, Any]:
    return {"from_name": name, "to_name": "text", "type": "choices", "value": {"choices": [value]}}


def cli(stack: Stack, *args: str) -> str:
    done = run_triage(*args, env=stack.env, cwd=stack.root)
    assert done.returncode == 0, f"triage {' '.join(args)} failed:\n{done.stderr}"
    print(f"$ triage {' '.join(args)}\n{done.stdout}")
    return done.stdout


def test_reviewer_corrections_reach_the_served_model(stack: Stack) -> None:
    from loop.labelstudio import LabelStudioClient

    first = cli(stack, "retrain", "--quiet")  # the seed model becomes the first champion
    assert f"registered models:/{stack.name}/1" in first and "version 1 is now `champion`" in first

    with (
        triage_server(f"models:/{stack.name}@champion", stack.env, stack.root) as url,
        httpx.Client(base_url=url, timeout=120) as api,
    ):
        assert api.get("/version").json()["registry_version"] == "1"

        # 1. tickets arrive; the champion gets some soaked-parcel ones wrong (routine, or another ground than
        # damage: it has never seen water damage)
        answers = {t: api.post("/classify", json={"text": t, "channel": "amazon"}).json() for t in [*SOAKED, FINE, ODD]}
        misrouted = [t for t in SOAKED if (answers[t]["risk"], answers[t]["claim_type"]) != CORRECT]
        assert misrouted, f"the seed model already gets every soaked parcel right: {answers}"

        # 2. an agent reports the misroute of one of them
        fb = api.post(
            "/feedback",
            json={
                "request_id": answers[misrouted[0]]["request_id"],
                "risk": CORRECT[0],
                "claim_type": CORRECT[1],
                "agent": "marie@helpdesk",
            },
        )
        assert fb.status_code == 201 and fb.json()["misroute"], fb.text

        # 3. push to Label Studio: the reported misroute goes first
        pushed = cli(stack, "label", "push")
        assert "sent 10 new task(s)" in pushed and "misroute 1" in pushed

        # the paraphrase arrives after the push (it is never sent for review)
        before = api.post("/classify", json={"text": PARAPHRASE}).json()

        # 4. a reviewer corrects the tickets in Label Studio (through the API, as the UI does)
        ls = LabelStudioClient.from_settings(stack.settings)
        project = ls.find_project(stack.settings.label_studio_project)
        assert project is not None
        tasks = {t["data"]["text"]: int(t["id"]) for t in ls.export(project, all_tasks=True)}
        assert set(tasks) == {*SOAKED, FINE, ODD}
        note = {
            "from_name": "note",
            "to_name": "text",
            "type": "textarea",
            "value": {"text": ["water damage in transit: damaged, Tier 1"]},
        }
        for text in SOAKED:
            ls.sdk.annotations.create(
                id=tasks[text], result=[choice("risk", CORRECT[0]), choice("claim_type", CORRECT[1]), note]
            )
        ls.sdk.annotations.create(id=tasks[FINE], result=[choice("risk", "routine"), choice("claim_type", "none")])
        ls.sdk.annotations.create(
            id=tasks[ODD], result=[choice("risk", "routine"), choice("claim_type", "payment_question")]
        )

        # 5. pull: the valid corrections land in data/corrections.csv; the unknown label is rejected
        pulled = cli(stack, "label", "pull")
        assert "9 added, 0 updated" in pulled and "1 rejected" in pulled
        assert "unknown claim_type 'payment_question'" in pulled
        with (stack.settings.data_dir / "corrections.csv").open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert {r["text"] for r in rows} == {*SOAKED, FINE}
        assert cli(stack, "label", "pull").count("0 added, 0 updated, 9 already present") == 1  # idempotent

        # 6. retrain: the corrections are applied, the gate passes, version 2 becomes champion
        second = cli(stack, "retrain", "--quiet")
        assert "corrections: 9 applied = 9 new" in second
        assert "gate: PASSED" in second and "version 2 is now `champion`" in second

        # 7. reload: the service follows the registry, and answers the paraphrase the corrected way
        reloaded = api.post("/admin/reload")
        assert reloaded.status_code == 200 and reloaded.json()["registry_version"] == "2", reloaded.text
        after = api.post("/classify", json={"text": PARAPHRASE}).json()
        print(
            f"paraphrase: before {before['risk']}/{before['claim_type']} {before['risk_scores']}, "
            f"after {after['risk']}/{after['claim_type']} {after['risk_scores']}"
        )
        assert (after["risk"], after["claim_type"], after["tier"]) == (*CORRECT, 1), after
        # the corrections, not the seed data, did it: the reviewers' ground is surer than before
        ground = CORRECT[1]
        assert after["claim_type_scores"][ground] > before["claim_type_scores"][ground] + 0.05, (before, after)
        assert after["model_version"] != before["model_version"]
        assert api.get("/version").json()["registry_version"] == "2"
