//! `hipinfer`: embed texts, benchmark, and describe the machine — a thin user of the library.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use hipinfer::backend::{self, Backend, BackendChoice, SelectedBackend};
use hipinfer::model::{Embedder, Encoding, Model, DEFAULT_MODEL_DIR};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "hipinfer",
    version,
    about = "Sentence embeddings on AMD GPUs (HIP) or the CPU, surviving GPU faults"
)]
struct Cli {
    /// Log filter (tracing's syntax: warn, info, hipinfer=debug, …); logs go to stderr.
    #[arg(long, env = "HIPINFER_LOG", default_value = "warn", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed texts and print one JSON object with the embeddings and token ids.
    Embed(EmbedArgs),
    /// Time batches of synthetic inputs of an exact length and print one JSON line.
    Bench(BenchArgs),
    /// Show the backends available, the devices found (or why none) and the build's HIP archs.
    Info(InfoArgs),
}

#[derive(Args)]
struct Common {
    /// The Hugging Face model folder.
    #[arg(long, env = "HIPINFER_MODEL", default_value = DEFAULT_MODEL_DIR)]
    model: PathBuf,
    /// auto (HIP if a device answers, else CPU), cpu or hip.
    #[arg(long, env = "HIPINFER_BACKEND", default_value = "auto")]
    backend: BackendChoice,
    /// The GPU to use.
    #[arg(long, env = "HIPINFER_DEVICE", default_value_t = 0)]
    device: i32,
    /// CPU backend threads (default: one per core).
    #[arg(long, env = "HIPINFER_THREADS")]
    threads: Option<usize>,
}

#[derive(Args)]
struct EmbedArgs {
    #[command(flatten)]
    common: Common,
    /// Return the raw mean-pooled vectors instead of unit-length ones.
    #[arg(long, env = "HIPINFER_NO_NORMALIZE")]
    no_normalize: bool,
    /// Read the texts from standard input, one JSON string per line (so any text, newlines
    /// included, can be given).
    #[arg(long)]
    stdin: bool,
    /// The texts to embed.
    texts: Vec<String>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    common: Common,
    /// Sequences per batch.
    #[arg(long, env = "HIPINFER_BENCH_BATCH", default_value_t = 32)]
    batch: usize,
    /// Tokens per sequence, [CLS] and [SEP] included.
    #[arg(long, env = "HIPINFER_BENCH_SEQ", default_value_t = 128)]
    seq: usize,
    /// How long to measure, after the warm-up.
    #[arg(long, env = "HIPINFER_BENCH_SECONDS", default_value_t = 10.0)]
    seconds: f64,
}

#[derive(Args)]
struct InfoArgs {
    /// The GPU to probe.
    #[arg(long, env = "HIPINFER_DEVICE", default_value_t = 0)]
    device: i32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Embed(args) => embed(args),
        Command::Bench(args) => bench(args),
        Command::Info(args) => info(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

type Failure = Box<dyn std::error::Error>;

/// Loads the model and runs `job` on the chosen backend.
fn with_embedder(
    common: &Common,
    job: &mut dyn FnMut(&dyn EmbedJob) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let model = Arc::new(Model::load(&common.model)?);
    match backend::open(common.backend, common.device, common.threads)? {
        SelectedBackend::Cpu(cpu) => job(&Embedder::new(model, cpu)?),
        #[cfg(feature = "hip")]
        SelectedBackend::Hip(hip) => job(&Embedder::new(model, hip)?),
    }
}

/// What the commands need of an embedder, whatever its backend.
trait EmbedJob {
    fn model(&self) -> &Model;
    fn backend_name(&self) -> &'static str;
    fn threads(&self) -> u32;
    fn embed(&self, batch: &[Encoding], normalize: bool) -> Result<Vec<Vec<f32>>, Failure>;
}

impl<B: Backend> EmbedJob for Embedder<B> {
    fn model(&self) -> &Model {
        Embedder::model(self)
    }

    fn backend_name(&self) -> &'static str {
        self.backend().info().backend
    }

    fn threads(&self) -> u32 {
        self.backend().info().compute_units
    }

    fn embed(&self, batch: &[Encoding], normalize: bool) -> Result<Vec<Vec<f32>>, Failure> {
        Ok(self.embed_encodings(batch, normalize)?)
    }
}

fn read_stdin_texts() -> Result<Vec<String>, Failure> {
    let mut texts = Vec::new();
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let text: String = serde_json::from_str(&line).map_err(|e| {
            format!(
                "stdin line {}: expected a JSON string like \"some text\" ({e})",
                number + 1
            )
        })?;
        texts.push(text);
    }
    Ok(texts)
}

fn embed(args: EmbedArgs) -> Result<(), Failure> {
    let mut texts = args.texts;
    if args.stdin {
        texts.extend(read_stdin_texts()?);
    }
    if texts.is_empty() {
        return Err("no text to embed: pass TEXT arguments or --stdin".into());
    }
    with_embedder(&args.common, &mut |embedder| {
        let batch = embedder.model().tokenize(&texts)?;
        let embeddings = embedder.embed(&batch, !args.no_normalize)?;
        let output = json!({
            "model": embedder.model().name(),
            "backend": embedder.backend_name(),
            "dimensions": embedder.model().dimensions(),
            "embeddings": embeddings,
            "input_ids": batch.iter().map(|e| &e.ids).collect::<Vec<_>>(),
        });
        println!("{output}");
        Ok(())
    })
}

/// `batch` inputs of exactly `seq` tokens: the tokenizer's own [CLS] and [SEP] around ids cycling
/// through the vocabulary (past its first 1000 entries, the special and unused ones, when it has
/// more than 2000).
fn synthetic_batch(model: &Model, batch: usize, seq: usize) -> Result<Vec<Encoding>, Failure> {
    let frame = model.tokenize(&[""])?.remove(0).ids;
    let (cls, sep) = match frame.as_slice() {
        [cls, sep] => (*cls, *sep),
        _ => return Err("the tokenizer does not frame an empty text as [CLS] [SEP]".into()),
    };
    let vocab = model.config().bert.vocab_size;
    let first = if vocab > 2000 { 1000 } else { 0 };
    Ok((0..batch)
        .map(|b| {
            let mut ids = Vec::with_capacity(seq);
            ids.push(cls);
            ids.extend(
                (1..seq - 1).map(|t| (first + (b * 7919 + t * 104_729) % (vocab - first)) as u32),
            );
            ids.push(sep);
            Encoding {
                type_ids: vec![0; ids.len()],
                ids,
            }
        })
        .collect())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn bench(args: BenchArgs) -> Result<(), Failure> {
    if args.batch == 0 || args.seq < 2 {
        return Err("--batch must be at least 1 and --seq at least 2 ([CLS] and [SEP])".into());
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err("--seconds must be a positive number".into());
    }
    with_embedder(&args.common, &mut |embedder| {
        let max = embedder.model().config().max_seq_length;
        if args.seq > max {
            return Err(format!(
                "--seq {} is longer than the model's max_seq_length {max}",
                args.seq
            )
            .into());
        }
        let batch = synthetic_batch(embedder.model(), args.batch, args.seq)?;
        for _ in 0..2 {
            embedder.embed(&batch, true)?; // warm-up: caches, allocator, thread pool
        }
        let mut times = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs_f64(args.seconds) || times.len() < 3 {
            let t = Instant::now();
            embedder.embed(&batch, true)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let total_ms: f64 = times.iter().sum();
        times.sort_by(f64::total_cmp);
        let output = json!({
            "batch": args.batch,
            "seq": args.seq,
            "threads": embedder.threads(),
            "backend": embedder.backend_name(),
            "batches": times.len(),
            "tokens_per_second": (args.batch * args.seq * times.len()) as f64 / (total_ms / 1e3),
            "ms_per_batch_median": percentile(&times, 0.5),
            "ms_per_batch_p90": percentile(&times, 0.9),
        });
        println!("{output}");
        Ok(())
    })
}

fn info(args: InfoArgs) -> Result<(), Failure> {
    let hip = match backend::probe_hip(args.device) {
        Ok(device) => {
            json!({"available": true, "device": device.device, "name": device.name, "arch": device.arch,
                              "memory_bytes": device.total_memory, "compute_units": device.compute_units})
        }
        Err(error) => json!({"available": false, "reason": error.to_string()}),
    };
    let cpu = hipinfer::backend::CpuBackend::new()?.info();
    let output = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "backends": {
            "cpu": {"available": true, "arch": cpu.arch, "threads": cpu.compute_units},
            "hip": hip,
        },
        "hip_compiled": backend::HIP_COMPILED,
        "hip_archs": backend::hip_archs(),
    });
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}
