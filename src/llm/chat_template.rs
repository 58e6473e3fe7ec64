//! The chat template a GGUF file carries (`tokenizer.chat_template`, Jinja as Hugging Face
//! writes it), rendered with `minijinja`: messages in, the prompt text the model was trained
//! on out.

use minijinja::{Environment, ErrorKind};

use crate::gguf::{Gguf, Value};

use super::TokenizerError;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

const NAME: &str = "tokenizer.chat_template";

fn bad(message: impl Into<String>) -> TokenizerError {
    TokenizerError {
        field: NAME.to_string(),
        message: message.into(),
    }
}

impl ChatTemplate {
    /// The file's template; `None` when it has none. A template that does not compile is an
    /// error naming it.
    pub fn from_gguf(gguf: &Gguf<'_>) -> Result<Option<ChatTemplate>, TokenizerError> {
        let Some(source) = gguf.get(NAME) else {
            return Ok(None);
        };
        let source = source
            .as_str()
            .ok_or_else(|| bad("is not a string"))?
            .to_string();
        let token_text = |key: &str| -> String {
            let id = gguf.get(key).and_then(Value::as_u64);
            let tokens = gguf.get("tokenizer.ggml.tokens").and_then(Value::as_array);
            match (id, tokens) {
                (Some(id), Some(tokens)) => tokens
                    .get(id as usize)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                _ => String::new(),
            }
        };
        ChatTemplate::new(
            source,
            token_text("tokenizer.ggml.bos_token_id"),
            token_text("tokenizer.ggml.eos_token_id"),
        )
        .map(Some)
    }

    /// Compiles `source` (Hugging Face's dialect: `raise_exception` is defined).
    pub fn new(
        source: String,
        bos_token: String,
        eos_token: String,
    ) -> Result<ChatTemplate, TokenizerError> {
        let mut env = Environment::new();
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", source)
            .map_err(|e| bad(format!("does not compile: {e}")))?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
        })
    }

    /// The prompt for `messages`, ending with the assistant's turn opened when
    /// `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| bad(e.to_string()))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| bad(format!("rendering failed: {e}")))
    }
}
