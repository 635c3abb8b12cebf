//! mosquitto_sub's `-F` format strings: `%` fields and `\` escapes, parsed once at start so a
//! field mqlink does not support yet is refused before connecting instead of printed wrong.

use std::io::Write;

use mqlink::mqtt::codec::Publish;

/// One piece of a format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(Vec<u8>),
    Topic,
    Payload,
    Qos,
    Retain,
    Length,
    MessageId,
    HexLower,
    HexUpper,
}

/// Parse a `-F` string; `Err` names the field or escape that is not supported yet.
pub fn parse(fmt: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut lit = Vec::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let piece = match chars.next() {
                    Some('%') => {
                        lit.push(b'%');
                        continue;
                    }
                    Some('t') => Piece::Topic,
                    Some('p') => Piece::Payload,
                    Some('q') => Piece::Qos,
                    Some('r') => Piece::Retain,
                    Some('l') => Piece::Length,
                    Some('m') => Piece::MessageId,
                    Some('x') => Piece::HexLower,
                    Some('X') => Piece::HexUpper,
                    Some(other) => {
                        return Err(format!("-F field '%{other}' is not supported yet"));
                    }
                    None => return Err("-F ends with a lone '%'".into()),
                };
                if !lit.is_empty() {
                    out.push(Piece::Literal(std::mem::take(&mut lit)));
                }
                out.push(piece);
            }
            '\\' => {
                let b = match chars.next() {
                    Some('\\') => b'\\',
                    Some('0') => 0,
                    Some('a') => 0x07,
                    Some('e') => 0x1b,
                    Some('n') => b'\n',
                    Some('r') => b'\r',
                    Some('t') => b'\t',
                    Some('v') => 0x0b,
                    Some(other) => {
                        return Err(format!("-F escape '\\{other}' is not supported yet"));
                    }
                    None => return Err("-F ends with a lone '\\'".into()),
                };
                lit.push(b);
            }
            c => {
                let mut buf = [0u8; 4];
                lit.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Literal(lit));
    }
    Ok(out)
}

/// Write one message by the parsed format (without the end of line).
pub fn write(out: &mut impl Write, pieces: &[Piece], p: &Publish) -> std::io::Result<()> {
    for piece in pieces {
        match piece {
            Piece::Literal(l) => out.write_all(l)?,
            Piece::Topic => out.write_all(p.topic.as_bytes())?,
            Piece::Payload => out.write_all(&p.payload)?,
            Piece::Qos => write!(out, "{}", p.qos as u8)?,
            Piece::Retain => write!(out, "{}", u8::from(p.retain))?,
            Piece::Length => write!(out, "{}", p.payload.len())?,
            Piece::MessageId => write!(out, "{}", p.pid.unwrap_or(0))?,
            Piece::HexLower => {
                for b in p.payload.iter() {
                    write!(out, "{b:02x}")?;
                }
            }
            Piece::HexUpper => {
                for b in p.payload.iter() {
                    write!(out, "{b:02X}")?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_escapes() {
        let p = parse("%t\\t%%%q\\n").unwrap();
        assert_eq!(
            p,
            vec![
                Piece::Topic,
                Piece::Literal(b"\t%".to_vec()),
                Piece::Qos,
                Piece::Literal(b"\n".to_vec())
            ]
        );
        assert!(parse("%j").unwrap_err().contains("%j"));
    }
}
