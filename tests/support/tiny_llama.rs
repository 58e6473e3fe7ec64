//! A tiny llama-architecture GGUF written by the tests (2 layers, d 64, 4 heads over 2 KV heads,
//! SwiGLU 96, context 64, a byte-level vocabulary of 258 with `<|im_start|>`/`<|im_end|>`),
//! random weights from a seed: Q8_0 token embedding tied to the output, Q4_1 products, F32
//! norms — SmolLM2's layout in miniature. `edit` changes the metadata or tensors before writing.
#![allow(dead_code)]

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::gguf_writer::{f32_value, file, string, strings, u32_value, Tensor};

pub const VOCAB: usize = 258;
pub const HIDDEN: usize = 64;
pub const FF: usize = 96;
pub const CONTEXT: u32 = 64;

/// GPT-2's byte-to-character map (the byte-level alphabet).
fn byte_alphabet() -> Vec<String> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    let mut by_byte: Vec<(u32, u32)> = printable.into_iter().zip(chars).collect();
    by_byte.sort();
    by_byte
        .into_iter()
        .map(|(_, c)| char::from_u32(c).unwrap().to_string())
        .collect()
}

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

/// `n × k` random values as Q4_1 blocks.
fn q4_1(rng: &mut SmallRng, n: usize, k: usize, scale: f32) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n * k / 32 {
        out.extend_from_slice(&f16_bytes(scale * rng.random_range(0.5..1.0) / 8.0));
        out.extend_from_slice(&f16_bytes(-scale * rng.random_range(0.5..1.0)));
        for _ in 0..16 {
            out.push(rng.random());
        }
    }
    out
}

/// `n × k` random values as Q8_0 blocks.
fn q8_0(rng: &mut SmallRng, n: usize, k: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n * k / 32 {
        out.extend_from_slice(&f16_bytes(rng.random_range(0.005..0.02)));
        for _ in 0..32 {
            out.push(rng.random_range(-127i8..=127) as u8);
        }
    }
    out
}

fn f32s(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values.flat_map(f32::to_le_bytes).collect()
}

/// The file's bytes; `edit` may change metadata and tensors first.
pub fn bytes_with(
    seed: u64,
    edit: impl FnOnce(&mut Vec<(&'static str, (u32, Vec<u8>))>, &mut Vec<Tensor>),
) -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut tokens = byte_alphabet();
    tokens.push("<|im_start|>".into());
    tokens.push("<|im_end|>".into());
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut types = 5u32.to_le_bytes().to_vec(); // array of i32
    types.extend_from_slice(&(VOCAB as u64).to_le_bytes());
    for i in 0..VOCAB {
        types.extend_from_slice(&(if i >= 256 { 3i32 } else { 1 }).to_le_bytes());
    }
    let mut metadata = vec![
        ("general.architecture", string("llama")),
        ("llama.block_count", u32_value(2)),
        ("llama.context_length", u32_value(CONTEXT)),
        ("llama.embedding_length", u32_value(HIDDEN as u32)),
        ("llama.feed_forward_length", u32_value(FF as u32)),
        ("llama.attention.head_count", u32_value(4)),
        ("llama.attention.head_count_kv", u32_value(2)),
        ("llama.rope.freq_base", f32_value(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", f32_value(1e-5)),
        ("tokenizer.ggml.model", string("gpt2")),
        ("tokenizer.ggml.tokens", strings(&token_refs)),
        ("tokenizer.ggml.merges", strings(&[])),
        ("tokenizer.ggml.token_type", (9, types)),
        ("tokenizer.ggml.eos_token_id", u32_value(257)),
    ];
    let (q, kv) = (HIDDEN, HIDDEN / 2);
    let mut tensors = vec![Tensor {
        name: "token_embd.weight".into(),
        dims: vec![HIDDEN as u64, VOCAB as u64],
        kind: 8,
        data: q8_0(&mut rng, VOCAB, HIDDEN),
    }];
    for l in 0..2 {
        let name = |part: &str| format!("blk.{l}.{part}.weight");
        let norm = |rng: &mut SmallRng| f32s((0..HIDDEN).map(|_| rng.random_range(0.8..1.2)));
        let matrix = |rng: &mut SmallRng, part: &str, n: usize, k: usize| Tensor {
            name: name(part),
            dims: vec![k as u64, n as u64],
            kind: 3,
            data: q4_1(rng, n, k, 1.0 / (k as f32).sqrt()),
        };
        tensors.push(Tensor {
            name: name("attn_norm"),
            dims: vec![HIDDEN as u64],
            kind: 0,
            data: norm(&mut rng),
        });
        tensors.push(matrix(&mut rng, "attn_q", q, HIDDEN));
        tensors.push(matrix(&mut rng, "attn_k", kv, HIDDEN));
        tensors.push(matrix(&mut rng, "attn_v", kv, HIDDEN));
        tensors.push(matrix(&mut rng, "attn_output", HIDDEN, q));
        tensors.push(Tensor {
            name: name("ffn_norm"),
            dims: vec![HIDDEN as u64],
            kind: 0,
            data: norm(&mut rng),
        });
        tensors.push(matrix(&mut rng, "ffn_gate", FF, HIDDEN));
        tensors.push(matrix(&mut rng, "ffn_up", FF, HIDDEN));
        tensors.push(matrix(&mut rng, "ffn_down", HIDDEN, FF));
    }
    tensors.push(Tensor {
        name: "output_norm.weight".into(),
        dims: vec![HIDDEN as u64],
        kind: 0,
        data: f32s((0..HIDDEN).map(|_| 1.0)),
    });
    edit(&mut metadata, &mut tensors);
    file(&metadata, &tensors)
}

/// The tiny model written to `dir/name`.
pub fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A directory of its own under the target dir for one test.
pub fn scratch(test: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
