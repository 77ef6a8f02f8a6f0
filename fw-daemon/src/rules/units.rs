//! Human units in rule files: byte rates such as "10MB", "80mbit", "1.5GiB/s".

/// Parses a duration such as "2s", "500ms" or "1.5s" into milliseconds (whole ms; at most a
/// day).
pub fn parse_duration_ms(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let bad =
        || format!("`{text}` is not a duration: expected a number and a unit, like \"2s\" or \"500ms\"");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "ms" => 1.0,
        "s" => 1000.0,
        _ => return Err(bad()),
    };
    let ms = n * mult;
    if !(0.0..=86_400_000.0).contains(&ms) || ms.fract() != 0.0 {
        return Err(format!("`{text}` is not a whole number of milliseconds up to a day"));
    }
    Ok(ms as u32)
}

/// Parses a bandwidth into bytes per second.
///
/// Bytes: `B`, `KB`, `MB`, `GB`, `TB` (powers of 1000) and `KiB`, `MiB`, `GiB`, `TiB` (powers of
/// 1024). Bits: `bit`, `kbit`, `mbit`, `gbit` and `bps`, `kbps`, `mbps`, `gbps` (powers of 1000).
/// Unit names are case-insensitive, except that `Mb`-style spellings are refused as ambiguous.
/// An optional `/s` suffix is accepted. A bare number is bytes per second.
pub fn parse_bandwidth(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim_end();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    if num.is_empty() {
        return Err(format!(
            "`{text}` is not a bandwidth: expected a number and a unit, like \"10MB\" or \"80mbit\""
        ));
    }
    let ambiguous = ["kb", "Kb", "mb", "Mb", "gb", "Gb", "tb", "Tb"];
    if ambiguous.contains(&unit) {
        return Err(format!(
            "unit `{unit}` is ambiguous: write `{}B` for bytes or `{}bit` for bits",
            unit[..1].to_uppercase(),
            unit[..1].to_lowercase()
        ));
    }
    let (mult, bits): (u128, bool) = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => (1, false),
        "kb" => (1_000, false),
        "mb" => (1_000_000, false),
        "gb" => (1_000_000_000, false),
        "tb" => (1_000_000_000_000, false),
        "kib" => (1 << 10, false),
        "mib" => (1 << 20, false),
        "gib" => (1 << 30, false),
        "tib" => (1 << 40, false),
        "bit" | "bps" => (1, true),
        "kbit" | "kbps" => (1_000, true),
        "mbit" | "mbps" => (1_000_000, true),
        "gbit" | "gbps" => (1_000_000_000, true),
        _ => {
            return Err(format!(
                "unknown unit `{unit}`: use B, KB, MB, GB, KiB, MiB, GiB (bytes) or kbit, mbit, gbit (bits)"
            ))
        }
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() || frac.contains('.') || frac.len() > 6 || (num.contains('.') && frac.is_empty()) {
        return Err(format!("`{num}` is not a number with at most 6 decimals"));
    }
    let int: u128 = int.parse().map_err(|_| format!("`{num}` is too large"))?;
    let frac_val: u128 = if frac.is_empty() { 0 } else { frac.parse().unwrap_or(0) };
    let scale = 10u128.pow(frac.len() as u32);
    let scaled = int
        .checked_mul(scale)
        .and_then(|v| v.checked_add(frac_val))
        .and_then(|v| v.checked_mul(mult))
        .ok_or_else(|| format!("`{text}` is too large"))?;
    let mut bytes = scaled / scale;
    if bits {
        bytes /= 8;
    }
    if bytes == 0 {
        return Err(format!("`{text}` is less than one byte per second"));
    }
    const MAX: u128 = 1 << 40; // 1 TiB/s: beyond any NIC, and keeps kernel rate math safe
    if bytes > MAX {
        return Err(format!("`{text}` is more than 1TiB/s"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("2s"), Ok(2000));
        assert_eq!(parse_duration_ms(" 500ms "), Ok(500));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1500));
        for bad in ["", "2", "s", "2 min", "-1s", "0.5ms", "1e3s", "99999999s", "1.2.3s"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_bytes_and_bits() {
        assert_eq!(parse_bandwidth("10MB"), Ok(10_000_000));
        assert_eq!(parse_bandwidth("80mbit"), Ok(10_000_000));
        assert_eq!(parse_bandwidth("1.5 GiB/s"), Ok(1_610_612_736));
        assert_eq!(parse_bandwidth("512"), Ok(512));
        assert_eq!(parse_bandwidth("100kbps"), Ok(12_500));
        assert_eq!(parse_bandwidth("2KiB"), Ok(2048));
    }

    #[test]
    fn refuses_nonsense_with_reasons() {
        assert!(parse_bandwidth("10Mb").unwrap_err().contains("ambiguous"));
        assert!(parse_bandwidth("10 furlongs").unwrap_err().contains("unknown unit"));
        assert!(parse_bandwidth("MB").unwrap_err().contains("not a bandwidth"));
        assert!(parse_bandwidth("0MB").unwrap_err().contains("less than one byte"));
        assert!(parse_bandwidth("1.2.3MB").is_err());
        assert!(parse_bandwidth("99999999999999999999999999999999999999999TB").is_err());
        assert!(parse_bandwidth("5TB").unwrap_err().contains("1TiB"));
        assert!(parse_bandwidth("1.MB").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = parse_bandwidth(&s);
        }

        #[test]
        fn megabytes_scale(n in 1u64..100_000) {
            prop_assert_eq!(parse_bandwidth(&format!("{n}MB")), Ok(n * 1_000_000));
            prop_assert_eq!(parse_bandwidth(&format!("{n}mbit")), Ok(n * 125_000));
        }
    }
}
