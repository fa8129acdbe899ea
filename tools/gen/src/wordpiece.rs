//! BERT's tokenizer, enough of it for masked-language-model fine-tuning.
//!
//! Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for
//! Language Understanding" (2019) split text in two passes: a basic pass
//! (lower-case, split on whitespace, make every punctuation character its own
//! word) and WordPiece (Wu et al., 2016): each word becomes the longest
//! vocabulary prefix, then the longest `##`-prefixed continuation, and so on;
//! a word that cannot be covered becomes `[UNK]`. Accent stripping and the
//! CJK rules of the reference tokenizer are left out: the corpus is English.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Words longer than this become `[UNK]`, as in the reference tokenizer.
const MAX_WORD_CHARS: usize = 100;

/// A WordPiece vocabulary (`vocab.txt`: one token a line, the id is the line number).
#[derive(Debug, Clone)]
pub struct WordPiece {
    ids: HashMap<String, u32>,
    tokens: Vec<String>,
    /// Id of `[UNK]`.
    pub unk: u32,
    /// Id of `[CLS]`.
    pub cls: u32,
    /// Id of `[SEP]`.
    pub sep: u32,
    /// Id of `[MASK]`.
    pub mask: u32,
}

impl WordPiece {
    /// Reads `vocab.txt`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the WordPiece vocabulary {}", path.display()))?;
        Self::from_lines(text.lines()).with_context(|| format!("in {}", path.display()))
    }

    /// A vocabulary from its tokens, in id order.
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let tokens: Vec<String> = lines.into_iter().map(str::to_string).collect();
        let ids: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let special = |name: &str| match ids.get(name) {
            Some(&id) => Ok(id),
            None => bail!("the vocabulary has no {name} token"),
        };
        Ok(Self {
            unk: special("[UNK]")?,
            cls: special("[CLS]")?,
            sep: special("[SEP]")?,
            mask: special("[MASK]")?,
            ids,
            tokens,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token with this id.
    pub fn token(&self, id: u32) -> &str {
        &self.tokens[id as usize]
    }

    /// Token ids of `text`, without `[CLS]`/`[SEP]`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for word in basic_words(text) {
            self.push_word(&word, &mut ids);
        }
        ids
    }

    /// Greedy longest-match-first split of one word.
    fn push_word(&self, word: &str, out: &mut Vec<u32>) {
        let chars: Vec<(usize, char)> = word.char_indices().collect();
        if chars.len() > MAX_WORD_CHARS {
            out.push(self.unk);
            return;
        }
        let first = out.len();
        let mut start = 0; // index into `chars`
        let mut piece = String::new();
        while start < chars.len() {
            let begin = chars[start].0;
            let found = (start + 1..=chars.len()).rev().find_map(|end| {
                let stop = chars.get(end).map_or(word.len(), |c| c.0);
                piece.clear();
                if start > 0 {
                    piece.push_str("##");
                }
                piece.push_str(&word[begin..stop]);
                self.ids.get(&piece).map(|&id| (end, id))
            });
            match found {
                Some((end, id)) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(first);
                    out.push(self.unk);
                    return;
                }
            }
        }
    }
}

/// BERT's basic pass: lower-case, split on whitespace, and make each
/// punctuation (any character neither alphanumeric nor whitespace) a word;
/// control characters are dropped.
pub fn basic_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
        } else if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            words.push(c.to_string());
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> WordPiece {
        WordPiece::from_lines([
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "un", "##aff", "##able", ",", "!",
            "run", "##ning",
        ])
        .unwrap()
    }

    #[test]
    fn basic_pass_splits_punctuation_and_lowercases() {
        assert_eq!(
            basic_words("Hello, World!  x"),
            ["hello", ",", "world", "!", "x"]
        );
    }

    #[test]
    fn longest_match_first() {
        let v = vocab();
        let ids = v.encode("The unaffable, running!");
        let tokens: Vec<&str> = ids.iter().map(|&i| v.token(i)).collect();
        assert_eq!(
            tokens,
            ["the", "un", "##aff", "##able", ",", "run", "##ning", "!"]
        );
    }

    #[test]
    fn uncoverable_word_is_unk() {
        let v = vocab();
        assert_eq!(v.encode("unx the"), [v.unk, 5]);
    }

    #[test]
    fn missing_special_token_is_an_error() {
        let err = WordPiece::from_lines(["[PAD]", "[UNK]"]).unwrap_err();
        assert!(err.to_string().contains("[CLS]"), "{err}");
    }
}
