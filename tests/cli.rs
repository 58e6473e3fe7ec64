//! The `hipinfer` command end to end, on the tiny synthetic model (no download needed).

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::tiny_model;

fn hipinfer() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hipinfer"));
    command
        .env_remove("HIPINFER_MODEL")
        .env_remove("HIPINFER_BACKEND");
    command
}

/// Starts `hipinfer serve` on a free local port with `extra` flags; returns the process and the
/// address it printed.
fn start_serve(dir: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    let mut command = hipinfer();
    command
        .args(["serve", "--backend", "cpu"])
        .args(extra)
        .arg("--model")
        .arg(dir);
    start(command)
}

/// Spawns a `hipinfer serve …` command on a free local port; returns the process and the address
/// it printed.
fn start(mut command: Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = command
        .args(["--host", "127.0.0.1", "--port", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("http://") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "serve exited early"
        );
    }
    let address = line.split("http://").nth(1).unwrap().trim().to_string();
    (child, address)
}

/// Sends SIGTERM to `child` and returns its exit code.
fn terminate(mut child: std::process::Child) -> Option<i32> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap().code()
}

#[test]
fn embed_prints_one_json_object() {
    let dir = tiny_model::write("cli-embed");
    let output = hipinfer()
        .args(["embed", "--backend", "cpu", "--threads", "1", "--model"])
        .arg(&dir)
        .args(["hello world!", "rust is fast"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["backend"], "cpu");
    assert_eq!(json["dimensions"], tiny_model::HIDDEN);
    assert_eq!(json["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(json["input_ids"][0], serde_json::json!([2, 4, 5, 6, 3]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stdin_takes_one_json_string_per_line() {
    let dir = tiny_model::write("cli-stdin");
    let mut child = hipinfer()
        .args([
            "embed",
            "--backend",
            "cpu",
            "--no-normalize",
            "--stdin",
            "--model",
        ])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\"hello\\nworld\"\n\n\"fast\"\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        json["input_ids"],
        serde_json::json!([[2, 4, 5, 3], [2, 10, 3]])
    );

    let mut child = hipinfer()
        .args(["embed", "--stdin", "--model"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"not json\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("stdin line 1"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn errors_are_one_clear_line_and_exit_1() {
    let output = hipinfer()
        .args(["embed", "--model", "/nonexistent/model", "hi"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: model folder /nonexistent/model"),
        "{stderr}"
    );
    let output = hipinfer()
        .args(["embed", "--backend", "rocm", "hi"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not one of auto, cpu, hip, cuda"));
}

#[test]
fn bench_prints_one_json_line() {
    let dir = tiny_model::write("cli-bench");
    let output = hipinfer()
        .args([
            "bench",
            "--backend",
            "cpu",
            "--batch",
            "2",
            "--seq",
            "6",
            "--seconds",
            "0.01",
            "--model",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "no progress when stderr is not a terminal: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for key in [
        "batch",
        "seq",
        "threads",
        "tokens_per_second",
        "ms_per_batch_median",
        "ms_per_batch_p90",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    let output = hipinfer()
        .args(["bench", "--seq", "99", "--model"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("max_seq_length 12"));
    // The model bench takes its model from a --config file too.
    let file = dir.join("engine.json");
    std::fs::write(&file, serde_json::json!({"model": dir}).to_string()).unwrap();
    let output = hipinfer()
        .args(["bench", "--seq", "99", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_seq_length 12"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn info_reports_the_backends() {
    let output = hipinfer().arg("info").output().unwrap();
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["backends"]["cpu"]["available"], true);
    assert!(json["backends"]["hip"]["available"].is_boolean());
    assert!(json["backends"]["cuda"]["available"].is_boolean());
}

/// `hipinfer info --model FILE.gguf` describes a GGUF file; another file is a clear error.
#[test]
fn info_describes_a_gguf_file_and_refuses_other_files() {
    use support::gguf_writer::{file, string, u32_value, Tensor};
    let dir = std::env::temp_dir().join(format!("hipinfer-cli-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.gguf");
    let bytes = file(
        &[
            ("general.architecture", string("llama")),
            ("llama.block_count", u32_value(2)),
        ],
        &[Tensor {
            name: "output_norm.weight".into(),
            dims: vec![4],
            kind: 0,
            data: vec![0; 16],
        }],
    );
    std::fs::write(&path, bytes).unwrap();
    let output = hipinfer()
        .args(["info", "--model"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["architecture"], "llama");
    assert_eq!(json["sizes"]["block_count"], 2);
    assert_eq!(json["tensor_types"]["F32"]["tensors"], 1);
    let not_gguf = dir.join("config.json");
    std::fs::write(&not_gguf, "{}").unwrap();
    let output = hipinfer()
        .args(["info", "--model"])
        .arg(&not_gguf)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("config.json") && stderr.contains("not a GGUF file"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A plain HTTP/1.1 request over a socket (the binary is all that runs); returns the whole
/// answer, status line first.
fn request(address: &str, path: &str, body: Option<&str>) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let text = match body {
        Some(body) => format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        None => format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    };
    stream.write_all(text.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn serve_answers_then_stops_cleanly_on_sigterm() {
    let dir = tiny_model::write("cli-serve");
    let (child, address) = start_serve(&dir, &[]);
    let request = |path: &str, body: Option<&str>| request(&address, path, body);
    assert!(request("/health", None).starts_with("HTTP/1.1 200"));
    let answer = request("/embed", Some(r#"{"inputs": "hello world"}"#));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("[["));
    assert_eq!(terminate(child), Some(0));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn chaos_prints_its_account_and_passes() {
    let dir = tiny_model::write("cli-chaos");
    let output = hipinfer()
        .args([
            "chaos",
            "--backend",
            "cpu",
            "--requests",
            "200",
            "--concurrency",
            "16",
            "--transient-rate",
            "0.05",
            "--oom-rate",
            "0.02",
            "--reset-rate",
            "0.02",
            "--seed",
            "1",
            "--model",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["requests"], 200);
    assert_eq!(json["succeeded"], 200);
    for key in ["lost", "duplicated", "mismatched", "failed"] {
        assert_eq!(json[key], 0, "{key}");
    }
    for key in ["transient", "oom", "reset"] {
        assert!(json["injected"][key].as_u64().unwrap() > 0, "{key}");
    }
    for key in [
        "op_retries",
        "reclaims",
        "step_replays",
        "p50_ms",
        "p99_ms",
        "wall_seconds",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    let bad = hipinfer()
        .args(["chaos", "--oom-rate", "2", "--model"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("oom_rate"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn serve_with_a_worker_process_leaves_no_process_behind() {
    let dir = tiny_model::write("cli-serve-isolated");
    let (child, _) = start_serve(&dir, &["--isolation", "subprocess"]);
    // The worker is the serving process's child.
    let workers = support::children_of(child.id());
    assert_eq!(workers.len(), 1, "one worker process: {workers:?}");
    assert_eq!(terminate(child), Some(0));
    for pid in workers {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} outlived the server"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_config_file_is_kept_where_no_flag_is_given_and_variables_override_it() {
    let dir = tiny_model::write("cli-config-file");
    let file = dir.join("engine.json");
    let settings = serde_json::json!({
        "model": dir,
        "backend": "cpu",
        "batching": {"max_batch_tokens": 777, "max_client_batch_size": 5},
    });
    std::fs::write(&file, settings.to_string()).unwrap();
    let mut command = hipinfer();
    command
        .args(["serve", "--config"])
        .arg(&file)
        .env("HIPINFER_MAX_CLIENT_BATCH_SIZE", "9");
    let (child, address) = start(command);
    let answer = request(&address, "/info", None);
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let info: serde_json::Value = serde_json::from_str(body).unwrap();
    let model = info["model_id"].as_str().unwrap();
    assert!(
        model.ends_with("cli-config-file"),
        "the file's model folder: {info}"
    );
    assert_eq!(info["backend"], "cpu");
    assert_eq!(info["max_batch_tokens"], 777, "the file's setting");
    assert_eq!(
        info["max_client_batch_size"], 9,
        "the variable over the file"
    );
    assert_eq!(terminate(child), Some(0));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn chaos_with_a_worker_process_counts_its_aborts_hangs_and_restarts() {
    let dir = tiny_model::write("cli-chaos-isolated");
    let output = hipinfer()
        .args([
            "chaos",
            "--backend",
            "cpu",
            "--isolation",
            "subprocess",
            "--worker-step-timeout",
            "1s",
            "--requests",
            "80",
            // One request at a time: the same steps, so the same seeded faults, on any machine.
            "--concurrency",
            "1",
            "--abort-rate",
            "0.01",
            "--hang-rate",
            "0.003",
            "--seed",
            "3",
            "--model",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    println!("{json}");
    assert_eq!(json["succeeded"], 80, "{json}");
    for key in ["lost", "duplicated", "mismatched", "failed"] {
        assert_eq!(json[key], 0, "{key}: {json}");
    }
    let (aborts, hangs) = (
        json["injected"]["abort"].as_u64().unwrap(),
        json["injected"]["hang"].as_u64().unwrap(),
    );
    assert!(aborts > 0 && hangs > 0, "{json}");
    assert_eq!(
        json["worker_restarts"].as_u64().unwrap(),
        aborts + hangs,
        "{json}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The socket folders of the workers of process `pid` (`hipinfer-<pid>-*`).
fn socket_dirs_of(pid: u32) -> Vec<std::path::PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let prefix = format!("hipinfer-{pid}-");
    std::fs::read_dir(base)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

#[test]
fn a_supervisor_killed_without_warning_leaves_no_worker_and_no_socket_folder() {
    let dir = tiny_model::write("cli-sigkill");
    let (mut child, _) = start_serve(&dir, &["--isolation", "subprocess"]);
    let workers = support::children_of(child.id());
    assert_eq!(workers.len(), 1, "{workers:?}");
    let folders = socket_dirs_of(child.id());
    assert_eq!(folders.len(), 1, "{folders:?}");
    // Only the worker could connect, once: the socket itself is gone already.
    assert!(!folders[0].join("worker.sock").exists());
    child.kill().unwrap(); // SIGKILL: the supervisor cleans nothing up itself
    child.wait().unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    // Gone, or a zombie waiting for whoever adopted it to reap it: exited either way.
    let state = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim().chars().next())
    };
    while (folders[0].exists() || !matches!(state(workers[0]), None | Some('Z')))
        && std::time::Instant::now() < until
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let state = std::fs::read_to_string(format!("/proc/{}/stat", workers[0])).unwrap_or_default();
    assert!(
        !folders[0].exists(),
        "the worker removed its socket folder ({state})"
    );
    // Gone, or a zombie waiting for whoever adopted it to reap it: exited either way.
    let state = state
        .rsplit_once(')')
        .map(|(_, rest)| rest.trim().chars().next());
    assert!(
        matches!(state, None | Some(Some('Z'))),
        "the worker exited: {state:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn generate_streams_text_or_prints_json_and_refuses_bad_arguments() {
    let dir = support::tiny_llama::scratch("cli-generate");
    let model = support::tiny_llama::write(
        &dir,
        "tiny.gguf",
        &support::tiny_llama::bytes_with(2, |_, _| {}),
    );
    let run = |extra: &[&str]| {
        hipinfer()
            .args(["generate", "--backend", "cpu", "--threads", "2", "--model"])
            .arg(&model)
            .args(extra)
            .output()
            .unwrap()
    };
    let output = run(&["--json", "--max-tokens", "6", "hello"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["prompt_ids"].as_array().unwrap().len(), 5, "{json}");
    let generated = json["generated_ids"].as_array().unwrap().len();
    assert!((1..=6).contains(&generated), "{json}");
    let reason = json["finish_reason"].as_str().unwrap();
    assert!(reason == "length" || reason == "stop", "{json}");

    let output = run(&["--max-tokens", "6", "hello"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let figures: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    for key in [
        "prompt_tokens",
        "generated_tokens",
        "ms_to_first_token",
        "tokens_per_second",
    ] {
        assert!(figures.get(key).is_some(), "{key} missing: {figures}");
    }

    for (args, needle) in [
        (vec!["--temperature", "-1", "hi"], "temperature"),
        (vec!["--top-p", "0", "hi"], "top_p"),
        (vec!["--max-tokens", "0", "hi"], "max_tokens"),
        (vec!["--max-tokens", "100000", "hi"], "past the context"),
    ] {
        let output = run(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with("error: ") && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    }
    let output = hipinfer()
        .args(["generate", "--model", "/nonexistent/model.gguf", "hi"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/model.gguf") && stderr.contains("no such file"),
        "{stderr}"
    );

    let output = hipinfer()
        .args([
            "bench",
            "--threads",
            "2",
            "--prompt-tokens",
            "8",
            "--gen-tokens",
            "4",
            "--seconds",
            "0.01",
            "--model",
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for key in [
        "pp_tokens_per_second",
        "tg_tokens_per_second",
        "ms_to_first_token",
    ] {
        assert!(json[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {json}");
    }
}
