//! The tokenizer of a GGUF file (SmolLM2's GPT-2 byte-level BPE, built with `tokenizers`): ids
//! equal to transformers' on every prompt of `../shared/fixtures/smollm2_golden.json`
//! (multilingual and emoji included), and the greedy continuations decoded to the fixture's text.

mod support;

use std::path::Path;

use hipinfer::gguf::{Gguf, GgufFile};
use hipinfer::llm::{ChatMessage, ChatTemplate, GgufTokenizer, StreamDecoder};
use support::gguf_writer::{file, string};

fn smollm2() -> Option<GgufFile> {
    support::smollm2_gguf().map(|path| GgufFile::open(path).unwrap())
}

use support::{fixture_ids as ids, smollm2_fixture as fixture};

#[test]
fn prompt_ids_and_decoded_continuations_equal_transformers() {
    let Some(file) = smollm2() else { return };
    let gguf = file.parsed().unwrap();
    let tokenizer = GgufTokenizer::from_gguf(&gguf).unwrap();
    let template = ChatTemplate::from_gguf(&gguf)
        .unwrap()
        .expect("SmolLM2 has a chat template");
    assert_eq!(tokenizer.vocab_size(), 49152);
    let fixture = fixture();
    let mut checked = 0;
    for case in fixture["cases"].as_array().unwrap() {
        let prompt = match case["prompt"].as_str() {
            Some(prompt) => prompt.to_string(),
            // A chat case: rendered with the file's template (the control tokens it writes
            // must then be matched whole).
            None => {
                let messages: Vec<ChatMessage> =
                    serde_json::from_value(case["chat"].clone()).unwrap();
                let rendered = template.render(&messages, true).unwrap();
                assert_eq!(
                    rendered,
                    format!(
                        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained \
                         by Hugging Face<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n\
                         <|im_start|>assistant\n",
                        messages[0].content
                    )
                );
                rendered
            }
        };
        let id = case["id"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(&prompt).unwrap(),
            ids(&case["prompt_ids"]),
            "case {id}"
        );
        let text = tokenizer.decode(&ids(&case["greedy_ids"]), true).unwrap();
        assert_eq!(text, case["greedy_text"].as_str().unwrap(), "case {id}");
        // Streamed one token at a time: the same text, and never half a character on the way
        // (the unicode case's continuation ends inside an emoji: only the end shows it).
        let mut stream = StreamDecoder::new(&tokenizer);
        let mut streamed = String::new();
        for &token in &ids(&case["greedy_ids"]) {
            let piece = stream.push(token).unwrap();
            assert!(!piece.contains('\u{FFFD}'), "case {id}: {piece:?}");
            streamed.push_str(&piece);
        }
        streamed.push_str(&stream.finish().unwrap());
        assert_eq!(streamed, text, "case {id}");
        checked += 1;
    }
    assert_eq!(checked, 5);
    assert_eq!(tokenizer.eos, Some(2));
}

#[test]
fn a_gguf_without_a_usable_tokenizer_is_named() {
    let cases = [
        (vec![], "tokenizer.ggml.model: missing"),
        (
            vec![("tokenizer.ggml.model", string("llama"))],
            "\"llama\" is not supported",
        ),
        (
            vec![("tokenizer.ggml.model", string("gpt2"))],
            "tokenizer.ggml.tokens: missing",
        ),
    ];
    for (metadata, needle) in cases {
        let bytes = file(&metadata, &[]);
        let gguf = Gguf::parse(&bytes, Path::new("t.gguf")).unwrap();
        let error = GgufTokenizer::from_gguf(&gguf).unwrap_err().to_string();
        assert!(error.contains(needle), "{needle}: {error}");
    }
}

#[test]
fn chat_templates_render_system_prompts_and_refuse_broken_templates() {
    let template = ChatTemplate::new(
        "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}\
         {% if add_generation_prompt %}[assistant]{% endif %}{{ eos_token }}"
            .into(),
        "<s>".into(),
        "</s>".into(),
    )
    .unwrap();
    let messages = [
        ChatMessage::new("system", "be brief"),
        ChatMessage::new("user", "hi"),
    ];
    assert_eq!(
        template.render(&messages, true).unwrap(),
        "[system] be brief\n[user] hi\n[assistant]</s>"
    );
    let error = ChatTemplate::new("{% for %}".into(), String::new(), String::new()).unwrap_err();
    assert!(
        error.to_string().contains("tokenizer.chat_template"),
        "{error}"
    );
    let raising = ChatTemplate::new(
        "{{ raise_exception('roles must alternate') }}".into(),
        String::new(),
        String::new(),
    )
    .unwrap();
    let error = raising.render(&messages, false).unwrap_err().to_string();
    assert!(error.contains("roles must alternate"), "{error}");
}
