#!/usr/bin/env python3
"""Writes tests/fixtures/multilingual_tokens.json: token ids of texts in many scripts and emoji,
computed by Hugging Face's own `tokenizers` (Python) from the model's tokenizer.json, with the
file's fixed padding off and truncation at 256 — the reference the Rust tokenizer must match.

usage: python3 -m pip install tokenizers && scripts/make-token-fixture.py [MODEL_DIR]
"""
import json
import pathlib
import sys

import tokenizers

root = pathlib.Path(__file__).resolve().parent.parent
model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else root / "models" / "all-MiniLM-L6-v2"
texts = [
    "Grüße aus München — naïve café, façade.",
    "Привет, как дела?",
    "これは日本語の文です。",
    "这是一个中文句子。",
    "안녕하세요 세계",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "Γειά σου Κόσμε",
    "I ❤️ Rust 🦀🚀 and emoji 👍🏽!",
    "tabs\tand\nnewlines\r\nand   spaces",
    "",
    "ÀÉÎÕÜ ß æ ø å",
    "$12.50 + 3% = ??? #hash @user http://example.com/a?b=c",
]
tokenizer = tokenizers.Tokenizer.from_file(str(model / "tokenizer.json"))
tokenizer.no_padding()
tokenizer.enable_truncation(max_length=256)
cases = [{"text": t, "ids": tokenizer.encode(t).ids} for t in texts]
out = root / "tests" / "fixtures" / "multilingual_tokens.json"
out.write_text(json.dumps({"tokenizers": tokenizers.__version__, "cases": cases}, ensure_ascii=False, indent=1) + "\n")
print(f"wrote {out} ({len(cases)} cases)")
