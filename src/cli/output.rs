//! How the read-only commands (`inspect`, `status`) print: aligned tables for people, one JSON
//! document for scripts; keys and values as text when they are UTF-8, escaped when not, or as hex.

use std::io::Write;

use serde::Serialize;

/// A table cell's value is cut after this many characters (`…` marks the cut); `get` shows whole values.
pub const CELL_CHARS_MAX: usize = 64;

/// What a command prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns (or `name  value` lines) for people.
    #[default]
    Table,
    /// One JSON document with stable field names, for scripts.
    Json,
}

/// How keys and values (arbitrary bytes) are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bytes {
    /// UTF-8 as is; otherwise escaped (see [`escape`]).
    Text,
    /// Lowercase hex, two digits per byte.
    Hex,
}

impl Bytes {
    pub fn new(hex: bool) -> Bytes {
        if hex { Bytes::Hex } else { Bytes::Text }
    }

    /// For a JSON string: UTF-8 as is (JSON escapes control characters itself), else escaped.
    pub fn json(self, bytes: &[u8]) -> String {
        match (self, std::str::from_utf8(bytes)) {
            (Bytes::Hex, _) => hex(bytes),
            (Bytes::Text, Ok(text)) => text.to_string(),
            (Bytes::Text, Err(_)) => escape(bytes),
        }
    }

    /// For a table cell: UTF-8 without control characters as is (a newline would break the
    /// table), else escaped.
    pub fn table(self, bytes: &[u8]) -> String {
        match (self, std::str::from_utf8(bytes)) {
            (Bytes::Hex, _) => hex(bytes),
            (Bytes::Text, Ok(text)) if !text.chars().any(char::is_control) => text.to_string(),
            (Bytes::Text, _) => escape(bytes),
        }
    }

    /// Reads a key given on the command line: its bytes as given, or hex.
    pub fn parse(self, arg: &std::ffi::OsStr) -> Result<Vec<u8>, String> {
        use std::os::unix::ffi::OsStrExt;
        match self {
            Bytes::Text => Ok(arg.as_bytes().to_vec()),
            Bytes::Hex => unhex(arg.as_bytes()),
        }
    }
}

/// Bytes as text: valid UTF-8 stays, a backslash becomes `\\`, control characters and bytes that
/// are not UTF-8 become `\xNN` (`\u{NNNN}` for control characters above ASCII).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if c.is_control() => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &[u8]) -> Result<Vec<u8>, String> {
    let digit = |c: u8| (c as char).to_digit(16).ok_or_else(|| format!("{:?} is not a hex digit", c as char));
    if !text.len().is_multiple_of(2) {
        return Err("hex needs two digits per byte".into());
    }
    text.chunks(2).map(|pair| Ok((digit(pair[0])? * 16 + digit(pair[1])?) as u8)).collect()
}

/// `text` cut to [`CELL_CHARS_MAX`] characters.
pub fn cell(text: String) -> String {
    if text.chars().count() <= CELL_CHARS_MAX {
        return text;
    }
    let mut cut: String = text.chars().take(CELL_CHARS_MAX).collect();
    cut.push('…');
    cut
}

/// Columns under a header, each as wide as its widest cell, two spaces apart (the last column is
/// not padded, so no line ends in spaces).
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { rows: vec![header.iter().map(|h| h.to_string()).collect()] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.rows[0].len(), "every row has a cell per column");
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows[0].len();
        let widths: Vec<usize> =
            (0..columns).map(|c| self.rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, text) in row.iter().enumerate() {
                line.push_str(text);
                if c + 1 < columns {
                    let pad = widths[c] - text.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `name  value` lines, values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    pairs.iter().map(|(name, value)| format!("{name:width$}  {value}").trim_end().to_string() + "\n").collect()
}

/// Prints `doc` as one pretty JSON document and a newline.
pub fn print_json(doc: &impl Serialize) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, doc)?;
    writeln!(stdout)?;
    stdout.flush()
}

/// Prints table text.
pub fn print_text(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_show_as_text_escaped_or_hex() {
        assert_eq!(Bytes::Text.json("héllo\\".as_bytes()), "héllo\\");
        assert_eq!(Bytes::Text.json(b"a\xffb\\"), "a\\xffb\\\\");
        assert_eq!(Bytes::Text.table(b"line\nnext"), "line\\x0anext");
        assert_eq!(Bytes::Text.table(b"plain"), "plain");
        assert_eq!(Bytes::Hex.json(b"\x00\xffA"), "00ff41");
        assert_eq!(Bytes::Hex.parse("00ff41".as_ref()).unwrap(), b"\x00\xffA");
        assert!(Bytes::Hex.parse("0g".as_ref()).is_err() && Bytes::Hex.parse("abc".as_ref()).is_err());
        assert_eq!(escape("\u{85}".as_bytes()), "\\u{0085}");
    }

    #[test]
    fn tables_align_columns_and_cut_long_cells() {
        let mut table = Table::new(&["KEY", "VALUE"]);
        table.row(vec!["a".into(), "1".into()]);
        table.row(vec!["longer".into(), String::new()]);
        assert_eq!(table.render(), "KEY     VALUE\na       1\nlonger\n");
        assert_eq!(fields(&[("a", "1".into()), ("bbb", "2".into())]), "a    1\nbbb  2\n");
        let long = cell("x".repeat(CELL_CHARS_MAX + 1));
        assert_eq!(long.chars().count(), CELL_CHARS_MAX + 1);
        assert!(long.ends_with('…'));
    }
}
