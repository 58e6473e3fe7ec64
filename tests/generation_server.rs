//! The language-model HTTP API over a real socket, on a tiny llama GGUF with a ChatML template:
//! OpenAI's completions and chat completions answered and streamed (SSE framing, the usage
//! chunk, the retry comment, `[DONE]`), the same text either way and as the engine gives it;
//! unsupported fields named with 422; models, tokenize/detokenize, health and info.

mod support;

use std::sync::Arc;

use hipinfer::backend::CpuBackend;
use hipinfer::generation::{local_runners, GenerationConfig, GenerationEngine};
use hipinfer::llm::{GenerateRequest, LanguageModel};
use hipinfer::retry::{RetryConfig, RetryPolicy, RetryState};
use hipinfer::server::ServerConfig;
use prometheus::Registry;
use serde_json::{json, Value};
use support::gguf_writer::string;
use support::tiny_llama::{bytes_with, scratch, write};

const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ \
                      message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt \
                      %}<|im_start|>assistant\n{% endif %}";

fn engine(test: &str) -> GenerationEngine {
    let bytes = bytes_with(1, |metadata, _| {
        metadata.push(("tokenizer.chat_template", string(CHATML)));
    });
    let path = write(&scratch(test), "tiny-chat.gguf", &bytes);
    let model = Arc::new(LanguageModel::open(path).unwrap());
    let policy = Arc::new(RetryPolicy::new(RetryConfig::new()).unwrap());
    let registry = Registry::new();
    let state = RetryState::builder()
        .registry(registry.clone())
        .build()
        .unwrap();
    let runners = model.clone();
    GenerationEngine::start(model, GenerationConfig::default(), registry, move |rows| {
        local_runners(runners, || CpuBackend::with_threads(2), policy, state, rows)
    })
    .unwrap()
}

struct Server {
    base: String,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(engine: GenerationEngine) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(hipinfer::server::llm::serve_on(
        listener,
        engine,
        ServerConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        base,
        client: reqwest::Client::new(),
        _stop: stop,
    }
}

impl Server {
    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.post(path, body).await;
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

/// The `data:` payloads of an SSE body, checking its framing: `data: ` lines and comments,
/// each event ended by a blank line, `[DONE]` last.
fn events(body: &str) -> (Vec<Value>, Vec<String>) {
    assert!(body.ends_with("data: [DONE]\n\n"), "{body:?}");
    let (mut data, mut comments) = (Vec::new(), Vec::new());
    for block in body.split("\n\n").filter(|b| !b.is_empty()) {
        if let Some(comment) = block.strip_prefix(": ") {
            comments.push(comment.to_string());
        } else if block != "data: [DONE]" {
            let payload = block
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("{block:?}"));
            data.push(serde_json::from_str(payload).unwrap());
        }
    }
    (data, comments)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_answered_and_streamed_give_the_engines_text() {
    let engine = engine("srv_completions");
    let direct = {
        let ids = engine.model().tokenizer().encode("Hello there").unwrap();
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || {
            let mut request = GenerateRequest::greedy(ids, 12);
            request.sampling.temperature = 0.0;
            engine.submit(request).unwrap().wait().unwrap()
        })
        .await
        .unwrap()
    };
    let server = start(engine).await;
    let body = json!({"prompt": "Hello there", "max_tokens": 12, "temperature": 0});
    let response = server.post("/v1/completions", &body).await;
    assert_eq!(response.status(), 200);
    let retry: Value =
        serde_json::from_str(response.headers()["x-hipinfer-retry"].to_str().unwrap()).unwrap();
    assert_eq!(retry["failed_steps"], 0);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["choices"][0]["text"], direct.text.as_str());
    let reason = serde_json::to_value(direct.finish_reason).unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], reason);
    assert_eq!(
        answer["usage"]["completion_tokens"],
        direct.generated_ids.len()
    );
    assert_eq!(answer["usage"]["prompt_tokens"], direct.prompt_tokens);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let response = server.post("/v1/completions", &streamed).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (chunks, comments) = events(&response.text().await.unwrap());
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, direct.text);
    let finished: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finished.len(), 1, "one chunk ends the choice");
    assert_eq!(finished[0]["choices"][0]["finish_reason"], reason);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"]["completion_tokens"],
        direct.generated_ids.len()
    );
    assert!(
        comments.iter().any(|c| c.starts_with("hipinfer-retry {")),
        "{comments:?}"
    );

    // `ignore_eos` (vLLM's extension): max_tokens tokens whatever the model's end tokens, as
    // the engine gives with its stop tokens ignored.
    let mut all = body.clone();
    all["max_tokens"] = json!(40);
    all["ignore_eos"] = json!(true);
    let (status, answer) = server.json("/v1/completions", &all).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["usage"]["completion_tokens"], 40);
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_use_the_template_and_stream_deltas() {
    let server = start(engine("srv_chat")).await;
    let body = json!({"model": "tiny-chat", "messages": [{"role": "user", "content": "Hi"}],
                      "max_tokens": 8, "seed": 3, "temperature": 0.7});
    let (status, answer) = server.json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let response = server.post("/v1/chat/completions", &streamed).await;
    let (chunks, _) = events(&response.text().await.unwrap());
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let deltas: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(deltas, text, "the same seed streams the same text");
    // The prompt ids are the template's.
    let (_, tokens) = server
        .json("/tokenize", &json!({"messages": body["messages"]}))
        .await;
    assert_eq!(tokens["count"], answer["usage"]["prompt_tokens"]);
    let (_, text) = server
        .json("/detokenize", &json!({"tokens": tokens["tokens"]}))
        .await;
    assert_eq!(
        text["prompt"],
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_fields_are_named_and_the_operations_routes_answer() {
    let server = start(engine("srv_fields")).await;
    for (body, field) in [
        (json!({"prompt": "a", "n": 2}), "n"),
        (json!({"prompt": "a", "logprobs": 2}), "logprobs"),
        (json!({"prompt": "a", "frobnicate": true}), "frobnicate"),
        (json!({"prompt": "a", "temperature": -1}), "temperature"),
        (json!({"prompt": "a", "max_tokens": 0}), "max_tokens"),
        (json!({"prompt": "a", "max_tokens": 1000}), "max_tokens"),
        (json!({"prompt": ["a", "b"]}), "prompt"),
        (json!({"max_tokens": 3}), "prompt"),
        (json!({"prompt": "a", "ignore_eos": "yes"}), "ignore_eos"),
    ] {
        let (status, answer) = server.json("/v1/completions", &body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    let (status, answer) = server
        .json(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "tool", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("messages[0].role"));
    let (status, answer) = server
        .json("/v1/completions", &json!({"prompt": "a", "model": "gpt-4"}))
        .await;
    assert_eq!(status, 404, "{answer}");
    let get = |path: &'static str| {
        let client = server.client.clone();
        let url = format!("{}{path}", server.base);
        async move {
            let response = client.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, models) = get("/v1/models").await;
    assert_eq!(status, 200);
    assert!(models.contains("\"id\":\"tiny-chat\""), "{models}");
    let (status, health) = get("/health").await;
    assert_eq!(
        (status, health.contains("\"ready\":true")),
        (200, true),
        "{health}"
    );
    assert_eq!(get("/livez").await.0, 200);
    let (_, info) = get("/info").await;
    assert!(info.contains("\"model_type\":\"generation\""), "{info}");
    let (_, metrics) = get("/metrics").await;
    for name in [
        "hipinfer_generation_time_to_first_token_seconds",
        "hipinfer_generation_kv_cache_usage_ratio",
        "hipinfer_generation_running_sequences",
    ] {
        assert!(metrics.contains(name), "{name}");
    }
}
