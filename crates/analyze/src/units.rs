//! Sizes for people, and the byte-size syntax dive's CI rules accept.

/// docker's `units.HumanSizeWithPrecision(size, 3)`: decimal units, three significant digits
/// (`5.24MB`, `999B`, `1.2kB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    format!("{}{}", three_significant(size), UNITS[unit])
}

/// Go's `%.3g` for values in [0, 1000).
fn three_significant(x: f64) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    let sci = format!("{x:.2e}");
    let exp: i32 = sci
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    if exp >= 3 {
        // Rounding pushed it to 1000: Go prints 1e+03.
        return "1e+03".to_string();
    }
    let decimals = (2 - exp).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A ratio as a percentage with one decimal (`28.9%`).
pub fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// go-humanize's `ParseBytes`, which dive uses for `highestWastedBytes`: a number (commas
/// allowed, a fraction too) and an optional unit, case-insensitive, with or without a space:
/// `B`; SI `k kB M MB G GB T TB P PB E EB` (powers of 1000); IEC `Ki KiB Mi MiB …`
/// (powers of 1024).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let cleaned: String = text.trim().replace(',', "");
    let split = cleaned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(cleaned.len());
    let (number, unit) = cleaned.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let multiplier: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024f64.powi(2),
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024f64.powi(3),
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1024f64.powi(5),
        "e" | "eb" => 1e18,
        "ei" | "eib" => 1024f64.powi(6),
        other => return Err(format!("unknown unit {other:?} in {text:?}")),
    };
    let value = number * multiplier;
    if !value.is_finite() || value >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(value as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_follow_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(5_242_880), "5.24MB");
        assert_eq!(human_size(1_990_656), "1.99MB");
        assert_eq!(human_size(2048), "2.05kB");
        assert_eq!(human_size(999_999), "1e+03kB");
        assert_eq!(human_size(123_456_789_012), "123GB");
    }

    #[test]
    fn byte_sizes_parse_like_go_humanize() {
        assert_eq!(parse_bytes("20MB"), Ok(20_000_000));
        assert_eq!(parse_bytes("20 MiB"), Ok(20 * 1024 * 1024));
        assert_eq!(parse_bytes("1,000"), Ok(1000));
        assert_eq!(parse_bytes("1.5k"), Ok(1500));
        assert_eq!(parse_bytes("42"), Ok(42));
        assert_eq!(parse_bytes("3 gb"), Ok(3_000_000_000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5 furlongs").is_err());
    }
}
