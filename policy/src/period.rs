//! Calendar periods (`10y`, `18m`, `90d`) and the age arithmetic rules need.

use serde::{Deserialize, Deserializer};
use std::fmt;
use time::{Date, Month};

/// A calendar period: years, months and days added in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Period {
    /// Whole years.
    pub years: u32,
    /// Whole months.
    pub months: u32,
    /// Days.
    pub days: u32,
}

/// Why a period cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid period {0:?}: write a number and a unit, e.g. 10y, 18m, 90d or 2y6m")]
pub struct PeriodError(pub String);

impl Period {
    /// A period of whole years.
    pub const fn years(years: u32) -> Self {
        Self { years, months: 0, days: 0 }
    }
    /// A period of days.
    pub const fn days(days: u32) -> Self {
        Self { years: 0, months: 0, days }
    }

    /// Parses `10y`, `18m`, `90d`, `2y6m`, `1y2m3d` (units y, m, w, d; no spaces).
    pub fn parse(text: &str) -> Result<Self, PeriodError> {
        let err = || PeriodError(text.to_string());
        let mut p = Period::default();
        let mut num = String::new();
        let mut any = false;
        for c in text.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: u32 = num.parse().map_err(|_| err())?;
            num.clear();
            match c.to_ascii_lowercase() {
                'y' => p.years = p.years.checked_add(n).ok_or_else(err)?,
                'm' => p.months = p.months.checked_add(n).ok_or_else(err)?,
                'w' => p.days = p.days.checked_add(n.checked_mul(7).ok_or_else(err)?).ok_or_else(err)?,
                'd' => p.days = p.days.checked_add(n).ok_or_else(err)?,
                _ => return Err(err()),
            }
            any = true;
        }
        if !num.is_empty() || !any || p.years > 1000 {
            return Err(err());
        }
        Ok(p)
    }

    /// The date this period after `date` (29 February plus a year is 28 February); saturates at
    /// the latest representable date.
    pub fn after(&self, date: Date) -> Date {
        let total_months = date.month() as i64 - 1 + self.months as i64 + 12 * self.years as i64;
        let year = date.year() as i64 + total_months.div_euclid(12);
        let month = Month::try_from((total_months.rem_euclid(12) + 1) as u8).unwrap_or(Month::December);
        let Ok(year) = i32::try_from(year.min(9999)) else { return Date::MAX };
        let last = time::util::days_in_month(month, year);
        let base = Date::from_calendar_date(year, month, date.day().min(last)).unwrap_or(Date::MAX);
        base.checked_add(time::Duration::days(self.days as i64)).unwrap_or(Date::MAX)
    }

    /// Approximate length in days, to compare two periods (years of 365.25, months of 30.44).
    pub fn approx_days(&self) -> f64 {
        self.years as f64 * 365.25 + self.months as f64 * 30.44 + self.days as f64
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Period::default() {
            return write!(f, "0d");
        }
        if self.years > 0 {
            write!(f, "{}y", self.years)?;
        }
        if self.months > 0 {
            write!(f, "{}m", self.months)?;
        }
        if self.days > 0 {
            write!(f, "{}d", self.days)?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Period::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Whole years between a birth date and a later date (0 when `at` is before `birth`).
pub fn age_in_years(birth: Date, at: Date) -> u32 {
    let mut years = at.year() - birth.year();
    if (at.month() as u8, at.day()) < (birth.month() as u8, birth.day()) {
        years -= 1;
    }
    years.max(0) as u32
}

/// Parses a DICOM DA value (`YYYYMMDD`, also `YYYY.MM.DD`).
pub fn parse_da(value: &str) -> Option<Date> {
    let digits: String = value.trim().chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.len() != 8 {
        return None;
    }
    let year: i32 = digits[0..4].parse().ok()?;
    let month: u8 = digits[4..6].parse().ok()?;
    let day: u8 = digits[6..8].parse().ok()?;
    Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()
}

/// Parses a DICOM AS value (`045Y`, `006M`, `003W`, `010D`) into whole years.
pub fn parse_age_string(value: &str) -> Option<u32> {
    let v = value.trim();
    if v.len() != 4 || !v.is_ascii() {
        return None;
    }
    let n: u32 = v.get(0..3)?.parse().ok()?;
    match v.get(3..)? {
        "Y" | "y" => Some(n),
        "M" | "m" => Some(n / 12),
        "W" | "w" => Some(n / 52),
        "D" | "d" => Some(n / 365),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn parses_and_prints() {
        assert_eq!(Period::parse("10y").unwrap(), Period::years(10));
        assert_eq!(Period::parse("2y6m").unwrap(), Period { years: 2, months: 6, days: 0 });
        assert_eq!(Period::parse("2w").unwrap(), Period::days(14));
        assert_eq!(Period::parse("1y2m3d").unwrap().to_string(), "1y2m3d");
        for bad in ["", "y", "10", "10x", "-1y", "1.5y", "5000y"] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn adds_calendar_periods() {
        assert_eq!(Period::years(1).after(date!(2024 - 02 - 29)), date!(2025 - 02 - 28));
        assert_eq!(Period { years: 0, months: 1, days: 0 }.after(date!(2025 - 01 - 31)), date!(2025 - 02 - 28));
        assert_eq!(Period { years: 0, months: 13, days: 1 }.after(date!(2025 - 12 - 31)), date!(2027 - 02 - 01));
        assert_eq!(Period::days(1).after(date!(2025 - 12 - 31)), date!(2026 - 01 - 01));
    }

    #[test]
    fn ages() {
        assert_eq!(age_in_years(date!(2000 - 06 - 15), date!(2018 - 06 - 14)), 17);
        assert_eq!(age_in_years(date!(2000 - 06 - 15), date!(2018 - 06 - 15)), 18);
        assert_eq!(age_in_years(date!(2020 - 01 - 01), date!(2019 - 01 - 01)), 0);
        assert_eq!(parse_da("20180615"), Some(date!(2018 - 06 - 15)));
        assert_eq!(parse_da("2018.06.15"), Some(date!(2018 - 06 - 15)));
        assert_eq!(parse_da("20181315"), None);
        assert_eq!(parse_age_string("045Y"), Some(45));
        assert_eq!(parse_age_string("018M"), Some(1));
        assert_eq!(parse_age_string("45Y"), None);
        assert_eq!(parse_age_string("12é"), None, "a multi-byte character never panics");
        assert_eq!(parse_age_string("1\u{ff}Y"), None);
    }
}
