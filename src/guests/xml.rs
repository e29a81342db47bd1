//! A tiny XML writer for libvirt domain documents: elements, attributes in
//! the order given, escaped text, two-space indentation.
//!
//! Written by hand instead of pulling an XML crate: the domain document is
//! write-only (libvirt parses it) and the output must be byte-for-byte
//! deterministic, which a fixed attribute order and fixed indentation give.

use std::fmt::Write;

/// Escape `s` for use as element text or inside a single- or double-quoted
/// attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            // Control characters other than tab/newline are not allowed in
            // XML 1.0 at all, not even as references: drop them.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// An XML document being written.
#[derive(Debug, Default)]
pub struct Xml {
    out: String,
    depth: usize,
}

impl Xml {
    /// A new, empty document.
    pub fn new() -> Self {
        Self::default()
    }

    fn start(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push('<');
        self.out.push_str(tag);
        for (name, value) in attrs {
            // Writing to a String cannot fail.
            let _ = write!(self.out, " {name}='{}'", escape(value));
        }
    }

    /// `<tag attrs>`, then children until [`Xml::close`].
    pub fn open(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.start(tag, attrs);
        self.out.push_str(">\n");
        self.depth += 1;
    }

    /// `</tag>`, closing the innermost [`Xml::open`].
    pub fn close(&mut self, tag: &str) {
        self.depth = self.depth.saturating_sub(1);
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        let _ = writeln!(self.out, "</{tag}>");
    }

    /// `<tag attrs/>`.
    pub fn empty(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.start(tag, attrs);
        self.out.push_str("/>\n");
    }

    /// `<tag attrs>text</tag>`.
    pub fn text(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) {
        self.start(tag, attrs);
        let _ = writeln!(self.out, ">{}</{tag}>", escape(text));
    }

    /// The document written so far.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes_and_drops_control_characters() {
        assert_eq!(
            escape("a<b>&'c\"\u{1}\td"),
            "a&lt;b&gt;&amp;&apos;c&quot;\td"
        );
    }

    #[test]
    fn nests_and_indents() {
        let mut x = Xml::new();
        x.open("a", &[("k", "v'")]);
        x.empty("b", &[]);
        x.text("c", &[("x", "1")], "1 < 2");
        x.close("a");
        assert_eq!(
            x.finish(),
            "<a k='v&apos;'>\n  <b/>\n  <c x='1'>1 &lt; 2</c>\n</a>\n"
        );
    }
}
