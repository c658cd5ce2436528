#!/usr/bin/env python3
"""Prints the development-set table of tools/devset-eval.sh from OUT/eval/report.json, the
run folders' prior figures and the recorded times, as Markdown.

    python tools/devset-table.py OUT_DIR [EVAL_SUBDIR]
"""
import json
import os
import sys

out = sys.argv[1]
sub = sys.argv[2] if len(sys.argv) > 2 else "eval"
rep = json.load(open(os.path.join(out, sub, "report.json")))


def f(v):
    return "–" if v is None else f"{v:.3f}"


def t(c, what):
    p = os.path.join(out, "times", f"{c}.{what}{sub[4:] if what == 'tune' else ''}")
    return int(open(p).read()) if os.path.exists(p) else None


print("| category | train s | tune s | prior val NLL / log K | variant | pixel AUROC | AUPRO@0.3 | image AUROC | PRO@thr | image acc | fired normal / defective |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
ok = True
rows_full = []
for c in rep["categories"]:
    name = c["category"]
    st = json.load(open(os.path.join(out, "runs", name, "prior.json")))
    m = st.get("metrics", {})
    nll = f"{m.get('val_nll', float('nan')):.2f} / {m.get('log_k', float('nan')):.2f}"
    d = c.get("diagnostics") or {}
    fired = f"{d.get('fired_fraction_good', float('nan')):.3f} / {d.get('fired_fraction_defective', float('nan')):.3f}" if d else "–"
    variants = {v["variant"]: v["row"] for v in c["ablation"]}
    for i, (v, r) in enumerate(variants.items()):
        first = i == 0
        print(f"| {name if first else ''} | {t(name, 'train') if first else ''} | {t(name, 'tune') if first else ''} | {nll if first else ''} | {v} | {f(r['pixel_auroc'])} | {f(r['aupro_30'])} | {f(r['image_auroc'])} | {f(r['pro'])} | {f(r['image_accuracy'])} | {fired if first else ''} |")
    full, l2 = variants.get("full"), variants.get("l2_input_output")
    rows_full.append(full)
    if full and l2:
        beats = (full["pixel_auroc"] or 0) > (l2["pixel_auroc"] or 0) and (full["aupro_30"] or 0) > (l2["aupro_30"] or 0)
        good = beats and (full["pro"] or 0) >= 0.40 and (full["image_accuracy"] or 0) >= 0.80
        print(f"|  |  |  |  | **{'meets' if good else 'misses'} the bar** (beats ℓ2: {'yes' if beats else 'no'}) | | | | | | |")
        ok &= good
mean_pa = sum((r["pixel_auroc"] or 0) for r in rows_full) / max(len(rows_full), 1)
print(f"\nmean pixel AUROC of the full method: {mean_pa:.3f} (bar 0.90)")
ok &= mean_pa >= 0.90
print("acceptance bar:", "MET" if ok else "NOT MET")
