//! Content moderation: the length limit (`MAX_MESSAGE_LENGTH`, always on) and, when
//! `ENABLE_MODERATION` is set, a blocked-word list matched in one pass with
//! Aho-Corasick (ASCII case-insensitive, whole words only, so "class" does not match
//! "ass"). A match is masked (`****`) or rejects the message, per configuration.
//! Every moderation action is written to the durable audit log by the caller.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::error::{ClientError, ErrorCode};

/// What to do with a blocked word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModerationMode {
    /// Replace each blocked word with `*` of the same length and deliver.
    Mask,
    /// Refuse the message with `message_blocked`.
    Reject,
}

#[derive(Debug, Clone)]
pub struct ModerationConfig {
    /// `ENABLE_MODERATION`.
    pub enabled: bool,
    /// `MAX_MESSAGE_LENGTH`, in characters.
    pub max_message_length: usize,
    /// `ROOMCAST_BLOCKED_WORDS` (comma-separated).
    pub blocked_words: Vec<String>,
    /// `ROOMCAST_MODERATION_MODE` (`mask` or `reject`).
    pub mode: ModerationMode,
}

impl Default for ModerationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_message_length: 1000,
            blocked_words: Vec::new(),
            mode: ModerationMode::Mask,
        }
    }
}

/// The result of checking one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Deliver this content (borrowed when unchanged).
    Pass(Cow<'a, str>),
    /// Deliver the masked content; `words` blocked words were masked.
    Masked { content: String, words: usize },
}

/// A compiled moderation policy.
#[derive(Debug)]
pub struct Moderator {
    cfg: ModerationConfig,
    matcher: Option<AhoCorasick>,
}

impl Moderator {
    pub fn new(cfg: ModerationConfig) -> Result<Self, String> {
        let words: Vec<&str> = cfg
            .blocked_words
            .iter()
            .map(|w| w.trim())
            .filter(|w| !w.is_empty())
            .collect();
        let matcher = if cfg.enabled && !words.is_empty() {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&words)
                    .map_err(|e| format!("blocked word list: {e}"))?,
            )
        } else {
            None
        };
        Ok(Self { cfg, matcher })
    }

    pub fn max_message_length(&self) -> usize {
        self.cfg.max_message_length
    }

    /// Checks `content`. `Err` is a client error (too long, empty, blocked).
    pub fn check<'a>(&self, content: &'a str) -> Result<Verdict<'a>, ClientError> {
        if content.trim().is_empty() {
            return Err(ClientError::new(
                ErrorCode::EmptyMessage,
                "message content is empty",
            ));
        }
        // Cheap upper bound first: a string of n bytes has at most n chars.
        if content.len() > self.cfg.max_message_length
            && content.chars().count() > self.cfg.max_message_length
        {
            return Err(ClientError::new(
                ErrorCode::MessageTooLong,
                format!(
                    "messages are limited to {} characters",
                    self.cfg.max_message_length
                ),
            ));
        }
        let Some(matcher) = &self.matcher else {
            return Ok(Verdict::Pass(Cow::Borrowed(content)));
        };
        let bytes = content.as_bytes();
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
        let hits: Vec<(usize, usize)> = matcher
            .find_iter(content)
            .filter(|m| {
                let before_ok = m.start() == 0 || !is_word(bytes[m.start() - 1]);
                let after_ok = m.end() == bytes.len() || !is_word(bytes[m.end()]);
                before_ok && after_ok
            })
            .map(|m| (m.start(), m.end()))
            .collect();
        if hits.is_empty() {
            return Ok(Verdict::Pass(Cow::Borrowed(content)));
        }
        match self.cfg.mode {
            ModerationMode::Reject => Err(ClientError::new(
                ErrorCode::MessageBlocked,
                "the message contains blocked words",
            )),
            ModerationMode::Mask => {
                let mut out = String::with_capacity(content.len());
                let mut last = 0;
                for (s, e) in &hits {
                    out.push_str(&content[last..*s]);
                    out.extend(std::iter::repeat_n('*', content[*s..*e].chars().count()));
                    last = *e;
                }
                out.push_str(&content[last..]);
                Ok(Verdict::Masked {
                    content: out,
                    words: hits.len(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moderator(mode: ModerationMode) -> Moderator {
        Moderator::new(ModerationConfig {
            enabled: true,
            max_message_length: 10_000,
            blocked_words: vec!["darn".into(), "heck".into(), " ".into()],
            mode,
        })
        .expect("valid")
    }

    #[test]
    fn masks_whole_words_case_insensitively() {
        let m = moderator(ModerationMode::Mask);
        assert_eq!(
            m.check("Darn it, what the HECK"),
            Ok(Verdict::Masked {
                content: "**** it, what the ****".into(),
                words: 2
            })
        );
        assert_eq!(
            m.check("darning socks"),
            Ok(Verdict::Pass(Cow::Borrowed("darning socks")))
        );
        assert_eq!(
            m.check("oh heck!"),
            Ok(Verdict::Masked {
                content: "oh ****!".into(),
                words: 1
            })
        );
    }

    #[test]
    fn reject_mode_refuses() {
        let m = moderator(ModerationMode::Reject);
        assert_eq!(
            m.check("darn").map_err(|e| e.code),
            Err(ErrorCode::MessageBlocked)
        );
        assert!(m.check("fine").is_ok());
    }

    #[test]
    fn length_is_counted_in_characters_and_empty_is_refused() {
        let m = Moderator::new(ModerationConfig {
            max_message_length: 3,
            ..Default::default()
        })
        .expect("valid");
        assert!(m.check("héé").is_ok(), "3 chars, 5 bytes");
        assert_eq!(
            m.check("abcd").map_err(|e| e.code),
            Err(ErrorCode::MessageTooLong)
        );
        assert_eq!(
            m.check("  ").map_err(|e| e.code),
            Err(ErrorCode::EmptyMessage)
        );
    }

    #[test]
    fn disabled_moderation_passes_blocked_words() {
        let m = Moderator::new(ModerationConfig {
            enabled: false,
            blocked_words: vec!["darn".into()],
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(m.check("darn"), Ok(Verdict::Pass(Cow::Borrowed("darn"))));
    }
}
