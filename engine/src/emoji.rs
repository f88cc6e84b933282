//! One emoji, as a reaction (seed 000: "Emoji reactions"): a single emoji as Unicode's
//! emoji sequences (UTS #51) build them, checked without a Unicode database crate.
//!
//! Accepted: one pictographic code point (the Extended_Pictographic blocks: the
//! `1F000`-`1FAFF` emoji blocks, Miscellaneous Symbols and Dingbats, and the scattered
//! older symbols such as `©`, `™`, `⌚`, `⬆`), optionally followed by the emoji
//! presentation selector (`FE0F`) and one skin-tone modifier (`1F3FB`-`1F3FF`); several
//! of those joined by zero-width joiners (`👩‍💻`, `👨‍👩‍👧`); a flag (two regional
//! indicators, `🇫🇷`); a keycap (`1️⃣`); a tag sequence (`🏴󠁧󠁢󠁳󠁣󠁴󠁿`). Anything else, two
//! emoji side by side included, is not one emoji. Bounded at 64 bytes (the longest
//! standard sequences are about 35).

/// The longest accepted emoji, in UTF-8 bytes.
pub const MAX_EMOJI_BYTES: usize = 64;

const ZWJ: char = '\u{200D}';
const VS16: char = '\u{FE0F}';
const KEYCAP: char = '\u{20E3}';
const TAG_END: char = '\u{E007F}';

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

fn is_skin_tone(c: char) -> bool {
    ('\u{1F3FB}'..='\u{1F3FF}').contains(&c)
}

fn is_tag(c: char) -> bool {
    ('\u{E0020}'..='\u{E007E}').contains(&c)
}

/// A pictographic code point (an approximation of Extended_Pictographic that keeps
/// letters, digits, punctuation and CJK out).
fn is_pictographic(c: char) -> bool {
    matches!(c as u32,
        0x00A9 | 0x00AE | 0x203C | 0x2049 | 0x2122 | 0x2139
        | 0x2194..=0x2199 | 0x21A9..=0x21AA | 0x231A..=0x231B | 0x2328 | 0x23CF
        | 0x23E9..=0x23F3 | 0x23F8..=0x23FA | 0x24C2 | 0x25AA..=0x25AB | 0x25B6 | 0x25C0
        | 0x25FB..=0x25FE | 0x2600..=0x27BF | 0x2934..=0x2935 | 0x2B05..=0x2B07
        | 0x2B1B..=0x2B1C | 0x2B50 | 0x2B55 | 0x3030 | 0x303D | 0x3297 | 0x3299
        | 0x1F000..=0x1F1E5 | 0x1F200..=0x1F3FA | 0x1F400..=0x1FAFF | 0x1FC00..=0x1FFFD)
}

/// Whether `s` is exactly one emoji.
pub fn is_single_emoji(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_EMOJI_BYTES {
        return false;
    }
    let chars: Vec<char> = s.chars().collect();
    // A flag: exactly two regional indicators.
    if chars.iter().any(|c| is_regional_indicator(*c)) {
        return chars.len() == 2 && chars.iter().all(|c| is_regional_indicator(*c));
    }
    // A keycap: 0-9, # or *, an optional VS16, then U+20E3.
    if chars.last() == Some(&KEYCAP) {
        return match chars.as_slice() {
            [base, KEYCAP] | [base, VS16, KEYCAP] => {
                base.is_ascii_digit() || *base == '#' || *base == '*'
            }
            _ => false,
        };
    }
    // Elements joined by ZWJ; each one pictograph, then VS16 and/or a skin tone, or a
    // tag run ending the sequence.
    let mut i = 0;
    loop {
        match chars.get(i) {
            Some(c) if is_pictographic(*c) || is_skin_tone(*c) => i += 1,
            _ => return false,
        }
        if chars.get(i) == Some(&VS16) {
            i += 1;
        }
        if chars.get(i).is_some_and(|c| is_skin_tone(*c)) {
            i += 1;
        }
        if chars.get(i).is_some_and(|c| is_tag(*c)) {
            while chars.get(i).is_some_and(|c| is_tag(*c)) {
                i += 1;
            }
            return chars.get(i) == Some(&TAG_END) && i + 1 == chars.len();
        }
        match chars.get(i) {
            None => return true,
            Some(&ZWJ) => i += 1,
            Some(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_emoji_of_every_kind_passes() {
        for e in [
            "😀",
            "❤",
            "❤️",
            "👍🏽",
            "👩‍💻",
            "👨‍👩‍👧‍👦",
            "🏳️‍🌈",
            "🇫🇷",
            "1️⃣",
            "#⃣",
            "©️",
            "™",
            "⌚",
            "🫠",
            "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
            "🧑🏿‍🤝‍🧑🏻",
        ] {
            assert!(
                is_single_emoji(e),
                "{e:?} ({:x?})",
                e.chars().collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn anything_else_does_not() {
        for s in [
            "",
            "a",
            "like",
            "1",
            "😀😀",
            "😀 ",
            " 😀",
            "🇫",
            "🇫🇷🇩🇪",
            "👩‍",
            "‍💻",
            "😀\u{FE0F}\u{FE0F}",
            "中",
            "\u{0}",
            "<script>",
            "1\u{20E3}x",
            "a\u{20E3}",
            "🏴\u{E0067}",
            "😀a",
        ] {
            assert!(!is_single_emoji(s), "{s:?}");
        }
        assert!(!is_single_emoji(&"👍".repeat(17)));
        assert!(
            !is_single_emoji(&["👍"; 20].join("\u{200D}")),
            "over 64 bytes"
        );
    }
}
