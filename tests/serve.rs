//! `infer serve` on a tiny fine-tuned run (a 2-layer random LLaMA with the LLaMA-2 vocabulary,
//! the real EfficientNet-Lite0 at 64 px), started on a free port: every endpoint of
//! docs/serve.md, the bad inputs each answered with a 4xx JSON error naming the problem (the
//! server answering afterwards), the queue's 503, the timeout's 504, a graceful stop on
//! SIGTERM, and the official `openai` Python client (`scripts/serve/openai_client.py`).
//!
//! The client speaks raw HTTP/1.1 over a socket, so that malformed requests reach the server
//! exactly as written.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

const INFER: &str = "infer:
  batch_size: 4
  generation: {max_new_tokens: 6}
  score_max_new_tokens: 3
";

const FINETUNE: &str = "
finetune:
  batch_size: 2
  max_length: 96
  lora: {rank: 2, alpha: 4.0, dropout: 0.0}
  stages:
    - name: lora
      steps: 2
      schedule: {peak_lr: 1.0e-3, warmup_steps: 0}
      trainable: {mfam: false, projector: true, llm: lora}
      mix:
        - ratio: 1.0
          task: {kind: self_supervised, questions: 2}
";

/// A finished tiny fine-tuning run, made once for every test.
fn run_dir() -> &'static Path {
    static RUN: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &RUN.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let llm = common::tiny_llm(root);
        let pretrain_config = root.join("pretrain.yaml");
        std::fs::write(&pretrain_config, format!("{}{INFER}", common::TINY_MODEL)).expect("write");
        let job = |binary: &str, config: &Path, output: &Path| {
            common::ok(
                Command::new(binary)
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    .arg("--config")
                    .arg(config)
                    .arg("--output-dir")
                    .arg(output)
                    .output()
                    .expect("the job runs"),
            )
        };
        let pretrained = root.join("pretrained");
        job(
            env!("CARGO_BIN_EXE_pretrain"),
            &pretrain_config,
            &pretrained,
        );
        let config = root.join("finetune.yaml");
        let yaml = common::with_llm(&format!("{}{INFER}", common::TINY_MODEL), &llm)
            + FINETUNE
            + &format!("  pretrained: {}\n", pretrained.display());
        std::fs::write(&config, yaml).expect("write");
        let run = root.join("run");
        job(env!("CARGO_BIN_EXE_finetune"), &config, &run);
        (dir, run)
    })
    .1
}

/// A running server; killed if a test ends without stopping it.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: std::thread::JoinHandle<String>,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_infer"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["serve", "--addr", "127.0.0.1:0", "--checkpoint"])
            .arg(run_dir())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("infer serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            drop(BufReader::new(stderr).read_to_string(&mut text));
            text
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("reads the address");
        let addr = line
            .trim()
            .strip_prefix("serve: listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("an address");
        Self {
            child,
            addr,
            stderr,
        }
    }

    fn send(&self, raw: &[u8]) -> Response {
        exchange(self.addr, raw)
    }

    fn get(&self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
    }

    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Response {
        self.send(&request("POST", path, Some(content_type), body))
    }

    fn json(&self, path: &str, body: &Value) -> Response {
        self.post(path, "application/json", body.to_string().as_bytes())
    }

    fn healthy(&self) {
        let r = self.get("/health");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["status"], "ok");
    }

    /// Sends SIGTERM and returns the exit status and everything written on stderr.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: a plain signal to our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = self.child.wait().expect("exits");
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        (status, stderr.join().expect("stderr"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

struct Response {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `error.code` of a JSON error, checking its shape.
    fn error_code(&self) -> String {
        let v = self.json();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        v["error"]["code"].as_str().expect("a code").to_string()
    }

    /// `(event, data)` of a `text/event-stream` body.
    fn events(&self) -> Vec<(String, String)> {
        assert!(
            self.headers
                .to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{}",
            self.headers
        );
        self.text()
            .split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let mut event = String::from("message");
                let mut data = String::new();
                for line in e.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = v.to_string();
                    }
                }
                (event, data)
            })
            .collect()
    }
}

fn request(method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(t) = content_type {
        raw.push_str(&format!("Content-Type: {t}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// Writes `raw`, reads the whole answer (the server closes: `Connection: close`), de-chunks it.
fn exchange(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    // A server that answers before reading everything may close early: what it said counts.
    drop(stream.write_all(raw));
    let mut bytes = Vec::new();
    drop(stream.read_to_end(&mut bytes));
    parse_response(&bytes)
}

fn parse_response(bytes: &[u8]) -> Response {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(bytes)));
    let headers = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let mut body = bytes[split + 4..].to_vec();
    if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size");
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16)
                .expect("hex size");
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    Response {
        status,
        headers,
        body,
    }
}

const BOUNDARY: &str = "calmtestboundary";

/// A multipart body of `(name, file name, bytes)` parts.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let disposition = match file {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        body.extend_from_slice(format!("Content-Disposition: {disposition}\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

fn photo(i: usize) -> (String, Vec<u8>) {
    let path = &common::sample_photo_paths()[i];
    let name = path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    (name, std::fs::read(path).expect("photo"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn every_endpoint_answers_in_the_documented_shape() {
    let s = Server::start(&[]);
    s.healthy();
    let health = s.get("/health").json();
    assert_eq!(health["model"], "run");
    assert_eq!(health["queue"]["capacity"], 64);
    let models = s.get("/v1/models").json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "run");
    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert!(page.headers.contains("text/html"), "{}", page.headers);
    assert!(page.text().contains("<html"), "the page");

    let (name0, photo0) = photo(0);
    let (_, photo1) = photo(1);
    // Score, multipart: the CSV's fields, five probabilities summing to 1.
    let body = multipart(&[("image", Some(&name0), &photo0), ("image", None, &photo1)]);
    let r = s.post("/v1/score", &multipart_type(), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["levels"],
        json!(["bad", "poor", "fair", "good", "excellent"])
    );
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["image"], name0.as_str());
    assert_eq!(results[1]["image"], "1");
    for r in results {
        let levels = r["score_levels"].as_f64().expect("score_levels");
        assert!((1.0..=10.0).contains(&levels), "{r}");
        assert_eq!(r["score"], r["score_levels"], "the default readout");
        let p: Vec<f64> = r["level_probabilities"]
            .as_array()
            .expect("probabilities")
            .iter()
            .map(|p| p.as_f64().expect("a number"))
            .collect();
        assert_eq!(p.len(), 5);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{p:?}");
        for key in ["score_numeric", "score_distribution", "score_regression"] {
            assert!(r.get(key).is_some(), "{key} missing from {r}");
        }
    }
    // The same photos as JSON give the same scores, whatever batch they ran in.
    let j = s.json(
        "/v1/score",
        &json!({"images": [b64(&photo0), format!("data:image/jpeg;base64,{}", b64(&photo1))]}),
    );
    assert_eq!(j.status, 200, "{}", j.text());
    for (a, b) in results
        .iter()
        .zip(j.json()["results"].as_array().expect("results"))
    {
        let (a, b) = (a["score_levels"].as_f64(), b["score_levels"].as_f64());
        assert!((a.expect("a") - b.expect("b")).abs() < 1e-4, "{a:?} {b:?}");
    }

    // Comment and suggest, whole and streamed: the deltas join into the result's text.
    for (path, key) in [("/v1/comment", "comment"), ("/v1/suggest", "suggestion")] {
        let whole = s.post(
            path,
            &multipart_type(),
            &multipart(&[("image", Some("a.jpg"), &photo0)]),
        );
        assert_eq!(whole.status, 200, "{}", whole.text());
        let v = whole.json();
        assert_eq!(v["results"][0]["image"], "a.jpg");
        let text = v["results"][0][key].as_str().expect("text").to_string();
        let streamed = s.json(path, &json!({"images": [b64(&photo0)], "stream": true}));
        assert_eq!(streamed.status, 200);
        let events = streamed.events();
        let mut joined = String::new();
        for (event, data) in &events[..events.len() - 2] {
            assert_eq!(event, "delta", "{events:?}");
            let d: Value = serde_json::from_str(data).expect("json");
            assert_eq!(d["index"], 0);
            joined.push_str(d["text"].as_str().expect("text"));
        }
        let (event, data) = &events[events.len() - 2];
        assert_eq!(event, "result");
        let result: Value = serde_json::from_str(data).expect("json");
        assert_eq!(
            result[key],
            text.as_str(),
            "greedy: the same text streamed or not"
        );
        assert_eq!(joined.trim_end(), text);
        assert_eq!(events[events.len() - 1].0, "done");
    }

    // Personalize, multipart and JSON.
    let (_, photo2) = photo(2);
    let body = multipart(&[
        ("example", Some("liked.jpg"), &photo1),
        ("example_score", None, b"9"),
        ("example", Some("disliked.jpg"), &photo2),
        ("example_score", None, b"2"),
        ("image", Some("new.jpg"), &photo0),
    ]);
    let r = s.post("/v1/personalize", &multipart_type(), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["results"][0]["image"], "new.jpg");
    let expected = v["results"][0]["score_expected"]
        .as_f64()
        .expect("score_expected");
    assert!((1.0..=9.0).contains(&expected), "{v}");
    assert!(v["results"][0]["score"].is_number(), "{v}");
    let r = s.json(
        "/v1/personalize",
        &json!({"examples": [{"image": b64(&photo1), "score": 9}, {"image": b64(&photo2), "score": 2}],
                "images": [b64(&photo0)]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let again = r.json()["results"][0]["score_expected"]
        .as_f64()
        .expect("number");
    assert!((again - expected).abs() < 1e-4, "{again} vs {expected}");

    // Chat completions, whole and streamed.
    let chat = json!({
        "model": "anything",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{}", b64(&photo0))}},
            {"type": "text", "text": "Comment on this photo."}]}],
        "max_tokens": 5,
    });
    let r = s.json("/v1/chat/completions", &chat);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "run");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    let finish = v["choices"][0]["finish_reason"].as_str().expect("finish");
    assert!(["stop", "length"].contains(&finish), "{v}");
    let usage = &v["usage"];
    assert!(usage["prompt_tokens"].as_u64().expect("prompt") > 0);
    assert!(usage["completion_tokens"].as_u64().expect("completion") <= 5);
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let r = s.json("/v1/chat/completions", &streamed);
    assert_eq!(r.status, 200);
    let events = r.events();
    assert_eq!(
        events.last().map(|e| e.1.as_str()),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).expect("chunk"))
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(joined, content, "streamed and whole completions agree");
    let last = &chunks[chunks.len() - 1];
    assert_eq!(last["usage"], *usage, "{last}");
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        finish
    );

    // A reply cut by the end of the context ends for length, not as if it had finished.
    let near_end = json!({
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{}", b64(&photo0))}},
            {"type": "text", "text": "word ".repeat(470)}]}],
        "max_tokens": 200,
    });
    let v = s.json("/v1/chat/completions", &near_end).json();
    let total = v["usage"]["total_tokens"].as_u64().expect("total");
    assert!(total <= 512, "{v}");
    let completion = v["usage"]["completion_tokens"]
        .as_u64()
        .expect("completion");
    assert!(
        completion < 200,
        "the context, not max_tokens, bounds this reply: {v}"
    );
    if total == 512 {
        assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    }
}

#[test]
fn bad_input_gets_a_4xx_naming_the_problem_and_the_server_goes_on() {
    let s = Server::start(&[
        "--max-body-mb",
        "1",
        "--max-megapixels",
        "4",
        "--max-images",
        "3",
        "--queue",
        "2",
    ]);
    let (_, photo0) = photo(0);
    let image_url = json!({"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{}", b64(&photo0))}});
    let long_chat = |stream: bool| {
        json!({"messages": [{"role": "user", "content": [image_url, {"type": "text", "text": "word ".repeat(1000)}]}], "stream": stream})
            .to_string()
            .into_bytes()
    };
    let far_score =
        json!({"examples": [{"image": b64(&photo0), "score": 1e308}], "images": [b64(&photo0)]})
            .to_string();
    let truncated = &photo0[..photo0.len() / 2];
    let bomb = common::hostile::png_bomb(100_000, 100_000);
    let part = |bytes: &[u8]| multipart(&[("image", Some("x"), bytes)]);
    let mt = multipart_type();
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        ("a non-image", request("POST", "/v1/score", Some(&mt), &part(b"just text, not a photo")), 400, "bad_image", "not a JPEG"),
        ("a truncated JPEG", request("POST", "/v1/score", Some(&mt), &part(truncated)), 400, "bad_image", "truncated"),
        ("a decompression bomb", request("POST", "/v1/score", Some(&mt), &part(&bomb)), 413, "too_many_pixels", "100000x100000"),
        ("malformed JSON", request("POST", "/v1/score", Some("application/json"), b"{\"images\": [\"abc\""), 400, "bad_json", "line 1"),
        ("an unknown JSON field", request("POST", "/v1/score", Some("application/json"), br#"{"images": [], "colour": 1}"#), 400, "bad_json", "colour"),
        ("an unknown chat field", request("POST", "/v1/chat/completions", Some("application/json"), br#"{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {}}"#), 400, "bad_json", "logit_bias"),
        ("malformed multipart", request("POST", "/v1/score", Some(&mt), b"--calmtestboundary\r\nnonsense"), 400, "bad_multipart", "multipart"),
        ("an unknown multipart part", request("POST", "/v1/score", Some(&mt), &multipart(&[("photo", Some("x"), &photo0)])), 400, "bad_multipart", "photo"),
        ("an empty body", request("POST", "/v1/score", None, b""), 400, "empty_body", "no body"),
        ("an empty JSON body", request("POST", "/v1/comment", Some("application/json"), b""), 400, "empty_body", "no body"),
        ("no body, no length, no type", b"POST /v1/score HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400, "empty_body", "no body"),
        ("a chat without an image", request("POST", "/v1/chat/completions", Some("application/json"), br#"{"messages": [{"role": "user", "content": "hello"}]}"#), 400, "bad_request", "no image"),
        ("a prompt beyond the context", request("POST", "/v1/chat/completions", Some("application/json"), &long_chat(false)), 400, "bad_request", "context"),
        ("a streamed prompt beyond the context", request("POST", "/v1/chat/completions", Some("application/json"), &long_chat(true)), 400, "bad_request", "context"),
        ("a personal score far out of range", request("POST", "/v1/personalize", Some("application/json"), far_score.as_bytes()), 400, "bad_request", "outside 0 to 100"),
        ("no images", request("POST", "/v1/score", Some("application/json"), br#"{"images": []}"#), 400, "bad_request", "no images"),
        ("too many images", request("POST", "/v1/score", Some(&mt), &multipart(&[("image", None, b"a"), ("image", None, b"b"), ("image", None, b"c"), ("image", None, b"d")])), 400, "bad_request", "at most 3"),
        ("bad base64", request("POST", "/v1/score", Some("application/json"), br#"{"images": ["%%%"]}"#), 400, "bad_image", "base64"),
        ("a remote image URL", request("POST", "/v1/chat/completions", Some("application/json"), br#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.jpg"}}]}]}"#), 400, "bad_image", "fetches nothing"),
        ("an unpaired example", request("POST", "/v1/personalize", Some(&mt), &multipart(&[("example", None, &photo0), ("image", None, &photo0)])), 400, "bad_request", "example_score"),
        ("a text body", request("POST", "/v1/score", Some("text/plain"), b"hello"), 415, "unsupported_media_type", "text/plain"),
        ("an unknown path", request("POST", "/v2/score", Some("application/json"), b"{}"), 404, "not_found", "/v2/score"),
        ("a wrong method", request("GET", "/v1/score", None, b""), 405, "method_not_allowed", "GET"),
    ];
    for (what, raw, status, code, says) in cases {
        let r = s.send(&raw);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(r.error_code(), code, "{what}: {}", r.text());
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(says), "{what}: {message:?} lacks {says:?}");
        s.healthy();
    }
    // A body over the limit is refused unread: a client that waits for `100 Continue`, as
    // curl does for large bodies, hears so before sending it.
    let mut big = TcpStream::connect(s.addr).expect("connects");
    big.write_all(format!("POST /v1/score HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {mt}\r\nContent-Length: 1100000\r\nExpect: 100-continue\r\n\r\n").as_bytes())
        .expect("writes");
    let mut answer = Vec::new();
    drop(big.read_to_end(&mut answer));
    let r = parse_response(&answer);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.error_code(), "body_too_large");
    // Without a declared length (chunked), reading stops at the limit.
    let mut chunked = format!("POST /v1/score HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {mt}\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    for _ in 0..2 {
        chunked.extend_from_slice(format!("{:x}\r\n", 600_000).as_bytes());
        chunked.extend_from_slice(&vec![b'x'; 600_000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = s.send(&chunked);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.error_code(), "body_too_large");
    s.healthy();
    // Bodies that never arrive take no place from the model's queue: with room for 2 + 4
    // requests, 10 stalled uploads leave a real one its answer.
    let stalled: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut slow = TcpStream::connect(s.addr).expect("connects");
            slow.write_all(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"im")
                .expect("writes");
            slow
        })
        .collect();
    s.healthy();
    let r = s.post("/v1/score", &mt, &part(&photo0));
    assert_eq!(r.status, 200, "beside stalled uploads: {}", r.text());
    drop(stalled);
    // A good request still works after all that.
    let r = s.post("/v1/score", &mt, &part(&photo0));
    assert_eq!(r.status, 200, "{}", r.text());
    let (status, log) = s.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("serve: POST /v1/score 400"), "{log}");
    assert!(log.contains("failed"), "{log}");
}

#[test]
fn a_full_queue_answers_503_and_an_expired_request_504() {
    let (_, photo0) = photo(0);
    let body = multipart(&[
        ("image", None, &photo0),
        ("image", None, &photo0),
        ("image", None, &photo0),
        ("image", None, &photo0),
    ]);
    let s = Server::start(&["--queue", "1"]);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|_| scope.spawn(|| s.post("/v1/score", &multipart_type(), &body)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let r = h.join().expect("client");
                if r.status == 503 {
                    assert_eq!(r.error_code(), "queue_full");
                }
                r.status
            })
            .collect()
    });
    assert!(
        statuses.iter().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&503),
        "a queue of 1 took 12 at once: {statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
    s.healthy();
    drop(s);

    let s = Server::start(&["--timeout-s", "0.001"]);
    let r = s.post(
        "/v1/score",
        &multipart_type(),
        &multipart(&[("image", None, &photo0)]),
    );
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.error_code(), "timeout");
    s.healthy();
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let s = Server::start(&["--set", "infer.generation.max_new_tokens=40"]);
    let (_, photo0) = photo(0);
    let mut stream = TcpStream::connect(s.addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let body = json!({"images": [b64(&photo0)], "stream": true}).to_string();
    stream
        .write_all(&request(
            "POST",
            "/v1/comment",
            Some("application/json"),
            body.as_bytes(),
        ))
        .expect("writes");
    // The answer has begun: the request is in flight.
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).expect("the answer starts");
    assert_eq!(&first, b"HTTP/1.1 200");
    let addr = s.addr;
    let (status, log) = std::thread::scope(|scope| {
        let stop = scope.spawn(|| s.terminate());
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("reads to the end");
        let mut whole = first.to_vec();
        whole.extend_from_slice(&rest);
        let response = parse_response(&whole);
        let events = response.events();
        assert_eq!(
            events.last().map(|e| e.0.as_str()),
            Some("done"),
            "{events:?}"
        );
        stop.join().expect("stopped")
    });
    assert!(status.success(), "exit status {status:?}: {log}");
    assert!(log.contains("finishing the requests in flight"), "{log}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after exit"
    );
}

#[test]
fn a_connection_stuck_in_its_headers_delays_the_stop_by_the_timeout_at_most() {
    let s = Server::start(&["--timeout-s", "2"]);
    let mut stuck = TcpStream::connect(s.addr).expect("connects");
    stuck
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .expect("writes");
    s.healthy();
    let start = std::time::Instant::now();
    let (status, log) = s.terminate();
    assert!(status.success(), "{log}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?} to stop",
        start.elapsed()
    );
    drop(stuck);
}

/// The official `openai` package (pinned in scripts/serve/requirements.txt) gets a completion
/// for an image, streamed and not. CI sets `CALM_OPENAI_PYTHON` to a Python that has it;
/// elsewhere the test needs it too unless `CI` is unset, when it says what it skipped.
#[test]
fn the_official_openai_client_gets_completions_streamed_and_not() {
    let Some(python) = std::env::var_os("CALM_OPENAI_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set CALM_OPENAI_PYTHON to a Python with scripts/serve/requirements.txt"
        );
        eprintln!("skipped: CALM_OPENAI_PYTHON is not set (see scripts/serve/requirements.txt)");
        return;
    };
    let s = Server::start(&[]);
    let photo = &common::sample_photo_paths()[0];
    let out = Command::new(python)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("scripts/serve/openai_client.py")
        .arg("--base-url")
        .arg(format!("http://{}/v1", s.addr))
        .arg("--photo")
        .arg(photo)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("openai client: whole and streamed completions agree"),
        "{stdout}"
    );
}
