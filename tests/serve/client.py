"""Drives `vqad serve` with NVIDIA's own Open Inference Protocol clients (tritonclient.http and
tritonclient.grpc) for tests/serve.rs. Each subcommand prints one JSON object on stdout.

  client.py infer HTTP GRPC MODEL NPY IMAGE...   BYTES and FP32 inference over both protocols
  client.py repo HTTP GRPC                       repository index, unload, load (both protocols)
  client.py bad HTTP GRPC MODEL IMAGE MAXBYTES   every bad request: status, then still serving
  client.py load HTTP MODEL IMAGE N CONC [STOP]  bounded load (at most N requests): images/s,
                                                 p50/p99, errors, versions; with STOP, ends early
                                                 once 16 answers came from version STOP
"""
import http.client
import json
import sys
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

OUTS = ["score", "anomalous", "mask", "map"]


def http_bytes(c, model, images, version=""):
    arr = np.array(images, dtype=np.object_)
    inp = httpclient.InferInput("image", [len(images)], "BYTES")
    inp.set_data_from_numpy(arr, binary_data=True)
    outs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in OUTS]
    return c.infer(model, [inp], outputs=outs, model_version=version)


def grpc_bytes(c, model, images):
    inp = grpcclient.InferInput("image", [len(images)], "BYTES")
    inp.set_data_from_numpy(np.array(images, dtype=np.object_))
    return c.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput(n) for n in OUTS])


def summary(r, params):
    return {
        "score": r.as_numpy("score").tolist(),
        "anomalous": r.as_numpy("anomalous").tolist(),
        "mask_shape": list(r.as_numpy("mask").shape),
        "mask": r.as_numpy("mask").reshape(r.as_numpy("mask").shape[0], -1).tolist(),
        "map_max": r.as_numpy("map").reshape(r.as_numpy("map").shape[0], -1).max(axis=1).tolist(),
        "params": params,
    }


def grpc_params(r):
    p = r.get_response(as_json=True).get("parameters", {})
    return {k: list(v.values())[0] for k, v in p.items()}


def cmd_infer(h, g, model, npy, images):
    data = [open(p, "rb").read() for p in images]
    hc = httpclient.InferenceServerClient(url=h)
    gc = grpcclient.InferenceServerClient(url=g)
    out = {
        "live": [hc.is_server_live(), gc.is_server_live()],
        "ready": [hc.is_server_ready(), gc.is_server_ready()],
        "model_ready": [hc.is_model_ready(model), gc.is_model_ready(model)],
        "server_metadata": hc.get_server_metadata(),
        "model_metadata": hc.get_model_metadata(model),
        "grpc_model_metadata": gc.get_model_metadata(model, as_json=True),
    }
    r = http_bytes(hc, model, data)
    out["http_bytes"] = summary(r, r.get_response().get("parameters", {}))
    r = grpc_bytes(gc, model, data)
    out["grpc_bytes"] = summary(r, grpc_params(r))
    x = np.load(npy).astype(np.float32)
    inp = httpclient.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    r = hc.infer(model, [inp], outputs=[httpclient.InferRequestedOutput(n, binary_data=True) for n in OUTS + ["restored"]])
    out["http_fp32"] = summary(r, r.get_response().get("parameters", {}))
    out["http_fp32"]["restored_shape"] = list(r.as_numpy("restored").shape)
    # FP32 as plain JSON (no binary extension), default outputs only.
    inp = httpclient.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    r = hc.infer(model, [inp], outputs=[httpclient.InferRequestedOutput(n, binary_data=False) for n in ["score", "anomalous"]])
    out["http_fp32_json"] = {"score": r.as_numpy("score").tolist(), "anomalous": r.as_numpy("anomalous").tolist()}
    inp = grpcclient.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    r = gc.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput(n) for n in OUTS])
    out["grpc_fp32"] = summary(r, grpc_params(r))
    print(json.dumps(out))


def status_of(f):
    try:
        f()
        return "ok"
    except InferenceServerException as e:
        return f"{e.status()}: {e.message()}"


def cmd_repo(h, g):
    hc = httpclient.InferenceServerClient(url=h)
    gc = grpcclient.InferenceServerClient(url=g)
    out = {"index": hc.get_model_repository_index(), "grpc_index": gc.get_model_repository_index(as_json=True).get("models", [])}
    out["load_tampered_http"] = status_of(lambda: hc.load_model("tampered"))
    out["load_tampered_grpc"] = status_of(lambda: gc.load_model("tampered"))
    out["tampered_ready"] = hc.is_model_ready("tampered")
    out["infer_tampered"] = status_of(lambda: http_bytes(hc, "tampered", [b"x"]))
    out["unload_http"] = status_of(lambda: hc.unload_model("synth_texture"))
    out["ready_after_unload"] = hc.is_model_ready("synth_texture")
    out["index_after_unload"] = hc.get_model_repository_index()
    out["load_grpc"] = status_of(lambda: gc.load_model("synth_texture"))
    out["ready_after_load"] = [hc.is_model_ready("synth_texture"), gc.is_model_ready("synth_texture")]
    out["unload_grpc"] = status_of(lambda: gc.unload_model("synth_texture"))
    out["ready_after_grpc_unload"] = gc.is_model_ready("synth_texture")
    out["load_http"] = status_of(lambda: hc.load_model("synth_texture"))
    out["ready_after_http_load"] = hc.is_model_ready("synth_texture")
    out["load_unknown"] = status_of(lambda: hc.load_model("no_such_model"))
    print(json.dumps(out))


def raw_post(h, path, body, headers=None):
    host, port = h.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        c.request("POST", path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        try:
            err = json.loads(data).get("error", "")
        except Exception:
            err = data[:200].decode("latin-1")
        return [r.status, err]
    except Exception as e:  # the server may close early on a body it refuses
        return [-1, f"{type(e).__name__}: {e}"]
    finally:
        c.close()


def cmd_bad(h, g, model, image, maxbytes):
    png = open(image, "rb").read()
    p = f"/v2/models/{model}/infer"
    good = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [0.5] * (3 * 64 * 64)}]})
    out = {
        "malformed_json": raw_post(h, p, b'{"inputs": [', {"Content-Type": "application/json"}),
        "not_an_object": raw_post(h, p, b"[1, 2]"),
        "no_inputs": raw_post(h, p, b'{"inputs": []}'),
        "wrong_input_name": raw_post(h, p, good.replace('"image"', '"img"').encode()),
        "wrong_datatype": raw_post(h, p, json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "INT32", "data": [1]}]}).encode()),
        "wrong_shape": raw_post(h, p, json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.5] * (3 * 32 * 32)}]}).encode()),
        "shape_data_mismatch": raw_post(h, p, json.dumps({"inputs": [{"name": "image", "shape": [2, 3, 64, 64], "datatype": "FP32", "data": [0.5] * (3 * 64 * 64)}]}).encode()),
        "out_of_range": raw_post(h, p, good.replace("0.5", "7.0").encode()),
        "unknown_output": raw_post(h, p, json.dumps({"inputs": json.loads(good)["inputs"], "outputs": [{"name": "nope"}]}).encode()),
        "bad_binary_header": raw_post(h, p, b"{}", {"Inference-Header-Content-Length": "99"}),
        "undecodable_image": None,
        "too_large": raw_post(h, p, b" " * (maxbytes + 1024)),
        "unknown_model": raw_post(h, "/v2/models/no_such_model/infer", good.encode()),
        "unknown_version": raw_post(h, f"/v2/models/{model}/versions/9.9.9/infer", good.encode()),
        "unknown_endpoint": raw_post(h, "/v2/nothing", b""),
    }
    hc = httpclient.InferenceServerClient(url=h)
    out["undecodable_image"] = status_of(lambda: http_bytes(hc, model, [b"certainly not a png"]))
    out["truncated_png"] = status_of(lambda: http_bytes(hc, model, [png[: len(png) // 2]]))
    gc = grpcclient.InferenceServerClient(url=g)
    gi = grpcclient.InferInput("image", [1], "BYTES")
    gi.set_data_from_numpy(np.array([b"garbage"], dtype=np.object_))
    out["grpc_undecodable"] = status_of(lambda: gc.infer(model, [gi]))
    gi2 = grpcclient.InferInput("image", [1], "INT32")
    gi2.set_data_from_numpy(np.array([1], dtype=np.int32))
    out["grpc_wrong_datatype"] = status_of(lambda: gc.infer(model, [gi2]))
    gi3 = grpcclient.InferInput("image", [1, 3, 32, 32], "FP32")
    gi3.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    out["grpc_wrong_shape"] = status_of(lambda: gc.infer(model, [gi3]))
    out["grpc_unknown_model"] = status_of(lambda: gc.infer("no_such_model", [gi]))
    big = grpcclient.InferInput("image", [1], "BYTES")
    big.set_data_from_numpy(np.array([b"\0" * (maxbytes + 1024)], dtype=np.object_))
    out["grpc_too_large"] = status_of(lambda: gc.infer(model, [big]))
    import grpc
    ch = grpc.insecure_channel(g)
    call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    try:
        call(b"\xff\xff\xff\xff\x0f", timeout=30)
        out["grpc_malformed_protobuf"] = "ok"
    except grpc.RpcError as e:
        out["grpc_malformed_protobuf"] = f"{e.code()}: {e.details()}"
    # Still serving, over both protocols.
    out["after"] = {
        "live": [hc.is_server_live(), gc.is_server_live()],
        "ready": [hc.is_server_ready(), gc.is_server_ready()],
        "http_infer": http_bytes(hc, model, [png]).as_numpy("score").tolist(),
        "grpc_infer": grpc_bytes(gc, model, [png]).as_numpy("score").tolist(),
    }
    print(json.dumps(out))


def cmd_load(h, model, image, n, conc, stop=None):
    png = open(image, "rb").read()
    lat, errors, versions, batches = [], [], {}, {}
    lock = threading.Lock()
    counter = iter(range(n))

    def worker():
        c = httpclient.InferenceServerClient(url=h)
        while True:
            with lock:
                i = next(counter, None)
                if stop is not None and versions.get(stop, 0) >= 16:
                    i = None
            if i is None:
                return
            t = time.perf_counter()
            try:
                r = http_bytes(c, model, [png])
                v = r.get_response()["model_version"]
                b = r.get_response()["parameters"]["batch_size"]
                with lock:
                    lat.append(time.perf_counter() - t)
                    versions[v] = versions.get(v, 0) + 1
                    batches[b] = batches.get(b, 0) + 1
            except Exception as e:
                with lock:
                    errors.append(str(e))

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(conc)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    wall = time.perf_counter() - t0
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1e3 if lat else None
    print(json.dumps({"concurrency": conc, "requests": n, "ok": len(lat), "errors": errors[:5], "error_count": len(errors),
                      "images_per_s": len(lat) / wall, "p50_ms": q(0.5), "p99_ms": q(0.99), "versions": versions,
                      "batch_sizes": batches, "seconds": wall}))


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "infer":
        cmd_infer(a[1], a[2], a[3], a[4], a[5:])
    elif a[0] == "repo":
        cmd_repo(a[1], a[2])
    elif a[0] == "bad":
        cmd_bad(a[1], a[2], a[3], a[4], int(a[5]))
    elif a[0] == "load":
        cmd_load(a[1], a[2], a[3], int(a[4]), int(a[5]), a[6] if len(a) > 6 else None)
