//! Media types: parsing `Content-Type` and `Accept` values with their parameters
//! (RFC 9110 §8.3.1 and §12.5.1), quoted strings included.

/// One media type or media range with its parameters (names lower-cased, values unquoted).
#[derive(Debug, Clone, PartialEq)]
pub struct MediaType {
    /// `type/subtype`, lower-cased (`*/*` and `type/*` for ranges).
    pub essence: String,
    /// Parameters in order, `q` excluded.
    pub params: Vec<(String, String)>,
    /// The quality value (1.0 when absent).
    pub q: f32,
}

impl MediaType {
    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    /// Whether this range covers the type `essence`.
    pub fn covers(&self, essence: &str) -> bool {
        if self.essence == "*/*" || self.essence == essence {
            return true;
        }
        match self.essence.strip_suffix("/*") {
            Some(main) => essence.split('/').next() == Some(main),
            None => false,
        }
    }
}

/// Splits `s` at `sep` outside quoted strings.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut escaped = false;
            for c in inner.chars() {
                if escaped || c != '\\' {
                    out.push(c);
                    escaped = false;
                } else {
                    escaped = true;
                }
            }
            out
        }
        None => v.to_string(),
    }
}

/// Parses one media type with parameters; `None` when it has no `type/subtype`.
pub fn parse_one(s: &str) -> Option<MediaType> {
    let mut parts = split_unquoted(s, ';').into_iter();
    let essence = parts.next()?.trim().to_ascii_lowercase();
    let (main, sub) = essence.split_once('/')?;
    let token = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+*".contains(c));
    if !token(main) || !token(sub) {
        return None;
    }
    let mut params = Vec::new();
    let mut q = 1.0;
    for p in parts {
        let Some((name, value)) = p.split_once('=') else { continue };
        let name = name.trim().to_ascii_lowercase();
        let value = unquote(value);
        if name == "q" {
            q = value.parse().unwrap_or(0.0);
        } else {
            params.push((name, value));
        }
    }
    Some(MediaType { essence, params, q })
}

/// Parses an `Accept` value into media ranges, best quality first (stable for equal quality);
/// ranges with `q=0` are dropped. An absent or empty header accepts anything.
pub fn parse_accept(header: Option<&str>) -> Vec<MediaType> {
    let Some(h) = header.filter(|h| !h.trim().is_empty()) else {
        return vec![MediaType { essence: "*/*".into(), params: Vec::new(), q: 1.0 }];
    };
    let mut ranges: Vec<MediaType> =
        split_unquoted(h, ',').into_iter().filter_map(parse_one).filter(|m| m.q > 0.0).collect();
    ranges.sort_by(|a, b| b.q.partial_cmp(&a.q).unwrap_or(std::cmp::Ordering::Equal));
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dicomweb_accept_values() {
        let a = parse_accept(Some(
            r#"multipart/related; type="application/dicom"; transfer-syntax=*, application/dicom+json;q=0.5"#,
        ));
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].essence, "multipart/related");
        assert_eq!(a[0].param("type"), Some("application/dicom"));
        assert_eq!(a[0].param("transfer-syntax"), Some("*"));
        assert_eq!(a[1].q, 0.5);
        let ct = parse_one(r#"multipart/related; type="application/dicom"; boundary="a;b,c""#).unwrap();
        assert_eq!(ct.param("boundary"), Some("a;b,c"));
    }

    #[test]
    fn ranges_cover_types() {
        let any = parse_one("*/*").unwrap();
        assert!(any.covers("application/dicom"));
        let img = parse_one("image/*").unwrap();
        assert!(img.covers("image/jpeg") && !img.covers("application/dicom"));
        assert!(parse_one("garbage").is_none());
        assert!(parse_one("a/b c").is_none());
        assert!(parse_accept(Some("text/html;q=0")).is_empty());
    }
}
