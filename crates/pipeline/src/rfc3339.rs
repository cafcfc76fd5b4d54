//! RFC 3339 timestamps (`2026-11-22T07:47:24.5Z`, `2026-11-22 09:47:24+02:00`) to and from
//! microseconds since the Unix epoch. Years 0000–9999 only, which is also what PostgreSQL
//! round-trips as text without an era suffix.

/// Parses an RFC 3339 date-time with a mandatory offset (`Z` or `±HH:MM`). Fractions beyond
/// microseconds are truncated.
pub fn parse_micros(text: &str) -> Result<i64, &'static str> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return Err("too short for an RFC 3339 date-time (YYYY-MM-DDTHH:MM:SSZ)");
    }
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err("expected YYYY-MM-DDTHH:MM:SS");
    }
    if b[13] != b':' || b[16] != b':' {
        return Err("expected HH:MM:SS after the date");
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such date");
    }
    // 60 is a leap second; it is folded onto the next second, as most systems do.
    if hour > 23 || minute > 59 || second > 60 {
        return Err("no such time of day");
    }
    let mut pos = 19;
    let mut micros = 0i64;
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            if pos - start < 6 {
                micros = micros * 10 + i64::from(b[pos] - b'0');
            }
            pos += 1;
        }
        if pos == start {
            return Err("a '.' must be followed by digits");
        }
        for _ in (pos - start)..6 {
            micros *= 10;
        }
    }
    let offset_seconds = match b.get(pos) {
        Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() && b[pos + 3] == b':' => {
            let hours = digits(b, pos + 1, 2)?;
            let minutes = digits(b, pos + 4, 2)?;
            if hours > 23 || minutes > 59 {
                return Err("offset out of range");
            }
            let seconds = (hours * 3600 + minutes * 60) as i64;
            if *sign == b'+' { seconds } else { -seconds }
        }
        _ => return Err("expected a time zone offset: Z or +HH:MM"),
    };
    let days = days_from_civil(year as i64, month, day);
    let seconds = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset_seconds;
    Ok(seconds * 1_000_000 + micros)
}

/// Formats as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC).
pub fn format_micros(micros: i64) -> String {
    let mut out = Vec::with_capacity(27);
    write_micros(&mut out, micros);
    String::from_utf8(out).expect("ASCII")
}

/// Appends `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC) to `out`, without allocating.
pub fn write_micros(out: &mut Vec<u8>, micros: i64) {
    use std::io::Write;
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:06}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    );
}

fn digits(b: &[u8], start: usize, len: usize) -> Result<u32, &'static str> {
    let slice = b.get(start..start + len).ok_or("truncated date-time")?;
    slice.iter().try_fold(0u32, |acc, c| {
        if c.is_ascii_digit() {
            Ok(acc * 10 + u32::from(c - b'0'))
        } else {
            Err("expected a digit")
        }
    })
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(parse_micros("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_micros("2026-11-22T07:47:24Z"),
            Ok(1_795_333_644_000_000)
        );
        assert_eq!(
            parse_micros("2026-11-22T09:47:24.25+02:00"),
            Ok(1_795_333_644_250_000)
        );
        assert_eq!(
            parse_micros("2026-11-22 07:47:24.123456789z"),
            Ok(1_795_333_644_123_456)
        );
        assert_eq!(parse_micros("1969-12-31T23:59:59.5Z"), Ok(-500_000));
        assert_eq!(
            parse_micros("2024-02-29T00:00:00Z"),
            Ok(1_709_164_800_000_000)
        );
    }

    #[test]
    fn rejects_what_is_not_rfc_3339() {
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22T07:47:24",
            "2026-11-22T07:47:24+0200",
            "2026-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T07:47:24.Z",
            "2026/11/22T07:47:24Z",
            "2026-11-22T07:47:24Zjunk",
            "yesterday at noon, roughly",
        ] {
            assert!(parse_micros(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn format_round_trips() {
        for micros in [
            0,
            -1,
            1_795_333_644_123_456,
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999Z
            -62_135_596_800_000_000, // 0001-01-01
            951_782_400_000_000,     // 2000-02-29
        ] {
            let text = format_micros(micros);
            assert_eq!(parse_micros(&text), Ok(micros), "{text}");
        }
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
    }
}
