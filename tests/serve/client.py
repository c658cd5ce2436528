"""Drives `vqad serve` with NVIDIA's own Open Inference Protocol clients (tritonclient.http and
tritonclient.grpc) for tests/serve.rs. Each subcommand prints one JSON object on stdout.

  client.py infer HTTP GRPC MODEL NPY IMAGE...   BYTES and FP32 inference over both protocols
  client.py repo HTTP GRPC                       repository index, unload, load (both protocols)
  client.py bad HTTP GRPC MODEL IMAGE MAXBYTES   every bad request: status, then still serving
  client.py load HTTP MODEL IMAGE N CONC [STOP]  bounded load (at most N requests): images/s,
                                                 p50/p99, errors, versions; with STOP, ends early
                                                 once 16 answers came from version STOP
  client.py hostile HTTP GRPC MODEL FILE...       each file as one BYTES image over HTTP and gRPC:
                                                 status, message, milliseconds per protocol
  client.py mixed HTTP GRPC MODEL IMAGE N BOMB... N normal requests (half HTTP, half gRPC) from
                                                 8 threads while 16 threads send the bombs in turn:
                                                 answers, errors and refusals per kind
  client.py burst HTTP GRPC MODEL FILE N CONC     N requests of FILE (alternately HTTP and gRPC) from
                                                 CONC threads: how many of each status
  client.py slow HTTP MODEL IMAGE CONNS BODY WAIT  CONNS connections that send headers and one
                                                 byte of a BODY-byte body, then nothing, while
                                                 normal requests go on for WAIT s: when each slow
                                                 one was closed, and the normal answers
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


def grpc_status(f):
    try:
        f()
        return "ok"
    except InferenceServerException as e:
        return f"{e.status()}: {e.message()}"


def cmd_hostile(h, g, model, files):
    hc = httpclient.InferenceServerClient(url=h, network_timeout=120)
    gc = grpcclient.InferenceServerClient(url=g)
    out = {}
    for p in files:
        data = open(p, "rb").read()
        row = {"bytes": len(data)}
        t = time.perf_counter()
        row["http"] = status_of(lambda: http_bytes(hc, model, [data]))
        row["http_ms"] = (time.perf_counter() - t) * 1e3
        gi = grpcclient.InferInput("image", [1], "BYTES")
        gi.set_data_from_numpy(np.array([data], dtype=np.object_))
        t = time.perf_counter()
        row["grpc"] = grpc_status(lambda: gc.infer(model, [gi], client_timeout=120))
        row["grpc_ms"] = (time.perf_counter() - t) * 1e3
        out[p] = row
    out["after"] = {"live": [hc.is_server_live(), gc.is_server_live()], "ready": [hc.is_server_ready(), gc.is_server_ready()]}
    print(json.dumps(out))


def cmd_mixed(h, g, model, image, n, bombs):
    png = open(image, "rb").read()
    bomb_data = [open(p, "rb").read() for p in bombs]
    lock = threading.Lock()
    res = {"ok": 0, "errors": [], "bomb_refusals": {}, "bomb_other": []}
    counter = iter(range(n))
    done = threading.Event()

    def normal():
        hc = httpclient.InferenceServerClient(url=h, network_timeout=120)
        gc = grpcclient.InferenceServerClient(url=g)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                if i % 2:
                    grpc_bytes(gc, model, [png]).as_numpy("score")
                else:
                    http_bytes(hc, model, [png]).as_numpy("score")
                with lock:
                    res["ok"] += 1
            except Exception as e:
                with lock:
                    res["errors"].append(str(e)[:300])

    def bomber(k):
        hc = httpclient.InferenceServerClient(url=h, network_timeout=120)
        gc = grpcclient.InferenceServerClient(url=g)
        j = k
        while not done.is_set():
            data = bomb_data[j % len(bomb_data)]
            if j % 2:
                gi = grpcclient.InferInput("image", [1], "BYTES")
                gi.set_data_from_numpy(np.array([data], dtype=np.object_))
                r = grpc_status(lambda: gc.infer(model, [gi]))
            else:
                r = status_of(lambda: http_bytes(hc, model, [data]))
            key = r.split(":")[0]
            with lock:
                res["bomb_refusals"][key] = res["bomb_refusals"].get(key, 0) + 1
                if key not in ("400", "StatusCode.INVALID_ARGUMENT"):
                    res["bomb_other"].append(r[:300])
            j += 1

    t0 = time.perf_counter()
    bs = [threading.Thread(target=bomber, args=(k,)) for k in range(16)]
    ns = [threading.Thread(target=normal) for _ in range(8)]
    [t.start() for t in bs + ns]
    [t.join() for t in ns]
    done.set()
    [t.join() for t in bs]
    res["seconds"] = time.perf_counter() - t0
    res["requests"] = n
    res["error_count"] = len(res["errors"])
    res["errors"] = res["errors"][:5]
    res["bomb_other"] = res["bomb_other"][:5]
    print(json.dumps(res))


def cmd_burst(h, g, model, path, n, conc):
    data = open(path, "rb").read()
    lock = threading.Lock()
    counts, examples = {}, {}
    counter = iter(range(n))

    def worker():
        hc = httpclient.InferenceServerClient(url=h, network_timeout=300)
        gc = grpcclient.InferenceServerClient(url=g)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            if i % 2:
                gi = grpcclient.InferInput("image", [1], "BYTES")
                gi.set_data_from_numpy(np.array([data], dtype=np.object_))
                r = grpc_status(lambda: gc.infer(model, [gi], client_timeout=300))
            else:
                r = status_of(lambda: http_bytes(hc, model, [data]))
            key = r.split(":")[0]
            with lock:
                counts[key] = counts.get(key, 0) + 1
                examples.setdefault(key, r[:400])

    ts = [threading.Thread(target=worker) for _ in range(conc)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    print(json.dumps({"counts": counts, "examples": examples}))


def cmd_slow(h, model, image, conns, body, wait):
    import socket
    host, port = h.split(":")
    png = open(image, "rb").read()
    head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {h}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {body}\r\n\r\n").encode()
    socks = []
    t0 = time.perf_counter()
    for _ in range(conns):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(head + b"{")
        s.setblocking(False)
        socks.append(s)
    opened = time.perf_counter() - t0
    closed_at = [None] * conns
    answers = [None] * conns
    normal = {"ok": 0, "errors": []}
    stop = threading.Event()

    def normal_load():
        hc = httpclient.InferenceServerClient(url=h, network_timeout=120)
        while not stop.is_set():
            try:
                http_bytes(hc, model, [png]).as_numpy("score")
                normal["ok"] += 1
            except Exception as e:
                normal["errors"].append(str(e)[:200])
            time.sleep(0.05)

    th = threading.Thread(target=normal_load)
    th.start()
    import select
    deadline = t0 + wait
    while time.perf_counter() < deadline and any(c is None for c in closed_at):
        live = [s for s, c in zip(socks, closed_at) if c is None]
        r, _, _ = select.select(live, [], [], 0.2)
        for s in r:
            i = socks.index(s)
            try:
                data = s.recv(65536)
            except (ConnectionResetError, BlockingIOError, OSError):
                data = b""
            if data and answers[i] is None:
                answers[i] = data.split(b"\r\n", 1)[0].decode("latin-1")
            if not data:
                closed_at[i] = time.perf_counter() - t0
                s.close()
    stop.set()
    th.join()
    still_open = sum(c is None for c in closed_at)
    for s, c in zip(socks, closed_at):
        if c is None:
            s.close()
    times = sorted(c for c in closed_at if c is not None)
    statuses = {}
    for a in answers:
        statuses[a] = statuses.get(a, 0) + 1
    print(json.dumps({"connections": conns, "opened_in_s": opened, "still_open": still_open,
                      "closed_first_s": times[0] if times else None, "closed_last_s": times[-1] if times else None,
                      "answers": statuses, "normal_ok": normal["ok"], "normal_errors": normal["errors"][:5],
                      "normal_error_count": len(normal["errors"])}))


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "infer":
        cmd_infer(a[1], a[2], a[3], a[4], a[5:])
    elif a[0] == "repo":
        cmd_repo(a[1], a[2])
    elif a[0] == "bad":
        cmd_bad(a[1], a[2], a[3], a[4], int(a[5]))
    elif a[0] == "hostile":
        cmd_hostile(a[1], a[2], a[3], a[4:])
    elif a[0] == "mixed":
        cmd_mixed(a[1], a[2], a[3], a[4], int(a[5]), a[6:])
    elif a[0] == "burst":
        cmd_burst(a[1], a[2], a[3], a[4], int(a[5]), int(a[6]))
    elif a[0] == "slow":
        cmd_slow(a[1], a[2], a[3], int(a[4]), int(a[5]), float(a[6]))
    elif a[0] == "load":
        cmd_load(a[1], a[2], a[3], int(a[4]), int(a[5]), a[6] if len(a) > 6 else None)
