//! Reading operator-supplied JSON files (budgets, baselines, tolerances, knobs) defensively.
//!
//! These files come from a repository or a ConfigMap that anyone with commit rights can change,
//! so a file is refused, with a message that says why, when it is larger than
//! [`MAX_INPUT_BYTES`], is not UTF-8, nests deeper than [`MAX_DEPTH`], spells `NaN` or
//! `Infinity` (which JSON does not have), or repeats a key in one object (JSON parsers differ
//! on which copy wins, so a repeated key is always a mistake or a trick). The messages name
//! the place (line and column, or the key) but not the file: callers prefix it.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The largest input file accepted. The shipped assets are a few KiB.
pub const MAX_INPUT_BYTES: u64 = 4 << 20;
/// The deepest nesting of objects and arrays accepted. The shipped assets nest 4 deep.
pub const MAX_DEPTH: usize = 32;

/// Why an input file or document was refused: a phrase that names the place (line and column,
/// or the key) but not the file, to follow "cannot be read: " or the file's name.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be opened or read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The file is larger than the limit given to [`read_file_limited`].
    #[error("larger than the {} KiB limit", limit_bytes >> 10)]
    OverLimit {
        /// The limit, in bytes.
        limit_bytes: u64,
    },
    /// The input is larger than [`MAX_INPUT_BYTES`].
    #[error("larger than the {} MiB limit for input files", MAX_INPUT_BYTES >> 20)]
    TooLarge,
    /// The bytes are not UTF-8.
    #[error("not UTF-8 (invalid byte at line {line} column {column})")]
    NotUtf8 {
        /// 1-based line of the first invalid byte.
        line: usize,
        /// 1-based column of the first invalid byte.
        column: usize,
        /// The decoding error.
        #[source]
        source: std::str::Utf8Error,
    },
    /// Objects and arrays nest deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH} levels at line {line} column {column}")]
    TooDeep {
        /// 1-based line of the bracket one level too deep.
        line: usize,
        /// 1-based column of that bracket.
        column: usize,
    },
    /// `NaN` or `Infinity` outside a string.
    #[error("{word} is not a JSON number (line {line} column {column})")]
    NotANumber {
        /// The spelling found (`NaN` or `Infinity`).
        word: &'static str,
        /// 1-based line where it starts.
        line: usize,
        /// 1-based column where it starts.
        column: usize,
    },
    /// The text is not one JSON value, or an object repeats a key.
    #[error("invalid JSON: {source}")]
    Json {
        /// The parser's error, with its line and column.
        #[source]
        source: serde_json::Error,
    },
}

/// `text` with control characters and line separators written as escapes (`\n`, `\u{2028}`),
/// so an error that quotes outside input stays one line.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    let breaks = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !text.chars().any(breaks) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if breaks(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

/// Reads at most [`MAX_INPUT_BYTES`] of `path`; a larger file is refused without reading it
/// all. The error is a phrase to follow "cannot be read: ".
pub fn read_file(path: &Path) -> Result<Vec<u8>, InputError> {
    let bytes = read_capped(path, MAX_INPUT_BYTES)?;
    check_size(bytes.len())?;
    Ok(bytes)
}

/// Reads at most `max` bytes of `path`; a larger file is refused without reading it all. The
/// error is one phrase.
pub fn read_file_limited(path: &Path, max: u64) -> Result<Vec<u8>, InputError> {
    let bytes = read_capped(path, max)?;
    if bytes.len() as u64 > max {
        return Err(InputError::OverLimit { limit_bytes: max });
    }
    Ok(bytes)
}

/// The first `max + 1` bytes of `path` (one more than allowed tells a file over the limit).
fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, InputError> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn check_size(len: usize) -> Result<(), InputError> {
    if len as u64 > MAX_INPUT_BYTES {
        return Err(InputError::TooLarge);
    }
    Ok(())
}

/// Parses `bytes` as one JSON value under the rules in the module documentation. The error is
/// a phrase to follow "cannot be read: ".
pub fn parse_json(bytes: &[u8]) -> Result<Value, InputError> {
    check_text(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|source| InputError::Json { source })?;
    Ok(value.0)
}

/// Parses `bytes` straight into `T` under the same rules as [`parse_json`], without the
/// intermediate [`Value`] (a third of the time for a runtime section). A repeated key is
/// refused by the derived `Deserialize` of a struct (serde's "duplicate field"); a field that
/// holds free-form JSON must be a [`crate::report::TrackerStats`] (or check its objects the
/// same way) for them to be checked too. A `T` with a map field keyed by strings would take the
/// last of a repeated key: use [`parse_json`] for those.
pub fn parse_json_as<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, InputError> {
    check_text(bytes)?;
    serde_json::from_slice(bytes).map_err(|source| InputError::Json { source })
}

/// The checks before parsing: size, UTF-8, then [`scan`].
fn check_text(bytes: &[u8]) -> Result<(), InputError> {
    check_size(bytes.len())?;
    if let Err(source) = std::str::from_utf8(bytes) {
        let (line, column) = position(bytes, source.valid_up_to());
        return Err(InputError::NotUtf8 {
            line,
            column,
            source,
        });
    }
    scan(bytes)
}

/// Reads free-form JSON from any deserializer, refusing an object that repeats a key.
pub(crate) fn strict_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    Strict::deserialize(deserializer).map(|Strict(v)| v)
}

/// The error for an object that repeats `key` (one wording wherever free-form JSON is read).
pub(crate) fn repeated_key<E: de::Error>(key: &str) -> E {
    E::custom(format!("key '{}' appears twice", one_line(key)))
}

/// Checks one JSON text for repeated keys at any depth, building nothing that is kept (for
/// free-form JSON kept as text, [`crate::report::TrackerStats`]).
pub(crate) fn strict_check(text: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<Strict>(text).map(drop)
}

/// 1-based line and column of byte `offset`.
fn position(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    (line, column)
}

/// One pass over the text outside strings: nesting depth and the non-JSON number spellings.
/// Strings are skipped to their closing quote with `memchr` (most of a runtime section's bytes
/// are in strings and numbers).
fn scan(bytes: &[u8]) -> Result<(), InputError> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                // To the quote that closes the string; an unterminated one is the parser's to
                // name.
                i += 1;
                loop {
                    let Some(at) = bytes
                        .get(i..)
                        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                    else {
                        return Ok(());
                    };
                    i += at;
                    if bytes[i] == b'"' {
                        break;
                    }
                    // An escape: skip it and the character it escapes.
                    i += 2;
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    let (line, column) = position(bytes, i);
                    return Err(InputError::TooDeep { line, column });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'N' | b'I' => {
                let word = if b == b'N' { "NaN" } else { "Infinity" };
                if bytes[i..].starts_with(word.as_bytes()) {
                    let (line, column) = position(bytes, i);
                    return Err(InputError::NotANumber { word, line, column });
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// A JSON value whose objects were checked for repeated keys while parsing.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(repeated_key(&key));
            }
            let Strict(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_document_parses_to_the_same_value_as_serde_json() {
        let text = br#"{"version": "v0.4", "a": [1, -2, 3.5, true, null, "x\"y"], "b": {"c": {}}}"#;
        assert_eq!(
            parse_json(text).unwrap(),
            serde_json::from_slice::<Value>(text).unwrap()
        );
    }

    #[test]
    fn hostile_documents_are_refused_with_the_place_named() {
        let cases: [(&[u8], &str); 7] = [
            (
                br#"{"a": 1, "b": {"c": 2, "c": 3}}"#,
                "invalid JSON: key 'c' appears twice at line 1 column 26",
            ),
            (
                b"{\"a\": NaN}",
                "NaN is not a JSON number (line 1 column 7)",
            ),
            (
                b"{\"a\":\n -Infinity}",
                "Infinity is not a JSON number (line 2 column 3)",
            ),
            (
                b"{\"a\": \"\xff\"}",
                "not UTF-8 (invalid byte at line 1 column 8)",
            ),
            (
                b"{\"a\": 1e999}",
                "invalid JSON: number out of range at line 1 column 11",
            ),
            (
                b"{\"a\": 1} x",
                "invalid JSON: trailing characters at line 1 column 10",
            ),
            (
                b"",
                "invalid JSON: EOF while parsing a value at line 1 column 0",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_json(text).unwrap_err().to_string(),
                want,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    /// A typed document with free-form fields, read as a runtime section is.
    #[derive(Debug, PartialEq, Deserialize)]
    struct Typed {
        name: String,
        free: crate::report::TrackerStats,
        #[serde(default)]
        maybe: Option<crate::report::TrackerStats>,
    }

    #[test]
    fn a_typed_document_is_read_under_the_same_rules() {
        let plain = br#"{"name": "n", "free": {"a": [1, {"b": 2}]}, "maybe": {"c": 3}}"#;
        let typed: Typed = parse_json_as(plain).unwrap();
        assert_eq!(
            typed,
            serde_json::from_value(parse_json(plain).unwrap()).unwrap()
        );
        assert_eq!(typed.maybe, Some(serde_json::json!({"c": 3}).into()));
        for absent in [
            &br#"{"name": "n", "free": 1}"#[..],
            br#"{"name": "n", "free": 1, "maybe": null}"#,
        ] {
            assert_eq!(parse_json_as::<Typed>(absent).unwrap().maybe, None);
        }
        let refused: [(&[u8], &str); 6] = [
            (
                br#"{"name": "n", "name": "m", "free": 1}"#,
                "invalid JSON: duplicate field `name` at line 1 column 20",
            ),
            (
                br#"{"name": "n", "free": {"a": {"k": 1, "k": 2}}}"#,
                "invalid JSON: key 'k' appears twice at line 1 column 46",
            ),
            (
                br#"{"name": "n", "free": 1, "maybe": {"k": 1, "k": 2}}"#,
                "invalid JSON: key 'k' appears twice at line 1 column 51",
            ),
            (
                br#"{"name": "n", "free": NaN}"#,
                "NaN is not a JSON number (line 1 column 23)",
            ),
            (
                b"{\"name\": \"\xff\", \"free\": 1}",
                "not UTF-8 (invalid byte at line 1 column 11)",
            ),
            (
                br#"{"name": "n", "free": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
                "nested deeper than 32 levels at line 1 column 54",
            ),
        ];
        for (text, message) in refused {
            let got = parse_json_as::<Typed>(text).unwrap_err().to_string();
            assert_eq!(got, message, "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn nan_inside_a_string_is_just_text() {
        let v = parse_json(br#"{"NaN": "Infinity", "n": "\\"}"#).unwrap();
        assert_eq!(v["NaN"], "Infinity");
        // Escaped quotes and backslashes end no string early; brackets in a string are text.
        let v = parse_json(br#"{"a": "x\"[[{ NaN \\", "b": "\\\"Infinity"}"#).unwrap();
        assert_eq!(v["a"], "x\"[[{ NaN \\");
        assert_eq!(v["b"], "\\\"Infinity");
        // After a string that ends in an escaped backslash, the scan is outside it again.
        assert_eq!(
            parse_json(br#"{"a": "x\\", "b": NaN}"#)
                .unwrap_err()
                .to_string(),
            "NaN is not a JSON number (line 1 column 19)"
        );
    }

    #[test]
    fn nesting_is_limited() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_json(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(
            parse_json(deep.as_bytes()).unwrap_err().to_string(),
            format!("nested deeper than {MAX_DEPTH} levels at line 1 column 33")
        );
        // A million brackets are refused by the scan, long before any recursion.
        let bomb = "[".repeat(1 << 20);
        assert!(
            parse_json(bomb.as_bytes())
                .unwrap_err()
                .to_string()
                .starts_with("nested deeper")
        );
    }

    #[test]
    fn a_file_over_the_limit_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.json");
        let file = std::fs::File::create(&path).unwrap();
        // Sparse: 1 GiB on paper, nothing on disk.
        file.set_len(1 << 30).unwrap();
        assert_eq!(
            read_file(&path).unwrap_err().to_string(),
            "larger than the 4 MiB limit for input files"
        );
        assert_eq!(
            read_file_limited(&path, 1 << 20).unwrap_err().to_string(),
            "larger than the 1024 KiB limit"
        );
        std::fs::write(&path, b"{}").unwrap();
        assert_eq!(read_file(&path).unwrap(), b"{}");
    }
}
