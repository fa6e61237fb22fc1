//! Range requests and conditional requests for a stored file (RFC 9110
//! §13 and §14), sans-IO: the caller hands in the request's header values
//! and what it knows of the file (size, strong entity tag, modification
//! time), and gets back a [`ServePlan`]: the status, the byte range of the
//! file that goes in the body, and the headers to add.
//!
//! Decisions, in the order RFC 9110 §13.2.2 evaluates them:
//!
//! 1. `If-None-Match` (weak comparison, `*`, lists) matching → 304. Without
//!    it, `If-Modified-Since` not older than the file → 304.
//! 2. `Range` only for GET (a server must ignore it for other methods), only
//!    when `If-Range` is absent or holds (a strong entity-tag match, or an
//!    HTTP-date equal to `Last-Modified`).
//! 3. `Range`: `bytes=` with one range (`first-last`, `first-`, `-suffix`)
//!    → 206 with `Content-Range`; several ranges → the whole file with 200
//!    (Veza does not write `multipart/byteranges`; players ask for one
//!    range); a syntactically invalid header or another unit → ignored (200,
//!    RFC 9110 §14.2); a valid but unsatisfiable one → 416 with
//!    `Content-Range: bytes */size`.
//!
//! Dates: only IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) is parsed. The
//! obsolete RFC 850 and asctime forms make a condition fail (the whole file
//! is sent), which is always a correct, if larger, answer.
//!
//! Architecture Invariant: the body range of every plan lies within the
//! file (`start <= end <= size`); the property tests check it.

use std::ops::Range;

/// What the server knows about the file it is about to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Representation<'a> {
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Its strong entity tag, quoted (`"abc"`).
    pub etag: &'a str,
    /// Its `Last-Modified`, in Unix seconds.
    pub last_modified_unix_s: i64,
}

/// The request's header values that matter here (`None`: absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conditions<'a> {
    /// Whether the method is GET (Range applies to GET only).
    pub is_get: bool,
    /// `Range`.
    pub range: Option<&'a [u8]>,
    /// `If-None-Match` (several header lines joined with `,`).
    pub if_none_match: Option<&'a [u8]>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a [u8]>,
    /// `If-Range`.
    pub if_range: Option<&'a [u8]>,
}

/// How to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServePlan {
    /// 200, 206, 304 or 416.
    pub status: u16,
    /// The bytes of the file in the body (empty for 304 and 416).
    pub body: Range<u64>,
    /// `Content-Range`, for 206 and 416.
    pub content_range: Option<String>,
}

impl ServePlan {
    /// The headers this plan adds to the usual ones (`ETag`,
    /// `Last-Modified`, `Accept-Ranges`, which every answer carries).
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.content_range
            .as_deref()
            .map(|value| ("Content-Range", value))
            .into_iter()
    }

    /// Bytes in the body.
    pub fn body_bytes(&self) -> u64 {
        self.body.end - self.body.start
    }
}

/// What a `Range` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// Not a valid `bytes` range set (or another unit): ignore it.
    Ignored,
    /// More than one range: Veza sends the whole file.
    Multiple,
    /// One valid range that no byte of the file satisfies.
    Unsatisfiable,
    /// One satisfiable range, clamped to the file.
    Satisfiable(u64, u64),
}

/// Decides how to answer a request for `file` under `conditions`.
pub fn plan(file: &Representation<'_>, conditions: &Conditions<'_>) -> ServePlan {
    let whole = ServePlan {
        status: 200,
        body: 0..file.size_bytes,
        content_range: None,
    };
    if not_modified(file, conditions) {
        return ServePlan {
            status: 304,
            body: 0..0,
            content_range: None,
        };
    }
    let Some(range) = conditions.range.filter(|_| conditions.is_get) else {
        return whole;
    };
    if let Some(if_range) = conditions.if_range {
        if !if_range_holds(file, if_range) {
            return whole;
        }
    }
    match parse_range(range, file.size_bytes) {
        RangeRequest::Ignored | RangeRequest::Multiple => whole,
        RangeRequest::Unsatisfiable => ServePlan {
            status: 416,
            body: 0..0,
            content_range: Some(format!("bytes */{}", file.size_bytes)),
        },
        RangeRequest::Satisfiable(start, end) => {
            debug_assert!(start < end && end <= file.size_bytes);
            ServePlan {
                status: 206,
                body: start..end,
                content_range: Some(format!("bytes {start}-{}/{}", end - 1, file.size_bytes)),
            }
        }
    }
}

fn not_modified(file: &Representation<'_>, conditions: &Conditions<'_>) -> bool {
    if let Some(if_none_match) = conditions.if_none_match {
        return if_none_match_matches(if_none_match, file.etag);
    }
    conditions
        .if_modified_since
        .and_then(parse_http_date)
        .is_some_and(|since_unix_s| file.last_modified_unix_s <= since_unix_s)
}

/// Whether an `If-None-Match` value names `etag` (weak comparison) or is
/// `*`. A malformed list matches nothing from the malformation on.
pub fn if_none_match_matches(value: &[u8], etag: &str) -> bool {
    let value = trim(value);
    if value == b"*" {
        return true;
    }
    let ours = opaque_tag(etag.as_bytes());
    EntityTags { rest: value }.any(|(_, tag)| Some(tag) == ours)
}

/// Whether `If-Range` lets the range apply: a strong entity tag equal to
/// ours, or an HTTP-date equal to `Last-Modified`.
pub fn if_range_holds(file: &Representation<'_>, value: &[u8]) -> bool {
    let value = trim(value);
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        let mut tags = EntityTags { rest: value };
        return match (tags.next(), tags.next()) {
            (Some((false, tag)), None) => {
                !file.etag.starts_with("W/") && Some(tag) == opaque_tag(file.etag.as_bytes())
            }
            _ => false,
        };
    }
    parse_http_date(value) == Some(file.last_modified_unix_s)
}

/// The opaque tag of a single entity tag (`"x"` or `W/"x"`), quotes included.
fn opaque_tag(etag: &[u8]) -> Option<&[u8]> {
    let mut tags = EntityTags { rest: trim(etag) };
    match (tags.next(), tags.next()) {
        (Some((_, tag)), None) => Some(tag),
        _ => None,
    }
}

/// Iterates `(is_weak, opaque-tag)` over a comma-separated entity-tag list.
/// Commas may appear inside a tag, so the list is scanned, not split.
struct EntityTags<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for EntityTags<'a> {
    type Item = (bool, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let mut rest = self.rest;
        while let [b' ' | b'\t' | b',', tail @ ..] = rest {
            rest = tail;
        }
        let (is_weak, quoted) = match rest.strip_prefix(b"W/") {
            Some(tail) => (true, tail),
            None => (false, rest),
        };
        let body = quoted.strip_prefix(b"\"")?;
        let close_idx = body.iter().position(|&byte| byte == b'"')?;
        let tag = &quoted[..close_idx + 2];
        let valid_etagc =
            |byte: &u8| *byte == 0x21 || (0x23..=0x7e).contains(byte) || *byte >= 0x80;
        if !body[..close_idx].iter().all(valid_etagc) {
            self.rest = &[];
            return None;
        }
        let after = &quoted[close_idx + 2..];
        let after_trimmed = trim_start(after);
        if !(after_trimmed.is_empty() || after_trimmed.starts_with(b",")) {
            self.rest = &[];
            return None;
        }
        self.rest = after;
        Some((is_weak, tag))
    }
}

/// Parses a `Range` value against a file of `size_bytes`.
pub fn parse_range(value: &[u8], size_bytes: u64) -> RangeRequest {
    let value = trim(value);
    let Some(unit_end) = value.iter().position(|&byte| byte == b'=') else {
        return RangeRequest::Ignored;
    };
    if !value[..unit_end].eq_ignore_ascii_case(b"bytes") {
        return RangeRequest::Ignored;
    }
    let mut first_spec = None;
    let mut spec_count = 0usize;
    for spec in value[unit_end + 1..].split(|&byte| byte == b',') {
        let spec = trim(spec);
        if spec.is_empty() {
            // RFC 9110's list rule allows empty elements; they name nothing.
            continue;
        }
        // Every spec is validated: one invalid spec makes the header invalid.
        let parsed = match parse_spec(spec) {
            Some(parsed) => parsed,
            None => return RangeRequest::Ignored,
        };
        first_spec.get_or_insert(parsed);
        spec_count += 1;
    }
    match (first_spec, spec_count) {
        (None, _) => RangeRequest::Ignored,
        (Some(single), 1) => satisfy(single, size_bytes),
        _ => RangeRequest::Multiple,
    }
}

/// One range-spec: `(Some(first), last)` or `(None, Some(suffix_length))`.
type Spec = (Option<u64>, Option<u64>);

fn parse_spec(spec: &[u8]) -> Option<Spec> {
    let dash_idx = spec.iter().position(|&byte| byte == b'-')?;
    let (first, last) = (&spec[..dash_idx], &spec[dash_idx + 1..]);
    match (first.is_empty(), last.is_empty()) {
        (true, true) => None,
        (true, false) => Some((None, Some(parse_decimal(last)?))),
        (false, true) => Some((Some(parse_decimal(first)?), None)),
        (false, false) => {
            let (first, last) = (parse_decimal(first)?, parse_decimal(last)?);
            (first <= last).then_some((Some(first), Some(last)))
        }
    }
}

fn satisfy(spec: Spec, size_bytes: u64) -> RangeRequest {
    if size_bytes == 0 {
        // No byte range of an empty file exists; send the (empty) file.
        return RangeRequest::Ignored;
    }
    match spec {
        (Some(first), last) => {
            if first >= size_bytes {
                return RangeRequest::Unsatisfiable;
            }
            let end = last.map_or(size_bytes, |last| last.saturating_add(1).min(size_bytes));
            RangeRequest::Satisfiable(first, end)
        }
        (None, Some(0)) => RangeRequest::Unsatisfiable,
        (None, Some(suffix_bytes)) => {
            RangeRequest::Satisfiable(size_bytes.saturating_sub(suffix_bytes), size_bytes)
        }
        (None, None) => RangeRequest::Ignored,
    }
}

/// 1*DIGIT; values past u64 saturate (they are past any file's end).
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |value, digit| {
        value
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) into Unix seconds.
pub fn parse_http_date(value: &[u8]) -> Option<i64> {
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let value = trim(value);
    if value.len() != 29 || &value[3..5] != b", " || &value[25..] != b" GMT" {
        return None;
    }
    let number = |range: Range<usize>| -> Option<i64> {
        let digits = &value[range];
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| parse_decimal(digits).map(|n| n as i64))?
    };
    let separators_hold = value[7] == b' '
        && value[11] == b' '
        && value[16] == b' '
        && value[19] == b':'
        && value[22] == b':';
    if !separators_hold {
        return None;
    }
    let day = number(5..7)?;
    let month = MONTHS.iter().position(|name| *name == &value[8..11])? as i64 + 1;
    let year = number(12..16)?;
    let (hour, minute, second) = (number(17..19)?, number(20..22)?, number(23..25)?);
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, the inverse of the one in [`super::date`]).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn trim(value: &[u8]) -> &[u8] {
    let value = trim_start(value);
    let end = value
        .iter()
        .rposition(|&byte| byte != b' ' && byte != b'\t')
        .map_or(0, |idx| idx + 1);
    &value[..end]
}

fn trim_start(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&byte| byte != b' ' && byte != b'\t')
        .unwrap_or(value.len());
    &value[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::HttpDate;

    const ETAG: &str = "\"v1-abc\"";
    /// 2023-11-14T22:13:20Z.
    const MODIFIED_UNIX_S: i64 = 1_700_000_000;

    fn file(size_bytes: u64) -> Representation<'static> {
        Representation {
            size_bytes,
            etag: ETAG,
            last_modified_unix_s: MODIFIED_UNIX_S,
        }
    }

    fn http_date(unix_s: i64) -> String {
        let mut date = HttpDate::new();
        date.update(unix_s as u64);
        date.as_str().to_owned()
    }

    /// One request, as `header: value` lines (`GET` unless a `HEAD` line
    /// is given), against a 1000-byte file; `expect` is
    /// `status start..end [Content-Range]`.
    fn check(input: &str, expect: &str) {
        let mut conditions = Conditions {
            is_get: true,
            ..Conditions::default()
        };
        for line in input.lines().map(str::trim).filter(|line| !line.is_empty()) {
            if line == "HEAD" {
                conditions.is_get = false;
                continue;
            }
            let (name, value) = line.split_once(':').expect("name: value");
            let value = Some(value.trim_start().as_bytes());
            match name {
                "range" => conditions.range = value,
                "if-none-match" => conditions.if_none_match = value,
                "if-modified-since" => conditions.if_modified_since = value,
                "if-range" => conditions.if_range = value,
                other => panic!("unknown header {other}"),
            }
        }
        let plan = plan(&file(1000), &conditions);
        let mut actual = format!("{} {}..{}", plan.status, plan.body.start, plan.body.end);
        for (name, value) in plan.headers() {
            actual.push_str(&format!(" [{name}: {value}]"));
        }
        assert_eq!(actual, expect, "for {input:?}");
    }

    #[test]
    fn no_conditions_send_the_whole_file() {
        check("", "200 0..1000");
        check("HEAD", "200 0..1000");
    }

    #[test]
    fn single_ranges_are_served_with_206() {
        check(
            "range: bytes=0-99",
            "206 0..100 [Content-Range: bytes 0-99/1000]",
        );
        check(
            "range: bytes=100-",
            "206 100..1000 [Content-Range: bytes 100-999/1000]",
        );
        check(
            "range: bytes=-500",
            "206 500..1000 [Content-Range: bytes 500-999/1000]",
        );
        check(
            "range: bytes=0-0",
            "206 0..1 [Content-Range: bytes 0-0/1000]",
        );
        check(
            "range: bytes=999-",
            "206 999..1000 [Content-Range: bytes 999-999/1000]",
        );
        check(
            "range: bytes=900-5000",
            "206 900..1000 [Content-Range: bytes 900-999/1000]",
        );
        check(
            "range: bytes=-5000",
            "206 0..1000 [Content-Range: bytes 0-999/1000]",
        );
        check("range: BYTES = 1-2 ", "200 0..1000");
        check(
            "range: Bytes=1-2",
            "206 1..3 [Content-Range: bytes 1-2/1000]",
        );
        check(
            "range: bytes= 1-2 ,",
            "206 1..3 [Content-Range: bytes 1-2/1000]",
        );
        check(
            "range: bytes=0-99999999999999999999999",
            "206 0..1000 [Content-Range: bytes 0-999/1000]",
        );
    }

    #[test]
    fn unsatisfiable_ranges_get_416_with_the_size() {
        check(
            "range: bytes=1000-",
            "416 0..0 [Content-Range: bytes */1000]",
        );
        check(
            "range: bytes=5000-6000",
            "416 0..0 [Content-Range: bytes */1000]",
        );
        check("range: bytes=-0", "416 0..0 [Content-Range: bytes */1000]");
        check(
            "range: bytes=99999999999999999999999-",
            "416 0..0 [Content-Range: bytes */1000]",
        );
    }

    #[test]
    fn several_ranges_send_the_whole_file() {
        check("range: bytes=0-1,5-6", "200 0..1000");
        check("range: bytes=0-1, -5", "200 0..1000");
        check("range: bytes=5000-,6000-", "200 0..1000");
    }

    #[test]
    fn invalid_range_headers_are_ignored() {
        for range in [
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=1-2-3",
            "items=0-1",
            "bytes 0-1",
            "0-1",
            "bytes=0x1-2",
            "bytes=+1-2",
            "bytes=0-1,x",
            "bytes=--1",
        ] {
            check(&format!("range: {range}"), "200 0..1000");
        }
    }

    #[test]
    fn range_is_for_get_only() {
        check("HEAD\nrange: bytes=0-99", "200 0..1000");
    }

    #[test]
    fn if_none_match_answers_304_with_weak_comparison() {
        check("if-none-match: \"v1-abc\"", "304 0..0");
        check("if-none-match: W/\"v1-abc\"", "304 0..0");
        check("if-none-match: *", "304 0..0");
        check("if-none-match: \"x\", \"v1-abc\"", "304 0..0");
        check("if-none-match: \"a,b\",W/\"v1-abc\"", "304 0..0");
        check("if-none-match: \"x\"", "200 0..1000");
        check("if-none-match: \"v1-abc", "200 0..1000");
        check("if-none-match: v1-abc", "200 0..1000");
        check(
            "if-none-match: \"x\"\nrange: bytes=0-1",
            "206 0..2 [Content-Range: bytes 0-1/1000]",
        );
        check("if-none-match: \"v1-abc\"\nrange: bytes=0-1", "304 0..0");
        check("HEAD\nif-none-match: \"v1-abc\"", "304 0..0");
    }

    #[test]
    fn if_modified_since_counts_only_without_if_none_match() {
        let same = http_date(MODIFIED_UNIX_S);
        let earlier = http_date(MODIFIED_UNIX_S - 1);
        check(&format!("if-modified-since: {same}"), "304 0..0");
        check(&format!("if-modified-since: {earlier}"), "200 0..1000");
        check("if-modified-since: yesterday", "200 0..1000");
        check(
            &format!("if-modified-since: {same}\nif-none-match: \"other\""),
            "200 0..1000",
        );
    }

    #[test]
    fn if_range_applies_the_range_only_when_it_holds() {
        let same = http_date(MODIFIED_UNIX_S);
        let other = http_date(MODIFIED_UNIX_S + 1);
        let partial = "206 0..100 [Content-Range: bytes 0-99/1000]";
        check("range: bytes=0-99\nif-range: \"v1-abc\"", partial);
        check(&format!("range: bytes=0-99\nif-range: {same}"), partial);
        check("range: bytes=0-99\nif-range: \"v0\"", "200 0..1000");
        check("range: bytes=0-99\nif-range: W/\"v1-abc\"", "200 0..1000");
        check(
            &format!("range: bytes=0-99\nif-range: {other}"),
            "200 0..1000",
        );
        check("range: bytes=0-99\nif-range: garbage", "200 0..1000");
        check("range: bytes=5000-\nif-range: \"v0\"", "200 0..1000");
    }

    #[test]
    fn http_dates_round_trip_with_the_date_header() {
        for unix_s in [0, 784_111_777, MODIFIED_UNIX_S, 951_782_400, 4_107_542_399] {
            let text = http_date(unix_s);
            assert_eq!(parse_http_date(text.as_bytes()), Some(unix_s), "{text}");
        }
        assert_eq!(
            parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        for bad in [
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn empty_files_are_sent_whole() {
        let empty = file(0);
        let conditions = Conditions {
            is_get: true,
            range: Some(b"bytes=-5"),
            ..Conditions::default()
        };
        assert_eq!(plan(&empty, &conditions).status, 200);
        assert_eq!(plan(&empty, &conditions).body, 0..0);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn range_value() -> impl Strategy<Value = String> {
            prop_oneof![
                (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("bytes={a}-{b}")),
                (0u64..3000, 0u64..3000).prop_map(|(a, b)| format!("bytes={a}-{b}")),
                (0u64..3000).prop_map(|a| format!("bytes={a}-")),
                (0u64..3000).prop_map(|a| format!("bytes=-{a}")),
                "[ -~]{0,24}".prop_map(|text| text),
                "bytes=[0-9,\\- ]{0,16}".prop_map(|text| text),
            ]
        }

        proptest! {
            #[test]
            fn the_body_range_is_always_within_the_file(
                size_bytes in prop_oneof![0u64..4096, any::<u64>()],
                range in range_value(),
                if_range in proptest::option::of("[ -~]{0,12}"),
                is_get in any::<bool>(),
            ) {
                let file = Representation { size_bytes, etag: ETAG, last_modified_unix_s: 0 };
                let conditions = Conditions {
                    is_get,
                    range: Some(range.as_bytes()),
                    if_range: if_range.as_deref().map(str::as_bytes),
                    ..Conditions::default()
                };
                let plan = plan(&file, &conditions);
                prop_assert!(plan.body.start <= plan.body.end);
                prop_assert!(plan.body.end <= size_bytes);
                match plan.status {
                    200 => prop_assert_eq!(plan.body.clone(), 0..size_bytes),
                    206 => {
                        prop_assert!(plan.body_bytes() > 0);
                        let expected = format!(
                            "bytes {}-{}/{size_bytes}", plan.body.start, plan.body.end - 1
                        );
                        prop_assert_eq!(plan.content_range.as_deref(), Some(expected.as_str()));
                    }
                    416 => prop_assert_eq!(plan.body_bytes(), 0),
                    other => prop_assert!(false, "unexpected status {}", other),
                }
            }

            #[test]
            fn header_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                let _ = parse_range(&bytes, 1000);
                let _ = if_none_match_matches(&bytes, ETAG);
                let _ = if_range_holds(&file(1000), &bytes);
                let _ = parse_http_date(&bytes);
            }
        }
    }
}
