"""Summarises tools/precision-devset.sh: per category and precision, images/s (one `vqad bench`
run, side by side) and speed-up over FP32, the prior's share of the measured peak, the parity
signed into the package (validation normals + synthetic defects), and on the test images:
decision agreement and mask IoU against FP32, pixel AUROC / AUPRO@0.3 differences. Judges
issue 24's CPU bar for INT8: >= 1.5x FP32 images/s, decisions >= 99%, mask IoU >= 0.95,
AUROC and AUPRO within 0.005.

    python tools/precision-table.py OUT_DIR CATEGORIES
"""
import json, os, sys, zipfile

import cv2
import numpy as np

out, cats = sys.argv[1], sys.argv[2].split(",")
PRECISIONS = ["fp32", "int8", "fp16"]


def overall(report, cat):
    for c in report["categories"]:
        if c["category"] == cat:
            return next(r for r in c["rows"] if r["subset"] == "overall")
    raise SystemExit(f"{cat}: not in the report")


def results(p, cat):
    d = os.path.join(out, f"eval-{p}", "results", cat)
    recs = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".json"):
            stem = f[:-5]
            r = json.load(open(os.path.join(d, f)))
            m = cv2.imread(os.path.join(d, f"{stem}_mask.png"), cv2.IMREAD_GRAYSCALE)
            recs[stem] = (r["anomalous"], m > 0, r.get("precision"))
    return recs


reports = {p: json.load(open(os.path.join(out, f"eval-{p}", "report.json"))) for p in PRECISIONS}
print("| category | precision | images/s | × fp32 | prior ms/pass | prior share of peak | parity (val + synthetic): decisions / mask IoU / codes / prior SQNR dB; bound; kept in fp32 by accuracy control | test: decisions | test: mask IoU | Δ pixel AUROC | Δ AUPRO@0.3 |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
verdict = []
for cat in cats:
    bench = json.load(open(os.path.join(out, "bench", f"{cat}.json")))
    rows = {r["precision"]: r for r in bench["rows"] if r["mode"] == "incremental"}
    roof = {r["precision"]: {g["graph"]: g for g in r["graphs"]} for r in bench["roofline"]}
    with zipfile.ZipFile(os.path.join(out, "packages", f"{cat}-1.1.0.vqad")) as z:
        manifest = json.loads(z.read("manifest.json"))
    ref = results("fp32", cat)
    base = overall(reports["fp32"], cat)
    for p in PRECISIONS:
        r = rows[p]
        speed = r["images_per_s"] / rows["fp32"]["images_per_s"]
        prior = roof[p]["pixelsnail.onnx"]
        if p == "fp32":
            parity = "reference"
            dec = iou = "—"
            dauc = dpro = 0.0
        else:
            q = manifest["variants"][p]["parity"]
            kept = manifest["variants"][p].get("float32", [])
            parity = f"{q['decision_agreement']:.3f} / {q.get('mask_iou', float('nan')):.3f} / {q['encoder_code_agreement']:.3f} / {q['prior_logprob_sqnr_db']:.1f}; {'within bound' if q['within_bound'] else 'OUTSIDE bound'}; fp32 kept: {', '.join(kept) or 'none'}"
            got = results(p, cat)
            assert all(v[2] == p for v in got.values()), f"{cat}: records of the {p} run name another precision"
            agree = np.mean([ref[k][0] == got[k][0] for k in ref])
            ious = [np.logical_and(ref[k][1], got[k][1]).sum() / max(1, np.logical_or(ref[k][1], got[k][1]).sum()) for k in ref if ref[k][1].any()]
            miou = float(np.mean(ious)) if ious else float("nan")
            o = overall(reports[p], cat)
            dauc, dpro = o["pixel_auroc"] - base["pixel_auroc"], o["aupro_30"] - base["aupro_30"]
            dec, iou = f"{agree:.3f} ({len(ref)} images)", f"{miou:.3f}"
            if p == "int8":
                misses = []
                if speed < 1.5: misses.append(f"speed {speed:.2f}x < 1.5x")
                if agree < 0.99: misses.append(f"decisions {agree:.3f} < 0.99")
                if not miou >= 0.95: misses.append(f"mask IoU {miou:.3f} < 0.95")
                if abs(dauc) > 0.005: misses.append(f"pixel AUROC {dauc:+.4f}")
                if abs(dpro) > 0.005: misses.append(f"AUPRO {dpro:+.4f}")
                verdict.append((f"int8 on {cat}", misses))
            if p == "fp16":
                verdict.append((f"fp16 on {cat}", [] if q["within_bound"] else ["signed parity outside its bound"]))
        print(f"| {cat} | {p} | {r['images_per_s']:.2f} | {speed:.2f} | {r['ms_per_prior_pass']:.2f} | {prior['share_of_peak']*100:.1f}% of {prior['peak_gops']:.0f} | {parity} | {dec} | {iou} | {dauc:+.4f} | {dpro:+.4f} |")
peak = None
print()
for what, misses in verdict:
    print(f"- {what}: " + ("meets the bar" if not misses else "misses: " + ", ".join(misses)))
print("issue 24 CPU bar (int8 speed and test-set parity, fp16 signed parity): " + ("MET" if all(not m for _, m in verdict) else "NOT MET"))
