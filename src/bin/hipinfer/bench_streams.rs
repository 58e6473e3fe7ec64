//! `bench --model FILE.gguf --streams N [--http]`: the generation engine's aggregate rate
//! (end to end, and decode alone) with N streams at once against one stream alone, the median
//! of three rounds each, and with `--http` the same streams
//! through the server (streamed `/v1/completions`) against the engine alone.

use std::process::ExitCode;
use std::time::Instant;

use hipinfer::chaos::percentile;
use hipinfer::generation::GenerationEngine;
use hipinfer::llm::GenerateRequest;
use hipinfer::server::{self, ServerConfig};
use prometheus::Registry;
use serde_json::{json, Value};

use crate::args::BenchArgs;
use crate::generation;
use crate::Failure;

/// `bench --model FILE.gguf --streams N`: one stream alone, then N at once, each `--gen-tokens`
/// after a `--prompt-tokens` prompt of its own; one JSON line with both decode rates, their
/// ratio and the time to first token under load.
pub fn bench_streams(args: BenchArgs) -> Result<ExitCode, Failure> {
    if args.prompt_tokens == 0 || args.gen_tokens == 0 {
        return Err("--prompt-tokens and --gen-tokens must be at least 1".into());
    }
    let mut config = generation::config(&args.common, &args.engine, &args.generation_defaults())?;
    config.max_running = config.max_running.max(args.streams);
    config.max_total_tokens = Some(args.streams.max(1) * (args.prompt_tokens + args.gen_tokens));
    let engine = generation::open(&args.common, &args.engine, config, &Registry::new())?;
    let base = engine.model().tokenizer().encode(
        "The quick brown fox jumps over the lazy dog while the engine counts every token. ",
    )?;
    let request = |i: usize| {
        // Each stream's prompt differs (its first token), so no two are the same sequence.
        let mut prompt: Vec<u32> = base
            .iter()
            .copied()
            .cycle()
            .take(args.prompt_tokens)
            .collect();
        prompt[0] = base[i % base.len()];
        GenerateRequest {
            ignore_stop_tokens: true,
            ..GenerateRequest::greedy(prompt, args.gen_tokens)
        }
    };
    // One round of n streams at once: (end-to-end rate, decode rate, each time to first token).
    // The decode rate is each stream's tokens after its first over the time between its first
    // and its last, summed over the streams (the streams decode together, in one batch): the
    // steady-state rate, without the prompts' prefill.
    let run = |n: usize| -> Result<(f64, f64, Vec<f64>), Failure> {
        let started = Instant::now();
        let streams: Vec<_> = (0..n)
            .map(|i| engine.submit(request(i)))
            .collect::<Result<_, _>>()?;
        let mut ttft = Vec::new();
        let (mut generated, mut decode) = (0, 0.0);
        for stream in streams {
            let done = stream.wait()?;
            ttft.push(done.time_to_first_token.as_secs_f64() * 1e3);
            generated += done.generated_ids.len();
            let decoding = (done.total_time - done.time_to_first_token).as_secs_f64();
            if done.generated_ids.len() > 1 && decoding > 0.0 {
                decode += (done.generated_ids.len() - 1) as f64 / decoding;
            }
        }
        ttft.sort_by(f64::total_cmp);
        Ok((
            generated as f64 / started.elapsed().as_secs_f64(),
            decode,
            ttft,
        ))
    };
    // The median of ROUNDS rounds of each (a shared machine's noise moves one round by a third).
    const ROUNDS: usize = 3;
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let rounds = |n: usize| -> Result<(f64, f64, Vec<f64>), Failure> {
        let (mut rates, mut decodes, mut ttfts) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (rate, decode, ttft) = run(n)?;
            rates.push(rate);
            decodes.push(decode);
            ttfts.extend(ttft);
        }
        ttfts.sort_by(f64::total_cmp);
        Ok((median(&mut rates), median(&mut decodes), ttfts))
    };
    run(1)?; // warm-up
    let (single, single_decode, _) = rounds(1)?;
    let (aggregate, aggregate_decode, ttft) = rounds(args.streams)?;
    let device = engine.device();
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let mut output = json!({
            "model": engine.model().path().display().to_string(),
            "cpu": device.as_ref().map(|d| d.name.clone()),
            "arch": device.as_ref().map(|d| d.arch.clone()),
            "threads": device.as_ref().map(|d| d.compute_units),
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "streams": args.streams,
            "single_stream_tokens_per_second": round(single),
            "aggregate_tokens_per_second": round(aggregate),
            "aggregate_over_single": (aggregate / single * 100.0).round() / 100.0,
            "single_stream_decode_tokens_per_second": round(single_decode),
            "aggregate_decode_tokens_per_second": round(aggregate_decode),
            "decode_aggregate_over_single": (aggregate_decode / single_decode * 100.0).round() / 100.0,
            "rounds": ROUNDS,
            "ms_to_first_token_p50": round(hipinfer::chaos::percentile(&ttft, 0.5)),
            "ms_to_first_token_p99": round(percentile(&ttft, 0.99)),
    });
    if args.http {
        let prompts: Vec<Vec<u32>> = (0..args.streams).map(|i| request(i).prompt_ids).collect();
        let (http, ttft) = http_streams(engine, &prompts, args.gen_tokens)?;
        output["http_aggregate_tokens_per_second"] = json!(round(http));
        output["http_over_engine"] = json!((http / aggregate * 100.0).round() / 100.0);
        output["http_ms_to_first_token_p50"] = json!(round(percentile(&ttft, 0.5)));
        output["http_ms_to_first_token_p99"] = json!(round(percentile(&ttft, 0.99)));
    }
    println!("{output}");
    Ok(ExitCode::SUCCESS)
}

/// The same streams through the server on a free local port: each a streamed
/// `/v1/completions` of its prompt ids (greedy, `ignore_eos`, usage at the end) read to
/// `[DONE]`. Returns the aggregate decode rate and each stream's time to its first text chunk.
fn http_streams(
    engine: GenerationEngine,
    prompts: &[Vec<u32>],
    gen_tokens: usize,
) -> Result<(f64, Vec<f64>), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/v1/completions", listener.local_addr()?);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::llm::serve_on(
            listener,
            engine,
            ServerConfig::default(),
            async {
                let _ = stop_rx.await;
            },
        ));
        let client = reqwest::Client::builder().build()?;
        let one = |prompt: Vec<u32>| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let body = json!({
                    "prompt": prompt, "max_tokens": gen_tokens, "temperature": 0,
                    "ignore_eos": true, "stream": true,
                    "stream_options": {"include_usage": true},
                });
                let started = Instant::now();
                let text_of = |e: reqwest::Error| e.to_string();
                let mut response = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .map_err(text_of)?;
                if !response.status().is_success() {
                    let status = response.status();
                    return Err(format!(
                        "{status}: {}",
                        response.text().await.map_err(text_of)?
                    ));
                }
                let (mut first, mut text) = (None, String::new());
                while let Some(chunk) = response.chunk().await.map_err(text_of)? {
                    let piece = String::from_utf8_lossy(&chunk);
                    if first.is_none() && piece.contains("\"text\"") {
                        first = Some(started.elapsed().as_secs_f64() * 1e3);
                    }
                    text.push_str(&piece);
                }
                let tokens = usage_tokens(&text).ok_or("no usage chunk in the stream")?;
                Ok::<_, String>((tokens, first.unwrap_or(0.0)))
            }
        };
        one(prompts[0].clone()).await?; // warm-up
        let started = Instant::now();
        let tasks: Vec<_> = prompts
            .iter()
            .map(|p| tokio::spawn(one(p.clone())))
            .collect();
        let (mut generated, mut ttft) = (0, Vec::new());
        for task in tasks {
            let (tokens, first) = task.await.map_err(|e| e.to_string())??;
            generated += tokens;
            ttft.push(first);
        }
        let rate = generated as f64 / started.elapsed().as_secs_f64();
        let _ = stop_tx.send(());
        server.await??;
        ttft.sort_by(f64::total_cmp);
        Ok((rate, ttft))
    })
}

/// `usage.completion_tokens` of the last usage chunk in an SSE body.
fn usage_tokens(body: &str) -> Option<usize> {
    body.lines()
        .rev()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find_map(|chunk| chunk["usage"]["completion_tokens"].as_u64())
        .map(|n| n as usize)
}
