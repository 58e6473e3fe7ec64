//! Bounded tokenization: an input longer than what truncation keeps never reaches the tokenizer
//! whole, and the tokens kept are exactly those a whole-text tokenization keeps — on the golden
//! sentences and long multilingual texts, truncating on the right and on the left — while the
//! memory a 1.9 MB input costs stays bounded (a counting allocator measures it).
//!
//! Needs the model (`scripts/fetch-model.sh`); without it the tests say SKIPPED, unless
//! `HIPINFER_REQUIRE_MODEL=1` (CI), which makes them fail.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use hipinfer::model::{LongInput, Model, TextTokenizer, Truncation, DEFAULT_MODEL_DIR};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams};

/// Counts the bytes allocated now and at the peak.
struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator unchanged; the counters are only
// statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The tests measure memory: one at a time.
static ONE_AT_A_TIME: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// The bytes allocated beyond the start while `f` runs, at the peak.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = NOW.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let value = f();
    (value, PEAK.load(Ordering::Relaxed).saturating_sub(start))
}

fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var("HIPINFER_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_MODEL_DIR));
    if dir.join("tokenizer.json").is_file() {
        return Some(dir);
    }
    if std::env::var_os("HIPINFER_REQUIRE_MODEL").is_some_and(|v| v == "1") {
        panic!(
            "the model is required (HIPINFER_REQUIRE_MODEL=1) but {} has no tokenizer.json",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: no model at {}; run scripts/fetch-model.sh",
        dir.display()
    );
    None
}

/// The tokenizer as the engine holds it (256 tokens), and the same file whole, as Hugging
/// Face's tokenizer truncates it after tokenizing everything.
fn tokenizers() -> Option<(Model, impl Fn(&str, Truncation) -> Vec<u32>)> {
    let dir = model_dir()?;
    let model = Model::load(&dir).unwrap();
    let reference = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let full = move |text: &str, direction: Truncation| {
        let mut tokenizer = reference.clone();
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: 256,
                direction: match direction {
                    Truncation::Right => TruncationDirection::Right,
                    Truncation::Left => TruncationDirection::Left,
                },
                ..TruncationParams::default()
            }))
            .unwrap();
        tokenizer.encode(text, true).unwrap().get_ids().to_vec()
    };
    Some((model, full))
}

fn bounded(tokenizer: &TextTokenizer, text: &str, direction: Truncation) -> Vec<u32> {
    tokenizer
        .encode_within(0, text, 256, LongInput::Truncate(direction))
        .unwrap()
        .0
        .ids
}

#[derive(serde::Deserialize)]
struct Golden {
    sentences: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
}

#[derive(serde::Deserialize)]
struct Multilingual {
    cases: Vec<Case>,
}

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_tokens_kept_are_those_of_a_whole_text_tokenization() {
    let _serial = ONE_AT_A_TIME.lock();
    let Some((model, full)) = tokenizers() else {
        return;
    };
    let tokenizer = model.tokenizer().unwrap();
    let golden: Golden = fixture("minilm_golden.json");
    let multilingual: Multilingual = fixture("multilingual_tokens.json");
    let mut texts: Vec<String> = golden.sentences.clone();
    texts.extend(multilingual.cases.iter().map(|c| c.text.clone()));
    // Long texts: every sentence repeated past any window, joined in every way that moves the
    // window's edge through words, punctuation, emoji and scripts without spaces.
    let all = texts.join(" ");
    let mut long = vec![
        all.repeat(60),
        texts.concat().repeat(60),
        format!("{}{}", "x".repeat(3000), all.repeat(40)),
        "日本語の文です。".repeat(2000),
        "🦀".repeat(9000) + &all,
        all.repeat(37) + &"é".repeat(5000),
    ];
    for (i, sentence) in texts.iter().enumerate() {
        long.push(format!("{} {}", sentence.repeat(400 + i), all));
    }
    for text in texts.iter().chain(&long) {
        for direction in [Truncation::Right, Truncation::Left] {
            assert_eq!(
                bounded(tokenizer, text, direction),
                full(text, direction),
                "{direction:?}, a text of {} bytes starting {:?}",
                text.len(),
                text.chars().take(40).collect::<String>()
            );
        }
    }
}

#[test]
fn a_two_megabyte_input_costs_a_bounded_amount_of_memory() {
    let _serial = ONE_AT_A_TIME.lock();
    let Some((model, full)) = tokenizers() else {
        return;
    };
    let tokenizer = model.tokenizer().unwrap();
    let text = "The quick brown fox jumps over the lazy dog, again and again. ".repeat(30_000);
    assert!(text.len() > 1_800_000);
    let (ids, bounded_peak) = peak_of(|| bounded(tokenizer, &text, Truncation::Right));
    let (expected, full_peak) = peak_of(|| full(&text, Truncation::Right));
    assert_eq!(ids, expected, "the same tokens");
    assert_eq!(ids.len(), 256);
    eprintln!(
        "peak allocation for a {} byte input: bounded {} KB, whole {} KB",
        text.len(),
        bounded_peak / 1024,
        full_peak / 1024
    );
    assert!(bounded_peak < 4 << 20, "bounded: {bounded_peak} bytes");
    assert!(full_peak > 50 * bounded_peak, "whole: {full_peak} bytes");

    // The worst case for the window: no word boundary at all (one giant [UNK] word) — cut at
    // the largest window, never tokenized whole.
    let giant = "a".repeat(1_900_000);
    let (ids, giant_peak) = peak_of(|| bounded(tokenizer, &giant, Truncation::Right));
    assert_eq!(
        ids,
        full(&giant, Truncation::Right),
        "[CLS] [UNK] [SEP] either way"
    );
    assert!(giant_peak < 64 << 20, "giant: {giant_peak} bytes");

    // Refused early with truncation off, without tokenizing it all.
    let (refused, refuse_peak) =
        peak_of(|| tokenizer.encode_within(0, &text, 256, LongInput::Refuse));
    assert!(refused.is_err());
    assert!(refuse_peak < 4 << 20, "refusal: {refuse_peak} bytes");
}
