"""Where a package's prior spends its time, per op type, FP32 beside INT8 (ONNX Runtime's own
profiler, CPU provider): the evidence for whether INT8 can pay on this host.

    $VQAD_PYTHON tools/precision-profile.py PACKAGE.vqad [THREADS]

The package must carry the int8 variant (`vqad package --precisions fp32,int8`). Index tables
are drawn at random (the prior's cost does not depend on the codes). Prints, per precision, the
mean time of one pass and each op type's share of the kernel time.
"""
import collections, io, json, os, sys, tempfile, time, zipfile

import numpy as np
import onnxruntime as ort

pkg, threads = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0
z = zipfile.ZipFile(pkg)
m = json.loads(z.read("manifest.json"))
grid, k = m["model"]["grid_m"], m["model"]["num_codes"]
x = {"indices": np.random.default_rng(0).integers(0, k, (1, grid, m["model"]["grid_n"])).astype(np.int64)}
rows = {}
for name in ["pixelsnail.onnx", "pixelsnail.int8.onnx", "pixelsnail.fp16.onnx"]:
    if name not in z.namelist():
        continue
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, name)
        open(path, "wb").write(z.read(name))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for _ in range(3):
            s.run(None, x)
        t = time.perf_counter(); n = 20
        for _ in range(n):
            s.run(None, x)
        ms = (time.perf_counter() - t) / n * 1e3
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(d, "p")
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for _ in range(10):
            s.run(None, x)
        ev = json.load(open(s.end_profiling()))
    agg, cnt = collections.Counter(), collections.Counter()
    for e in ev:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            agg[e["args"]["op_name"]] += e["dur"]; cnt[e["args"]["op_name"]] += 1
    tot = sum(agg.values())
    rows[name] = (ms, {op: (d / tot, cnt[op] // 10) for op, d in agg.most_common()})
print(f"prior of {m['name']} {m['version']}: grid {grid}x{m['model']['grid_n']}, K={k}, {threads or 'all'} thread(s), ONNX Runtime {ort.__version__}")
for name, (ms, ops) in rows.items():
    print(f"\n{name}: {ms:.2f} ms per pass")
    for op, (share, nodes) in ops.items():
        if share >= 0.005:
            print(f"  {op:24s} {share*100:5.1f}%  ({nodes} nodes)")
