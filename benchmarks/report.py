"""The targets (PASS/MISS, computed from one run's numbers) and the printed table."""

from __future__ import annotations

import math
from typing import Any

INT8_MIN_SPEEDUP = 2.0
INT8_MAX_DROP_POINTS = 1.0
HTTP_P50_FACTOR, HTTP_P50_SLACK_MS = 1.5, 1.0
MAX_RSS_MB = 300.0
BATCH_MIN_RATIO = 3.0


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    enc, acc = r.get("encoder"), r.get("int8_accuracy")
    if enc:
        speed = enc["speedup"]["int8_vs_torch"]
        worst = min(speed[s]["1"] for s in speed)
        drop = acc["max_drop_points"] if acc else math.nan
        ok = worst >= INT8_MIN_SPEEDUP and (drop <= INT8_MAX_DROP_POINTS if acc else True)
        detail = ", ".join(f"{s} {speed[s]['1']:.2f}x" for s in speed)
        if acc:
            detail += (
                f"; accuracy drop int8 vs fp32 {drop:+.2f} pt (risk {acc['risk_drop_points']:+.2f}, "
                f"claim type {acc['claim_type_drop_points']:+.2f})"
            )
        out.append(
            {
                "name": "int8 encoder >= 2x PyTorch at batch 1, accuracy within 1 point",
                "value": worst,
                "limit": INT8_MIN_SPEEDUP,
                "pass": ok,
                "detail": detail,
            }
        )
    http, floor = r.get("http"), r.get("floor")
    if http and floor:
        p50, bare = http["classify_c1"]["latency_ms"]["p50"], floor["bare"]["p50_ms"]
        limit = HTTP_P50_FACTOR * bare + HTTP_P50_SLACK_MS
        out.append(
            {
                "name": "HTTP /classify p50 (c=1) <= 1.5 x bare onnxruntime + 1 ms",
                "value": p50,
                "limit": round(limit, 3),
                "pass": p50 <= limit,
                "detail": f"{p50:.2f} ms vs 1.5 x {bare:.2f} + 1 = {limit:.2f} ms ({p50 / bare:.2f}x bare)",
            }
        )
    if http:
        mem = http["memory_mb"]
        rss = max(mem["after_warmup"]["VmRSS"], mem["after_load"]["VmRSS"])
        out.append(
            {
                "name": "serving RSS <= 300 MB",
                "value": rss,
                "limit": MAX_RSS_MB,
                "pass": rss <= MAX_RSS_MB,
                "detail": f"{mem['after_warmup']['VmRSS']:.0f} MB after warm-up, "
                f"{mem['after_load']['VmRSS']:.0f} MB after the load "
                f"(peak {mem['after_load']['VmHWM']:.0f} MB)",
            }
        )
        c = http["concurrency"]
        batch_ratio = http["batch_vs_single"][str(c)]
        out.append(
            {
                "name": f"/classify/batch >= 3x single-request messages/s (c={c})",
                "value": batch_ratio,
                "limit": BATCH_MIN_RATIO,
                "pass": batch_ratio >= BATCH_MIN_RATIO,
                "detail": f"{http[f'batch_c{c}']['messages_per_s']:.0f} vs "
                f"{http[f'classify_c{c}']['messages_per_s']:.0f} msg/s"
                f" (c=1: {http['batch_vs_single']['1']:.2f}x)",
            }
        )
    if r.get("cases"):
        from benchmarks.cases import target

        out.append(target(r["cases"]))
    faults = r.get("faults")
    if faults:
        ok = (
            faults["unexpected_5xx"] == 0
            and faults["reload_failures"] == 0
            and faults["acknowledged_logged"] == faults["acknowledged"]
            and faults["logged_of_those_before_kill"] == faults["acknowledged_before_kill"]
            and (faults["rss_growth_pct"] or 0) <= 10
        )
        out.append(
            {
                "name": "faults under load: no 5xx but the database window, no failed reload, nothing acknowledged "
                "lost, RSS growth <= 10%",
                "value": faults["unexpected_5xx"] + faults["reload_failures"],
                "limit": 0,
                "pass": ok,
                "detail": f"{faults['requests_sent']} requests, {faults['answered_5xx']} 5xx "
                f"({faults['db_lock_503']} while locked), {faults['reload_failures']} reload failures, "
                f"{faults['acknowledged_logged']}/{faults['acknowledged']} acknowledged logged, "
                f"RSS {faults['rss_growth_pct']}%",
            }
        )
    return out


def _rows(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    line = [
        indent
        + "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))
    ]
    for row in rows:
        line.append(
            indent
            + "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths, strict=True)))
        )
    return line


def table(r: dict[str, Any]) -> str:
    meta = r["meta"]
    out = [
        f"triage benchmark {meta['timestamp']}  ({'quick' if meta['quick'] else 'full'} run, "
        f"{meta['cpus']} CPUs, load average {meta['loadavg_start']} -> {meta['loadavg_end']})",
        f"model {meta['model']} (served graph: {meta['served_variant']}, "
        f"{meta['intra_op_threads']} onnxruntime thread(s) per call, {meta['inference_slots']} call(s) at once)",
        "",
    ]
    enc = r.get("encoder")
    if enc:
        info = r["messages"]
        out.append(
            f"Encoder, ms per message, tokenization included ({enc['threads']} thread each; short = "
            f"{info['short']['n']} shortest test messages, mean {info['short']['chars_mean']:.0f} chars; long "
            f"= {info['long']['n']} longest, mean {info['long']['chars_mean']:.0f}; fr/it/en mixed)"
        )
        cols = [(s, b) for s in ("short", "long") for b in ("1", "32")]
        header = ["engine"] + [f"{s} b{b}" for s, b in cols]
        names = {"torch": "PyTorch (sentence-transformers)", "onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8"}
        rows = [[names[e]] + [_fmt(enc["ms_per_message"][e][s][b], 3) for s, b in cols] for e in names]
        rows += [
            [f"speedup {k.replace('_vs_', ' vs ')} (x)"] + [_fmt(v[s][b]) for s, b in cols]
            for k, v in enc["speedup"].items()
        ]
        out += _rows(header, rows)
        acc = r.get("int8_accuracy")
        if acc:
            gate = acc.get("model_folder_gate") or {}
            i8, f32 = acc["int8"], acc["fp32"]
            out.append(
                f"  int8 vs fp32 on data/test.csv (n={acc['n']}): risk accuracy {i8['risk_accuracy']:.2f}"
                f" vs {f32['risk_accuracy']:.2f}, claim type {i8['claim_type_accuracy']:.2f}"
                f" vs {f32['claim_type_accuracy']:.2f} (largest drop {acc['max_drop_points']:+.2f} pt)"
            )
            if gate:
                out.append(f"  the model folder's int8 rule (tier flips over all labelled data): {gate.get('reason')}")
        out.append("")
    models = r.get("models")
    if models:
        model_names = list(models["ms_per_message"])
        out.append(
            "Served graph against baseline models, ms per message, one at a time (tokenizer + n-grams + "
            f"onnxruntime, median of {models['rounds']} rounds)"
        )
        header = ["model", "encoder", "n-grams", "variant", "short", "long", "short x baseline", "long x baseline"]
        model_rows: list[list[str]] = []
        for name in model_names:
            m, ms = models["models"][name], models["ms_per_message"][name]
            ratio_row = models["ratio_to_baseline"].get(name, {})
            model_rows.append(
                [
                    name,
                    m["encoder"],
                    "yes" if m["ngrams"] else "no",
                    m["variant"],
                    _fmt(ms["short"], 3),
                    _fmt(ms["long"], 3),
                    _fmt(ratio_row.get("short", 1.0)),
                    _fmt(ratio_row.get("long", 1.0)),
                ]
            )
        out += _rows(header, model_rows)
        out.append("")
    floor = r.get("floor")
    if floor:
        out.append(
            f"Served graph in-process, one message at a time ({floor['messages']} test messages, "
            f"median of {floor['rounds']} rounds each)"
        )
        labels = {
            "tokenize": "tokenization alone",
            "bare": "bare onnxruntime + tokenization (floor)",
            "respond": "keywords + language + response model",
            "log": "prediction-log commit",
            "route": "the route's whole worker-thread call",
            "access": "key check + metrics (event loop)",
        }
        rows = [
            [labels[k], _fmt(floor[k]["p50_ms"], 3), _fmt(floor[k]["mean_ms"], 3), _fmt(floor[k]["p95_ms"], 3)]
            for k in labels
        ]
        out += _rows(["layer", "p50 ms", "mean ms", "p95 ms"], rows)
        share = floor["tokenize"]["mean_ms"] / floor["bare"]["mean_ms"] * 100
        out.append(f"  tokenization is {share:.0f}% of the floor (mean)")
        out.append("")
    http = r.get("http")
    if http:
        out.append("HTTP against a real uvicorn process, load from a separate process on loopback")
        rows = []
        for key, label in (
            ("classify_c1", "POST /classify, c=1"),
            (f"classify_c{http['concurrency']}", f"POST /classify, c={http['concurrency']}"),
            ("batch_c1", "POST /classify/batch x32, c=1"),
            (f"batch_c{http['concurrency']}", f"POST /classify/batch x32, c={http['concurrency']}"),
        ):
            x = http[key]
            rows.append(
                [
                    label,
                    str(x["requests"]),
                    _fmt(x["latency_ms"]["p50"]),
                    _fmt(x["latency_ms"]["p95"]),
                    _fmt(x["latency_ms"]["p99"]),
                    _fmt(x["messages_per_s"], 1),
                    str(sum(x["errors"].values())),
                ]
            )
        out += _rows(["run", "requests", "p50 ms", "p95 ms", "p99 ms", "msg/s", "errors"], rows)
        mem = http["memory_mb"]
        out.append(
            f"  batch vs single msg/s: c=1 {http['batch_vs_single']['1']:.2f}x, "
            f"c={http['concurrency']} {http['batch_vs_single'][str(http['concurrency'])]:.2f}x"
        )
        out.append(
            f"  cold start (spawn -> first 200 from /classify) {http['cold_start_s']:.2f} s; RSS "
            f"{mem['after_warmup']['VmRSS']:.0f} MB after warm-up, {mem['after_load']['VmRSS']:.0f} MB after "
            f"the load, peak {mem['after_load']['VmHWM']:.0f} MB"
        )
        out.append("")
    if r.get("cases"):
        from benchmarks.cases import table as cases_table

        out += cases_table(r["cases"])
        out.append("")
    train = r.get("training")
    if train:
        out.append("Training wall time: training.train.fit (embeddings + heads), BANKING77, --target category")
        rows = [
            [
                str(t["rows"]),
                t["cache"],
                _fmt(t["wall_s"]),
                _fmt(t["messages_per_s"], 0),
                _fmt(t["stages_s"].get("load_encoder")),
                _fmt(t["stages_s"].get("embed_texts")),
                _fmt(t["stages_s"].get("fit_head")),
            ]
            for t in train
        ]
        out += _rows(["rows", "cache", "wall s", "msg/s", "load encoder s", "embed s", "fit head s"], rows)
        out.append("")
    faults = r.get("faults")
    if faults:
        from benchmarks.faults import table as faults_table

        out.append("Faults under load (benchmarks/faults.py: c=16, 3 reloads, database locked, kill -9)")
        out.append(faults_table(faults))
        out.append("")
    out.append("Targets (ratios from this run)")
    for t in r.get("targets", []):
        out.append(f"  [{'PASS' if t['pass'] else 'MISS'}] {t['name']}: {t['detail']}")
    return "\n".join(out)
