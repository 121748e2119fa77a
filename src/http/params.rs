//! Query-string parameters of the FHIR search and audit endpoints: FHIR
//! date prefixes, patient references, paging. Every mistake is a 400 that
//! names the parameter; unknown parameters are refused rather than ignored
//! (a misspelt `subjet=` must not widen a search to every patient).

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};

use super::ApiError;
use crate::cds::FieldError;

/// The parameters of one request, in order, decoded.
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(query: &str) -> Self {
        Params(
            url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The single value of `name`; given twice is a 400.
    pub fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut it = self.0.iter().filter(|(k, _)| k == name);
        let first = it.next().map(|(_, v)| v.as_str());
        if it.next().is_some() {
            return Err(bad(name, "given more than once"));
        }
        Ok(first)
    }

    /// 400 for any parameter not in `known` (`_format=json` is always fine).
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        for (k, v) in &self.0 {
            if k == "_format" && (v.contains("json") || v == "json") {
                continue;
            }
            if !known.contains(&k.as_str()) {
                return Err(bad(
                    k,
                    &format!("unknown parameter; supported: {}", known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    pub fn number(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        match self.one(name)? {
            None => Ok(default),
            Some(v) => {
                let n: i64 = v.parse().map_err(|_| bad(name, "must be an integer"))?;
                if n < min || n > max {
                    return Err(bad(name, &format!("must be between {min} and {max}")));
                }
                Ok(n)
            }
        }
    }

    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.one(name)? {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(bad(name, "must be true or false")),
        }
    }

    /// `Patient/ID` or `ID` (FHIR R4 §3.1.1.4.10 reference search); a
    /// reference to another type is a 400.
    pub fn patient(&self, names: &[&str]) -> Result<Option<String>, ApiError> {
        let mut found = None;
        for name in names {
            if let Some(v) = self.one(name)? {
                if found.is_some() {
                    return Err(bad(name, "patient given twice"));
                }
                found = Some(patient_id(name, v)?);
            }
        }
        Ok(found)
    }
}

pub fn bad(field: &str, message: &str) -> ApiError {
    ApiError::BadRequest(FieldError::new(field, message))
}

fn patient_id(param: &str, v: &str) -> Result<String, ApiError> {
    let v = v.trim();
    let id = match v.rsplit_once('/') {
        Some((prefix, id)) if prefix == "Patient" || prefix.ends_with("/Patient") => id,
        Some(_) => return Err(bad(param, "must be Patient/ID or ID")),
        None => v,
    };
    let ok = (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !ok {
        return Err(bad(param, "not a FHIR id ([A-Za-z0-9-.]{1,64})"));
    }
    Ok(id.to_owned())
}

/// A half-open time range `[since, until)` from FHIR date parameters
/// (FHIR R4 §3.1.1.4.2 prefixes `eq`, `ge`, `gt`, `le`, `lt`; a value is a
/// range at its precision: `2026-11-20` is that whole UTC day).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Range {
    fn lower(&mut self, t: DateTime<Utc>) {
        self.since = Some(self.since.map_or(t, |s| s.max(t)));
    }

    fn upper(&mut self, t: DateTime<Utc>) {
        self.until = Some(self.until.map_or(t, |u| u.min(t)));
    }
}

pub fn date_range<'a>(
    name: &str,
    values: impl Iterator<Item = &'a str>,
) -> Result<Range, ApiError> {
    let mut r = Range::default();
    for v in values {
        let (prefix, rest) = match v.get(..2) {
            Some(p @ ("eq" | "ge" | "gt" | "le" | "lt")) => (p, &v[2..]),
            Some(p) if p.chars().all(|c| c.is_ascii_alphabetic()) => {
                return Err(bad(name, "unsupported prefix; use eq, ge, gt, le or lt"));
            }
            _ => ("eq", v),
        };
        let (start, end) = instant_range(rest).ok_or_else(|| {
            bad(
                name,
                "not a FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD or RFC 3339)",
            )
        })?;
        match prefix {
            "ge" => r.lower(start),
            "gt" => r.lower(end),
            "le" => r.upper(end),
            "lt" => r.upper(start),
            _ => {
                r.lower(start);
                r.upper(end);
            }
        }
    }
    Ok(r)
}

/// The instants `[start, end)` a FHIR date/dateTime value covers.
fn instant_range(v: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if v.contains('T') {
        let t = DateTime::parse_from_rfc3339(v).ok()?.with_timezone(&Utc);
        return Some((t, t + Duration::microseconds(1)));
    }
    let day = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"));
    match v.len() {
        4 => {
            let y: i32 = v.parse().ok()?;
            let a = NaiveDate::from_ymd_opt(y, 1, 1)?;
            let b = NaiveDate::from_ymd_opt(y + 1, 1, 1)?;
            Some((day(a), day(b)))
        }
        7 => {
            let a = NaiveDate::parse_from_str(&format!("{v}-01"), "%Y-%m-%d").ok()?;
            let b = a.checked_add_months(chrono::Months::new(1))?;
            Some((day(a), day(b)))
        }
        10 => {
            let a = NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()?;
            Some((day(a), day(a.succ_opt()?)))
        }
        _ => None,
    }
}

/// The same URL with `_offset` replaced (FHIR paging links).
pub fn with_offset(base: &str, path: &str, params: &Params, offset: i64) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &params.0 {
        if k != "_offset" {
            ser.append_pair(k, v);
        }
    }
    ser.append_pair("_offset", &offset.to_string());
    format!("{base}{path}?{}", ser.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn date_prefixes_make_half_open_ranges() {
        let r = date_range("date", ["ge2026-11-01", "lt2026-12"].into_iter()).unwrap();
        assert_eq!(r.since, Some(ts("2026-11-01T00:00:00Z")));
        assert_eq!(r.until, Some(ts("2026-12-01T00:00:00Z")));
        let r = date_range("date", ["2026-11-20"].into_iter()).unwrap();
        assert_eq!(r.until.unwrap() - r.since.unwrap(), Duration::days(1));
        let r = date_range("date", ["gt2026", "le2027-02"].into_iter()).unwrap();
        assert_eq!(r.since, Some(ts("2027-01-01T00:00:00Z")));
        assert_eq!(r.until, Some(ts("2027-03-01T00:00:00Z")));
    }

    #[test]
    fn bad_dates_and_prefixes_name_the_parameter() {
        for v in ["ne2026-01-01", "2026-13-01", "yesterday", "ge"] {
            let err = date_range("date", [v].into_iter()).unwrap_err();
            assert!(err.to_string().contains("date"), "{v}: {err}");
        }
    }

    #[test]
    fn patients_are_ids_or_patient_references() {
        let p = Params::parse("subject=Patient%2Fabc-1");
        assert_eq!(p.patient(&["subject"]).unwrap().as_deref(), Some("abc-1"));
        let p = Params::parse("subject=Group/1");
        assert!(p.patient(&["subject"]).is_err());
        let p = Params::parse("patient=a%20b");
        assert!(p.patient(&["patient"]).is_err());
    }

    #[test]
    fn unknown_parameters_are_refused_and_offsets_replaced() {
        let p = Params::parse("subjet=1");
        assert!(p.only(&["subject"]).is_err());
        let p = Params::parse("subject=1&_offset=5&_format=json");
        assert!(p.only(&["subject", "_offset"]).is_ok());
        assert_eq!(
            with_offset("http://h", "/fhir/RiskAssessment", &p, 10),
            "http://h/fhir/RiskAssessment?subject=1&_format=json&_offset=10"
        );
    }
}
