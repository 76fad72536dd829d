//! Finds where a key sits in the TOML text, so errors can name a line.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::Problem;

/// 1-based line of the byte offset `pos` in `text`.
fn line_at(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Splits `tiers.low.fps` or `layouts.pip.tiles[1].x` into table keys and array indices.
fn segments(key: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            out.push(Segment::Key(&rest[..open]));
            rest = &rest[open..];
            while let Some(close) = rest.find(']') {
                if let Ok(i) = rest[1..close].parse() {
                    out.push(Segment::Index(i));
                }
                rest = &rest[close + 1..];
            }
        } else {
            out.push(Segment::Key(rest));
        }
    }
    out
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Line of the dotted `key` in `text`, or of its nearest existing parent.
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut span: Option<Range<usize>> = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for seg in segments(key) {
        match seg {
            Segment::Key(k) => {
                let t = match (table, value) {
                    (Some(t), None) => t,
                    (_, Some(v)) => match v.get_ref() {
                        DeValue::Table(t) => t,
                        _ => break,
                    },
                    (None, None) => break,
                };
                let Some((kspan, v)) = t.iter().find(|(name, _)| name.get_ref() == k) else {
                    break;
                };
                span = Some(kspan.span());
                value = Some(v);
                table = None;
            }
            Segment::Index(i) => {
                let Some(DeValue::Array(a)) = value.map(|v| v.get_ref()) else {
                    break;
                };
                let Some(item) = a.get(i) else { break };
                span = Some(item.span());
                value = Some(item);
            }
        }
    }
    span.map(|s| line_at(text, s.start))
}

/// Dotted path of the key whose name or value contains `target` (deepest match wins).
fn key_at(table: &DeTable<'_>, target: &Range<usize>, prefix: &str) -> Option<String> {
    let inside =
        |s: &Range<usize>| s.start <= target.start && target.start < s.end.max(s.start + 1);
    let mut found = None;
    for (k, v) in table.iter() {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        if let DeValue::Table(t) = v.get_ref() {
            if let Some(deeper) = key_at(t, target, &path) {
                return Some(deeper);
            }
        }
        if inside(&k.span()) || inside(&v.span()) {
            found = Some(path);
        }
    }
    found
}

/// A parse or type error from serde, with its line and (when found) its key.
pub fn serde_problem(text: &str, err: &toml::de::Error) -> Problem {
    let span = err.span();
    let key = match (&span, DeTable::parse(text)) {
        (Some(s), Ok(root)) => key_at(root.get_ref(), s, "").unwrap_or_default(),
        _ => String::new(),
    };
    Problem {
        line: span.map(|s| line_at(text, s.start)),
        key,
        message: err.message().trim().to_string(),
    }
}
