//! The built-in corpus of `hipinfer chaos`: texts of many lengths, scripts and shapes, drawn
//! reproducibly from a seed — short phrases, long paragraphs cut at the input limit, numbers,
//! punctuation, accents, CJK, emoji.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const FRAGMENTS: &[&str] = &[
    "The quick brown fox jumps over the lazy dog.",
    "GPU faults are survived without losing a request.",
    "Rust makes systems programming safer.",
    "A sentence embedding maps text to a vector.",
    "Retry with exponential backoff and full jitter.",
    "The circuit breaker opened after five failures.",
    "Out of memory: free the cache and try again.",
    "An illegal address poisons the whole context.",
    "Bonjour, comment allez-vous aujourd'hui ?",
    "Größere Modelle brauchen mehr Speicher.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "東京は日本の首都です。",
    "机器学习模型需要大量数据。",
    "서울은 한국의 수도입니다.",
    "हिंदी एक सुंदर भाषा है।",
    "مرحبا بالعالم",
    "Emoji work too 🚀🔥✨ and so do symbols ∑ ∫ √.",
    "Prices: $19.99, €5, ¥1000; dates: 2026-11-28.",
    "e-mail someone@example.com or visit https://example.com/path?q=1",
    "Line one\nline two\ttabbed",
    "UPPER lower MiXeD CaSe",
    "naïve café résumé coöperate",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15",
    "What is the capital of France?",
    "Embeddings of similar sentences are close.",
];

/// `count` texts, each made of 1 to 40 fragments (some past 256 tokens), from `seed`.
pub fn corpus(count: usize, seed: u64) -> Vec<String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let pieces = match rng.random_range(0..10) {
                0..=5 => rng.random_range(1..=2),
                6..=8 => rng.random_range(3..=8),
                _ => rng.random_range(20..=40),
            };
            (0..pieces)
                .map(|_| FRAGMENTS[rng.random_range(0..FRAGMENTS.len())])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_corpus() {
        assert_eq!(corpus(50, 7), corpus(50, 7));
        assert_ne!(corpus(50, 7), corpus(50, 8));
        assert!(
            corpus(200, 1).iter().any(|t| t.len() > 1500),
            "some long texts"
        );
    }
}
