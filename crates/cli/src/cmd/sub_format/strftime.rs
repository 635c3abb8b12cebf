//! `@X` of mosquitto_sub's `-F`: mosquitto hands `%X` (that one byte) to the C library's
//! `strftime` with the local time and prints what comes back. mosquitto_sub never calls
//! `setlocale`, so this is glibc's `strftime` in the C locale, re-done here byte for byte.

use std::io::Write;

/// The local time of one message, broken down as C's `struct tm` (plus the nanoseconds
/// for `@N` and `%U`).
#[derive(Debug, Clone)]
pub struct Tm {
    pub year: i32,
    /// 1..=12
    pub month: i32,
    pub day: i32,
    pub hour: i32,
    pub minute: i32,
    pub second: i32,
    /// 0 = Sunday.
    pub weekday: i32,
    /// 0-based, as `tm_yday`.
    pub yday: i32,
    pub iso_year: i32,
    pub iso_week: i32,
    /// Seconds east of UTC.
    pub offset: i32,
    pub zone: String,
    pub epoch: i64,
    pub nanos: i32,
}

impl Tm {
    /// Now, in the zone `localtime(3)` would use (TZ, else the system's).
    pub fn now() -> Tm {
        Tm::from_zoned(&jiff::Zoned::now())
    }

    pub fn from_zoned(z: &jiff::Zoned) -> Tm {
        let iso = z.date().iso_week_date();
        let info = z.time_zone().to_offset_info(z.timestamp());
        Tm {
            year: i32::from(z.year()),
            month: i32::from(z.month()),
            day: i32::from(z.day()),
            hour: i32::from(z.hour()),
            minute: i32::from(z.minute()),
            second: i32::from(z.second()),
            weekday: i32::from(z.weekday().to_sunday_zero_offset()),
            yday: i32::from(z.day_of_year()) - 1,
            iso_year: i32::from(iso.year()),
            iso_week: i32::from(iso.week()),
            offset: info.offset().seconds(),
            zone: info.abbreviation().to_string(),
            epoch: z.timestamp().as_second(),
            nanos: z.timestamp().subsec_nanosecond(),
        }
    }

    /// `%z`: `+hhmm`.
    pub fn numeric_zone(&self) -> String {
        let sign = if self.offset < 0 { '-' } else { '+' };
        let mins = self.offset.abs() / 60;
        format!("{sign}{:02}{:02}", mins / 60, mins % 60)
    }

    fn hour12(&self) -> i32 {
        match self.hour % 12 {
            0 => 12,
            h => h,
        }
    }
}

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// What glibc's `strftime("%<code>")` writes (C locale). mosquitto prints nothing when
/// `strftime` returns 0, which only an empty result does here; `@N` is mosquitto's own
/// (nanoseconds) and never reaches this function.
pub fn format(out: &mut Vec<u8>, code: u8, tm: &Tm) {
    let day = DAYS[tm.weekday.rem_euclid(7) as usize];
    let month = MONTHS[(tm.month - 1).clamp(0, 11) as usize];
    // Writing to a Vec cannot fail.
    let _ = match code {
        b'a' => write!(out, "{}", &day[..3]),
        b'A' => write!(out, "{day}"),
        b'b' | b'h' => write!(out, "{}", &month[..3]),
        b'B' => write!(out, "{month}"),
        b'c' => write!(
            out,
            "{} {} {:2} {:02}:{:02}:{:02} {}",
            &day[..3],
            &month[..3],
            tm.day,
            tm.hour,
            tm.minute,
            tm.second,
            tm.year
        ),
        b'C' => write!(out, "{:02}", tm.year.div_euclid(100)),
        b'd' => write!(out, "{:02}", tm.day),
        b'D' | b'x' => write!(
            out,
            "{:02}/{:02}/{:02}",
            tm.month,
            tm.day,
            tm.year.rem_euclid(100)
        ),
        b'e' => write!(out, "{:2}", tm.day),
        b'F' => write!(out, "{}-{:02}-{:02}", tm.year, tm.month, tm.day),
        b'g' => write!(out, "{:02}", tm.iso_year.rem_euclid(100)),
        b'G' => write!(out, "{}", tm.iso_year),
        b'H' => write!(out, "{:02}", tm.hour),
        b'I' => write!(out, "{:02}", tm.hour12()),
        b'j' => write!(out, "{:03}", tm.yday + 1),
        b'k' => write!(out, "{:2}", tm.hour),
        b'l' => write!(out, "{:2}", tm.hour12()),
        b'm' => write!(out, "{:02}", tm.month),
        b'M' => write!(out, "{:02}", tm.minute),
        b'n' => writeln!(out),
        b'p' => write!(out, "{}", if tm.hour < 12 { "AM" } else { "PM" }),
        b'P' => write!(out, "{}", if tm.hour < 12 { "am" } else { "pm" }),
        b'r' => write!(
            out,
            "{:02}:{:02}:{:02} {}",
            tm.hour12(),
            tm.minute,
            tm.second,
            if tm.hour < 12 { "AM" } else { "PM" }
        ),
        b'R' => write!(out, "{:02}:{:02}", tm.hour, tm.minute),
        b's' => write!(out, "{}", tm.epoch),
        b'S' => write!(out, "{:02}", tm.second),
        b't' => write!(out, "\t"),
        b'T' | b'X' => write!(out, "{:02}:{:02}:{:02}", tm.hour, tm.minute, tm.second),
        b'u' => write!(out, "{}", if tm.weekday == 0 { 7 } else { tm.weekday }),
        b'U' => write!(out, "{:02}", (tm.yday - tm.weekday + 7) / 7),
        b'V' => write!(out, "{:02}", tm.iso_week),
        b'w' => write!(out, "{}", tm.weekday),
        b'W' => write!(out, "{:02}", (tm.yday - (tm.weekday + 6) % 7 + 7) / 7),
        b'y' => write!(out, "{:02}", tm.year.rem_euclid(100)),
        b'Y' => write!(out, "{}", tm.year),
        b'z' => write!(out, "{}", tm.numeric_zone()),
        b'Z' => write!(out, "{}", tm.zone),
        b'%' => write!(out, "%"),
        // A digit is a field width with no conversion after it: glibc copies the `%` and
        // the digit, padded with blanks to that width (`@5` prints `   %5`).
        d @ b'1'..=b'9' => write!(
            out,
            "{:>width$}",
            format!("%{}", d as char),
            width = usize::from(d - b'0')
        ),
        // Anything else (flags and modifiers with nothing after them, letters glibc does
        // not know, bytes of a UTF-8 character) is copied as it came: `%` and that byte.
        other => out.write_all(&[b'%', other]),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-04 was a Sunday: the ISO year is still 2026 (week 1), %U counts it as week 1
    /// and %W as week 0.
    #[test]
    fn week_numbers_and_twelve_hour_clock_follow_glibc() {
        let z: jiff::Zoned = "2026-01-04T00:07:09+01:00[Europe/Berlin]".parse().unwrap();
        let tm = Tm::from_zoned(&z);
        let f = |codes: &str| {
            let mut out = Vec::new();
            for (i, c) in codes.bytes().enumerate() {
                if i > 0 {
                    out.push(b'|');
                }
                format(&mut out, c, &tm);
            }
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            f("aAbBcCdDeFgGHIjklmMpPrRsSTuUVwWxXyYzZ%5q"),
            "Sun|Sunday|Jan|January|Sun Jan  4 00:07:09 2026|20|04|01/04/26| 4|2026-01-04|\
             26|2026|00|12|004| 0|12|01|07|AM|am|12:07:09 AM|00:07|1767481629|09|00:07:09|7|01|\
             01|0|00|01/04/26|00:07:09|26|2026|+0100|CET|%|   %5|%q"
        );
    }
}
