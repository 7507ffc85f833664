//! Text from AWS or S3 made safe to print on a terminal.
//!
//! Everything read from a suspect account or an evidence bucket is attacker-controlled
//! (tags, names, UserData, console output, S3 keys, custody record fields): printed raw,
//! an escape sequence can rewrite the screen or the terminal's title, a carriage return
//! can overwrite a line already shown, and a bidirectional override can make
//! `evil.sh` read as `hs.live`. [`sanitize`] shows every such character as a visible
//! escape instead, so what the examiner reads is what the data holds.
//!
//! Use it on every value printed from AWS or S3 (tables, notes, verdicts, errors);
//! use [`json_for_terminal`] for JSON printed on stdout.

use std::borrow::Cow;

/// True for characters that must never reach a terminal as themselves: C0 and C1
/// controls, DEL, bidirectional embeddings, overrides, isolates and marks, the Unicode
/// line and paragraph separators, and invisible zero-width characters.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        // Bidi marks, embeddings, overrides and isolates (Unicode TR9, the
        // "Trojan Source" characters, CVE-2021-42574).
        | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        // Zero-width space/joiners, word joiner, BOM: invisible, used to make two
        // different strings look equal.
        | '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}'
        // Line and paragraph separators: line breaks to some terminals and viewers.
        | '\u{2028}' | '\u{2029}')
}

/// `s` with every [`is_unsafe`] character written as a visible escape (`\n`, `\t`,
/// `\r`, or `\u{202e}`); borrowed unchanged when there is none. The result is one line.
pub fn sanitize(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Multi-line text (an error chain, a note) made safe line by line: the line breaks
/// stay, everything else [`is_unsafe`] is escaped.
pub fn sanitize_lines(s: &str) -> String {
    s.split('\n').map(|line| sanitize(line).into_owned()).collect::<Vec<_>>().join("\n")
}

/// Pretty JSON for a terminal: the same document (it parses to the same value), with
/// every [`is_unsafe`] character inside strings written as a `\uXXXX` escape.
/// serde_json escapes C0 controls itself, but not DEL, C1 controls or bidi overrides.
pub fn json_for_terminal(value: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    escape_json_text(&text)
}

/// Escapes [`is_unsafe`] characters in already serialised JSON. Outside strings JSON
/// holds only ASCII punctuation, digits, letters and whitespace that is not unsafe
/// except `\n` and `\t`, which are kept as layout; every other unsafe character can
/// only be inside a string, where `\uXXXX` means the same character.
pub fn escape_json_text(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if is_unsafe(c) && c != '\n' && c != '\t' {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(sanitize("i-0123456789abcdef0 Ada Examiner é ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn terminal_escapes_and_line_tricks_become_visible() {
        assert_eq!(sanitize("a\x1b]0;pwned\x07b"), "a\\u{1b}]0;pwned\\u{7}b");
        assert_eq!(sanitize("ok\rFAILED\n"), "ok\\rFAILED\\n");
        assert_eq!(sanitize("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(sanitize("x\u{7f}"), "x\\u{7f}");
    }

    #[test]
    fn bidi_overrides_and_invisible_characters_become_visible() {
        assert_eq!(sanitize("evil\u{202e}hs.sh"), "evil\\u{202e}hs.sh");
        assert_eq!(sanitize("a\u{2066}b\u{2069}"), "a\\u{2066}b\\u{2069}");
        assert_eq!(sanitize("ad\u{200b}min"), "ad\\u{200b}min");
        assert_eq!(sanitize("line\u{2028}break"), "line\\u{2028}break");
    }

    #[test]
    fn json_keeps_its_meaning_and_loses_its_tricks() {
        let v = serde_json::json!({"k": "a\u{202e}b\u{85}c\u{1b}d", "n": 1});
        let text = json_for_terminal(&v);
        assert!(!text.chars().any(|c| is_unsafe(c) && c != '\n'), "{text:?}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);
        // Astral characters are not unsafe and stay as they are.
        let v = serde_json::json!({"k": "𝄞"});
        assert_eq!(json_for_terminal(&v), serde_json::to_string_pretty(&v).unwrap());
    }

    #[test]
    fn multi_line_text_keeps_its_lines() {
        assert_eq!(sanitize_lines("one\x1b[2J\ntwo\r"), "one\\u{1b}[2J\ntwo\\r");
    }
}
