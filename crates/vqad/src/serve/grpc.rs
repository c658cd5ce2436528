//! The Open Inference Protocol over gRPC (tonic): `inference.GRPCInferenceService` with the
//! messages of [`super::proto`]. Routing is written out here instead of generated (no protoc);
//! each method decodes with prost, calls the same [`App`] as REST, and maps [`ApiError`] to a
//! gRPC status. Methods of the full Triton service that vqad lacks answer UNIMPLEMENTED.

use super::budget::Reservation;
use super::conn::{ActiveGuard, ConnHandle, Listener};
use super::infer::{Elements, InputTensor};
use super::proto::*;
use super::{answer_parameters, ApiError, App, ErrorKind, InferCall, ParamValue};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::{Request, Response, Status};

/// The service's full name.
pub const SERVICE: &str = "inference.GRPCInferenceService";

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = match e.kind {
            ErrorKind::BadRequest => tonic::Code::InvalidArgument,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::TooLarge => tonic::Code::ResourceExhausted,
            ErrorKind::Busy => tonic::Code::ResourceExhausted,
            ErrorKind::Timeout => tonic::Code::DeadlineExceeded,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::Internal => tonic::Code::Internal,
        };
        Status::new(code, e.message)
    }
}

type Reply<T> = Result<Response<T>, Status>;

async fn server_live(app: Arc<App>, _: Request<ServerLiveRequest>) -> Reply<ServerLiveResponse> {
    Ok(Response::new(ServerLiveResponse { live: app.live() }))
}

async fn server_ready(app: Arc<App>, _: Request<ServerReadyRequest>) -> Reply<ServerReadyResponse> {
    Ok(Response::new(ServerReadyResponse { ready: app.ready() }))
}

async fn model_ready(app: Arc<App>, r: Request<ModelReadyRequest>) -> Reply<ModelReadyResponse> {
    let r = r.into_inner();
    match app.models.get(&r.name, &r.version) {
        Ok(_) => Ok(Response::new(ModelReadyResponse { ready: true })),
        Err(e) if e.kind == ErrorKind::Unavailable => Ok(Response::new(ModelReadyResponse { ready: false })),
        Err(e) => Err(e.into()),
    }
}

async fn server_metadata(_: Arc<App>, _: Request<ServerMetadataRequest>) -> Reply<ServerMetadataResponse> {
    Ok(Response::new(ServerMetadataResponse {
        name: "vqad".into(),
        version: crate::VERSION.into(),
        extensions: super::EXTENSIONS.iter().map(|s| s.to_string()).collect(),
    }))
}

async fn model_metadata(app: Arc<App>, r: Request<ModelMetadataRequest>) -> Reply<ModelMetadataResponse> {
    let r = r.into_inner();
    let (name, versions, inputs, outputs) = super::http::metadata(&app, &r.name, &r.version)?;
    let t = |v: Vec<super::http::TensorMeta>| {
        v.into_iter().map(|(n, d, s)| TensorMetadata { name: n.into(), datatype: d.into(), shape: s }).collect()
    };
    Ok(Response::new(ModelMetadataResponse { name, versions, platform: "vqad".into(), inputs: t(inputs), outputs: t(outputs) }))
}

/// Turns a gRPC request into an [`InferCall`]: `raw_input_contents` (what tritonclient sends)
/// when present, else each input's typed `contents`.
pub fn parse_infer(r: ModelInferRequest) -> Result<InferCall, ApiError> {
    if !r.raw_input_contents.is_empty() && r.raw_input_contents.len() != r.inputs.len() {
        return Err(ApiError::bad(format!("{} inputs but {} raw_input_contents", r.inputs.len(), r.raw_input_contents.len())));
    }
    let mut raw = r.raw_input_contents.into_iter();
    let mut inputs = vec![];
    for i in r.inputs {
        let data = if let Some(bytes) = raw.next() {
            Elements::Raw(bytes.into())
        } else {
            let c = i.contents.unwrap_or_default();
            match i.datatype.as_str() {
                "BYTES" => Elements::Bytes(c.bytes_contents),
                "FP32" => Elements::F32(c.fp32_contents),
                _ => Elements::Other,
            }
        };
        inputs.push(InputTensor { name: i.name, datatype: i.datatype, shape: i.shape, data });
    }
    Ok(InferCall {
        model: r.model_name,
        version: r.model_version,
        id: r.id,
        inputs,
        outputs: r.outputs.into_iter().map(|o| o.name).collect(),
    })
}

fn param(v: &ParamValue) -> InferParameter {
    InferParameter {
        parameter_choice: Some(match v {
            ParamValue::Bool(b) => ParameterChoice::BoolParam(*b),
            ParamValue::I64(i) => ParameterChoice::Int64Param(*i),
            ParamValue::F64(f) => ParameterChoice::DoubleParam(*f),
            ParamValue::Str(s) => ParameterChoice::StringParam(s.clone()),
        }),
    }
}

async fn model_infer(app: Arc<App>, r: Request<ModelInferRequest>) -> Reply<ModelInferResponse> {
    // The message's bytes were charged as they arrived (`Metered`); an in-process call
    // without one starts an empty reservation.
    let res = r.extensions().get::<Arc<Reservation>>().cloned().unwrap_or_else(|| Arc::new(app.budget.reservation()));
    let r = r.into_inner();
    let name = r.model_name.clone();
    let call = match parse_infer(r) {
        Ok(c) => c,
        Err(e) => {
            let label = if app.models.versions(&name).is_some() { name.as_str() } else { "<unknown>" };
            app.metrics.failures.with_label_values(&[label, "", e.reason()]).inc();
            return Err(e.into());
        }
    };
    let a = app.infer(call, "grpc", res).await?;
    let parameters: HashMap<String, InferParameter> = answer_parameters(&a).iter().map(|(k, v)| (k.clone(), param(v))).collect();
    let outputs = a
        .outputs
        .iter()
        .map(|o| InferOutputTensor {
            name: o.name.into(),
            datatype: o.data.datatype().into(),
            shape: o.shape.clone(),
            parameters: HashMap::new(),
            contents: None,
        })
        .collect();
    let raw_output_contents = a.outputs.iter().map(|o| o.data.raw()).collect();
    Ok(Response::new(ModelInferResponse {
        model_name: a.info.name.clone(),
        model_version: a.info.version.clone(),
        id: a.id.clone(),
        parameters,
        outputs,
        raw_output_contents,
    }))
}

async fn repository_index(app: Arc<App>, r: Request<RepositoryIndexRequest>) -> Reply<RepositoryIndexResponse> {
    let r = r.into_inner();
    let models = app
        .models
        .index(r.ready)
        .into_iter()
        .map(|m| ModelIndex { name: m.name, version: m.version, state: m.state, reason: m.reason })
        .collect();
    Ok(Response::new(RepositoryIndexResponse { models }))
}

async fn repository_load(app: Arc<App>, r: Request<RepositoryModelLoadRequest>) -> Reply<RepositoryModelLoadResponse> {
    let r = r.into_inner();
    if let Some(k) = r.parameters.keys().find(|k| *k == "config" || k.starts_with("file:")) {
        return Err(ApiError::bad(format!("load parameter '{k}' is not supported: vqad loads only signed packages from its registry")).into());
    }
    super::http::load_model(&app, &r.model_name).await?;
    Ok(Response::new(RepositoryModelLoadResponse {}))
}

async fn repository_unload(app: Arc<App>, r: Request<RepositoryModelUnloadRequest>) -> Reply<RepositoryModelUnloadResponse> {
    app.models.unload(&r.into_inner().model_name)?;
    Ok(Response::new(RepositoryModelUnloadResponse {}))
}

/// prost messages with malformed bytes answered INVALID_ARGUMENT (tonic's prost codec says
/// INTERNAL, which would blame the server for a client's bytes).
struct Codec<E, D>(std::marker::PhantomData<(E, D)>);

impl<E, D> Default for Codec<E, D> {
    fn default() -> Self {
        Codec(std::marker::PhantomData)
    }
}

struct Enc<E>(std::marker::PhantomData<E>);
struct Dec<D>(std::marker::PhantomData<D>);

/// A request message whose wire form is checked before prost decodes it (`serve::wire`).
pub trait WireChecked {
    fn check_wire(b: &[u8]) -> Result<(), String> {
        if b.len() > super::wire::MAX_SMALL_MESSAGE {
            return Err(format!("a {}-byte message where at most {} are expected", b.len(), super::wire::MAX_SMALL_MESSAGE));
        }
        Ok(())
    }
}

impl WireChecked for ServerLiveRequest {}
impl WireChecked for ServerReadyRequest {}
impl WireChecked for ModelReadyRequest {}
impl WireChecked for ServerMetadataRequest {}
impl WireChecked for ModelMetadataRequest {}
impl WireChecked for RepositoryIndexRequest {}
impl WireChecked for RepositoryModelLoadRequest {}
impl WireChecked for RepositoryModelUnloadRequest {}
impl WireChecked for ModelInferRequest {
    fn check_wire(b: &[u8]) -> Result<(), String> {
        super::wire::check_infer_request(b)
    }
}

impl<E: prost::Message + Send + 'static, D: prost::Message + Default + WireChecked + Send + 'static> tonic::codec::Codec for Codec<E, D> {
    type Encode = E;
    type Decode = D;
    type Encoder = Enc<E>;
    type Decoder = Dec<D>;
    fn encoder(&mut self) -> Enc<E> {
        Enc(std::marker::PhantomData)
    }
    fn decoder(&mut self) -> Dec<D> {
        Dec(std::marker::PhantomData)
    }
}

impl<E: prost::Message> tonic::codec::Encoder for Enc<E> {
    type Item = E;
    type Error = Status;
    fn encode(&mut self, item: E, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf).map_err(|e| Status::internal(format!("encoding the response: {e}")))
    }
}

impl<D: prost::Message + Default + WireChecked> tonic::codec::Decoder for Dec<D> {
    type Item = D;
    type Error = Status;
    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<D>, Status> {
        use bytes::Buf;
        let malformed = |e: String| Status::invalid_argument(format!("malformed protobuf message: {e}"));
        // The message is one contiguous buffer in tonic; check it in place.
        if buf.chunk().len() == buf.remaining() {
            D::check_wire(buf.chunk()).map_err(malformed)?;
        } else {
            D::check_wire(&buf.copy_to_bytes(buf.remaining())).map_err(malformed)?;
            return Err(malformed("not contiguous".into()));
        }
        D::decode(buf).map(Some).map_err(|e| malformed(e.to_string()))
    }
}

/// Adapts an async fn to tonic's unary service trait.
struct Unary<F>(F);

impl<Req, Resp, F, Fut> tonic::server::UnaryService<Req> for Unary<F>
where
    F: FnMut(Request<Req>) -> Fut,
    Fut: Future<Output = Reply<Resp>> + Send + 'static,
{
    type Response = Resp;
    type Future = Fut;
    fn call(&mut self, request: Request<Req>) -> Fut {
        (self.0)(request)
    }
}

/// The gRPC service: a tower service routing by method path.
#[derive(Clone)]
pub struct InferenceService {
    app: Arc<App>,
}

impl tonic::server::NamedService for InferenceService {
    const NAME: &'static str = SERVICE;
}

type BoxFut = Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl<B> tower_service::Service<http::Request<B>> for InferenceService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> BoxFut {
        let app = self.app.clone();
        let limit = app.max_body_bytes;
        // In progress on its connection until the response has been sent; the message's
        // bytes charged to the budget as they arrive, within the body timeout.
        let guard = req.extensions().get::<ConnHandle>().map(|c| c.0.begin());
        let res = Arc::new(app.budget.reservation());
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(res.clone());
        let deadline = tokio::time::Instant::now() + app.body_timeout;
        let req = http::Request::from_parts(parts, Metered { inner: Box::pin(body), res, seen: 0, prefix: Vec::with_capacity(5), base_charged: false, deadline: Box::pin(tokio::time::sleep_until(deadline)), timeout: app.body_timeout, done: false });
        let track = move |r: http::Response<tonic::body::Body>| match guard {
            Some(g) => r.map(|b| tonic::body::Body::new(Tracked { inner: b, _guard: g })),
            None => r,
        };
        macro_rules! unary {
            ($handler:ident) => {
                Box::pin(async move {
                    let codec = Codec::default();
                    let mut grpc = tonic::server::Grpc::new(codec).max_decoding_message_size(limit).max_encoding_message_size(usize::MAX);
                    let svc = Unary(move |r| $handler(app.clone(), r));
                    Ok(track(resource_exhausted(grpc.unary(svc, req).await)))
                })
            };
        }
        match req.uri().path().strip_prefix("/inference.GRPCInferenceService/") {
            Some("ServerLive") => unary!(server_live),
            Some("ServerReady") => unary!(server_ready),
            Some("ModelReady") => unary!(model_ready),
            Some("ServerMetadata") => unary!(server_metadata),
            Some("ModelMetadata") => unary!(model_metadata),
            Some("ModelInfer") => unary!(model_infer),
            Some("RepositoryIndex") => unary!(repository_index),
            Some("RepositoryModelLoad") => unary!(repository_load),
            Some("RepositoryModelUnload") => unary!(repository_unload),
            _ => Box::pin(async move {
                let path = req.uri().path().to_string();
                Ok(track(Status::unimplemented(format!("{path} is not implemented by vqad")).into_http()))
            }),
        }
    }
}

/// A request body whose bytes are charged to the request's reservation as they arrive, and
/// which fails once the body timeout has passed without the message complete.
struct Metered<B> {
    inner: Pin<Box<B>>,
    res: Arc<Reservation>,
    /// Bytes received, the gRPC frame's 5-byte prefix (flag, message length), and whether
    /// the request's base charge was made (once the whole message is here, before tonic
    /// decodes it).
    seen: u64,
    prefix: Vec<u8>,
    base_charged: bool,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: std::time::Duration,
    done: bool,
}

impl<B> http_body::Body for Metered<B>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<B::Data>, Self::Error>>> {
        use bytes::Buf;
        let this = &mut *self;
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    // The message's bytes (and the gRPC frame's 5), charged as binary data.
                    let n = d.remaining();
                    let chunk = d.chunk();
                    let take = (5 - this.prefix.len()).min(chunk.len());
                    this.prefix.extend_from_slice(&chunk[..take]);
                    this.seen += n as u64;
                    let mut charge = n as u64 * super::infer::BINARY_FACTOR;
                    if !this.base_charged && this.prefix.len() == 5 {
                        let len = u32::from_be_bytes(this.prefix[1..5].try_into().expect("4 bytes")) as u64;
                        if this.seen >= 5 + len {
                            this.base_charged = true;
                            charge += super::infer::REQUEST_BASE_BYTES;
                        }
                    }
                    if let Err(e) = this.res.grow(charge) {
                        return Poll::Ready(Some(Err(Box::new(Status::from(e)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => {
                if !this.done && this.deadline.as_mut().poll(cx).is_ready() {
                    let secs = this.timeout.as_secs_f64();
                    return Poll::Ready(Some(Err(Box::new(Status::deadline_exceeded(format!(
                        "the request message did not arrive within {secs} s (--body-timeout-secs)"
                    ))))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// A response body that keeps its call marked in progress on its connection until sent.
struct Tracked {
    inner: tonic::body::Body,
    _guard: ActiveGuard,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = Status;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// tonic reports a message over the size limit as OUT_OF_RANGE; gRPC's own servers and
/// clients say RESOURCE_EXHAUSTED for it, which is what clients retry or alert on.
fn resource_exhausted(mut r: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    let h = r.headers_mut();
    let out_of_range = h.get("grpc-status").is_some_and(|v| v.as_bytes() == b"11");
    // grpc-message is percent-encoded.
    let too_large = h.get("grpc-message").is_some_and(|v| v.to_str().unwrap_or("").replace("%20", " ").contains("too large"));
    if out_of_range && too_large {
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    r
}

/// Most concurrent calls on one HTTP/2 connection.
pub const MAX_STREAMS: u32 = 128;
/// Largest header block of a call (gRPC metadata is a few hundred bytes; h2's default is
/// 16 MiB).
pub const MAX_HEADER_LIST: u32 = 64 << 10;

/// Serves gRPC on `listener` until `stop` resolves, then lets open calls finish. Connections
/// come from the port's [`Listener`] (cap, idle and write timeouts); HTTP/2 PINGs every
/// `keepalive.0` find peers that went away, unanswered after `keepalive.1` they are dropped.
pub async fn run(listener: Listener, app: Arc<App>, keepalive: (std::time::Duration, std::time::Duration), stop: impl Future<Output = ()> + Send + 'static) -> Result<(), super::ServeError> {
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        let io = l.accept().await;
        Some((Ok::<_, std::io::Error>(io), l))
    });
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(keepalive.0))
        .http2_keepalive_timeout(Some(keepalive.1))
        .max_concurrent_streams(MAX_STREAMS)
        .http2_max_header_list_size(MAX_HEADER_LIST)
        .add_service(InferenceService { app })
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .map_err(|e| super::ServeError::Server(format!("gRPC server: {e}")))
}
