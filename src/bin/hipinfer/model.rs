//! `embed` and the model bench: the model on a backend, without the engine's queue.

use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hipinfer::backend::{self, Backend, Dtype, SelectedBackend};
use hipinfer::chaos::percentile;
use hipinfer::engine::EngineConfig;
use hipinfer::model::{Embedder, Encoding, Model};
use serde_json::json;

use crate::args::{BenchArgs, Common, EmbedArgs};
use crate::progress::Progress;
use crate::Failure;

/// Loads the model and runs `job` on the chosen backend.
fn with_embedder(
    common: &Common,
    job: &mut dyn FnMut(&dyn EmbedJob) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let model = Arc::new(Model::load(common.model_dir())?);
    // The engine's own rules: reduced precisions choose the CPU under `auto`, refuse `hip`.
    let config = EngineConfig {
        backend: common.backend(),
        dtype: common.dtype(),
        ..EngineConfig::default()
    };
    config.validate()?;
    let spec = config.runner_spec();
    match backend::open(spec.backend, common.device(), common.threads)? {
        SelectedBackend::Cpu(cpu) => job(&Embedder::with_dtype(model, cpu, spec.dtype)?),
        #[cfg(feature = "hip")]
        SelectedBackend::Hip(hip) => job(&Embedder::with_dtype(model, hip, spec.dtype)?),
        #[cfg(feature = "cuda")]
        SelectedBackend::Cuda(cuda) => job(&Embedder::with_dtype(model, cuda, spec.dtype)?),
    }
}

/// What the commands need of an embedder, whatever its backend.
trait EmbedJob {
    fn model(&self) -> &Model;
    fn backend_name(&self) -> &'static str;
    fn threads(&self) -> u32;
    fn dtype(&self) -> Dtype;
    /// The CPU's model and the vector instructions the kernels use.
    fn arch(&self) -> String;
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

    fn dtype(&self) -> Dtype {
        Embedder::dtype(self)
    }

    fn arch(&self) -> String {
        let info = self.backend().info();
        format!("{} ({})", info.name, info.arch)
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

pub fn embed(args: EmbedArgs) -> Result<ExitCode, Failure> {
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
    })?;
    Ok(ExitCode::SUCCESS)
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

pub fn bench(args: BenchArgs) -> Result<ExitCode, Failure> {
    if args.batch == 0 || args.seq < 2 {
        return Err("--batch must be at least 1 and --seq at least 2 ([CLS] and [SEP])".into());
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err("--seconds must be a positive number".into());
    }
    // The model bench runs no engine, but takes its model and device from a --config file too.
    let common = match &args.engine.config {
        Some(_) => {
            let config = args.engine.engine_config(&args.common)?;
            Common {
                model: Some(config.model),
                backend: Some(config.backend),
                device: Some(config.device),
                threads: config.threads,
                dtype: Some(config.dtype),
            }
        }
        None => args.common.clone(),
    };
    with_embedder(&common, &mut |embedder| {
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
        let progress = Progress::new("bench");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs_f64(args.seconds) || times.len() < 3 {
            let t = Instant::now();
            embedder.embed(&batch, true)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            let elapsed = started.elapsed().as_secs_f64();
            if elapsed < args.seconds {
                progress.seconds(elapsed, args.seconds);
            }
        }
        progress.seconds(args.seconds, args.seconds);
        let total_ms: f64 = times.iter().sum();
        times.sort_by(f64::total_cmp);
        let output = json!({
            "batch": args.batch,
            "seq": args.seq,
            "threads": embedder.threads(),
            "backend": embedder.backend_name(),
            "dtype": embedder.dtype().as_str(),
            "arch": embedder.arch(),
            "batches": times.len(),
            "tokens_per_second": (args.batch * args.seq * times.len()) as f64 / (total_ms / 1e3),
            "ms_per_batch_median": percentile(&times, 0.5),
            "ms_per_batch_p90": percentile(&times, 0.9),
        });
        println!("{output}");
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
