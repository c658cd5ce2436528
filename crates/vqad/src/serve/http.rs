//! The Open Inference Protocol over HTTP/REST (axum): health, server and model metadata,
//! inference with the binary tensor data extension, the model repository extension and
//! Prometheus `/metrics`.
//!
//! Binary tensor data: when the request has an `Inference-Header-Content-Length: N` header,
//! its first N bytes are the JSON header and the rest holds the inputs whose parameters give a
//! `binary_data_size`, in order (BYTES elements as a 4-byte little-endian length and bytes).
//! Outputs asked for with `"binary_data": true` (or all, with the request parameter
//! `binary_data_output`) come back the same way. This is what `tritonclient.http` sends.

use super::budget::Reservation;
use super::conn::{ActiveGuard, Listener};
use super::infer::{self, Elements, InputTensor, OutData};
use super::rest_json;
use super::{answer_parameters, ApiError, App, ErrorKind, InferCall, ParamValue};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The binary extension's header.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Busy => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        json_response(status, &json!({ "error": self.message }))
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, serde_json::to_vec(v).unwrap_or_default()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The REST routes over `app`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata_v))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_v))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{name}/load", post(load))
        .route("/v2/repository/models/{name}/unload", post(unload))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(app)
}

/// Largest read buffer per connection (hyper's default is ~400 KiB): it bounds the request
/// headers, and what a thousand slow connections can pin.
pub const MAX_READ_BUFFER: usize = 64 << 10;

/// Serves `router(app)` on `listener` until `stop` resolves, then lets open requests finish.
/// Each connection is served by hyper's HTTP/1 with the port's timeouts (`serve::conn`); a
/// request counts as in progress on its connection until its response body has been sent.
pub async fn run(listener: Listener, app: Arc<App>, stop: impl std::future::Future<Output = ()> + Send + 'static) -> Result<(), super::ServeError> {
    use hyper_util::rt::TokioIo;
    use tower_service::Service;
    let router = router(app);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let io = tokio::select! {
            _ = &mut stop => break,
            io = listener.accept() => io,
        };
        let state = io.state();
        let router = router.clone();
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let guard = state.begin();
                let mut router = router.clone();
                async move {
                    let resp = router.call(req).await.unwrap_or_else(|e| match e {});
                    Ok::<_, std::convert::Infallible>(resp.map(|b| Body::new(Tracked { inner: b, _guard: guard })))
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.max_buf_size(MAX_READ_BUFFER);
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended");
                    }
                }
                _ = async { let _ = stop_rx.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    // Stop accepting, let every connection finish its request, then return.
    let drained = listener.drained();
    drop(listener);
    let _ = stop_tx.send(true);
    drained.await;
    Ok(())
}

/// A response body that keeps its request marked in progress until it has been sent.
struct Tracked {
    inner: Body,
    _guard: ActiveGuard,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;
    fn poll_frame(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn status_only(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn live(State(app): State<Arc<App>>) -> StatusCode {
    status_only(app.live())
}

async fn ready(State(app): State<Arc<App>>) -> StatusCode {
    status_only(app.ready())
}

async fn server_metadata() -> Response {
    json_response(StatusCode::OK, &json!({ "name": "vqad", "version": crate::VERSION, "extensions": super::EXTENSIONS }))
}

/// Model metadata, shared with gRPC: (name, versions, platform, inputs, outputs) where each
/// tensor is (name, datatype, shape).
pub type TensorMeta = (&'static str, &'static str, Vec<i64>);

/// A model's metadata: (name, versions, inputs, outputs).
pub type ModelMeta = (String, Vec<String>, Vec<TensorMeta>, Vec<TensorMeta>);

/// The metadata of the version a request names (empty: the serving one).
pub fn metadata(app: &App, name: &str, version: &str) -> Result<ModelMeta, ApiError> {
    let h = app.models.get(name, version)?;
    let i = &h.info;
    let (c, s) = (i.channels as i64, i.image_size as i64);
    let inputs = vec![("image", "BYTES", vec![-1])];
    let outputs = vec![
        ("score", "FP32", vec![-1]),
        ("anomalous", "BOOL", vec![-1]),
        ("mask", "UINT8", vec![-1, s, s]),
        ("map", "FP32", vec![-1, s, s]),
        ("restored", "FP32", vec![-1, c, s, s]),
    ];
    let versions = if version.is_empty() { app.models.versions(name).unwrap_or_default() } else { vec![version.to_string()] };
    Ok((i.name.clone(), versions, inputs, outputs))
}

fn metadata_json(app: &App, name: &str, version: &str) -> Result<Response, ApiError> {
    let (name, versions, inputs, outputs) = metadata(app, name, version)?;
    let t = |v: Vec<TensorMeta>| v.into_iter().map(|(n, d, s)| json!({"name": n, "datatype": d, "shape": s})).collect::<Vec<_>>();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "name": name, "versions": versions, "platform": "vqad", "inputs": t(inputs), "outputs": t(outputs) }),
    ))
}

async fn model_metadata(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    metadata_json(&app, &name, "")
}

async fn model_metadata_v(State(app): State<Arc<App>>, Path((name, version)): Path<(String, String)>) -> Result<Response, ApiError> {
    metadata_json(&app, &name, &version)
}

async fn model_ready(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    ready_of(&app, &name, "")
}

async fn model_ready_v(State(app): State<Arc<App>>, Path((name, version)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    ready_of(&app, &name, &version)
}

fn ready_of(app: &App, name: &str, version: &str) -> Result<StatusCode, ApiError> {
    match app.models.get(name, version) {
        Ok(_) => Ok(StatusCode::OK),
        Err(e) if e.kind == ErrorKind::Unavailable => Ok(StatusCode::SERVICE_UNAVAILABLE),
        Err(e) => Err(e),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut r = app.metrics.render().into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}

/// Reads a body within the limits, holding its bytes in a new reservation of the budget:
///
/// - more than `--max-body-mb`: 413 (from `Content-Length` before a byte is read);
/// - over the in-flight budget (counted as bytes arrive): 429, or 413 when the body alone
///   exceeds the whole budget;
/// - not complete within `--body-timeout-secs` of the headers: 408, and the connection
///   closes (a slow client holds nothing longer than that).
///
/// A refused body is read on and dropped (up to [`DRAIN_FACTOR`] times the limit, never kept,
/// still within the timeout) so the client, still sending, gets the answer rather than a
/// broken connection.
async fn read_body(app: &App, headers: &HeaderMap, body: Body, limit: u64) -> Result<(Bytes, Arc<Reservation>), ApiError> {
    use http_body_util::BodyExt;
    let res = Arc::new(app.budget.reservation());
    let flag = if limit == MAX_SMALL_BODY { "for this endpoint" } else { "(--max-body-mb)" };
    let too_large = || ApiError::too_large(format!("request body is larger than the server's limit of {limit} bytes {flag}"));
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let json_len = headers.get(HEADER_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    // Charged as bytes arrive, not by what Content-Length claims: a client that declares
    // 64 MiB and sends one byte holds one byte's worth.
    let mut refusal = declared.filter(|&n| n > limit).map(|_| too_large());
    let deadline = tokio::time::Instant::now() + app.body_timeout;
    let mut body = body;
    let mut buf = Vec::new();
    let mut seen: u64 = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                let secs = app.body_timeout.as_secs_f64();
                return Err(refusal.unwrap_or_else(|| ApiError::timeout(format!("the request body did not arrive within {secs} s (--body-timeout-secs); received {seen} bytes"))));
            }
            Ok(None) => break,
            Ok(Some(f)) => f.map_err(|e| ApiError::bad(format!("reading the request body: {e}")))?,
        };
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen > limit.saturating_mul(DRAIN_FACTOR) {
                break;
            }
            if refusal.is_none() && seen > limit {
                refusal = Some(too_large());
            }
            if refusal.is_none() {
                let more = infer::body_charge(seen, json_len) - infer::body_charge(seen - data.len() as u64, json_len);
                refusal = res.grow(more).err();
            }
            if refusal.is_none() {
                buf.extend_from_slice(&data);
            } else {
                buf = Vec::new();
            }
        }
    }
    // The whole body is here: what parsing it needs beyond its bytes.
    if refusal.is_none() {
        refusal = res.grow(infer::REQUEST_BASE_BYTES).err();
    }
    match refusal {
        Some(e) => Err(e),
        None => Ok((Bytes::from(buf), res)),
    }
}

/// Largest body of the repository endpoints (a few parameters at most).
pub const MAX_SMALL_BODY: u64 = 64 << 10;

/// How far past the limit an oversized body is still read (and dropped) before the
/// connection is cut.
pub const DRAIN_FACTOR: u64 = 4;

async fn repository_index(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let (bytes, _res) = read_body(&app, &headers, body, MAX_SMALL_BODY).await?;
    let ready_only = if bytes.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))?;
        v.get("ready").and_then(Value::as_bool).unwrap_or(false)
    };
    Ok(json_response(StatusCode::OK, &serde_json::to_value(app.models.index(ready_only)).unwrap_or_default()))
}

/// Refuses load parameters that would bypass the signed registry (Triton's config/file overrides).
fn check_load_body(bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))?;
    if let Some(p) = v.get("parameters").and_then(Value::as_object) {
        if let Some(k) = p.keys().find(|k| *k == "config" || k.starts_with("file:")) {
            return Err(ApiError::bad(format!("load parameter '{k}' is not supported: vqad loads only signed packages from its registry")));
        }
    }
    Ok(())
}

async fn load(State(app): State<Arc<App>>, Path(name): Path<String>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    check_load_body(&read_body(&app, &headers, body, MAX_SMALL_BODY).await?.0)?;
    load_model(&app, &name).await?;
    Ok(StatusCode::OK.into_response())
}

/// Loads (or reloads) a model: re-reads the registry, retries versions that failed before, and
/// succeeds once some version of it serves.
pub async fn load_model(app: &App, name: &str) -> Result<(), ApiError> {
    app.models.reconcile(Some(name), true).await?;
    app.models.get(name, "").map(|_| ()).map_err(|e| ApiError::bad(format!("failed to load '{name}': {}", e.message)))
}

async fn unload(State(app): State<Arc<App>>, Path(name): Path<String>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    read_body(&app, &headers, body, MAX_SMALL_BODY).await?;
    app.models.unload(&name)?;
    Ok(StatusCode::OK.into_response())
}

async fn infer(State(app): State<Arc<App>>, Path(name): Path<String>, headers: HeaderMap, body: Body) -> Response {
    infer_any(app, name, String::new(), headers, body).await
}

async fn infer_v(State(app): State<Arc<App>>, Path((name, version)): Path<(String, String)>, headers: HeaderMap, body: Body) -> Response {
    infer_any(app, name, version, headers, body).await
}

async fn infer_any(app: Arc<App>, name: String, version: String, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let (bytes, res) = read_body(&app, &headers, body, app.max_body_bytes as u64).await?;
        let (call, binary) = parse_infer(bytes, &headers, name.clone(), version.clone())?;
        let answer = app.infer(call, "http", res).await?;
        Ok::<_, ApiError>(encode_answer(&answer, &binary))
    }
    .await;
    match result {
        Ok(r) => r,
        Err(e) => {
            // Failures before the model was found are counted by App::infer; body and parse
            // failures here.
            if matches!(e.kind, ErrorKind::BadRequest | ErrorKind::TooLarge | ErrorKind::Busy | ErrorKind::Timeout) {
                let label = if app.models.versions(&name).is_some() { name.as_str() } else { "<unknown>" };
                app.metrics.failures.with_label_values(&[label, &version, e.reason()]).inc();
            }
            e.into_response()
        }
    }
}

/// Which outputs go back in binary form.
pub struct BinaryChoice {
    all: bool,
    named: Vec<(String, bool)>,
}

impl BinaryChoice {
    fn binary(&self, name: &str) -> bool {
        self.named.iter().find(|(n, _)| n == name).map(|(_, b)| *b).unwrap_or(self.all)
    }
}

/// Parses a REST inference request (JSON, or JSON header + binary tensors). Binary tensor
/// data are slices of `body`, not copies.
pub fn parse_infer(body: Bytes, headers: &HeaderMap, model: String, version: String) -> Result<(InferCall, BinaryChoice), ApiError> {
    let header_len = match headers.get(HEADER_LENGTH) {
        Some(v) => {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ApiError::bad("Inference-Header-Content-Length is not a number"))?;
            if n > body.len() {
                return Err(ApiError::bad(format!("Inference-Header-Content-Length {n} exceeds the body's {} bytes", body.len())));
            }
            n
        }
        None => body.len(),
    };
    let req: rest_json::Request = serde_json::from_slice(&body[..header_len]).map_err(|e| ApiError::bad(format!("malformed request JSON: {e}")))?;
    let mut binary = body.slice(header_len..);
    drop(body);
    let all = req.parameters.binary_data_output.unwrap_or(false);
    let mut inputs = vec![];
    for i in req.inputs.0 {
        let name = i.name;
        let data = if let Some(n) = i.parameters.binary_data_size {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n > binary.len() {
                return Err(ApiError::bad(format!("input '{name}': binary_data_size {n} but only {} binary bytes remain", binary.len())));
            }
            let chunk = binary.split_to(n);
            Elements::Raw(chunk)
        } else {
            let d = i.data.ok_or_else(|| ApiError::bad(format!("input '{name}': no 'data' and no binary_data_size")))?;
            match i.datatype.as_str() {
                "BYTES" if d.numbers.is_empty() && d.others == 0 => Elements::Bytes(d.strings),
                "BYTES" => return Err(ApiError::bad(format!("input '{name}': BYTES data must be strings"))),
                "FP32" if d.strings.is_empty() && d.others == 0 => Elements::F32(d.numbers),
                "FP32" => return Err(ApiError::bad(format!("input '{name}': FP32 data must be numbers"))),
                _ => Elements::Other,
            }
        };
        inputs.push(InputTensor { name, datatype: i.datatype, shape: i.shape.0, data });
    }
    if !binary.is_empty() {
        return Err(ApiError::bad(format!("{} binary bytes after the last input's binary_data_size", binary.len())));
    }
    let mut outputs = vec![];
    let mut named = vec![];
    for out in req.outputs.map(|o| o.0).unwrap_or_default() {
        let b = out.parameters.binary_data.unwrap_or(all);
        outputs.push(out.name.clone());
        named.push((out.name, b));
    }
    Ok((InferCall { model, version, id: req.id.unwrap_or_default(), inputs, outputs }, BinaryChoice { all, named }))
}

fn param_json(v: &ParamValue) -> Value {
    match v {
        ParamValue::Bool(b) => json!(b),
        ParamValue::I64(i) => json!(i),
        ParamValue::F64(f) => json!(f),
        ParamValue::Str(s) => json!(s),
    }
}

/// Encodes an answer as JSON, or JSON header + binary outputs.
pub fn encode_answer(a: &super::InferAnswer, binary: &BinaryChoice) -> Response {
    let mut blobs: Vec<u8> = vec![];
    let mut outs = vec![];
    for o in &a.outputs {
        let mut t = Map::new();
        t.insert("name".into(), json!(o.name));
        t.insert("datatype".into(), json!(o.data.datatype()));
        t.insert("shape".into(), json!(o.shape));
        if binary.binary(o.name) {
            let raw = o.data.raw();
            t.insert("parameters".into(), json!({ "binary_data_size": raw.len() }));
            blobs.extend_from_slice(&raw);
        } else {
            let data = match &o.data {
                OutData::F32(v) => json!(v),
                OutData::Bool(v) => json!(v),
                OutData::U8(v) => json!(v),
            };
            t.insert("data".into(), data);
        }
        outs.push(Value::Object(t));
    }
    let params: Map<String, Value> = answer_parameters(a).iter().map(|(k, v)| (k.clone(), param_json(v))).collect();
    let mut head = json!({
        "model_name": a.info.name,
        "model_version": a.info.version,
        "parameters": params,
        "outputs": outs,
    });
    if !a.id.is_empty() {
        head["id"] = json!(a.id);
    }
    let head = serde_json::to_vec(&head).unwrap_or_default();
    if blobs.is_empty() && !a.outputs.iter().any(|o| binary.binary(o.name)) {
        let mut r = (StatusCode::OK, head).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return r;
    }
    let n = head.len();
    let mut body = head;
    body.extend_from_slice(&blobs);
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    r.headers_mut().insert(HEADER_LENGTH, HeaderValue::from(n));
    r
}
