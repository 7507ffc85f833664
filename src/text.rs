//! Text from a suspect's account (tags, names, UserData, console output, CloudTrail
//! fields) is attacker-controlled. Before it reaches a terminal it is made inert here:
//! control characters (terminal escapes) and bidirectional overrides are shown escaped.

/// `s` safe to print on a terminal: control characters, DEL and Unicode bidirectional
/// controls become `\u{..}` escapes; everything else is kept.
pub fn terminal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// One line of terminal text: like [`terminal`], newlines escaped too.
pub fn terminal_line(s: &str) -> String {
    terminal(s).replace('\n', "\\n").replace('\t', "\\t")
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_bidi_overrides_are_inert() {
        assert_eq!(terminal("a\u{1b}[31mred"), "a\\u{1b}[31mred");
        assert_eq!(terminal("x\u{202e}gnp.exe"), "x\\u{202e}gnp.exe");
        assert_eq!(terminal("plain <script> ../"), "plain <script> ../");
        assert_eq!(terminal_line("a\nb"), "a\\nb");
    }
}
