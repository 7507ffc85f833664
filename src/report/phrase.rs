//! A sentence of the report as pieces: our own words, and values that come from the
//! suspect's account or disk (tags, names, UserData, console text, CloudTrail fields,
//! file paths). Each format renders the pieces itself, so a value from the suspect is
//! always escaped for that format and shown as data (HTML: a marked span; Markdown:
//! quoted, escaped text; plain text: quoted, with control characters as visible escapes).

use serde::Serialize;

use crate::text::sanitize;

/// One piece of a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    /// Words of the report and identifiers it checked or built.
    Text(String),
    /// A value from the suspect's account or disk, shown as data.
    Data(String),
}

/// A sentence: text and data pieces in order. Serialised as its plain form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Phrase(pub Vec<Span>);

impl Phrase {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// A phrase of our own words only.
    pub fn of(text: impl Into<String>) -> Self {
        Self(vec![Span::Text(text.into())])
    }

    /// Appends our own words.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.push_text(text);
        self
    }

    /// Appends a value from the suspect's account or disk.
    pub fn data(mut self, value: impl Into<String>) -> Self {
        self.0.push(Span::Data(value.into()));
        self
    }

    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        match self.0.last_mut() {
            Some(Span::Text(last)) => last.push_str(&text),
            _ => self.0.push(Span::Text(text)),
        }
    }

    pub fn push_data(&mut self, value: impl Into<String>) {
        self.0.push(Span::Data(value.into()));
    }

    pub fn append(&mut self, other: Phrase) {
        for span in other.0 {
            match span {
                Span::Text(t) => self.push_text(t),
                Span::Data(d) => self.push_data(d),
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|s| match s {
            Span::Text(t) | Span::Data(t) => t.is_empty(),
        })
    }

    /// One line of plain text, safe on a terminal: data in double quotes (a quote
    /// inside escaped), every control or bidi character as a visible escape.
    pub fn plain(&self) -> String {
        let mut out = String::new();
        for span in &self.0 {
            match span {
                Span::Text(t) => out.push_str(&sanitize(t)),
                Span::Data(d) => out.push_str(&quoted(d)),
            }
        }
        out
    }
}

/// `"value"` on one line: control and bidi characters as visible escapes (as
/// `text::sanitize` writes them everywhere), `"` escaped, so the quotes delimit the value.
pub fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in sanitize(value).chars() {
        if c == '"' {
            out.push_str("\\\"");
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

impl Serialize for Phrase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.plain())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_form_quotes_data_and_shows_its_escapes() {
        let p = Phrase::of("instance ").data("web \"1\"\u{1b}[2J").text(" was isolated");
        assert_eq!(p.plain(), "instance \"web \\\"1\\\"\\u{1b}[2J\" was isolated");
        assert_eq!(serde_json::to_value(&p).unwrap(), serde_json::json!(p.plain()));
    }

    #[test]
    fn adjacent_text_merges() {
        let p = Phrase::of("a").text("b").data("c").text("d");
        assert_eq!(p.0.len(), 3);
    }
}
