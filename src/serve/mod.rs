//! `infer serve`: a fine-tuned run behind HTTP (docs/serve.md). axum on tokio parses requests
//! and decodes images on its own threads; the model runs on one thread of its own
//! (`worker`), fed by a queue whose length is bounded where requests enter. Server-sent events
//! follow the WHATWG HTML standard (§9.2); `/v1/chat/completions` follows OpenAI's API so that
//! its clients work unchanged.

pub mod api;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use image::RgbImage;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::data::instruct::{LEVELS, prompts};
use crate::data::transform::Transform;
use crate::experiment::finetune::{FinetunedRun, load_finetuned_with};
use crate::io::llama::GgufWeights;
use crate::model::chat::Role;
use crate::model::generate::GenerationConfig;
use crate::runners::tasks::Conversation;
use crate::runners::tasks::Runner;
use api::{ApiError, BodyKind, Task, TaskRequest, Upload};
use worker::{Finish, GenerationEvent, Job, JobError, Reply, Work};

/// Bodies of the largest size that may be read at once, all requests together: the memory
/// bodies take is bounded by this times `max_body_bytes`, however many connections trickle.
const BODIES_AT_ONCE: usize = 8;

/// How long a body may send nothing before it is refused.
const BODY_IDLE: Duration = Duration::from_secs(30);

/// The page at `/`: plain HTML, CSS and JS, no request outside the server.
const PAGE: &str = include_str!("page.html");

/// How a server listens and what it accepts. Every limit is where data enters.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Loopback unless asked: the server has no authentication.
    pub addr: SocketAddr,
    /// Requests waiting for the model; one more is answered 503.
    pub queue: usize,
    /// A request's whole life, its time in the queue included.
    pub timeout: Duration,
    pub max_body_bytes: usize,
    /// The size an image may declare, checked before it is decoded.
    pub max_pixels: u64,
    /// Images, rated examples included, in one request.
    pub max_images: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            queue: 64,
            timeout: Duration::from_secs(300),
            max_body_bytes: 32 << 20,
            max_pixels: 50_000_000,
            max_images: 16,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("loading the model: {0}")]
    Load(String),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("serving: {0}")]
    Serve(std::io::Error),
    #[error("the model's thread panicked")]
    Worker,
    #[error("{0}")]
    Invalid(String),
}

/// What every handler shares.
struct App {
    config: ServeConfig,
    /// The run's name, as `/v1/models` lists it.
    model: String,
    created: u64,
    jobs: std::sync::mpsc::Sender<Job>,
    waiting: Arc<AtomicUsize>,
    /// Requests between their body's end and their answer's last byte.
    admitted: AtomicUsize,
    /// Bytes that bodies being read may still take, all requests together.
    body_budget: AtomicUsize,
    batch_size: usize,
    served: AtomicU64,
    failed: AtomicU64,
    completions: AtomicU64,
    transform: Transform,
    /// The run's `infer.generation`: comments, suggestions, and chat defaults.
    generation: GenerationConfig,
    /// Requests decoding images at once: decoding is CPU work taken from the model's cores,
    /// and a 50-megapixel image is 150 MB decoded.
    decoding: Arc<tokio::sync::Semaphore>,
}

/// Loads `run` and serves it until SIGINT or SIGTERM, then finishes the requests in flight.
/// `listening` is told the bound address (port 0 picks a free one) before the first request.
pub fn serve(
    run: FinetunedRun,
    device: burn::tensor::Device,
    weights: GgufWeights,
    config: ServeConfig,
    listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    if config.queue == 0 || config.max_images == 0 || config.max_body_bytes == 0 {
        return Err(ServeError::Invalid(
            "the queue, the images per request and the body size must each allow at least one"
                .into(),
        ));
    }
    let transform = run
        .config
        .data
        .transform(&run.config.model.vision)
        .centred();
    let infer = run.config.infer.clone();
    let generation = infer.generation.clone();
    let batch_size = infer.batch_size.max(1);
    let model = run
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "calm".into());
    let waiting = Arc::new(AtomicUsize::new(0));
    let (jobs, queue) = std::sync::mpsc::channel::<Job>();
    let (ready, loaded) = std::sync::mpsc::channel::<Result<(), String>>();
    let worker = {
        let (transform, waiting) = (transform.clone(), waiting.clone());
        std::thread::Builder::new()
            .name("calm-model".into())
            .spawn(move || {
                let loaded = match load_finetuned_with(&run, &device, weights) {
                    Ok(l) => l,
                    Err(e) => return drop(ready.send(Err(e.to_string()))),
                };
                let runner = Runner {
                    loaded: &loaded,
                    transform: &transform,
                    config: &infer,
                };
                drop(ready.send(Ok(())));
                worker::run(&runner, &queue, &waiting);
            })
            .map_err(ServeError::Runtime)?
    };
    loaded
        .recv()
        .map_err(|_| ServeError::Worker)?
        .map_err(ServeError::Load)?;
    let app = Arc::new(App {
        decoding: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
        )),
        body_budget: AtomicUsize::new(config.max_body_bytes.saturating_mul(BODIES_AT_ONCE)),
        config,
        model,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        jobs,
        waiting,
        admitted: AtomicUsize::new(0),
        batch_size,
        served: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        completions: AtomicU64::new(0),
        transform,
        generation,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("calm-http")
        .build()
        .map_err(ServeError::Runtime)?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(app.config.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: app.config.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(ServeError::Serve)?;
        listening(addr);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let server =
            axum::serve(listener, router(app.clone())).with_graceful_shutdown(async move {
                shutdown_signal().await;
                stop.send_replace(true);
            });
        // A connection that never finishes its request (headers trickled, a body never sent)
        // would hold the stop forever: it gets the requests' own time limit, then is cut.
        let grace = app.config.timeout + Duration::from_secs(1);
        tokio::select! {
            served = server => served.map_err(ServeError::Serve),
            () = async move {
                drop(stopped.wait_for(|&s| s).await);
                tokio::time::sleep(grace).await;
            } => {
                crate::errln!(
                    "serve: connections still open {:.0} s after the stop; closing them",
                    grace.as_secs_f64()
                );
                Ok(())
            }
        }
    });
    // The last sender goes with the app and the connections' tasks: the model's thread ends
    // once its queue is empty.
    drop(app);
    runtime.shutdown_timeout(Duration::from_secs(1));
    worker.join().map_err(|_| ServeError::Worker)?;
    served
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        // Without a handler there is nothing to wait for; SIGTERM may still come.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => drop(s.recv().await),
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    crate::errln!("serve: stopping: finishing the requests in flight");
}

type AppState = State<Arc<App>>;

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/score", post(|s: AppState, r| task(Task::Score, s, r)))
        .route(
            "/v1/comment",
            post(|s: AppState, r| task(Task::Comment, s, r)),
        )
        .route(
            "/v1/suggest",
            post(|s: AppState, r| task(Task::Suggest, s, r)),
        )
        .route(
            "/v1/personalize",
            post(|s: AppState, r| task(Task::Personalize, s, r)),
        )
        .route("/v1/chat/completions", post(chat))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(app.clone(), log))
        .with_state(app)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body())
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Counts and logs each request when its answer has left (a stream's after its last byte).
async fn log(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let line = format!("{} {}", request.method(), request.uri().path());
    let start = Instant::now();
    let response = next.run(request).await;
    let entry = LogEntry {
        app,
        line,
        start,
        status: response.status(),
        streamed: response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream")),
    };
    if !entry.streamed {
        return response;
    }
    response.map(|body| {
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _logged_when_dropped = &entry;
            chunk
        }))
    })
}

/// A request's log line, written when it is dropped.
struct LogEntry {
    app: Arc<App>,
    line: String,
    start: Instant,
    status: StatusCode,
    streamed: bool,
}

impl Drop for LogEntry {
    fn drop(&mut self) {
        let app = &self.app;
        let (served, failed) = if self.status.is_client_error() || self.status.is_server_error() {
            (
                app.served.load(Ordering::SeqCst),
                app.failed.fetch_add(1, Ordering::SeqCst) + 1,
            )
        } else {
            (
                app.served.fetch_add(1, Ordering::SeqCst) + 1,
                app.failed.load(Ordering::SeqCst),
            )
        };
        crate::errln!(
            "serve: {} {} in {:.3} s{} (served {served}, failed {failed}, waiting {})",
            self.line,
            self.status.as_u16(),
            self.start.elapsed().as_secs_f64(),
            if self.streamed { ", streamed" } else { "" },
            app.waiting.load(Ordering::SeqCst)
        );
    }
}

async fn page() -> Response {
    let mut response = PAGE.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The page may only talk to this server.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'",
        ),
    );
    response
}

async fn health(State(app): State<Arc<App>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "model": app.model,
            "queue": {"waiting": app.waiting.load(Ordering::SeqCst), "capacity": app.config.queue},
            "requests": {
                "served": app.served.load(Ordering::SeqCst),
                "failed": app.failed.load(Ordering::SeqCst),
            },
        }),
    )
}

async fn models(State(app): State<Arc<App>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [
            {"id": app.model, "object": "model", "created": app.created, "owned_by": "calm"}
        ]}),
    )
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such path: {}", request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

fn timeout_error(app: &App) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        format!(
            "the request took longer than the server's {} s",
            app.config.timeout.as_secs_f64()
        ),
    )
}

impl JobError {
    fn api(&self, app: &App) -> ApiError {
        match self {
            Self::Request(m) => ApiError::bad_request(m.clone()),
            Self::Model(m) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "model_error", m.clone())
            }
            Self::Timeout => timeout_error(app),
        }
    }
}

/// What a request is told when the model's thread dropped its job unanswered.
const MODEL_GONE: &str = "the model stopped before answering";

fn model_gone() -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "model_error", MODEL_GONE)
}

/// Bytes of the shared body budget that one request holds until dropped.
struct BodyLease {
    app: Arc<App>,
    bytes: usize,
}

impl Drop for BodyLease {
    fn drop(&mut self) {
        self.app.body_budget.fetch_add(self.bytes, Ordering::SeqCst);
    }
}

/// Reads a body of at most `max_body_bytes` from the shared budget, refusing a declared
/// length over it unread and a body that stalls for `BODY_IDLE`.
async fn read_body(
    app: &Arc<App>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, BodyLease), ApiError> {
    let limit = app.config.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds the server's {limit}-byte limit"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut lease = BodyLease {
        app: app.clone(),
        bytes: 0,
    };
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(BODY_IDLE, stream.next()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_stalled",
                    format!("the body sent nothing for {} s", BODY_IDLE.as_secs_f64()),
                ));
            }
            Ok(None) => break,
            Ok(Some(chunk)) => {
                chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?
            }
        };
        if bytes.len() + chunk.len() > limit {
            // Closing with unread data resets the connection, and the client may lose the
            // answer with it: up to another limit's worth is read and dropped first.
            let mut discarded = bytes.len() + chunk.len();
            drop(bytes);
            while discarded <= 2 * limit {
                match tokio::time::timeout(BODY_IDLE, stream.next()).await {
                    Ok(Some(Ok(more))) => discarded += more.len(),
                    _ => break,
                }
            }
            return Err(too_large());
        }
        let n = chunk.len();
        app.body_budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(n)
            })
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "queue_full",
                    "the server is reading as many bodies as it holds at once; try again shortly",
                )
            })?;
        lease.bytes += n;
        bytes.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(bytes), lease))
}

/// Decodes and crops uploads off the async threads, a few requests at a time; the permit goes
/// with the work, so a client that leaves does not free it before the decoding ends.
async fn decode(app: &Arc<App>, uploads: Vec<Upload>) -> Result<Vec<Arc<RgbImage>>, ApiError> {
    let permit = app
        .decoding
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::bad_request("the server is stopping"))?;
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        uploads
            .iter()
            .enumerate()
            .map(|(i, u)| api::decode_image(u, i, app.config.max_pixels, &app.transform))
            .collect()
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "model_error",
            format!("decoding: {e}"),
        )
    })?
}

/// Queues a job, or answers 503 when `queue` jobs already wait.
fn enqueue(app: &App, work: Work, deadline: Instant) -> Result<(), ApiError> {
    let capacity = app.config.queue;
    app.waiting
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
            (w < capacity).then_some(w + 1)
        })
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                format!("{capacity} requests are already waiting; try again shortly"),
            )
        })?;
    app.jobs.send(Job { work, deadline }).map_err(|_| {
        app.waiting.fetch_sub(1, Ordering::SeqCst);
        model_gone()
    })
}

async fn task(task: Task, State(app): AppState, request: Request) -> Response {
    let deadline = Instant::now() + app.config.timeout;
    within(&app, deadline, run_task(task, &app, request, deadline)).await
}

/// `work`'s answer, or a 504 past `deadline`.
async fn within(
    app: &App,
    deadline: Instant,
    work: impl Future<Output = Result<Response, ApiError>>,
) -> Response {
    match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => e.into_response(),
        Err(_) => timeout_error(app).into_response(),
    }
}

/// One admitted request, counted until it is dropped (a stream's with its last byte).
struct Admission(Arc<App>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Admits a request whose body has been read and holds `images` images (examples included):
/// 400 over `max_images`; 503 unless fewer than `queue` + `batch_size` requests are being
/// decoded, waiting or running.
fn admit(app: &Arc<App>, images: usize) -> Result<Admission, ApiError> {
    if images > app.config.max_images {
        return Err(ApiError::bad_request(format!(
            "{images} images in one request; the server takes at most {}",
            app.config.max_images
        )));
    }
    let limit = app.config.queue + app.batch_size;
    app.admitted
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < limit).then_some(n + 1)
        })
        .map(|_| Admission(app.clone()))
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                format!("{limit} requests are already in progress; try again shortly"),
            )
        })
}

/// The body, and what kind it is; an empty body is refused as such whatever its type.
async fn body_of(
    app: &Arc<App>,
    request: Request,
) -> Result<(BodyKind, Bytes, BodyLease), ApiError> {
    let (parts, body) = request.into_parts();
    let (bytes, lease) = read_body(app, &parts.headers, body).await?;
    if bytes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "the request has no body",
        ));
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    Ok((api::body_kind(content_type.as_deref())?, bytes, lease))
}

async fn run_task(
    task: Task,
    app: &Arc<App>,
    request: Request,
    deadline: Instant,
) -> Result<Response, ApiError> {
    let (kind, body, lease) = body_of(app, request).await?;
    let TaskRequest {
        images,
        examples,
        stream,
    } = api::parse_task(task, &kind, body).await?;
    let admission = admit(app, images.len() + examples.len())?;
    let names: Vec<String> = images.iter().map(|u| u.name.clone()).collect();
    let (example_uploads, scores): (Vec<Upload>, Vec<f64>) = examples.into_iter().unzip();
    let example_images = decode(app, example_uploads).await?;
    let images = decode(app, images).await?;
    // The encoded bytes are gone; what is held now is the cropped images.
    drop(lease);
    match task {
        Task::Score => {
            let (reply, answer) = oneshot::channel();
            enqueue(app, Work::Score { images, reply }, deadline)?;
            let scores = answer_of(app, answer).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"levels": LEVELS, "results": named(&names, &scores)}),
            ))
        }
        Task::Personalize => {
            let (reply, answer) = oneshot::channel();
            let examples = example_images.into_iter().zip(scores).collect();
            enqueue(
                app,
                Work::Personalize {
                    examples,
                    images,
                    reply,
                },
                deadline,
            )?;
            let scores = answer_of(app, answer).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"results": named(&names, &scores)}),
            ))
        }
        Task::Comment | Task::Suggest => {
            let (prompt, key) = match task {
                Task::Comment => (prompts::COMMENT, "comment"),
                _ => (prompts::SUGGEST, "suggestion"),
            };
            let conversations = images
                .into_iter()
                .map(|image| Conversation {
                    turns: vec![(Role::User, prompt.to_string())],
                    images: vec![image],
                })
                .collect();
            let (events, received) = mpsc::unbounded_channel();
            enqueue(
                app,
                Work::Generate {
                    conversations,
                    generation: app.generation.clone(),
                    stop: Vec::new(),
                    events,
                },
                deadline,
            )?;
            if stream {
                let (first, received) = first_event(app, received).await?;
                Ok(describe_stream(
                    Streaming {
                        app: app.clone(),
                        received,
                        first: Some(first),
                        deadline,
                        _admission: admission,
                    },
                    names,
                    key,
                ))
            } else {
                let replies = collect_replies(app, received, names.len()).await?;
                let results: Vec<Value> = names
                    .iter()
                    .zip(&replies)
                    .map(|(name, r)| json!({"image": name, key: r.text}))
                    .collect();
                Ok(json_response(StatusCode::OK, &json!({"results": results})))
            }
        }
    }
}

/// The first event of a generation, so that a request refused by the model (a prompt over
/// the context) is answered with its status before a stream starts.
async fn first_event(
    app: &App,
    mut received: mpsc::UnboundedReceiver<GenerationEvent>,
) -> Result<(GenerationEvent, mpsc::UnboundedReceiver<GenerationEvent>), ApiError> {
    match received.recv().await {
        Some(GenerationEvent::Failed(e)) => Err(e.api(app)),
        Some(event) => Ok((event, received)),
        None => Err(model_gone()),
    }
}

/// A stream's source: the model's events (the first already taken), its deadline, and the
/// admission it holds to its last byte.
struct Streaming {
    app: Arc<App>,
    received: mpsc::UnboundedReceiver<GenerationEvent>,
    first: Option<GenerationEvent>,
    deadline: Instant,
    /// Held, not read: the request counts as in progress until the stream is dropped.
    _admission: Admission,
}

impl Streaming {
    /// The next event: the first, then the model's, or an error past the deadline.
    async fn next(&mut self) -> GenerationEvent {
        if let Some(event) = self.first.take() {
            return event;
        }
        match tokio::time::timeout_at(self.deadline.into(), self.received.recv()).await {
            Err(_) => GenerationEvent::Failed(JobError::Timeout),
            Ok(None) => GenerationEvent::Failed(JobError::Model(MODEL_GONE.into())),
            Ok(Some(event)) => event,
        }
    }
}

/// Each result as its type serializes (the fields of `infer`'s CSV), with its image's name.
fn named<T: serde::Serialize>(names: &[String], results: &[T]) -> Vec<Value> {
    names
        .iter()
        .zip(results)
        .map(|(name, result)| {
            let mut value = serde_json::to_value(result).unwrap_or(Value::Null);
            if let Value::Object(fields) = &mut value {
                fields.insert("image".into(), json!(name));
            }
            value
        })
        .collect()
}

/// A score job's answer.
async fn answer_of<T>(
    app: &App,
    answer: oneshot::Receiver<Result<T, JobError>>,
) -> Result<T, ApiError> {
    answer
        .await
        .map_err(|_| model_gone())?
        .map_err(|e| e.api(app))
}

/// Waits for `rows` replies; the first failure answers for the whole request.
async fn collect_replies(
    app: &App,
    mut received: mpsc::UnboundedReceiver<GenerationEvent>,
    rows: usize,
) -> Result<Vec<Reply>, ApiError> {
    let mut replies: Vec<Option<Reply>> = vec![None; rows];
    while replies.iter().any(Option::is_none) {
        match received.recv().await {
            Some(GenerationEvent::Delta { .. }) => {}
            Some(GenerationEvent::Done { row, reply }) => {
                if let Some(slot) = replies.get_mut(row) {
                    *slot = Some(reply);
                }
            }
            Some(GenerationEvent::Failed(e)) => return Err(e.api(app)),
            None => return Err(model_gone()),
        }
    }
    Ok(replies.into_iter().flatten().collect())
}

fn sse(event: Option<&str>, data: &str) -> Bytes {
    let mut text = String::new();
    if let Some(event) = event {
        text.push_str("event: ");
        text.push_str(event);
        text.push('\n');
    }
    text.push_str("data: ");
    text.push_str(data);
    text.push_str("\n\n");
    Bytes::from(text)
}

fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// What a stream does next with one event: the bytes to send, and whether to go on.
type Step = (Bytes, bool);

/// Streams the replies of `/v1/comment` and `/v1/suggest` (docs/serve.md).
fn describe_stream(source: Streaming, names: Vec<String>, key: &'static str) -> Response {
    let stream = futures_util::stream::unfold(Some((source, 0usize)), move |state| {
        let names = names.clone();
        async move {
            let (mut source, mut done) = state?;
            let error = |e: ApiError| (sse(Some("error"), &e.body().to_string()), false);
            let (bytes, more): Step = match source.next().await {
                GenerationEvent::Failed(e) => error(e.api(&source.app)),
                GenerationEvent::Delta { row, text } => (
                    sse(
                        Some("delta"),
                        &json!({"index": row, "text": text}).to_string(),
                    ),
                    true,
                ),
                GenerationEvent::Done { row, reply } => {
                    done += 1;
                    let name = names.get(row).cloned().unwrap_or_default();
                    let result = json!({"index": row, "image": name, key: reply.text});
                    let mut bytes = sse(Some("result"), &result.to_string()).to_vec();
                    let finished = done >= names.len();
                    if finished {
                        bytes.extend_from_slice(&sse(Some("done"), "{}"));
                    }
                    (Bytes::from(bytes), !finished)
                }
            };
            Some((
                Ok::<Bytes, std::convert::Infallible>(bytes),
                more.then_some((source, done)),
            ))
        }
    });
    sse_response(Body::from_stream(stream))
}

async fn chat(State(app): AppState, request: Request) -> Response {
    let deadline = Instant::now() + app.config.timeout;
    within(&app, deadline, run_chat(&app, request, deadline)).await
}

async fn run_chat(
    app: &Arc<App>,
    request: Request,
    deadline: Instant,
) -> Result<Response, ApiError> {
    let (kind, body, lease) = body_of(app, request).await?;
    if kind != BodyKind::Json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "chat completions take application/json",
        ));
    }
    let chat = api::parse_chat(&body, &app.generation)?;
    let admission = admit(app, chat.images.len())?;
    let images = decode(app, chat.images).await?;
    drop((body, lease));
    let (events, received) = mpsc::unbounded_channel();
    enqueue(
        app,
        Work::Generate {
            conversations: vec![Conversation {
                turns: chat.turns,
                images,
            }],
            generation: chat.generation,
            stop: chat.stop,
            events,
        },
        deadline,
    )?;
    let id = format!(
        "chatcmpl-{}-{}",
        app.created,
        app.completions.fetch_add(1, Ordering::SeqCst)
    );
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if chat.stream {
        let (first, received) = first_event(app, received).await?;
        return Ok(chat_stream(
            Streaming {
                app: app.clone(),
                received,
                first: Some(first),
                deadline,
                _admission: admission,
            },
            ChunkHeader {
                id,
                created,
                include_usage: chat.include_usage,
            },
        ));
    }
    let reply = collect_replies(app, received, 1)
        .await?
        .pop()
        .ok_or_else(model_gone)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": app.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "logprobs": null,
                "finish_reason": finish_reason(reply.finish),
            }],
            "usage": usage(&reply),
        }),
    ))
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

fn usage(reply: &Reply) -> Value {
    json!({
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    })
}

/// What every chunk of one streamed completion repeats.
#[derive(Clone)]
struct ChunkHeader {
    id: String,
    created: u64,
    include_usage: bool,
}

/// Streams a completion as OpenAI does: a first chunk with the role, content deltas, a last
/// chunk with the finish reason, the usage where asked, then `[DONE]`.
fn chat_stream(source: Streaming, header: ChunkHeader) -> Response {
    let chunk = {
        let (model, header) = (source.app.model.clone(), header.clone());
        move |delta: Value, finish: Option<&str>, usage: Option<Value>| {
            let mut c = json!({
                "id": header.id,
                "object": "chat.completion.chunk",
                "created": header.created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            });
            if let Some(u) = usage {
                c["choices"] = json!([]);
                c["usage"] = u;
            }
            sse(None, &c.to_string())
        }
    };
    let opening = chunk(json!({"role": "assistant", "content": ""}), None, None);
    // State: the source and the text sent so far.
    let rest = futures_util::stream::unfold(Some((source, String::new())), move |state| {
        let (chunk, include_usage) = (chunk.clone(), header.include_usage);
        async move {
            let (mut source, mut sent) = state?;
            let error = |e: ApiError| {
                let mut bytes = sse(None, &e.body().to_string()).to_vec();
                bytes.extend_from_slice(&sse(None, "[DONE]"));
                (Bytes::from(bytes), false)
            };
            let (bytes, more): Step = match source.next().await {
                GenerationEvent::Failed(e) => error(e.api(&source.app)),
                GenerationEvent::Delta { text, .. } => {
                    sent.push_str(&text);
                    (chunk(json!({"content": text}), None, None), true)
                }
                GenerationEvent::Done { reply, .. } => {
                    let mut bytes = Vec::new();
                    // Text held back while it might have become a stop string.
                    if let Some(tail) = reply.text.strip_prefix(sent.as_str())
                        && !tail.is_empty()
                    {
                        bytes.extend_from_slice(&chunk(json!({"content": tail}), None, None));
                    }
                    bytes.extend_from_slice(&chunk(
                        json!({}),
                        Some(finish_reason(reply.finish)),
                        None,
                    ));
                    if include_usage {
                        bytes.extend_from_slice(&chunk(json!({}), None, Some(usage(&reply))));
                    }
                    bytes.extend_from_slice(&sse(None, "[DONE]"));
                    (Bytes::from(bytes), false)
                }
            };
            Some((
                Ok::<Bytes, std::convert::Infallible>(bytes),
                more.then_some((source, sent)),
            ))
        }
    });
    let stream = futures_util::stream::once(async move { Ok(opening) }).chain(rest);
    sse_response(Body::from_stream(stream))
}
