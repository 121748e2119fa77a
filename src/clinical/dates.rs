//! FHIR `date` / `dateTime` / `instant` to chrono.
//!
//! A `dateTime` with a time and offset is reduced to its calendar date *in
//! the offset it was written in* (`2026-10-02T23:30:00-05:00` is 2 October):
//! that is the date the clinician saw, and converting to UTC would move
//! evening measurements to the next day.

use chrono::{Months, NaiveDate};
use fhir_sdk::{Date, DateTime, Instant};

/// How precisely a FHIR date was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DatePrecision {
    Year,
    Month,
    Day,
}

/// The range of calendar days a (possibly partial) FHIR date covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DateRange {
    pub first: NaiveDate,
    pub last: NaiveDate,
    pub precision: DatePrecision,
}

pub(crate) fn from_time_date(d: fhir_sdk::time::Date) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(d.year(), u32::from(u8::from(d.month())), u32::from(d.day()))
}

pub(crate) fn instant_date(i: &Instant) -> Option<NaiveDate> {
    from_time_date(i.0.date())
}

pub(crate) fn date_range(d: &Date) -> Option<DateRange> {
    match d {
        Date::Year(y) => Some(DateRange {
            first: NaiveDate::from_ymd_opt(*y, 1, 1)?,
            last: NaiveDate::from_ymd_opt(*y, 12, 31)?,
            precision: DatePrecision::Year,
        }),
        Date::YearMonth(y, m) => {
            let first = NaiveDate::from_ymd_opt(*y, u32::from(u8::from(*m)), 1)?;
            let last = first.checked_add_months(Months::new(1))?.pred_opt()?;
            Some(DateRange {
                first,
                last,
                precision: DatePrecision::Month,
            })
        }
        Date::Date(d) => {
            let d = from_time_date(*d)?;
            Some(DateRange {
                first: d,
                last: d,
                precision: DatePrecision::Day,
            })
        }
    }
}

pub(crate) fn datetime_range(dt: &DateTime) -> Option<DateRange> {
    match dt {
        DateTime::Date(d) => date_range(d),
        DateTime::DateTime(i) => {
            let d = instant_date(i)?;
            Some(DateRange {
                first: d,
                last: d,
                precision: DatePrecision::Day,
            })
        }
    }
}

/// The day of a `dateTime` that must be exact (measurements): partial dates
/// are refused with a reason, because weight windows need days.
pub(crate) fn exact_day(dt: &DateTime) -> Result<NaiveDate, String> {
    match datetime_range(dt) {
        Some(r) if r.precision == DatePrecision::Day => Ok(r.first),
        Some(r) => Err(format!(
            "date is only precise to the {}",
            match r.precision {
                DatePrecision::Year => "year",
                _ => "month",
            }
        )),
        None => Err("date is out of range".to_owned()),
    }
}

/// The first day a `dateTime` covers (diagnosis onsets: "2019" is 2019-01-01).
pub(crate) fn first_day(dt: &DateTime) -> Option<NaiveDate> {
    datetime_range(dt).map(|r| r.first)
}

/// Whole years from `birth` to `on` (a birthday on `on` counts).
pub(crate) fn whole_years(birth: NaiveDate, on: NaiveDate) -> Option<u32> {
    on.years_since(birth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn partial_dates_cover_their_whole_period() {
        let r = date_range(&Date::from_str("1956").unwrap()).unwrap();
        assert_eq!((r.first, r.last), (d(1956, 1, 1), d(1956, 12, 31)));
        let r = date_range(&Date::from_str("1956-02").unwrap()).unwrap();
        assert_eq!((r.first, r.last), (d(1956, 2, 1), d(1956, 2, 29)));
        assert_eq!(r.precision, DatePrecision::Month);
    }

    #[test]
    fn datetimes_keep_their_local_calendar_day() {
        let dt = DateTime::from_str("2026-10-02T23:30:00-05:00").unwrap();
        assert_eq!(exact_day(&dt).unwrap(), d(2026, 10, 2));
        let dt = DateTime::from_str("2026-10").unwrap();
        assert!(exact_day(&dt).unwrap_err().contains("month"));
        assert_eq!(first_day(&dt), Some(d(2026, 10, 1)));
    }

    #[test]
    fn whole_years_counts_birthdays() {
        assert_eq!(whole_years(d(1956, 3, 10), d(2026, 3, 9)), Some(69));
        assert_eq!(whole_years(d(1956, 3, 10), d(2026, 3, 10)), Some(70));
        assert_eq!(whole_years(d(2027, 1, 1), d(2026, 3, 10)), None);
    }
}
