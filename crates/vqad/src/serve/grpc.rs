//! The Open Inference Protocol over gRPC (tonic): `inference.GRPCInferenceService` with the
//! messages of [`super::proto`]. Routing is written out here instead of generated (no protoc);
//! each method decodes with prost, calls the same [`App`] as REST, and maps [`ApiError`] to a
//! gRPC status. Methods of the full Triton service that vqad lacks answer UNIMPLEMENTED.

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
            Elements::Raw(bytes)
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
    let a = app.infer(call, "grpc").await?;
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

impl<E: prost::Message + Send + 'static, D: prost::Message + Default + Send + 'static> tonic::codec::Codec for Codec<E, D> {
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

impl<D: prost::Message + Default> tonic::codec::Decoder for Dec<D> {
    type Item = D;
    type Error = Status;
    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(buf).map(Some).map_err(|e| Status::invalid_argument(format!("malformed protobuf message: {e}")))
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
        macro_rules! unary {
            ($handler:ident) => {
                Box::pin(async move {
                    let codec = Codec::default();
                    let mut grpc = tonic::server::Grpc::new(codec).max_decoding_message_size(limit).max_encoding_message_size(usize::MAX);
                    let svc = Unary(move |r| $handler(app.clone(), r));
                    Ok(resource_exhausted(grpc.unary(svc, req).await))
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
                Ok(Status::unimplemented(format!("{path} is not implemented by vqad")).into_http())
            }),
        }
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

/// Serves gRPC on `listener` until `stop` resolves, then lets open calls finish.
pub async fn run(listener: tokio::net::TcpListener, app: Arc<App>, stop: impl Future<Output = ()> + Send + 'static) -> Result<(), super::ServeError> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tonic::transport::Server::builder()
        .add_service(InferenceService { app })
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .map_err(|e| super::ServeError::Server(format!("gRPC server: {e}")))
}
