//! Where in an experiment file a parse error stands: the dotted key (`proxy.sizes[1].width`)
//! found from the error's span, and its line and column.

/// (line, column), both 1-based, of byte `offset` in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.as_bytes().get(..offset).unwrap_or_default();
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rposition(|&b| b == b'\n').map_or(offset + 1, |i| offset - i);
    (line, col)
}

/// One key of a TOML document: its dotted path, the span of the key and of its value.
struct Entry {
    path: String,
    key: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
    /// A `[table]` or `[[array]]` header: the value span is the header, not the body.
    header: bool,
}

fn entries(text: &str) -> Vec<Entry> {
    fn walk(text: &str, v: &toml::de::DeValue, path: &str, out: &mut Vec<Entry>) {
        let is_header = |r: &std::ops::Range<usize>| text.get(r.clone()).is_some_and(|t| t.starts_with('['));
        match v {
            toml::de::DeValue::Table(t) => {
                for (k, val) in t.iter() {
                    let p = if path.is_empty() { k.get_ref().to_string() } else { format!("{path}.{}", k.get_ref()) };
                    let header = val.get_ref().is_table() && is_header(&val.span());
                    out.push(Entry { path: p.clone(), key: k.span(), value: val.span(), header });
                    walk(text, val.get_ref(), &p, out);
                }
            }
            toml::de::DeValue::Array(a) => {
                for (i, val) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    let header = val.get_ref().is_table() && is_header(&val.span());
                    out.push(Entry { path: p.clone(), key: val.span(), value: val.span(), header });
                    walk(text, val.get_ref(), &p, out);
                }
            }
            _ => {}
        }
    }
    let (doc, _) = toml::de::DeTable::parse_recoverable(text);
    let mut out = Vec::new();
    walk(text, &toml::de::DeValue::Table(doc.into_inner()), "", &mut out);
    out
}

/// The dotted key a parse error at `span` is about, and its message (a duplicate key's
/// message says where the key was first set). Keys the parser kept are looked up by span;
/// a key it dropped (a duplicate) or a syntax error is placed under the innermost
/// enclosing inline table or else the last `[table]` header before it.
pub(super) fn locate(text: &str, span: std::ops::Range<usize>, msg: &str) -> (String, String) {
    let all = entries(text);
    let at = span.start;
    let join = |base: &str, key: &str| if base.is_empty() { key.to_string() } else { format!("{base}.{key}") };
    let inside = |e: &Entry| !e.header && e.value.start <= at && span.end <= e.value.end && e.value.start < e.value.end;
    let innermost = all.iter().filter(|e| inside(e)).min_by_key(|e| e.value.len());
    let header = all.iter().filter(|e| e.header && e.value.start <= at).max_by_key(|e| e.value.start);
    let context = innermost.filter(|e| e.value != span).or(header).map_or("", |e| e.path.as_str());
    if let Some(field) = msg.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
        let base = innermost.filter(|e| e.value == span).map_or("", |e| e.path.as_str());
        return (join(base, field), msg.to_string());
    }
    if let Some(e) = all.iter().rev().find(|e| e.key.contains(&at) && e.key.start != e.value.start) {
        return (e.path.clone(), msg.to_string());
    }
    if let Some(e) = innermost.filter(|e| e.value == span) {
        return (e.path.clone(), msg.to_string());
    }
    let token = text.get(span.clone()).unwrap_or("").trim_matches(|c| c == '"' || c == '\'');
    let key_like = !token.is_empty() && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if msg.starts_with("duplicate key") && key_like {
        let key = join(context, token);
        let first = all.iter().find(|e| e.path == key).map(|e| line_col(text, e.key.start).0);
        let msg = match first {
            Some(line) => format!("{msg} (first set at line {line})"),
            None => msg.to_string(),
        };
        return (key, msg);
    }
    // A syntax error: the key set on the error's line, if any, else the enclosing table.
    let line_start = text.get(..at).and_then(|t| t.rfind('\n')).map_or(0, |i| i + 1);
    let on_line = all
        .iter()
        .filter(|e| !e.header && e.key.start >= line_start && e.key.start <= at)
        .max_by_key(|e| e.key.start);
    match on_line.or(innermost).or(header) {
        Some(e) => (e.path.clone(), msg.to_string()),
        None => ("(document)".to_string(), msg.to_string()),
    }
}
