//! Dates of Unix times, in UTC: RFC 3339 timestamps and calendar days.

/// `2026-08-05T12:25:43Z` for a Unix time.
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Civil from days (Howard Hinnant's algorithm), proleptic Gregorian, UTC.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `YYYY-MM-DD` of a Unix time, UTC.
pub fn day_of(epoch: u64) -> String {
    rfc3339(epoch)[..10].to_string()
}

/// Today's `YYYY-MM-DD`, UTC.
pub fn today() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    day_of(now)
}

/// The Unix time of an RFC 2822 date in UTC or GMT, as Debian's Release files write it:
/// `Sat, 11 Jul 2026 10:16:37 UTC` (the weekday is optional and not checked).
pub fn parse_rfc2822(text: &str) -> Option<u64> {
    let text = text.split_once(',').map_or(text, |(_, rest)| rest).trim();
    let words: Vec<&str> = text.split_whitespace().collect();
    let [day, month, year, time, zone] = words.as_slice() else {
        return None;
    };
    if !matches!(*zone, "UTC" | "GMT" | "+0000" | "Z") {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 || hms.next().is_some() {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), the inverse of `rfc3339`'s.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_785_932_743), "2026-08-05T12:25:43Z");
        assert_eq!(day_of(1_785_932_743), "2026-08-05");
    }

    #[test]
    fn rfc2822_dates_read_back_to_the_same_times() {
        for epoch in [0, 951_782_400, 1_783_764_997, 1_785_932_743] {
            let stamp = rfc3339(epoch);
            let (y, rest) = stamp.split_at(4);
            let month = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ][rest[1..3].parse::<usize>().unwrap() - 1];
            let text = format!("Mon, {} {month} {y} {} UTC", &rest[4..6], &rest[7..15]);
            assert_eq!(parse_rfc2822(&text), Some(epoch), "{text}");
        }
        assert_eq!(
            parse_rfc2822("Sat, 11 Jul 2026 10:16:37 UTC"),
            Some(1_783_764_997)
        );
        assert_eq!(parse_rfc2822("Sat, 11 Jul 2026 10:16:37 +0200"), None);
        assert_eq!(parse_rfc2822("11 Foo 2026 10:16:37 UTC"), None);
    }
}
