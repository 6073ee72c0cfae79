//! A scripted OpenAI-compatible chat-completions server for tests, in-process on loopback.
//!
//! Each request takes the next scripted behaviour: a good or bad answer, an HTTP error with or
//! without `Retry-After`, a hang, a truncated body, a refusal of `json_schema`. Requests are
//! recorded so tests can look at what the client sent.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with one request.
pub enum Behaviour {
    /// 200 with this message content.
    Answer(String),
    /// This status, optional `Retry-After` seconds, and body.
    Status { code: u16, retry_after: Option<u64>, body: String },
    /// Reads the request, then says nothing for this long.
    Hang(Duration),
    /// Promises a long body and closes after a few bytes.
    Truncated,
    /// 400 "response_format json_schema is not supported" when the request asks for it; otherwise
    /// answers with the content.
    RejectSchemaThenAnswer(String),
    /// Computes the answer content from the request body.
    Compute(Box<dyn Fn(&Value) -> String + Send + Sync>),
    /// Computes the whole response from the request body.
    Custom(Box<dyn Fn(&Value) -> Respond + Send + Sync>),
}

/// A response a [`Behaviour::Custom`] chooses.
pub enum Respond {
    /// 200 with this content, finished normally.
    Answer(String),
    /// 200 with this content, cut off at the token limit (`finish_reason: length`).
    Cutoff(String),
    /// This status and body.
    Status(u16, String),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: String,
    pub body: Value,
}

pub struct Server {
    pub addr: SocketAddr,
    script: Arc<Mutex<VecDeque<Behaviour>>>,
    /// Used when the script is empty.
    fallback: Arc<Mutex<Option<Behaviour>>>,
    pub received: Arc<Mutex<Vec<Received>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// Starts a server on its own runtime (usable from sync tests and from a spawned binary).
    pub fn start(script: Vec<Behaviour>) -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        // Bound without `block_on`, so a server can start inside an async test too.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(std_listener).unwrap()
        };
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let fallback = Arc::new(Mutex::new(None));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (s, f, r) = (script.clone(), fallback.clone(), received.clone());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, f, r) = (s.clone(), f.clone(), r.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, s, f, r).await;
                });
            }
        });
        Self { addr, script, fallback, received, runtime: Some(runtime) }
    }

    /// The base URL to configure (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Behaviour for every request once the script runs out.
    pub fn set_fallback(&self, behaviour: Behaviour) {
        *self.fallback.lock().unwrap() = Some(behaviour);
    }

    pub fn push(&self, behaviour: Behaviour) {
        self.script.lock().unwrap().push_back(behaviour);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    script: Arc<Mutex<VecDeque<Behaviour>>>,
    fallback: Arc<Mutex<Option<Behaviour>>>,
    received: Arc<Mutex<Vec<Received>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let headers = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
    received.lock().unwrap().push(Received { headers, body: body.clone() });
    let behaviour = script.lock().unwrap().pop_front();
    let behaviour = match behaviour {
        Some(b) => b,
        None => {
            let computed = match &*fallback.lock().unwrap() {
                Some(Behaviour::Compute(f)) => Ok(Behaviour::Answer(f(&body))),
                Some(Behaviour::Answer(a)) => Ok(Behaviour::Answer(a.clone())),
                Some(Behaviour::Custom(f)) => match f(&body) {
                    Respond::Answer(a) => Ok(Behaviour::Answer(a)),
                    Respond::Cutoff(a) => Err(a),
                    Respond::Status(code, text) => {
                        Ok(Behaviour::Status { code, retry_after: None, body: text })
                    }
                },
                _ => Ok(Behaviour::Status { code: 500, retry_after: None, body: "script exhausted".into() }),
            };
            match computed {
                Ok(b) => b,
                Err(cut) => {
                    return respond(&mut stream, 200, None, &completion_with(&body, &cut, "length")).await;
                }
            }
        }
    };
    match behaviour {
        Behaviour::Answer(content) => respond(&mut stream, 200, None, &completion(&body, &content)).await,
        Behaviour::Compute(f) => respond(&mut stream, 200, None, &completion(&body, &f(&body))).await,
        Behaviour::Custom(f) => match f(&body) {
            Respond::Answer(a) => respond(&mut stream, 200, None, &completion(&body, &a)).await,
            Respond::Cutoff(a) => {
                respond(&mut stream, 200, None, &completion_with(&body, &a, "length")).await
            }
            Respond::Status(code, text) => respond(&mut stream, code, None, &text).await,
        },
        Behaviour::Status { code, retry_after, body } => respond(&mut stream, code, retry_after, &body).await,
        Behaviour::Hang(d) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
        Behaviour::Truncated => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5000\r\nconnection: close\r\n\r\n";
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(b"{\"id\":\"x\",\"choices\":[{\"mess").await?;
            stream.shutdown().await
        }
        Behaviour::RejectSchemaThenAnswer(content) => {
            let wants_schema =
                body.get("response_format").and_then(|f| f.get("type")) == Some(&json!("json_schema"));
            if wants_schema {
                let err = json!({"error": {"message": "response_format of type json_schema is not supported by this server", "type": "invalid_request_error", "param": null, "code": null}});
                respond(&mut stream, 400, None, &err.to_string()).await
            } else {
                respond(&mut stream, 200, None, &completion(&body, &content)).await
            }
        }
    }
}

/// A chat completion wrapping `content`, with usage counted in characters/4.
pub fn completion(request: &Value, content: &str) -> String {
    completion_with(request, content, "stop")
}

/// [`completion`] with the given `finish_reason`.
pub fn completion_with(request: &Value, content: &str, finish_reason: &str) -> String {
    let prompt_chars: usize = request["messages"]
        .as_array()
        .map(|m| m.iter().map(|x| x["content"].as_str().map_or(0, str::len)).sum())
        .unwrap_or(0);
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000u32,
        "model": request["model"].as_str().unwrap_or("test-model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_chars / 4 + 1, "completion_tokens": content.len() / 4 + 1, "total_tokens": prompt_chars / 4 + content.len() / 4 + 2}
    })
    .to_string()
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    retry_after: Option<u64>,
    body: &str,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(secs) = retry_after {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
