//! The bodies `infer serve` accepts and the JSON it answers (docs/serve.md): the four tasks as
//! multipart uploads or JSON with base64 images, and OpenAI's chat completions
//! (platform.openai.com/docs/api-reference/chat, the request and the `chat.completion` and
//! `chat.completion.chunk` objects). Everything here is checked before the model sees it, and
//! each refusal is an `ApiError` naming what was wrong.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use image::RgbImage;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::data::image::{ImageError, decode_rgb_within};
use crate::data::instruct::IMAGE_PLACEHOLDER;
use crate::data::transform::Transform;
use crate::model::chat::Role;
use crate::model::generate::GenerationConfig;

/// The longest error message sent, in bytes.
pub const MAX_MESSAGE: usize = 1000;

/// A refusal: an HTTP status, a `code` clients can test, and a message naming the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    /// A message over `MAX_MESSAGE` bytes (one quoting a whole base64 image, say) is cut.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        Self {
            status,
            code,
            message,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_json", message)
    }

    fn bad_multipart(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_multipart", message)
    }

    /// OpenAI's error object, which its clients parse.
    pub fn body(&self) -> Value {
        let kind = match self.status.as_u16() {
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        json!({"error": {"message": self.message, "type": kind, "code": self.code}})
    }
}

/// The four tasks of the JSON API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Score,
    Comment,
    Suggest,
    Personalize,
}

impl Task {
    fn streams(self) -> bool {
        matches!(self, Self::Comment | Self::Suggest)
    }
}

/// An image as it arrived, before decoding; `name` is its file name or its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub name: String,
    pub bytes: Bytes,
}

/// A task request, parsed but not decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRequest {
    pub images: Vec<Upload>,
    /// The person's rated photos (personalize only).
    pub examples: Vec<(Upload, f64)>,
    pub stream: bool,
}

/// What the body's `Content-Type` says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Multipart { boundary: String },
}

/// The kind of body a task endpoint accepts, from its `Content-Type`.
pub fn body_kind(content_type: Option<&str>) -> Result<BodyKind, ApiError> {
    let unsupported = |what: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("{what}: send application/json or multipart/form-data"),
        )
    };
    let Some(content_type) = content_type else {
        return Err(unsupported("no Content-Type"));
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyKind::Json),
        "multipart/form-data" => multer::parse_boundary(content_type)
            .map(|boundary| BodyKind::Multipart { boundary })
            .map_err(|e| ApiError::bad_multipart(format!("Content-Type: {e}"))),
        _ => Err(unsupported(&format!("Content-Type {content_type}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreBody {
    images: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DescribeBody {
    images: Vec<String>,
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonalizeBody {
    examples: Vec<ExampleBody>,
    images: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExampleBody {
    image: String,
    score: f64,
}

/// Parses a JSON value, naming the field, line and column of what does not fit.
fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::bad_json(format!("JSON body: {inner}"))
        } else {
            ApiError::bad_json(format!("JSON body at `{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_json(format!("JSON body: {e}")))?;
    Ok(value)
}

/// Parses a task's non-empty body: JSON with base64 images, or multipart with file parts.
pub async fn parse_task(task: Task, kind: &BodyKind, body: Bytes) -> Result<TaskRequest, ApiError> {
    let request = match kind {
        BodyKind::Json => parse_task_json(task, &body)?,
        BodyKind::Multipart { boundary } => parse_task_multipart(task, boundary, body).await?,
    };
    if request.images.is_empty() {
        return Err(ApiError::bad_request(match kind {
            BodyKind::Json => "no images: `images` is empty",
            BodyKind::Multipart { .. } => "no images: send one or more `image` file parts",
        }));
    }
    if task == Task::Personalize && request.examples.is_empty() {
        return Err(ApiError::bad_request(
            "personalize needs the person's rated photos (`examples`)",
        ));
    }
    Ok(request)
}

fn parse_task_json(task: Task, body: &[u8]) -> Result<TaskRequest, ApiError> {
    let named = |images: Vec<String>| -> Result<Vec<Upload>, ApiError> {
        images
            .iter()
            .enumerate()
            .map(|(i, data)| {
                Ok(Upload {
                    name: i.to_string(),
                    bytes: base64_image(data).map_err(|e| image_error(i, &i.to_string(), &e))?,
                })
            })
            .collect()
    };
    Ok(match task {
        Task::Score => {
            let b: ScoreBody = from_json(body)?;
            TaskRequest {
                images: named(b.images)?,
                examples: Vec::new(),
                stream: false,
            }
        }
        Task::Comment | Task::Suggest => {
            let b: DescribeBody = from_json(body)?;
            TaskRequest {
                images: named(b.images)?,
                examples: Vec::new(),
                stream: b.stream,
            }
        }
        Task::Personalize => {
            let b: PersonalizeBody = from_json(body)?;
            let mut examples = Vec::with_capacity(b.examples.len());
            for (i, e) in b.examples.iter().enumerate() {
                let name = format!("example {i}");
                let bytes = base64_image(&e.image).map_err(|m| image_error(i, &name, &m))?;
                examples.push((Upload { name, bytes }, checked_score(e.score, i)?));
            }
            TaskRequest {
                images: named(b.images)?,
                examples,
                stream: false,
            }
        }
    })
}

/// The scores a person's rating may take: any scale from 0 up to percentages. Each is written
/// into the prompt as a number, so an unbounded one would be an unbounded prompt.
pub const SCORES: std::ops::RangeInclusive<f64> = 0.0..=100.0;

fn checked_score(score: f64, i: usize) -> Result<f64, ApiError> {
    if SCORES.contains(&score) {
        Ok(score)
    } else {
        Err(ApiError::bad_request(format!(
            "example {i}: the score {score} is outside {} to {}",
            SCORES.start(),
            SCORES.end()
        )))
    }
}

async fn parse_task_multipart(
    task: Task,
    boundary: &str,
    body: Bytes,
) -> Result<TaskRequest, ApiError> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut images = Vec::new();
    let mut examples = Vec::new();
    let mut scores = Vec::new();
    let mut stream = false;
    let bad = |e: multer::Error| ApiError::bad_multipart(format!("multipart body: {e}"));
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(bad)?;
        let text = || String::from_utf8_lossy(&bytes).trim().to_string();
        match name.as_str() {
            "image" => images.push(Upload {
                name: file_name
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| images.len().to_string()),
                bytes,
            }),
            "stream" if task.streams() => {
                stream = match text().to_ascii_lowercase().as_str() {
                    "true" | "1" | "on" | "yes" => true,
                    "false" | "0" | "off" | "no" | "" => false,
                    other => {
                        return Err(ApiError::bad_multipart(format!(
                            "part `stream`: `{other}` is not true or false"
                        )));
                    }
                }
            }
            "example" if task == Task::Personalize => examples.push(Upload {
                name: file_name
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| format!("example {}", examples.len())),
                bytes,
            }),
            "example_score" if task == Task::Personalize => {
                let i = scores.len();
                let score = text().parse::<f64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "example {i}: the score `{}` is not a number",
                        text()
                    ))
                })?;
                scores.push(checked_score(score, i)?);
            }
            other => {
                let expected = match task {
                    Task::Score => "`image`",
                    Task::Comment | Task::Suggest => "`image` and `stream`",
                    Task::Personalize => "`example`, `example_score` and `image`",
                };
                return Err(ApiError::bad_multipart(format!(
                    "unknown part `{other}` (this endpoint takes {expected})"
                )));
            }
        }
    }
    if examples.len() != scores.len() {
        return Err(ApiError::bad_request(format!(
            "{} `example` parts but {} `example_score` parts: each rated photo needs its score",
            examples.len(),
            scores.len()
        )));
    }
    Ok(TaskRequest {
        images,
        examples: examples.into_iter().zip(scores).collect(),
        stream,
    })
}

/// Standard base64 with or without padding, bare or as a `data:...;base64,` URL.
fn base64_image(data: &str) -> Result<Bytes, String> {
    let payload = match data.strip_prefix("data:") {
        Some(url) => match url.split_once(',') {
            Some((meta, payload)) if meta.ends_with(";base64") => payload,
            _ => return Err("a data URL must be base64 (`data:image/jpeg;base64,...`)".into()),
        },
        None if data.starts_with("http://") || data.starts_with("https://") => {
            return Err("the server fetches nothing: send the image itself, as a data URL".into());
        }
        None => data,
    };
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    engine
        .decode(payload.trim())
        .map(Bytes::from)
        .map_err(|e| format!("not base64: {e}"))
}

fn image_error(index: usize, name: &str, reason: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_image",
        format!("image {index} ({name:?}): {reason}"),
    )
}

/// Decodes an upload within `max_pixels` and crops it as the encoder sees it. An image over
/// the limit is a 413, as a body over its limit is.
pub fn decode_image(
    upload: &Upload,
    index: usize,
    max_pixels: u64,
    transform: &Transform,
) -> Result<Arc<RgbImage>, ApiError> {
    let refuse = |e: ImageError| match e {
        ImageError::TooManyPixels(..) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_pixels",
            format!("image {index} ({:?}): {e}", upload.name),
        ),
        other => image_error(index, &upload.name, &other.to_string()),
    };
    let photo = decode_rgb_within(&upload.bytes, max_pixels).map_err(refuse)?;
    // The centre crop draws nothing; the generator only satisfies the signature.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    transform
        .crop(&photo, &mut rng)
        .map(Arc::new)
        .map_err(refuse)
}

/// A chat completions request (the fields calm can honour; others are refused by name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub n: Option<usize>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: ChatRole,
    pub content: Content,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    /// OpenAI's newer name for the system role.
    Developer,
    User,
    Assistant,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default)]
    pub detail: Option<String>,
}

/// A chat request made ready for the model.
#[derive(Debug)]
pub struct Chat {
    /// User and assistant turns, alternating, the user's first and last.
    pub turns: Vec<(Role, String)>,
    pub images: Vec<Upload>,
    pub generation: GenerationConfig,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Parses a non-empty chat completions body; `defaults` are the run's generation settings.
pub fn parse_chat(body: &[u8], defaults: &GenerationConfig) -> Result<Chat, ApiError> {
    let request: ChatRequest = from_json(body)?;
    if let Some(n) = request.n
        && n != 1
    {
        return Err(ApiError::bad_request(format!(
            "n = {n}: one choice per request is served"
        )));
    }
    let mut system = Vec::new();
    let mut turns: Vec<(Role, String)> = Vec::new();
    let mut images = Vec::new();
    for (m, message) in request.messages.iter().enumerate() {
        let mut pieces = Vec::new();
        let literal = |text: &String| {
            if text.contains(IMAGE_PLACEHOLDER) {
                Err(ApiError::bad_request(format!(
                    "messages[{m}]: the text holds `{IMAGE_PLACEHOLDER}`, which stands for an image here; send images as image_url parts"
                )))
            } else {
                Ok(text.clone())
            }
        };
        match &message.content {
            Content::Text(text) => pieces.push(literal(text)?),
            Content::Parts(parts) => {
                for part in parts {
                    match part {
                        Part::Text { text } => pieces.push(literal(text)?),
                        Part::ImageUrl { image_url } => {
                            if message.role != ChatRole::User {
                                return Err(ApiError::bad_request(format!(
                                    "messages[{m}]: only user messages may hold images"
                                )));
                            }
                            let i = images.len();
                            let bytes = base64_image(&image_url.url)
                                .map_err(|e| image_error(i, &i.to_string(), &e))?;
                            images.push(Upload {
                                name: i.to_string(),
                                bytes,
                            });
                            pieces.push(IMAGE_PLACEHOLDER.to_string());
                        }
                    }
                }
            }
        }
        let text = pieces.join("\n");
        let role = match message.role {
            ChatRole::System | ChatRole::Developer => {
                system.push(text);
                continue;
            }
            ChatRole::User => Role::User,
            ChatRole::Assistant => Role::Assistant,
        };
        match turns.last_mut() {
            Some((last, previous)) if *last == role => {
                previous.push('\n');
                previous.push_str(&text);
            }
            None if role == Role::Assistant => {
                return Err(ApiError::bad_request(format!(
                    "messages[{m}]: the conversation must start with a user message"
                )));
            }
            _ => turns.push((role, text)),
        }
    }
    match turns.last() {
        Some((Role::User, _)) => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "the last message must be the user's: it is what the model answers",
            ));
        }
        None => return Err(ApiError::bad_request("no user message in `messages`")),
    }
    if !system.is_empty()
        && let Some((_, first)) = turns.first_mut()
    {
        *first = format!("{}\n{first}", system.join("\n"));
    }
    let mut generation = defaults.clone();
    if let Some(max) = request.max_completion_tokens.or(request.max_tokens) {
        generation.max_new_tokens = max;
    }
    if let Some(t) = request.temperature {
        generation.temperature = t;
    }
    if let Some(p) = request.top_p {
        generation.top_p = Some(p);
    }
    if let Some(seed) = request.seed {
        generation.seed = seed;
    }
    generation
        .validate("request")
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let stop = match request.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(ApiError::bad_request(
            "`stop`: up to 4 non-empty strings, as OpenAI allows",
        ));
    }
    if images.is_empty() {
        return Err(ApiError::bad_request(
            "no image: calm answers about photos; send at least one image_url part",
        ));
    }
    Ok(Chat {
        turns,
        images,
        generation,
        stop,
        stream: request.stream.unwrap_or(false),
        include_usage: request.stream_options.is_some_and(|o| o.include_usage),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_name_what_does_not_fit() {
        let e = parse_task_json(Task::Score, br#"{"images": [], "extra": 1}"#).unwrap_err();
        assert_eq!(e.code, "bad_json");
        assert!(e.message.contains("extra"), "{}", e.message);
        let e = parse_task_json(Task::Score, br#"{"images": ["!!"]}"#).unwrap_err();
        assert_eq!(e.code, "bad_image");
        let e = parse_task_json(Task::Score, br#"{"images": [1]}"#).unwrap_err();
        assert!(e.message.contains("images[0]"), "{}", e.message);
        let e = parse_task_json(Task::Score, b"{\"images\": [").unwrap_err();
        assert!(e.message.contains("line 1"), "{}", e.message);
        let e = parse_task_json(Task::Score, br#"{"images": []} trailing"#).unwrap_err();
        assert_eq!(e.code, "bad_json");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let e = ApiError::bad_request("é".repeat(MAX_MESSAGE));
        assert!(e.message.len() <= MAX_MESSAGE + 3, "{}", e.message.len());
        assert!(e.message.ends_with("..."));
        assert_eq!(ApiError::bad_request("short").message, "short");
    }

    #[test]
    fn base64_images_come_bare_padded_or_not_or_as_data_urls() {
        assert_eq!(base64_image("aGk=").unwrap(), Bytes::from_static(b"hi"));
        assert_eq!(base64_image("aGk").unwrap(), Bytes::from_static(b"hi"));
        assert_eq!(
            base64_image("data:image/png;base64,aGk=").unwrap(),
            Bytes::from_static(b"hi")
        );
        assert!(base64_image("data:image/png,hi").is_err());
        assert!(
            base64_image("https://example.com/a.jpg")
                .unwrap_err()
                .contains("fetches nothing")
        );
    }

    #[test]
    fn chat_messages_become_alternating_turns_with_images_in_place() {
        let body = br#"{"model": "x", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}}]},
            {"role": "user", "content": "Well?"}], "max_tokens": 7, "stop": "END"}"#;
        let chat = parse_chat(body, &GenerationConfig::default()).unwrap();
        assert_eq!(
            chat.turns,
            vec![(Role::User, "Be brief.\nLook:\n<image>\nWell?".to_string())]
        );
        assert_eq!(chat.images.len(), 1);
        assert_eq!(chat.generation.max_new_tokens, 7);
        assert_eq!(chat.stop, vec!["END".to_string()]);
        for (body, says) in [
            (r#"{"messages": []}"#, "no user message"),
            (
                r#"{"messages": [{"role": "assistant", "content": "hi"}]}"#,
                "start with a user",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#,
                "last message",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "a"}], "n": 2}"#,
                "n = 2",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "a"}], "logprobs": true}"#,
                "logprobs",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "a <image>"}]}"#,
                "<image>",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "a"}], "temperature": -1}"#,
                "temperature",
            ),
        ] {
            let e = parse_chat(body.as_bytes(), &GenerationConfig::default()).unwrap_err();
            assert!(e.message.contains(says), "{body}: {}", e.message);
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }
}
