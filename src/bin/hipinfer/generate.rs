//! `generate` and the language-model bench: a GGUF model on the CPU backend, without a server.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hipinfer::backend::{Backend, BackendChoice, CpuBackend, Resilient};
use hipinfer::llm::{ChatMessage, GenerateRequest, Generator, LanguageModel, SamplingParams};
use hipinfer::retry::{RetryConfig, RetryPolicy, RetryState};
use serde_json::json;

use crate::args::{BenchArgs, GenerateArgs};
use crate::Failure;

/// Whether `model` names a GGUF file (a language model) rather than an embedding model folder.
pub fn is_gguf(model: Option<&Path>) -> bool {
    model.is_some_and(|m| {
        m.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    })
}

/// The model on the CPU backend, every call through the retry layer (its settings from the
/// environment, as the engine's).
fn generator(
    path: &Path,
    backend: Option<BackendChoice>,
    threads: Option<usize>,
) -> Result<Generator<Resilient<CpuBackend>>, Failure> {
    match backend.unwrap_or(BackendChoice::Auto) {
        BackendChoice::Auto | BackendChoice::Cpu => {}
        other => {
            return Err(format!(
                "--backend {other}: language models run on the CPU backend for now (their GPU \
                 kernels are not written yet); use --backend cpu or auto"
            )
            .into())
        }
    }
    if !path.is_file() {
        return Err(format!(
            "--model {}: no such file (a GGUF; `bash scripts/fetch-model.sh smollm2` fetches \
             SmolLM2-135M-Instruct)",
            path.display()
        )
        .into());
    }
    let model = Arc::new(LanguageModel::open(path)?);
    let cpu = match threads {
        Some(n) => CpuBackend::with_threads(n)?,
        None => CpuBackend::new()?,
    };
    let policy = Arc::new(RetryPolicy::new(RetryConfig::from_env()?)?);
    let state = RetryState::builder().without_metrics().build()?;
    Ok(Generator::new(model, Resilient::new(cpu, policy, state))?)
}

pub fn generate(args: GenerateArgs) -> Result<ExitCode, Failure> {
    let mut generator = generator(&args.model, args.backend, args.threads)?;
    let model = Arc::clone(generator.model());
    let text = if args.chat {
        let template = model.chat_template().ok_or_else(|| {
            format!(
                "--chat: {} has no chat template (tokenizer.chat_template)",
                args.model.display()
            )
        })?;
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new("system", system.as_str()));
        }
        messages.push(ChatMessage::new("user", args.prompt.as_str()));
        template.render(&messages, true)?
    } else {
        args.prompt.clone()
    };
    let request = GenerateRequest {
        prompt_ids: model.tokenizer().encode(&text)?,
        max_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
        },
        stop: args.stop.clone(),
        context_length: args.context_length,
        ignore_stop_tokens: false,
    };
    let stdout = std::io::stdout();
    let mut on_text = |piece: &str| {
        if !args.json {
            let mut out = stdout.lock();
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
    };
    let out = generator.generate(&request, &mut on_text)?;
    if args.json {
        println!(
            "{}",
            json!({"prompt_ids": out.prompt_ids, "generated_ids": out.generated_ids,
                   "text": out.text, "finish_reason": out.finish_reason})
        );
    } else {
        println!();
        let decoded = out.generated_ids.len().saturating_sub(1);
        eprintln!(
            "{}",
            json!({"prompt_tokens": out.prompt_ids.len(),
                   "generated_tokens": out.generated_ids.len(),
                   "finish_reason": out.finish_reason,
                   "ms_to_first_token": ms(out.time_to_first_token),
                   "tokens_per_second": per_second(decoded, out.decode_time),
                   "recoveries": out.recoveries})
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e5).round() / 1e2
}

fn per_second(count: usize, duration: Duration) -> f64 {
    let seconds = duration.as_secs_f64();
    if seconds > 0.0 {
        (count as f64 / seconds * 10.0).round() / 10.0
    } else {
        0.0
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Prompt processing (`--prompt-tokens` at once) and token generation (`--gen-tokens` after
/// it), repeated for `--seconds` (three times at least), medians in one JSON line.
pub fn bench(args: BenchArgs) -> Result<ExitCode, Failure> {
    let path = args.common.model.clone().unwrap_or_default();
    if args.prompt_tokens == 0 || args.gen_tokens == 0 {
        return Err("--prompt-tokens and --gen-tokens must be at least 1".into());
    }
    let mut generator = generator(&path, args.common.backend, args.common.threads)?;
    let model = Arc::clone(generator.model());
    let context = model.config().context_length;
    if args.prompt_tokens + args.gen_tokens > context {
        return Err(format!(
            "--prompt-tokens + --gen-tokens ({}) is past the model's context of {context}",
            args.prompt_tokens + args.gen_tokens
        )
        .into());
    }
    // A prompt of ordinary text tokens, the same every run.
    let base = model.tokenizer().encode(
        "The quick brown fox jumps over the lazy dog while the engine counts every token. ",
    )?;
    let prompt: Vec<u32> = base
        .iter()
        .copied()
        .cycle()
        .take(args.prompt_tokens)
        .collect();
    let request = GenerateRequest {
        ignore_stop_tokens: true,
        ..GenerateRequest::greedy(prompt.clone(), args.gen_tokens)
    };
    generator.generate(&request, &mut |_| {})?; // warm-up
    let (mut pp, mut tg, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs_f64(args.seconds) || pp.len() < 3 {
        let t = Instant::now();
        generator.prompt_logits(&prompt)?;
        pp.push(args.prompt_tokens as f64 / t.elapsed().as_secs_f64());
        let out = generator.generate(&request, &mut |_| {})?;
        ttft.push(out.time_to_first_token.as_secs_f64() * 1e3);
        let decoded = out.generated_ids.len().saturating_sub(1);
        tg.push(decoded as f64 / out.decode_time.as_secs_f64().max(1e-9));
    }
    let info = generator.backend().info();
    println!(
        "{}",
        json!({
            "model": path.display().to_string(),
            "backend": info.backend,
            "cpu": info.name,
            "arch": info.arch,
            "threads": info.compute_units,
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "runs": pp.len(),
            "pp_tokens_per_second": (median(&mut pp) * 10.0).round() / 10.0,
            "tg_tokens_per_second": (median(&mut tg) * 10.0).round() / 10.0,
            "ms_to_first_token": (median(&mut ttft) * 100.0).round() / 100.0,
            "file_bytes": model.file_bytes(),
            "kv_cache_bytes": (args.prompt_tokens + args.gen_tokens) * model.config().kv_bytes_per_token(),
        })
    );
    Ok(ExitCode::SUCCESS)
}
