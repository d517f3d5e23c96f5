//! DICOM attribute matching (PS3.4 C.2.2.2), shared by C-FIND and QIDO-RS.
//!
//! A raw query value is parsed once with [`parse_matcher`] into a [`Matcher`], which is then
//! tested against stored values with [`Matcher::matches`]. The kinds of matching are:
//!
//! - **Universal** (C.2.2.2.3): an empty value, or a value made only of `*`, matches everything,
//!   absent values included. For PN, a value with only component separators (`"^^"`) is empty too.
//! - **Single value** (C.2.2.2.1): exact and case-sensitive; leading and trailing spaces and NUL
//!   padding are insignificant. PN ignores trailing empty components (`"Doe^John^^"` equals
//!   `"Doe^John"`) and is case-insensitive when [`MatchOptions::case_insensitive_pn`] is set.
//!   Numbers (IS, DS, US, …) compare numerically when both sides parse (`"5"`, `"05"` and `"5.0"`
//!   are equal). DA, TM and DT compare their normalised forms (see below).
//! - **Wildcard** (C.2.2.2.4): `*` matches any sequence of characters (the empty one included) and
//!   `?` exactly one character (a Unicode scalar value, not a byte). Allowed for PN, CS and the
//!   text VRs only; for DA, TM, DT, UI and numbers a wildcard is an error, except a value made only
//!   of `*`, which is universal.
//! - **Range** (C.2.2.2.5): DA, TM and DT accept `"A-B"` (inclusive), `"A-"` and `"-B"`.
//! - **List** (C.2.2.2.2, and QIDO-RS multiple values): backslash-separated values; a stored value
//!   matches when it equals any of them. Wildcards and ranges are not allowed inside a list, so an
//!   index can look each element up exactly.
//!
//! Stored values with several values (`"CT\MR"`) match when any one of them matches. An absent or
//! empty stored value matches only universal matching.
//!
//! ## Dates and times
//!
//! Dates, times and date-times are normalised to fixed-width strings that compare
//! lexicographically in chronological order:
//!
//! - DA: `YYYYMMDD` ([`normalize_date`]); the ACR-NEMA form `YYYY.MM.DD` is accepted.
//! - TM: `HHMMSS.FFFFFF` ([`normalize_time`]); `HH`, `HHMM`, `HHMMSS` and `HHMMSS.F…` are accepted,
//!   as is the ACR-NEMA form `HH:MM[:SS[.F…]]`.
//! - DT: `YYYYMMDDHHMMSS.FFFFFF` ([`normalize_datetime`]); any trailing components may be omitted.
//!
//! Omitted components are filled with their lowest value, except for the upper bound of a range,
//! where they are filled with their highest value so that the bound covers the whole unit it names:
//! as an upper bound, TM `"10"` means `105959.999999` and DT `"2006"` means the end of 2006. Stored
//! values and single (non-range) query values are points: omitted components take their lowest
//! value, so a single TM query `"10"` matches exactly `10:00:00.000000` (`"10"`, `"1000"`,
//! `"100000"`, …), not every time within that hour; use the range `"10-10"` for the hour.
//!
//! The UTC offset of a DT value (`&ZZXX`) is validated and then ignored: date-times compare as the
//! local wall-clock times they are written in. In a DT query the `-` of an offset and the `-` of a
//! range are told apart by trying each `-` as the range separator: the first split whose two sides
//! are valid date-times in ascending order is the range; otherwise the value is a single date-time
//! with an offset (so `"20200101-0500"` is a single value and `"2019-2020"` a range).

use std::fmt;

/// The value representation classes that matter for matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchVr {
    /// PN: person name; wildcards; trailing empty components insignificant; optionally case-insensitive.
    Pn,
    /// DA: date; single value, range or list.
    Da,
    /// TM: time; single value, range or list.
    Tm,
    /// DT: date-time; single value, range or list.
    Dt,
    /// UI: unique identifier; single value or list of UIDs, no wildcards.
    Ui,
    /// CS: code string; wildcards and lists.
    Cs,
    /// Other text VRs (LO, SH, AE, LT, ST, UC, UT, UR): wildcards and lists.
    Text,
    /// Numeric VRs (IS, DS, US, UL, SS, SL, FL, FD, …): compared numerically, no wildcards.
    Number,
}

impl MatchVr {
    /// The matching class of a DICOM VR code (`"PN"`, `"DA"`, …); `None` for VRs that are not
    /// matched as strings (SQ, OB, …).
    pub fn from_code(code: &str) -> Option<MatchVr> {
        Some(match code {
            "PN" => MatchVr::Pn,
            "DA" => MatchVr::Da,
            "TM" => MatchVr::Tm,
            "DT" => MatchVr::Dt,
            "UI" => MatchVr::Ui,
            "CS" => MatchVr::Cs,
            "LO" | "SH" | "AE" | "LT" | "ST" | "UC" | "UT" | "UR" | "AS" => MatchVr::Text,
            "IS" | "DS" | "US" | "UL" | "SS" | "SL" | "FL" | "FD" | "UV" | "SV" => MatchVr::Number,
            _ => return None,
        })
    }

    /// Whether `*` and `?` are wildcards for this VR (PN, CS and text).
    pub fn allows_wildcards(self) -> bool {
        matches!(self, MatchVr::Pn | MatchVr::Cs | MatchVr::Text)
    }

    /// Whether this VR supports range matching (DA, TM, DT).
    pub fn allows_ranges(self) -> bool {
        matches!(self, MatchVr::Da | MatchVr::Tm | MatchVr::Dt)
    }
}

impl fmt::Display for MatchVr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchVr::Pn => "PN",
            MatchVr::Da => "DA",
            MatchVr::Tm => "TM",
            MatchVr::Dt => "DT",
            MatchVr::Ui => "UI",
            MatchVr::Cs => "CS",
            MatchVr::Text => "text",
            MatchVr::Number => "numeric",
        })
    }
}

/// Matching options from config.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatchOptions {
    /// Compare person names case-insensitively (through [`normalize_pn`]), in single value,
    /// list and wildcard matching.
    pub case_insensitive_pn: bool,
}

/// A parsed query key value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Empty value or a lone "*": matches everything, including absent values.
    Universal,
    /// Exact value (after trimming insignificant spaces; DA, TM and DT values are normalised).
    Single(String),
    /// Value with `*` and/or `?` wildcards (PN, CS and text VRs only).
    Wildcard(String),
    /// Range for DA, TM, DT: "A-B", "A-", "-B", inclusive. Bounds are normalised (see the module
    /// documentation) and compare lexicographically; the upper bound covers the whole unit it names.
    Range {
        /// Normalised lower bound (`None`: open).
        lower: Option<String>,
        /// Normalised upper bound (`None`: open).
        upper: Option<String>,
    },
    /// Backslash-separated values, matched as any-of single values: a list of UIDs for UI, and
    /// lists of values for other VRs (QIDO-RS `CT\MR`). DA, TM and DT elements are normalised.
    List(Vec<String>),
}

/// Why a query value cannot be parsed for its VR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// Not a valid DA value.
    #[error("invalid date {0:?}: expected YYYYMMDD (or YYYY.MM.DD)")]
    InvalidDate(String),
    /// Not a valid TM value.
    #[error("invalid time {0:?}: expected HH[MM[SS[.FFFFFF]]] (or HH:MM[:SS[.FFFFFF]])")]
    InvalidTime(String),
    /// Not a valid DT value.
    #[error("invalid date-time {0:?}: expected YYYY[MM[DD[HH[MM[SS[.FFFFFF]]]]]][&ZZXX]")]
    InvalidDateTime(String),
    /// A range whose lower bound is after its upper bound.
    #[error("invalid range {0:?}: the lower bound is after the upper bound")]
    InvalidRange(String),
    /// A range that is not of the form `A-B`, `A-` or `-B`.
    #[error("malformed range {0:?}: expected A-B, A- or -B")]
    MalformedRange(String),
    /// A range inside a list of values.
    #[error("a range is not allowed in a list of values: {0:?}")]
    RangeInList(String),
    /// A wildcard for a VR that does not allow them.
    #[error("wildcards are not allowed for {vr} values: {value:?}")]
    WildcardNotAllowed {
        /// The VR class of the attribute.
        vr: MatchVr,
        /// The value given.
        value: String,
    },
    /// A wildcard inside a list of values.
    #[error("wildcards are not allowed in a list of values: {0:?}")]
    WildcardInList(String),
    /// A list of values with an empty element.
    #[error("empty value in list {0:?}")]
    EmptyListElement(String),
    /// Not a number, for a numeric VR.
    #[error("invalid number {0:?}")]
    InvalidNumber(String),
}

/// Parses a raw query value for an attribute of this VR.
///
/// Insignificant leading and trailing spaces and NUL padding are removed first. Never panics.
///
/// # Errors
/// A [`MatchError`] when the value is not valid for the VR: an invalid date, time, date-time or
/// number, a malformed or reversed range, a wildcard where none is allowed, or a bad list.
pub fn parse_matcher(vr: MatchVr, raw: &str) -> Result<Matcher, MatchError> {
    let value = trim_value(raw);
    if is_universal(vr, value) {
        return Ok(Matcher::Universal);
    }
    if value.contains('\\') {
        return parse_list(vr, value);
    }
    match vr {
        MatchVr::Da | MatchVr::Tm => parse_temporal(vr, value),
        MatchVr::Dt => parse_datetime_value(value),
        MatchVr::Ui | MatchVr::Number => parse_exact(vr, value),
        MatchVr::Pn | MatchVr::Cs | MatchVr::Text => Ok(parse_textual(value)),
    }
}

impl Matcher {
    /// Whether a stored value (None = attribute absent/empty) matches. Multi-valued stored values
    /// (backslash-separated, e.g. `ModalitiesInStudy` `"CT\MR"`) match if any value matches.
    pub fn matches(&self, vr: MatchVr, stored: Option<&str>, opts: MatchOptions) -> bool {
        if *self == Matcher::Universal {
            return true;
        }
        match stored {
            Some(stored) => stored_values(stored).any(|v| self.matches_one(vr, v, opts)),
            None => false,
        }
    }

    /// For index planning: the literal prefix an index range scan can use (Single -> whole value,
    /// Wildcard "DOE*" -> "DOE", "*DOE" -> "" meaning no useful prefix; Range lower bound is separate).
    /// `None` for universal, range and list matchers.
    pub fn literal_prefix(&self) -> Option<&str> {
        match self {
            Matcher::Single(v) => Some(v),
            Matcher::Wildcard(p) => Some(p.find(['*', '?']).map_or(p.as_str(), |i| &p[..i])),
            Matcher::Universal | Matcher::Range { .. } | Matcher::List(_) => None,
        }
    }

    /// Whether this matcher constrains anything (false for Universal).
    pub fn is_constraining(&self) -> bool {
        *self != Matcher::Universal
    }

    /// Whether one (trimmed, non-empty) stored value matches.
    fn matches_one(&self, vr: MatchVr, stored: &str, opts: MatchOptions) -> bool {
        match self {
            Matcher::Universal => true,
            Matcher::Single(q) => single_matches(vr, q, stored, opts),
            Matcher::List(qs) => qs.iter().any(|q| single_matches(vr, q, stored, opts)),
            Matcher::Wildcard(p) => wildcard_matches(vr, p, stored, opts),
            Matcher::Range { lower, upper } => range_matches(vr, lower.as_deref(), upper.as_deref(), stored),
        }
    }
}

/// Normalises a PN for case-insensitive matching and indexing: uppercase (Unicode-aware), trims
/// trailing '^' and '=' component separators and spaces. E.g. "Doe^John^^" -> "DOE^JOHN".
///
/// Trailing empty components are removed in each component group, so
/// `"Doe^^^=Yamada^^"` becomes `"DOE=YAMADA"`; leading spaces and NUL padding are removed too.
pub fn normalize_pn(s: &str) -> String {
    canonical_pn(s).to_uppercase()
}

/// Normalises a DA value to `YYYYMMDD`, accepting the ACR-NEMA form `YYYY.MM.DD`.
///
/// The month and day are checked (leap years included). Surrounding spaces are ignored.
///
/// # Errors
/// [`MatchError::InvalidDate`] when the value is not a valid date in either form.
pub fn normalize_date(s: &str) -> Result<String, MatchError> {
    let t = trim_value(s);
    let err = || MatchError::InvalidDate(t.to_string());
    let b = t.as_bytes();
    let digits: Vec<u8> = match b.len() {
        8 => b.to_vec(),
        10 if b[4] == b'.' && b[7] == b'.' => [&b[..4], &b[5..7], &b[8..]].concat(),
        _ => return Err(err()),
    };
    let year = number(&digits[..4]).ok_or_else(err)?;
    let month = number(&digits[4..6]).filter(|m| (1..=12).contains(m)).ok_or_else(err)?;
    let day = number(&digits[6..8]).filter(|d| (1..=days_in_month(year, month)).contains(d)).ok_or_else(err)?;
    Ok(format!("{year:04}{month:02}{day:02}"))
}

/// Normalises a TM value to `HHMMSS.FFFFFF`.
///
/// Accepts `HH`, `HHMM`, `HHMMSS`, `HHMMSS.F` to `HHMMSS.FFFFFF` and the ACR-NEMA form
/// `HH:MM[:SS[.F…]]`. Omitted components are filled with zeros, or with their highest value when
/// `upper` is set, so that an upper bound covers the whole unit it names (`"10"` ->
/// `105959.999999`, `"101530.1"` -> `101530.199999`). Hours go to 23, minutes to 59, seconds to 60
/// (leap second).
///
/// # Errors
/// [`MatchError::InvalidTime`] when the value is not a valid time.
pub fn normalize_time(s: &str, upper: bool) -> Result<String, MatchError> {
    let t = trim_value(s);
    let err = || MatchError::InvalidTime(t.to_string());
    let compact = strip_time_colons(t.as_bytes()).ok_or_else(err)?;
    let (main, frac) = split_fraction(&compact, 6).ok_or_else(err)?;
    if !matches!(main.len(), 2 | 4 | 6) {
        return Err(err());
    }
    let fill = |max: u32| if upper { max } else { 0 };
    let hour = field(main, 0, 0, 23).ok_or_else(err)?;
    let minute = field(main, 2, fill(59), 59).ok_or_else(err)?;
    let second = field(main, 4, fill(59), 60).ok_or_else(err)?;
    Ok(format!("{hour:02}{minute:02}{second:02}.{}", pad_fraction(frac, upper)))
}

/// Normalises a DT value to `YYYYMMDDHHMMSS.FFFFFF`, ignoring its UTC offset.
///
/// Accepts `YYYY[MM[DD[HH[MM[SS[.F…]]]]]][&ZZXX]`. The offset (`+`/`-`, hours up to 14, minutes up
/// to 59) is validated and dropped: values compare as written, in their own local time. Omitted
/// components are filled with their lowest value, or with their highest when `upper` is set
/// (`"2006"` -> `20061231235959.999999`, `"200602"` -> `20060228235959.999999`).
///
/// # Errors
/// [`MatchError::InvalidDateTime`] when the value is not a valid date-time.
pub fn normalize_datetime(s: &str, upper: bool) -> Result<String, MatchError> {
    let t = trim_value(s);
    let err = || MatchError::InvalidDateTime(t.to_string());
    let b = t.as_bytes();
    let body = strip_offset(b).ok_or_else(err)?;
    let (main, frac) = split_fraction(body, 14).ok_or_else(err)?;
    if !matches!(main.len(), 4 | 6 | 8 | 10 | 12 | 14) {
        return Err(err());
    }
    let fill = |max: u32| if upper { max } else { 0 };
    let year = main.get(..4).and_then(number).ok_or_else(err)?;
    let month = field(main, 4, if upper { 12 } else { 1 }, 12).filter(|m| *m >= 1).ok_or_else(err)?;
    let last_day = days_in_month(year, month);
    let day = field(main, 6, if upper { last_day } else { 1 }, last_day).filter(|d| *d >= 1).ok_or_else(err)?;
    let hour = field(main, 8, fill(23), 23).ok_or_else(err)?;
    let minute = field(main, 10, fill(59), 59).ok_or_else(err)?;
    let second = field(main, 12, fill(59), 60).ok_or_else(err)?;
    let frac = pad_fraction(frac, upper);
    Ok(format!("{year:04}{month:02}{day:02}{hour:02}{minute:02}{second:02}.{frac}"))
}

// ---------------------------------------------------------------------------------------------
// Parsing.

/// Removes insignificant leading and trailing spaces and NUL padding.
fn trim_value(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\0')
}

/// Whether `c` is a wildcard character.
fn is_wildcard(c: char) -> bool {
    c == '*' || c == '?'
}

/// Whether a trimmed query value means universal matching.
fn is_universal(vr: MatchVr, value: &str) -> bool {
    value.chars().all(|c| c == '*') || (vr == MatchVr::Pn && canonical_pn(value).is_empty())
}

/// PN, CS and text: a wildcard pattern or a single value.
fn parse_textual(value: &str) -> Matcher {
    if value.contains(is_wildcard) {
        Matcher::Wildcard(value.to_string())
    } else {
        Matcher::Single(value.to_string())
    }
}

/// UI and numbers: a single value, without wildcards.
fn parse_exact(vr: MatchVr, value: &str) -> Result<Matcher, MatchError> {
    check_no_wildcard(vr, value)?;
    if vr == MatchVr::Number && parse_number(value).is_none() {
        return Err(MatchError::InvalidNumber(value.to_string()));
    }
    Ok(Matcher::Single(value.to_string()))
}

/// Refuses a value containing a wildcard.
fn check_no_wildcard(vr: MatchVr, value: &str) -> Result<(), MatchError> {
    if value.contains(is_wildcard) {
        return Err(MatchError::WildcardNotAllowed { vr, value: value.to_string() });
    }
    Ok(())
}

/// DA and TM: a range when the value contains `-`, else a single normalised value.
fn parse_temporal(vr: MatchVr, value: &str) -> Result<Matcher, MatchError> {
    check_no_wildcard(vr, value)?;
    match value.split_once('-') {
        Some((_, b)) if b.contains('-') => Err(MatchError::MalformedRange(value.to_string())),
        Some((a, b)) => build_range(vr, value, a, b),
        None => Ok(Matcher::Single(normalize_point(vr, value)?)),
    }
}

/// DT: `-` separates a range or introduces a negative UTC offset; see the module documentation.
fn parse_datetime_value(value: &str) -> Result<Matcher, MatchError> {
    check_no_wildcard(MatchVr::Dt, value)?;
    let mut unordered = false;
    let mut first_error = None;
    for (i, _) in value.match_indices('-') {
        match build_range(MatchVr::Dt, value, &value[..i], &value[i + 1..]) {
            Ok(m) => return Ok(m),
            Err(MatchError::InvalidRange(_)) => unordered = true,
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    match normalize_datetime(value, false) {
        Ok(v) => Ok(Matcher::Single(v)),
        Err(_) if unordered => Err(MatchError::InvalidRange(value.to_string())),
        Err(e) => Err(first_error.unwrap_or(e)),
    }
}

/// Builds a range from its two (possibly empty) sides, checking their order.
fn build_range(vr: MatchVr, value: &str, lower: &str, upper: &str) -> Result<Matcher, MatchError> {
    let (lower, upper) = (trim_value(lower), trim_value(upper));
    if lower.is_empty() && upper.is_empty() {
        return Err(MatchError::MalformedRange(value.to_string()));
    }
    let lower = non_empty(lower).map(|s| normalize_bound(vr, s, false)).transpose()?;
    let upper = non_empty(upper).map(|s| normalize_bound(vr, s, true)).transpose()?;
    if let (Some(l), Some(u)) = (&lower, &upper) {
        if l > u {
            return Err(MatchError::InvalidRange(value.to_string()));
        }
    }
    Ok(Matcher::Range { lower, upper })
}

/// `Some(s)` unless `s` is empty.
fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A backslash-separated list of single values.
fn parse_list(vr: MatchVr, value: &str) -> Result<Matcher, MatchError> {
    value.split('\\').map(|part| list_element(vr, value, trim_value(part))).collect::<Result<_, _>>().map(Matcher::List)
}

/// One element of a list: non-empty, no wildcard, no range; DA/TM/DT normalised, numbers checked.
fn list_element(vr: MatchVr, list: &str, part: &str) -> Result<String, MatchError> {
    if part.is_empty() {
        return Err(MatchError::EmptyListElement(list.to_string()));
    }
    if part.contains(is_wildcard) {
        return Err(if vr.allows_wildcards() {
            MatchError::WildcardInList(list.to_string())
        } else {
            MatchError::WildcardNotAllowed { vr, value: part.to_string() }
        });
    }
    match vr {
        MatchVr::Da | MatchVr::Tm | MatchVr::Dt => normalize_point(vr, part).map_err(|e| {
            if part.contains('-') {
                MatchError::RangeInList(list.to_string())
            } else {
                e
            }
        }),
        MatchVr::Number if parse_number(part).is_none() => Err(MatchError::InvalidNumber(part.to_string())),
        _ => Ok(part.to_string()),
    }
}

/// Normalises a DA, TM or DT value as a point in time (omitted components lowest).
fn normalize_point(vr: MatchVr, s: &str) -> Result<String, MatchError> {
    normalize_bound(vr, s, false)
}

/// Normalises a DA, TM or DT value as a lower or upper bound; other VRs are only trimmed.
fn normalize_bound(vr: MatchVr, s: &str, upper: bool) -> Result<String, MatchError> {
    match vr {
        MatchVr::Da => normalize_date(s),
        MatchVr::Tm => normalize_time(s, upper),
        MatchVr::Dt => normalize_datetime(s, upper),
        _ => Ok(trim_value(s).to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Matching.

/// The individual values of a stored value: split on backslash, trimmed, empty ones dropped.
fn stored_values(stored: &str) -> impl Iterator<Item = &str> {
    stored.split('\\').map(trim_value).filter(|v| !v.is_empty())
}

/// Single value matching of one query value against one stored value.
fn single_matches(vr: MatchVr, query: &str, stored: &str, opts: MatchOptions) -> bool {
    match vr {
        MatchVr::Pn => {
            let stored = pn_key(stored, opts);
            !stored.is_empty() && pn_key(query, opts) == stored
        }
        MatchVr::Da | MatchVr::Tm | MatchVr::Dt => match (normalize_point(vr, query), normalize_point(vr, stored)) {
            (Ok(q), Ok(s)) => q == s,
            _ => false,
        },
        MatchVr::Number => numbers_equal(query, stored),
        MatchVr::Ui | MatchVr::Cs | MatchVr::Text => trim_value(query) == stored,
    }
}

/// Wildcard matching of one pattern against one stored value.
fn wildcard_matches(vr: MatchVr, pattern: &str, stored: &str, opts: MatchOptions) -> bool {
    if vr == MatchVr::Pn {
        let stored = pn_key(stored, opts);
        return !stored.is_empty() && glob(&pn_key(pattern, opts), &stored);
    }
    glob(trim_value(pattern), stored)
}

/// Range matching: the stored value, normalised as a point, lies within the bounds.
/// Stored values that cannot be normalised never match.
fn range_matches(vr: MatchVr, lower: Option<&str>, upper: Option<&str>, stored: &str) -> bool {
    let Ok(v) = normalize_point(vr, stored) else {
        return false;
    };
    lower.is_none_or(|l| l <= v.as_str()) && upper.is_none_or(|u| v.as_str() <= u)
}

/// The comparison form of a PN: [`normalize_pn`] when case-insensitive, else [`canonical_pn`].
fn pn_key(s: &str, opts: MatchOptions) -> String {
    if opts.case_insensitive_pn {
        normalize_pn(s)
    } else {
        canonical_pn(s)
    }
}

/// A PN without padding and without trailing empty components or component groups.
fn canonical_pn(s: &str) -> String {
    let groups: Vec<&str> = trim_value(s).split('=').map(|g| g.trim_end_matches(['^', ' ', '\0'])).collect();
    groups.join("=").trim_end_matches(['=', '^', ' ', '\0']).to_string()
}

/// Wildcard matching: `*` matches any sequence, `?` one character.
///
/// Iterative with a single backtracking point (the last `*`), so it runs in O(pattern × text)
/// time at worst, whatever the pattern.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = t.get(ti) {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
            }
            Some(&q) if q == '?' || q == c => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((after_star, from)) => {
                    star = Some((after_star, from + 1));
                    pi = after_star;
                    ti = from + 1;
                }
                None => return false,
            },
        }
    }
    p.get(pi..).is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// Numeric equality when both parse, else trimmed string equality.
fn numbers_equal(a: &str, b: &str) -> bool {
    match (parse_number(a), parse_number(b)) {
        (Some(x), Some(y)) => x == y,
        _ => trim_value(a) == trim_value(b),
    }
}

/// Parses an IS/DS-style decimal number (no `inf`, no `NaN`).
fn parse_number(s: &str) -> Option<f64> {
    let s = trim_value(s);
    let plain = s.chars().all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
    if s.is_empty() || !plain {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

// ---------------------------------------------------------------------------------------------
// Date and time helpers (byte-based, so no slicing can split a UTF-8 character).

/// The value of a run of ASCII digits (`None` if empty, not all digits, or too long).
fn number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// The two-digit field at `at` of `main`, or `default` when `main` ends before it; `None` when
/// present but not two digits or above `max`.
fn field(main: &[u8], at: usize, default: u32, max: u32) -> Option<u32> {
    match main.get(at..) {
        Some(rest) if !rest.is_empty() => number(rest.get(..2)?).filter(|v| *v <= max),
        _ => Some(default),
    }
}

/// Splits `HHMMSS.FFFFFF`-style bytes at the `.`; the fraction (1 to 6 digits) is only allowed
/// after a main part of exactly `full_len` bytes.
fn split_fraction(b: &[u8], full_len: usize) -> Option<(&[u8], &[u8])> {
    match b.iter().position(|&c| c == b'.') {
        None => Some((b, &[])),
        Some(i) => {
            let (main, frac) = (&b[..i], &b[i + 1..]);
            let ok = main.len() == full_len && (1..=6).contains(&frac.len()) && frac.iter().all(u8::is_ascii_digit);
            ok.then_some((main, frac))
        }
    }
}

/// The fraction padded to six digits with `0`, or with `9` for an upper bound.
fn pad_fraction(frac: &[u8], upper: bool) -> String {
    let pad = if upper { '9' } else { '0' };
    let mut s: String = frac.iter().map(|&b| char::from(b)).collect();
    while s.len() < 6 {
        s.push(pad);
    }
    s
}

/// Removes the ACR-NEMA colons of `HH:MM[:SS…]`; colons are only allowed at bytes 2 and 5.
fn strip_time_colons(b: &[u8]) -> Option<Vec<u8>> {
    let colons: Vec<usize> = b.iter().enumerate().filter(|(_, &c)| c == b':').map(|(i, _)| i).collect();
    let valid = matches!(colons.as_slice(), [] | [2] | [2, 5]) && b.last() != Some(&b':');
    valid.then(|| b.iter().copied().filter(|&c| c != b':').collect())
}

/// The DT without its `&ZZXX` offset, after checking the offset.
fn strip_offset(b: &[u8]) -> Option<&[u8]> {
    match b.iter().position(|&c| c == b'+' || c == b'-') {
        None => Some(b),
        Some(i) => {
            let offset = &b[i + 1..];
            let valid = offset.len() == 4
                && number(&offset[..2]).is_some_and(|h| h <= 14)
                && number(&offset[2..]).is_some_and(|m| m <= 59);
            valid.then_some(&b[..i])
        }
    }
}

/// Days in a month of the proleptic Gregorian calendar (0 for an invalid month).
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MatchVr::*;

    const CS: bool = false; // case-sensitive PN
    const CI: bool = true; // case-insensitive PN

    fn opts(ci: bool) -> MatchOptions {
        MatchOptions { case_insensitive_pn: ci }
    }

    fn s(v: &str) -> String {
        v.to_string()
    }

    /// (vr, query, stored, case-insensitive PN, expected match).
    #[rustfmt::skip]
    const MATCH_CASES: &[(MatchVr, &str, Option<&str>, bool, bool)] = &[
        // Universal matching (C.2.2.2.3): empty or "*" matches everything, absent values included.
        (Pn, "", None, CS, true),
        (Pn, "", Some("Doe^John"), CS, true),
        (Pn, "*", None, CS, true),
        (Pn, "*", Some(""), CI, true),
        (Text, "*", Some("ACC1"), CS, true),
        (Text, "  ", None, CS, true),
        (Da, "*", None, CS, true),
        (Ui, "*", Some("1.2.3"), CS, true),
        (Number, "", None, CS, true),
        (Pn, "^^", None, CS, true),
        // Other matchers never match absent or empty stored values.
        (Pn, "Doe*", None, CI, false),
        (Pn, "Doe^John", Some(""), CS, false),
        (Pn, "*", Some("^^"), CS, true),
        (Pn, "?*", Some("^^"), CS, false),
        (Text, "?*", Some("   "), CS, false),
        (Da, "20060705-", None, CS, false),
        (Ui, "1.2.3\\1.2.4", None, CS, false),
        (Cs, "CT", Some("\\"), CS, false),
        // Single value matching (C.2.2.2.1): exact and case-sensitive.
        (Text, "ACC3", Some("ACC3"), CS, true),
        (Text, "ACC", Some("ACC3"), CS, false),
        (Text, "acc3", Some("ACC3"), CI, false),
        (Cs, "CT", Some("CT"), CS, true),
        (Cs, "ct", Some("CT"), CI, false),
        // Leading and trailing spaces are insignificant; trailing NUL padding too.
        (Text, "  ACC3 ", Some("ACC3"), CS, true),
        (Text, "ACC3", Some(" ACC3  "), CS, true),
        (Ui, "1.2.840.10008.1.2", Some("1.2.840.10008.1.2\0"), CS, true),
        (Text, "A B", Some("A  B"), CS, false),
        // PN: trailing empty components are insignificant; case per option.
        (Pn, "Doe^John", Some("Doe^John"), CS, true),
        (Pn, "Doe^John", Some("Doe^John^^^"), CS, true),
        (Pn, "Doe^John^^", Some("Doe^John"), CS, true),
        (Pn, "Doe^John", Some("Doe^John=Yamada"), CS, false),
        (Pn, "Doe^John^^^=", Some("Doe^John"), CS, true),
        (Pn, "DOE^JOHN", Some("Doe^John"), CS, false),
        (Pn, "DOE^JOHN", Some("Doe^John"), CI, true),
        (Pn, "doe^john", Some("DOE^JOHN^^"), CI, true),
        (Pn, "Doe", Some("Doe^John"), CI, false),
        (Pn, "müller^jürgen", Some("MÜLLER^JÜRGEN"), CI, true),
        (Pn, "müller^jürgen", Some("MÜLLER^JÜRGEN"), CS, false),
        // Wildcard matching (C.2.2.2.4).
        (Pn, "Doe*", Some("Doe^John"), CS, true),
        (Pn, "Doe*", Some("DOE^JOHN"), CS, false),
        (Pn, "Doe*", Some("DOE^JOHN"), CI, true),
        (Pn, "doe*", Some("Doe^Jane"), CI, true),
        (Pn, "Do?^*", Some("Doe^John"), CS, true),
        (Pn, "Do?^*", Some("Dot^Jane"), CS, true),
        (Pn, "Do?^*", Some("Dome^Jane"), CS, false),
        (Pn, "*^J*", Some("Doe^John"), CS, true),
        (Pn, "*^J*", Some("Doe"), CS, false),
        (Pn, "*John", Some("Doe^John^^"), CS, true),
        (Pn, "Doe^J?hn", Some("Doe^John"), CS, true),
        (Text, "X-1?", Some("X-12"), CS, true),
        (Text, "X-1?", Some("X-1"), CS, false),
        (Text, "X-1?", Some("X-123"), CS, false),
        (Text, "*", Some(""), CS, true),
        (Text, "A*", Some("A"), CS, true),
        (Text, "*A*B*", Some("xxAyyBzz"), CS, true),
        (Text, "*A*B*", Some("xxByyAzz"), CS, false),
        (Text, "?", Some("é"), CS, true),
        (Text, "??", Some("é"), CS, false),
        (Text, "山?", Some("山田"), CS, true),
        (Text, "a?c", Some("abc"), CS, true),
        (Text, "a?c", Some("ac"), CS, false),
        (Text, "**a", Some("ba"), CS, true),
        (Cs, "C*", Some("MR\\CT"), CS, true),
        (Cs, "?T", Some("MR\\US"), CS, false),
        // Date single values and ranges (C.2.2.2.5).
        (Da, "20060705", Some("20060705"), CS, true),
        (Da, "20060705", Some("20060706"), CS, false),
        (Da, "2006.07.05", Some("20060705"), CS, true),
        (Da, "20060705", Some("2006.07.05"), CS, true),
        (Da, "20060705-20060707", Some("20060705"), CS, true),
        (Da, "20060705-20060707", Some("20060706"), CS, true),
        (Da, "20060705-20060707", Some("20060707"), CS, true),
        (Da, "20060705-20060707", Some("20060704"), CS, false),
        (Da, "20060705-20060707", Some("20060708"), CS, false),
        (Da, "-20060707", Some("19000101"), CS, true),
        (Da, "-20060707", Some("20060707"), CS, true),
        (Da, "-20060707", Some("20060708"), CS, false),
        (Da, "20060705-", Some("20060705"), CS, true),
        (Da, "20060705-", Some("29991231"), CS, true),
        (Da, "20060705-", Some("20060704"), CS, false),
        (Da, "2006.07.05-2006.07.07", Some("2006.07.06"), CS, true),
        (Da, "20060705-20060707", Some("not a date"), CS, false),
        (Da, "20060705-20060705", Some("20060705"), CS, true),
        (Da, "20060705\\20060707", Some("20060707"), CS, true),
        (Da, "20060705\\20060707", Some("20060706"), CS, false),
        // Time single values and ranges; an upper bound covers the whole unit it names.
        (Tm, "101530", Some("101530"), CS, true),
        (Tm, "1015", Some("101500"), CS, true),
        (Tm, "10", Some("101500"), CS, false),
        (Tm, "101530", Some("10:15:30"), CS, true),
        (Tm, "101530.5", Some("101530.500"), CS, true),
        (Tm, "10-10", Some("105959.999"), CS, true),
        (Tm, "10-10", Some("100000"), CS, true),
        (Tm, "10-10", Some("110000"), CS, false),
        (Tm, "10-11", Some("1159"), CS, true),
        (Tm, "1000-1030", Some("103059"), CS, true),
        (Tm, "1000-1030", Some("1031"), CS, false),
        (Tm, "070000-", Some("235959"), CS, true),
        (Tm, "070000-", Some("065959.999999"), CS, false),
        (Tm, "-0700", Some("070059"), CS, true),
        (Tm, "-0700", Some("0701"), CS, false),
        (Tm, "10:00-10:30", Some("10:15"), CS, true),
        (Tm, "10-11", Some("garbage"), CS, false),
        // Date-time ranges; offsets are ignored.
        (Dt, "20060705120000", Some("20060705120000"), CS, true),
        (Dt, "2006", Some("20060101"), CS, true),
        (Dt, "20060705120000-20060705130000", Some("20060705123000"), CS, true),
        (Dt, "20060705120000-20060705130000", Some("20060705130001"), CS, false),
        (Dt, "2006-2006", Some("20061231235959.5"), CS, true),
        (Dt, "2006-2006", Some("2007"), CS, false),
        (Dt, "200607-", Some("20060701000000"), CS, true),
        (Dt, "200607-", Some("20060630235959"), CS, false),
        (Dt, "-200602", Some("20060228235959.999999"), CS, true),
        (Dt, "-200602", Some("20060301"), CS, false),
        (Dt, "20060705120000+0200-20060705130000+0200", Some("20060705123000-0500"), CS, true),
        (Dt, "20060705120000-0500", Some("20060705120000+0100"), CS, true),
        // List of UID matching (C.2.2.2.2).
        (Ui, "1.2.3", Some("1.2.3"), CS, true),
        (Ui, "1.2.3", Some("1.2.30"), CS, false),
        (Ui, "1.2.3\\1.2.4", Some("1.2.4"), CS, true),
        (Ui, "1.2.3\\1.2.4", Some("1.2.5"), CS, false),
        (Ui, "1.2.1\\1.2.3\\9.9", Some("1.2.3"), CS, true),
        (Ui, "1.2.3", Some("1.2.5\\1.2.3"), CS, true),
        // Lists for other VRs and multi-valued stored values (ModalitiesInStudy).
        (Cs, "MR", Some("CT\\MR"), CS, true),
        (Cs, "US", Some("CT\\MR"), CS, false),
        (Cs, "CT\\MR", Some("MR"), CS, true),
        (Cs, "CT\\US", Some("MR\\US"), CS, true),
        (Cs, "CT\\US", Some("MR\\PT"), CS, false),
        (Cs, "MR", Some("CT \\ MR "), CS, true),
        (Pn, "doe^john\\smith^anna", Some("SMITH^ANNA"), CI, true),
        (Pn, "doe^john\\smith^anna", Some("SMITH^ANNA"), CS, false),
        (Pn, "Smith*", Some("Doe^John\\Smith^Anna"), CS, true),
        (Text, "A\\B", Some("B"), CS, true),
        // Numbers compare numerically when both parse.
        (Number, "5", Some("5"), CS, true),
        (Number, "5", Some("05"), CS, true),
        (Number, "5", Some("5.0"), CS, true),
        (Number, "5.0", Some(" 5 "), CS, true),
        (Number, "+5", Some("5"), CS, true),
        (Number, "5", Some("50"), CS, false),
        (Number, "1", Some("10"), CS, false),
        (Number, "10", Some("1e1"), CS, true),
        (Number, "-3", Some("-3.00"), CS, true),
        (Number, "1\\2", Some("2"), CS, true),
        (Number, "1\\2", Some("3"), CS, false),
        (Number, "7", Some("1\\7"), CS, true),
        (Number, "7", Some("seven"), CS, false),
    ];

    #[test]
    fn matching_table() {
        for &(vr, query, stored, ci, expected) in MATCH_CASES {
            let m = parse_matcher(vr, query).unwrap_or_else(|e| panic!("{vr:?} {query:?}: {e}"));
            assert_eq!(
                m.matches(vr, stored, opts(ci)),
                expected,
                "{vr:?} query {query:?} stored {stored:?} ci {ci}: {m:?}"
            );
        }
        assert!(MATCH_CASES.len() >= 60);
    }

    #[test]
    fn parse_table() {
        let range = |l: Option<&str>, u: Option<&str>| Matcher::Range { lower: l.map(s), upper: u.map(s) };
        let cases: Vec<(MatchVr, &str, Matcher)> = vec![
            (Pn, "", Matcher::Universal),
            (Pn, "*", Matcher::Universal),
            (Pn, " * ", Matcher::Universal),
            (Pn, "**", Matcher::Universal),
            (Pn, "^^=", Matcher::Universal),
            (Da, "*", Matcher::Universal),
            (Ui, "*", Matcher::Universal),
            (Number, "*", Matcher::Universal),
            (Text, "\0\0", Matcher::Universal),
            (Pn, "Doe^John ", Matcher::Single(s("Doe^John"))),
            (Pn, "Doe*", Matcher::Wildcard(s("Doe*"))),
            (Text, "X-1?", Matcher::Wildcard(s("X-1?"))),
            (Text, "X-1", Matcher::Single(s("X-1"))),
            (Cs, "CT\\MR", Matcher::List(vec![s("CT"), s("MR")])),
            (Cs, " CT \\ MR ", Matcher::List(vec![s("CT"), s("MR")])),
            (Ui, "1.2.3", Matcher::Single(s("1.2.3"))),
            (Ui, "1.2.3\\1.2.4", Matcher::List(vec![s("1.2.3"), s("1.2.4")])),
            (Number, "05", Matcher::Single(s("05"))),
            (Da, "20060705", Matcher::Single(s("20060705"))),
            (Da, "2006.07.05", Matcher::Single(s("20060705"))),
            (Da, "20060705-20060707", range(Some("20060705"), Some("20060707"))),
            (Da, "-20060707", range(None, Some("20060707"))),
            (Da, "20060705-", range(Some("20060705"), None)),
            (Da, "20060705 - 20060707", range(Some("20060705"), Some("20060707"))),
            (Da, "2006.07.05\\20060706", Matcher::List(vec![s("20060705"), s("20060706")])),
            (Tm, "10", Matcher::Single(s("100000.000000"))),
            (Tm, "10-10", range(Some("100000.000000"), Some("105959.999999"))),
            (Tm, "1015-", range(Some("101500.000000"), None)),
            (Tm, "-101530.1", range(None, Some("101530.199999"))),
            (Tm, "10:15-10:30:00", range(Some("101500.000000"), Some("103000.999999"))),
            (Dt, "2006", Matcher::Single(s("20060101000000.000000"))),
            (Dt, "2006-2007", range(Some("20060101000000.000000"), Some("20071231235959.999999"))),
            (Dt, "200602-", range(Some("20060201000000.000000"), None)),
            (Dt, "-200802", range(None, Some("20080229235959.999999"))),
            (Dt, "20060705-0500", Matcher::Single(s("20060705000000.000000"))),
            (Dt, "20060705120000-0500-", range(Some("20060705120000.000000"), None)),
            (
                Dt,
                "20060705120000-0500-20060705130000-0500",
                range(Some("20060705120000.000000"), Some("20060705130000.999999")),
            ),
        ];
        for (vr, raw, expected) in cases {
            assert_eq!(parse_matcher(vr, raw), Ok(expected), "{vr:?} {raw:?}");
        }
    }

    #[test]
    fn error_table() {
        let wildcard = |vr: MatchVr, v: &str| MatchError::WildcardNotAllowed { vr, value: s(v) };
        let cases: Vec<(MatchVr, &str, MatchError)> = vec![
            (Da, "2020133", MatchError::InvalidDate(s("2020133"))),
            (Da, "20201340", MatchError::InvalidDate(s("20201340"))),
            (Da, "20201301", MatchError::InvalidDate(s("20201301"))),
            (Da, "20210229", MatchError::InvalidDate(s("20210229"))),
            (Da, "19000229", MatchError::InvalidDate(s("19000229"))),
            (Da, "abc", MatchError::InvalidDate(s("abc"))),
            (Da, "2020-01-01", MatchError::MalformedRange(s("2020-01-01"))),
            (Da, "20060707-20060705", MatchError::InvalidRange(s("20060707-20060705"))),
            (Da, "20060705-2006074", MatchError::InvalidDate(s("2006074"))),
            (Da, "-", MatchError::MalformedRange(s("-"))),
            (Da, "2006*", wildcard(Da, "2006*")),
            (Da, "2006070?", wildcard(Da, "2006070?")),
            (Da, "20060705-20060707\\20060709", MatchError::RangeInList(s("20060705-20060707\\20060709"))),
            (Tm, "24", MatchError::InvalidTime(s("24"))),
            (Tm, "1060", MatchError::InvalidTime(s("1060"))),
            (Tm, "101", MatchError::InvalidTime(s("101"))),
            (Tm, "1015.5", MatchError::InvalidTime(s("1015.5"))),
            (Tm, "101530.1234567", MatchError::InvalidTime(s("101530.1234567"))),
            (Tm, "1:15", MatchError::InvalidTime(s("1:15"))),
            (Tm, "11-10", MatchError::InvalidRange(s("11-10"))),
            (Tm, "10*", wildcard(Tm, "10*")),
            (Dt, "20061301", MatchError::InvalidDateTime(s("20061301"))),
            (Dt, "20060705+2500", MatchError::InvalidDateTime(s("20060705+2500"))),
            (Dt, "20060705-05", MatchError::InvalidDateTime(s("05"))),
            (Dt, "20061340-", MatchError::InvalidDateTime(s("20061340"))),
            (Dt, "2007-2006", MatchError::InvalidRange(s("2007-2006"))),
            (Dt, "-", MatchError::MalformedRange(s("-"))),
            (Dt, "20?6", wildcard(Dt, "20?6")),
            (Ui, "1.2.*", wildcard(Ui, "1.2.*")),
            (Ui, "1.2.?", wildcard(Ui, "1.2.?")),
            (Ui, "1.2.3\\1.2.*", wildcard(Ui, "1.2.*")),
            (Ui, "1.2.3\\", MatchError::EmptyListElement(s("1.2.3\\"))),
            (Ui, "\\\\", MatchError::EmptyListElement(s("\\\\"))),
            (Cs, "CT\\M*", MatchError::WildcardInList(s("CT\\M*"))),
            (Number, "abc", MatchError::InvalidNumber(s("abc"))),
            (Number, "inf", MatchError::InvalidNumber(s("inf"))),
            (Number, "NaN", MatchError::InvalidNumber(s("NaN"))),
            (Number, "1-5", MatchError::InvalidNumber(s("1-5"))),
            (Number, "5*", wildcard(Number, "5*")),
            (Number, "1\\x", MatchError::InvalidNumber(s("x"))),
        ];
        for (vr, raw, expected) in cases {
            assert_eq!(parse_matcher(vr, raw), Err(expected), "{vr:?} {raw:?}");
        }
    }

    #[test]
    fn error_messages_are_lowercase_and_name_the_value() {
        let e = parse_matcher(Da, "20201340").unwrap_err();
        assert_eq!(e.to_string(), "invalid date \"20201340\": expected YYYYMMDD (or YYYY.MM.DD)");
        let e = parse_matcher(Ui, "1.2.*").unwrap_err();
        assert_eq!(e.to_string(), "wildcards are not allowed for UI values: \"1.2.*\"");
        let e = parse_matcher(Da, "20060707-20060705").unwrap_err();
        assert!(e.to_string().starts_with("invalid range \"20060707-20060705\""));
    }

    #[test]
    fn normalize_date_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("20060705", Some("20060705")),
            ("2006.07.05", Some("20060705")),
            (" 20060705\0", Some("20060705")),
            ("20000229", Some("20000229")),
            ("20240229", Some("20240229")),
            ("20230229", None),
            ("20060732", None),
            ("20060700", None),
            ("20060005", None),
            ("2006-07-05", None),
            ("2006.0705", None),
            ("200607051", None),
            ("", None),
            ("２００６０７０５", None),
            ("2006é705", None),
        ];
        for &(input, expected) in cases {
            assert_eq!(normalize_date(input).ok().as_deref(), expected, "{input:?}");
        }
    }

    #[test]
    fn normalize_time_table() {
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("10", false, Some("100000.000000")),
            ("10", true, Some("105959.999999")),
            ("1015", false, Some("101500.000000")),
            ("1015", true, Some("101559.999999")),
            ("101530", false, Some("101530.000000")),
            ("101530", true, Some("101530.999999")),
            ("101530.123", false, Some("101530.123000")),
            ("101530.123", true, Some("101530.123999")),
            ("101530.123456", true, Some("101530.123456")),
            ("10:15:30", false, Some("101530.000000")),
            ("10:15", true, Some("101559.999999")),
            ("10:15:30.25", false, Some("101530.250000")),
            ("235960", false, Some("235960.000000")),
            ("000000", false, Some("000000.000000")),
            ("2400", false, None),
            ("1060", false, None),
            ("101561", false, None),
            ("1", false, None),
            ("10153", false, None),
            ("101530.", false, None),
            ("10:", false, None),
            ("10::15", false, None),
            ("1015:30", false, None),
            ("ab", false, None),
            ("", true, None),
        ];
        for &(input, upper, expected) in cases {
            assert_eq!(normalize_time(input, upper).ok().as_deref(), expected, "{input:?} upper {upper}");
        }
    }

    #[test]
    fn normalize_datetime_table() {
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("2006", false, Some("20060101000000.000000")),
            ("2006", true, Some("20061231235959.999999")),
            ("200602", true, Some("20060228235959.999999")),
            ("200402", true, Some("20040229235959.999999")),
            ("20060705", true, Some("20060705235959.999999")),
            ("2006070512", true, Some("20060705125959.999999")),
            ("200607051230", false, Some("20060705123000.000000")),
            ("20060705123045.5", false, Some("20060705123045.500000")),
            ("20060705123045.5", true, Some("20060705123045.599999")),
            ("20060705123045+0200", false, Some("20060705123045.000000")),
            ("2006-0500", false, Some("20060101000000.000000")),
            ("20060705123045.123456-1200", true, Some("20060705123045.123456")),
            ("20060705123045+1500", false, None),
            ("20060705123045+02", false, None),
            ("200613", false, None),
            ("20060230", false, None),
            ("2006070524", false, None),
            ("200607051260", false, None),
            ("2006070512.5", false, None),
            ("20060", false, None),
            ("206", false, None),
            ("-0500", false, None),
            ("", false, None),
        ];
        for &(input, upper, expected) in cases {
            assert_eq!(normalize_datetime(input, upper).ok().as_deref(), expected, "{input:?} upper {upper}");
        }
    }

    #[test]
    fn normalize_pn_table() {
        let cases: &[(&str, &str)] = &[
            ("Doe^John^^", "DOE^JOHN"),
            ("Doe^John", "DOE^JOHN"),
            ("  doe^john  ", "DOE^JOHN"),
            ("Doe^John^^^=", "DOE^JOHN"),
            ("Doe^^^=Yamada^^", "DOE=YAMADA"),
            ("=Yamada", "=YAMADA"),
            ("Doe^John^^Jr", "DOE^JOHN^^JR"),
            ("Müller^Jürgen", "MÜLLER^JÜRGEN"),
            ("straße", "STRASSE"),
            ("^^", ""),
            ("", ""),
        ];
        for &(input, expected) in cases {
            assert_eq!(normalize_pn(input), expected, "{input:?}");
        }
    }

    #[test]
    fn literal_prefix_and_constraint() {
        let cases: &[(MatchVr, &str, Option<&str>, bool)] = &[
            (Pn, "", None, false),
            (Pn, "*", None, false),
            (Pn, "Doe^John", Some("Doe^John"), true),
            (Pn, "DOE*", Some("DOE"), true),
            (Pn, "Do?^*", Some("Do"), true),
            (Pn, "*DOE", Some(""), true),
            (Text, "山田*", Some("山田"), true),
            (Da, "20060705", Some("20060705"), true),
            (Da, "20060705-", None, true),
            (Ui, "1.2\\1.3", None, true),
        ];
        for &(vr, raw, prefix, constraining) in cases {
            let m = parse_matcher(vr, raw).unwrap();
            assert_eq!(m.literal_prefix(), prefix, "{vr:?} {raw:?}");
            assert_eq!(m.is_constraining(), constraining, "{vr:?} {raw:?}");
        }
    }

    #[test]
    fn pathological_wildcards_complete() {
        let text = "a".repeat(5_000);
        let m = parse_matcher(Text, "*a*a*a*a*a*a*a*a*a*a*a*a*b").unwrap();
        assert!(!m.matches(Text, Some(&text), MatchOptions::default()));
        let m = parse_matcher(Pn, "*a*a*a*a*a*a*a*a*a*a*a*a*").unwrap();
        assert!(m.matches(Pn, Some(&text), opts(CI)));
        let m = parse_matcher(Text, &"*?".repeat(200)).unwrap();
        assert!(m.matches(Text, Some(&text), MatchOptions::default()));
    }

    #[test]
    fn hand_built_matchers_do_not_panic() {
        let odd = [
            Matcher::Range { lower: Some(s("b")), upper: None },
            Matcher::Wildcard(s("2006*")),
            Matcher::List(vec![]),
            Matcher::Single(s("")),
        ];
        for m in &odd {
            for vr in [Pn, Da, Tm, Dt, Ui, Cs, Text, Number] {
                let _ = m.matches(vr, Some("c\\20060705\\10"), opts(CI));
            }
        }
        assert!(!Matcher::List(vec![]).matches(Cs, Some("CT"), MatchOptions::default()));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let inputs = [
            "",
            "-",
            "--",
            "\\",
            "*",
            "?",
            "é",
            "山田^太郎",
            "2006é705",
            "10:é",
            "20060705-é",
            "é-20060705",
            "20060705+é",
            "+",
            "+0500",
            "2006.07.é",
            "1é.15",
            "\0",
            "^=^",
            "*?\\?*",
            "1e999",
            "-0",
            "99999999999999999999",
            "20061231235960.999999-1400",
        ];
        for vr in [Pn, Da, Tm, Dt, Ui, Cs, Text, Number] {
            for raw in inputs {
                let _ = normalize_date(raw);
                let _ = normalize_time(raw, true);
                let _ = normalize_datetime(raw, false);
                let _ = normalize_pn(raw);
                if let Ok(m) = parse_matcher(vr, raw) {
                    let _ = m.literal_prefix();
                    for stored in inputs {
                        let _ = m.matches(vr, Some(stored), opts(CI));
                        let _ = m.matches(vr, Some(stored), opts(CS));
                    }
                }
            }
        }
    }

    #[test]
    fn vr_codes() {
        let cases: &[(&str, Option<MatchVr>)] = &[
            ("PN", Some(Pn)),
            ("DA", Some(Da)),
            ("TM", Some(Tm)),
            ("DT", Some(Dt)),
            ("UI", Some(Ui)),
            ("CS", Some(Cs)),
            ("LO", Some(Text)),
            ("AE", Some(Text)),
            ("IS", Some(Number)),
            ("DS", Some(Number)),
            ("SQ", None),
        ];
        for &(code, expected) in cases {
            assert_eq!(MatchVr::from_code(code), expected, "{code}");
        }
    }
}
