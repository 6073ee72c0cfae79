//! Counting tokens, to fit prompts into a model's context: OpenAI's model families with their
//! own tokenizers (tiktoken), every other model with a byte estimate that errs on the long side.

use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

/// Counts tokens the way one model would.
pub struct Counter {
    bpe: Option<&'static CoreBPE>,
}

impl Counter {
    pub fn for_model(model: &str) -> Self {
        let bpe = match get_tokenizer(model) {
            Some(Tokenizer::O200kBase | Tokenizer::O200kHarmony) => Some(tiktoken_rs::o200k_base_singleton()),
            Some(Tokenizer::Cl100kBase) => Some(tiktoken_rs::cl100k_base_singleton()),
            Some(Tokenizer::P50kBase | Tokenizer::P50kEdit) => Some(tiktoken_rs::p50k_base_singleton()),
            Some(Tokenizer::R50kBase | Tokenizer::Gpt2) => Some(tiktoken_rs::r50k_base_singleton()),
            None => None,
        };
        Self { bpe }
    }

    /// Tokens in `text`: exact for OpenAI's families; otherwise one per three bytes, which
    /// over-counts English prose and code for the tokenizers of open models.
    pub fn count(&self, text: &str) -> usize {
        match self.bpe {
            Some(bpe) => bpe.encode_ordinary(text).len(),
            None => text.len().div_ceil(3),
        }
    }

    /// Whether the count is exact (a tokenizer) or an estimate.
    pub fn exact(&self) -> bool {
        self.bpe.is_some()
    }
}

/// The context length of a model, in tokens, for the families whose size is well known; a
/// conservative 8192 for anything else (set `context_tokens` in `[agent]` to say otherwise).
pub fn context_tokens(model: &str) -> u32 {
    let m = model.to_ascii_lowercase();
    let known: [(&str, u32); 14] = [
        ("gpt-4.1", 1_000_000),
        ("gpt-5", 400_000),
        ("gpt-4o", 128_000),
        ("o1", 200_000),
        ("o3", 200_000),
        ("o4", 200_000),
        ("gpt-4-turbo", 128_000),
        ("gpt-3.5", 16_385),
        ("gpt-4", 8_192),
        ("claude", 200_000),
        ("qwen", 32_768),
        ("llama-3", 128_000),
        ("deepseek", 64_000),
        ("smollm", 8_192),
    ];
    known
        .iter()
        .find(|(prefix, _)| m.starts_with(prefix) || m.contains(&format!("/{prefix}")))
        .map_or(8_192, |(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_models_count_exactly_others_estimate() {
        let gpt = Counter::for_model("gpt-4o-mini");
        assert!(gpt.exact());
        assert_eq!(gpt.count("hello world"), 2);
        let local = Counter::for_model("SmolLM2-135M-Instruct");
        assert!(!local.exact());
        assert_eq!(local.count("hello world"), 4);
        assert_eq!(context_tokens("gpt-4o-mini"), 128_000);
        assert_eq!(context_tokens("openai/gpt-4o"), 128_000);
        assert_eq!(context_tokens("something-new"), 8_192);
    }
}
