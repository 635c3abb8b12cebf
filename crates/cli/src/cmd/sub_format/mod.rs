//! mosquitto_sub's `-F` format strings, as mosquitto_sub 2.0 reads and prints them.
//!
//! [`parse`] first checks the string the way mosquitto does before connecting (same
//! error messages), then cuts it into [`Piece`]s; [`write`] prints one message by them.
//! `%` fields live here, `@` time codes in `strftime` (glibc's `strftime` in the C
//! locale), `%j`/`%J` in `json` (cJSON's layout).
//!
//! mosquitto surprises followed here (each marked where it is done): a field width on
//! `%p`/`%x`/`%X` is also a maximum (and halves the bytes shown for hex), `%-p` with no
//! width prints as many blanks as the payload has bytes, `%R` without the property prints
//! nothing even with a width while `%C` prints blanks, the `0` flag pads a missing numeric
//! property with zeros, and `%E` prints a message expiry above 2^31-1 as a negative number.

use std::io::Write;

use mqlink::mqtt::codec::Publish;

use self::strftime::Tm;

/// One piece of a format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(Vec<u8>),
    /// `%X` with its flags: `-` (left), `0` (zero padding), width and precision.
    Field {
        code: u8,
        left: bool,
        zero: bool,
        width: usize,
        precision: Option<usize>,
    },
    /// `@X`: strftime's `%X` (`N`: mosquitto's nanoseconds).
    Time(u8),
}

/// The `-F` checks of mosquitto_sub (its `check_format`), with its messages.
fn check(fmt: &[u8]) -> Result<(), String> {
    const INCOMPLETE: &str = "Incomplete format specifier.";
    let len = fmt.len();
    let mut i = 0;
    while i < len {
        match fmt[i] {
            b'%' => {
                if i == len - 1 {
                    return Err(INCOMPLETE.into());
                }
                if matches!(fmt[i + 1], b'0' | b'-') {
                    i += 1;
                    if i == len - 1 {
                        return Err(INCOMPLETE.into());
                    }
                }
                while fmt[i + 1].is_ascii_digit() {
                    i += 1;
                    if i == len - 1 {
                        return Err(INCOMPLETE.into());
                    }
                }
                if fmt[i + 1] == b'.' {
                    i += 1;
                    if i == len - 1 {
                        return Err(INCOMPLETE.into());
                    }
                    while fmt[i + 1].is_ascii_digit() {
                        i += 1;
                        if i == len - 1 {
                            return Err(INCOMPLETE.into());
                        }
                    }
                }
                let code = fmt[i + 1];
                if !b"%ACDEFIlmPpqRSrtjJUxX".contains(&code) {
                    // mosquitto prints the one byte with `%c`, a lone UTF-8 byte included.
                    return Err(format!(
                        "Invalid format specifier '{}'.",
                        String::from_utf8_lossy(&[code])
                    ));
                }
                i += 1;
            }
            b'@' => {
                if i == len - 1 {
                    return Err(INCOMPLETE.into());
                }
                i += 1;
            }
            b'\\' => {
                if i == len - 1 {
                    return Err("Incomplete escape specifier.".into());
                }
                if !b"\\0aenrtv".contains(&fmt[i + 1]) {
                    return Err(format!(
                        "Invalid escape specifier '{}'.",
                        String::from_utf8_lossy(&[fmt[i + 1]])
                    ));
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Parse a `-F` string; `Err` is mosquitto_sub's message for a string it refuses.
pub fn parse(fmt: &str) -> Result<Vec<Piece>, String> {
    let fmt = fmt.as_bytes();
    check(fmt)?;
    let mut out = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    // The check above guarantees that every `%`, `@` and `\` has what it needs after it.
    while i < fmt.len() {
        let piece = match fmt[i] {
            b'%' => {
                i += 1;
                let left = fmt[i] == b'-';
                if left {
                    i += 1;
                }
                // After `-`, a `0` is read as the zero flag and then ignored for alignment.
                let zero = fmt[i] == b'0';
                if zero {
                    i += 1;
                }
                let mut width = 0usize;
                while fmt[i].is_ascii_digit() {
                    width = width
                        .saturating_mul(10)
                        .saturating_add(usize::from(fmt[i] - b'0'));
                    i += 1;
                }
                let mut precision = None;
                if fmt[i] == b'.' {
                    i += 1;
                    let mut p = 0usize;
                    while fmt[i].is_ascii_digit() {
                        p = p
                            .saturating_mul(10)
                            .saturating_add(usize::from(fmt[i] - b'0'));
                        i += 1;
                    }
                    precision = Some(p);
                }
                if fmt[i] == b'%' {
                    lit.push(b'%');
                    None
                } else {
                    Some(Piece::Field {
                        code: fmt[i],
                        left,
                        zero,
                        width,
                        precision,
                    })
                }
            }
            b'@' => {
                i += 1;
                if fmt[i] == b'@' {
                    lit.push(b'@');
                    None
                } else {
                    Some(Piece::Time(fmt[i]))
                }
            }
            b'\\' => {
                i += 1;
                lit.push(match fmt[i] {
                    b'0' => 0,
                    b'a' => 0x07,
                    b'e' => 0x1b,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'v' => 0x0b,
                    _ => b'\\',
                });
                None
            }
            b => {
                lit.push(b);
                None
            }
        };
        i += 1;
        if let Some(piece) = piece {
            if !lit.is_empty() {
                out.push(Piece::Literal(std::mem::take(&mut lit)));
            }
            out.push(piece);
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Literal(lit));
    }
    Ok(out)
}

/// C's `printf("%d")` with mosquitto's flags (`formatted_print_int`).
fn int(out: &mut impl Write, v: i64, left: bool, zero: bool, width: usize) -> std::io::Result<()> {
    if left {
        write!(out, "{v:<width$}")
    } else if zero {
        write!(out, "{v:0width$}")
    } else {
        write!(out, "{v:>width$}")
    }
}

/// C's `printf("%*.*s")` (`formatted_print_str`): width and precision count bytes.
fn string(
    out: &mut impl Write,
    v: &[u8],
    left: bool,
    width: usize,
    precision: Option<usize>,
) -> std::io::Result<()> {
    let v = &v[..precision.unwrap_or(usize::MAX).min(v.len())];
    let pad = width.saturating_sub(v.len());
    if !left {
        blank(out, b' ', pad)?;
    }
    out.write_all(v)?;
    if left {
        blank(out, b' ', pad)?;
    }
    Ok(())
}

fn blank(out: &mut impl Write, pad: u8, n: usize) -> std::io::Result<()> {
    for _ in 0..n {
        out.write_all(&[pad])?;
    }
    Ok(())
}

/// `%p` (hex 0), `%x` (1), `%X` (2) as mosquitto's `write_payload` prints them.
fn payload(
    out: &mut impl Write,
    payload: &[u8],
    hex: u8,
    left: bool,
    zero: bool,
    width: usize,
) -> std::io::Result<()> {
    let mut len = payload.len();
    let pad: usize;
    if width > 0 {
        // mosquitto: the width is also a maximum, counted in bytes of payload; for hex the
        // bytes that fit are halved, so `%5x` of three bytes prints one byte, padded to 5.
        len = len.min(width);
        if hex > 0 {
            len /= 2;
            pad = width - len * 2;
        } else {
            pad = width - len;
        }
    } else {
        // mosquitto: width 0 gives a negative pad, which `printf("%*s")` takes as
        // left-aligned, so `%-p` prints as many blanks after the payload as it has bytes.
        pad = if left { len } else { 0 };
    }
    if !left {
        blank(out, if zero { b'0' } else { b' ' }, pad)?;
    }
    let shown = &payload[..len];
    match hex {
        0 => out.write_all(shown)?,
        1 => shown.iter().try_for_each(|b| write!(out, "{b:02x}"))?,
        _ => shown.iter().try_for_each(|b| write!(out, "{b:02X}"))?,
    }
    if left {
        blank(out, b' ', pad)?;
    }
    Ok(())
}

/// Write one message by the parsed format (without the end of line).
///
/// A `%J` whose payload is not JSON prints nothing for that field and mosquitto_sub's
/// error line on stderr; the rest of the format is printed.
pub fn write(
    out: &mut impl Write,
    pieces: &[Piece],
    pretty: bool,
    p: &Publish,
) -> std::io::Result<()> {
    // mosquitto reads the clock once per time field; one reading per message prints the
    // same unless a field straddles a second.
    let now = Tm::now();
    let props = &p.props;
    for piece in pieces {
        let (code, left, zero, width, precision) = match piece {
            Piece::Literal(l) => {
                out.write_all(l)?;
                continue;
            }
            Piece::Time(b'N') => {
                write!(out, "{:09}", now.nanos)?;
                continue;
            }
            Piece::Time(code) => {
                let mut buf = Vec::new();
                strftime::format(&mut buf, *code, &now);
                out.write_all(&buf)?;
                continue;
            }
            Piece::Field {
                code,
                left,
                zero,
                width,
                precision,
            } => (*code, *left, *zero, *width, *precision),
        };
        // A numeric property that is absent: blanks, or zeros with the `0` flag.
        let pad = if zero { b'0' } else { b' ' };
        match code {
            // The alias the broker sent with the message (Mosquitto sends none to
            // subscribers); the topic it stands for is already in %t.
            b'A' => match props.topic_alias {
                Some(a) => int(out, i64::from(a), left, zero, width)?,
                None => blank(out, pad, width)?,
            },
            b'S' => match props.subscription_id {
                Some(i) => int(out, i64::from(i), left, zero, width)?,
                None => blank(out, pad, width)?,
            },
            b'C' => match &props.content_type {
                Some(c) => string(out, c.as_bytes(), left, width, precision)?,
                None => blank(out, b' ', width)?,
            },
            b'D' => {
                if let Some(c) = &props.correlation_data {
                    out.write_all(c)?;
                }
            }
            // mosquitto prints the u32 through a C int.
            b'E' => match props.message_expiry {
                Some(e) => int(out, i64::from(e as i32), left, zero, width)?,
                None => blank(out, pad, width)?,
            },
            b'F' => match props.payload_utf8 {
                Some(f) => int(out, i64::from(f), left, zero, width)?,
                None => blank(out, pad, width)?,
            },
            b'I' => {
                let iso = format!(
                    "{}-{:02}-{:02}T{:02}:{:02}:{:02}{}",
                    now.year,
                    now.month,
                    now.day,
                    now.hour,
                    now.minute,
                    now.second,
                    now.numeric_zone()
                );
                string(out, iso.as_bytes(), left, width, precision)?;
            }
            b'j' | b'J' => match json::message(p, code == b'j', pretty, &now) {
                Some(j) => out.write_all(&j)?,
                None => eprintln!(
                    "Error: Message payload is not valid JSON on topic {}.",
                    p.topic
                ),
            },
            b'l' => int(out, p.payload.len() as i64, left, zero, width)?,
            b'm' => int(out, i64::from(p.pid.unwrap_or(0)), left, zero, width)?,
            b'P' => {
                for (n, (k, v)) in props.user.iter().enumerate() {
                    if n > 0 {
                        out.write_all(b" ")?;
                    }
                    write!(out, "{k}:{v}")?;
                }
            }
            b'p' => payload(out, &p.payload, 0, left, zero, width)?,
            b'x' => payload(out, &p.payload, 1, left, zero, width)?,
            b'X' => payload(out, &p.payload, 2, left, zero, width)?,
            b'q' => write!(out, "{}", p.qos as u8)?,
            // mosquitto: an absent response topic prints nothing, whatever the width.
            b'R' => {
                if let Some(r) = &props.response_topic {
                    string(out, r.as_bytes(), left, width, precision)?;
                }
            }
            b'r' => write!(out, "{}", u8::from(p.retain))?,
            b't' => string(out, p.topic.as_bytes(), left, width, precision)?,
            b'U' => write!(out, "{}.{:09}", now.epoch, now.nanos)?,
            // `parse` lets no other code through.
            _ => {}
        }
    }
    Ok(())
}

mod json;
mod strftime;

#[cfg(test)]
mod tests {
    use super::*;

    fn field(code: u8, left: bool, zero: bool, width: usize, precision: Option<usize>) -> Piece {
        Piece::Field {
            code,
            left,
            zero,
            width,
            precision,
        }
    }

    #[test]
    fn fields_flags_and_escapes() {
        let p = parse("%t\\t%%%-05.3q\\n@@@Y").unwrap();
        assert_eq!(
            p,
            vec![
                field(b't', false, false, 0, None),
                Piece::Literal(b"\t%".to_vec()),
                field(b'q', true, true, 5, Some(3)),
                Piece::Literal(b"\n@".to_vec()),
                Piece::Time(b'Y'),
            ]
        );
    }

    #[test]
    fn strings_mosquitto_refuses_are_refused_with_its_messages() {
        assert_eq!(parse("%Z").unwrap_err(), "Invalid format specifier 'Z'.");
        assert_eq!(parse("a%").unwrap_err(), "Incomplete format specifier.");
        assert_eq!(parse("%-").unwrap_err(), "Incomplete format specifier.");
        assert_eq!(parse("%5").unwrap_err(), "Incomplete format specifier.");
        assert_eq!(parse("%5.").unwrap_err(), "Incomplete format specifier.");
        assert_eq!(parse("x@").unwrap_err(), "Incomplete format specifier.");
        assert_eq!(parse("\\").unwrap_err(), "Incomplete escape specifier.");
        assert_eq!(parse("\\q").unwrap_err(), "Invalid escape specifier 'q'.");
        assert!(parse("@q@ü%-05.2t").is_ok());
    }

    #[test]
    fn payload_width_is_also_a_maximum_and_halves_hex() {
        let mut out = Vec::new();
        payload(&mut out, b"abcdef", 0, false, false, 4).unwrap();
        payload(&mut out, b"abc", 1, false, true, 5).unwrap();
        payload(&mut out, b"ab", 0, true, false, 0).unwrap();
        out.push(b'|');
        assert_eq!(out, b"abcd00061ab  |");
    }
}
