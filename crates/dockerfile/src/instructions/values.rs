//! Value syntaxes BuildKit borrows from Go and Docker: durations (`time.ParseDuration`),
//! integers (`strconv`), booleans (`strconv.ParseBool`) and sizes (`units.RAMInBytes`).

use std::time::Duration;

use crate::text::go_quote;

/// Go's `time.ParseDuration`, returning signed nanoseconds or Go's error message.
pub(crate) fn parse_go_duration(text: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(text));
    let mut s = text;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    const MAX: i128 = i64::MAX as i128;
    let mut total: i128 = 0;
    while !s.is_empty() {
        if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut fraction = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            fraction = &rest[..frac_len];
            s = &rest[frac_len..];
        }
        if int_part.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {}", go_quote(text)));
        }
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(unit),
                    go_quote(text)
                ));
            }
        };
        // The integer part must fit in 63 bits once scaled.
        let mut value: i128 = 0;
        for digit in int_part.bytes() {
            value = value * 10 + i128::from(digit - b'0');
            if value > MAX {
                return Err(invalid());
            }
        }
        value *= scale;
        if value > MAX {
            return Err(invalid());
        }
        // The fraction is scaled and truncated, as Go does.
        let mut fraction_value: i128 = 0;
        let mut divisor: i128 = 1;
        for digit in fraction.bytes() {
            if divisor > MAX / 10 {
                break;
            }
            fraction_value = fraction_value * 10 + i128::from(digit - b'0');
            divisor *= 10;
        }
        value += fraction_value * scale / divisor;
        total += value;
        if total > MAX {
            return Err(invalid());
        }
    }
    Ok(if negative { -total } else { total })
}

/// A HEALTHCHECK interval flag: unset or zero is `None`; below one millisecond is an error.
pub(crate) fn parse_interval(text: Option<&str>) -> Result<Option<Duration>, Option<String>> {
    let Some(text) = text else { return Ok(None) };
    let nanos = parse_go_duration(text).map_err(Some)?;
    if nanos == 0 {
        return Ok(None);
    }
    if nanos < 1_000_000 {
        return Err(None);
    }
    Ok(u64::try_from(nanos).ok().map(Duration::from_nanos))
}

/// Go's `strconv.ParseInt(text, 10, 32)`; the error is Go's reason.
pub(crate) fn parse_i32(text: &str) -> Result<i64, &'static str> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid syntax");
    }
    match text.parse::<i64>() {
        Ok(value) if i32::try_from(value).is_ok() => Ok(value),
        _ => Err("value out of range"),
    }
}

/// Go's `strconv.ParseUint(text, base, 32)` for bases 8 and 10.
pub(crate) fn parse_u32(text: &str, base: u32) -> Option<u32> {
    if text.is_empty() || !text.chars().all(|c| c.is_digit(base)) {
        return None;
    }
    u32::from_str_radix(text, base).ok()
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Docker's `units.RAMInBytes`: `64m`, `1.5g`, `512KiB`, `100` (bytes); binary multiples.
pub(crate) fn parse_ram_in_bytes(text: &str) -> Option<i64> {
    let number_len = text
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, mut unit) = text.split_at(number_len);
    if number.is_empty()
        || !number.starts_with(|c: char| c.is_ascii_digit())
        || number.contains("..")
        || number.ends_with('.')
    {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    unit = unit.strip_prefix(' ').unwrap_or(unit);
    let mut letters = unit.chars();
    let mut multiplier: f64 = 1.0;
    let mut next = letters.next();
    if let Some(c) = next {
        let power = match c.to_ascii_lowercase() {
            'k' => Some(1),
            'm' => Some(2),
            'g' => Some(3),
            't' => Some(4),
            'p' => Some(5),
            _ => None,
        };
        if let Some(power) = power {
            multiplier = 1024f64.powi(power);
            next = letters.next();
        }
    }
    if matches!(next, Some('i' | 'I')) {
        next = letters.next();
    }
    if matches!(next, Some('b' | 'B')) {
        next = letters.next();
    }
    if next.is_some() {
        return None;
    }
    Some((value * multiplier) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_go() {
        assert_eq!(parse_go_duration("5s"), Ok(5_000_000_000));
        assert_eq!(parse_go_duration("1h2m3.5s"), Ok(3_723_500_000_000));
        assert_eq!(parse_go_duration("1.5ms"), Ok(1_500_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-2us"), Ok(-2_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        assert_eq!(
            parse_go_duration("1"),
            Err("time: missing unit in duration \"1\"".to_string())
        );
        assert_eq!(
            parse_go_duration("1x"),
            Err("time: unknown unit \"x\" in duration \"1x\"".to_string())
        );
        assert_eq!(
            parse_go_duration(""),
            Err("time: invalid duration \"\"".to_string())
        );
        assert_eq!(
            parse_go_duration("."),
            Err("time: invalid duration \".\"".to_string())
        );
        assert!(parse_go_duration("9999999999h").is_err());
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval(None), Ok(None));
        assert_eq!(parse_interval(Some("0s")), Ok(None));
        assert_eq!(parse_interval(Some("2s")), Ok(Some(Duration::from_secs(2))));
        assert_eq!(parse_interval(Some("10us")), Err(None));
        assert_eq!(parse_interval(Some("-1s")), Err(None));
    }

    #[test]
    fn integers_and_sizes() {
        assert_eq!(parse_i32("3"), Ok(3));
        assert_eq!(parse_i32("-3"), Ok(-3));
        assert_eq!(parse_i32("x"), Err("invalid syntax"));
        assert_eq!(parse_i32("99999999999"), Err("value out of range"));
        assert_eq!(parse_u32("0755", 8), Some(0o755));
        assert_eq!(parse_u32("8", 8), None);
        assert_eq!(parse_ram_in_bytes("64m"), Some(64 << 20));
        assert_eq!(parse_ram_in_bytes("1.5 GiB"), Some(3 << 29));
        assert_eq!(parse_ram_in_bytes("100"), Some(100));
        assert_eq!(parse_ram_in_bytes("1x"), None);
        assert_eq!(parse_go_bool("T"), Some(true));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
