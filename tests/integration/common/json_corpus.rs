//! Arbitrary JSON values for the exact-values tests, with the texts clients
//! write for them: floats across the whole range (subnormals, the shortest
//! text JavaScript writes), negative zero, integers at and beyond 64 bits,
//! strings with every escape and astral characters, and nesting up to the
//! payload depth limit. Each value knows what the server must give back for
//! it (docs/PROTOCOL.md, "Numbers") and can be written in several spellings
//! that all read as that value.
//!
//! Shared by the server's integration tests and the Rust client's tests
//! (`#[path]`), so it needs nothing but `serde_json`.

#![allow(dead_code, unreachable_pub)]

use serde_json::{Map, Value};

/// A small deterministic generator (splitmix64): a failing run is replayed
/// with its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// The seed of this run: `BS_TEST_SEED` if set, else the clock; printed so
/// that a failure can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("BS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    println!("json corpus seed: BS_TEST_SEED={seed}");
    seed
}

/// A generated JSON value.
#[derive(Debug, Clone)]
pub enum Gen {
    Null,
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i128),
    /// An integer written with more digits than 64 bits hold.
    BigInt(String),
    /// A finite double (`-0.0` included).
    Float(f64),
    Str(String),
    Array(Vec<Gen>),
    /// Keys are distinct.
    Object(Vec<(String, Gen)>),
}

/// Characters that need every kind of escape, and astral ones.
const PALETTE: &[char] = &[
    'a',
    'Z',
    '0',
    ' ',
    '"',
    '\\',
    '/',
    '\u{0}',
    '\u{1}',
    '\u{8}',
    '\u{9}',
    '\u{a}',
    '\u{c}',
    '\u{d}',
    '\u{1f}',
    '\u{7f}',
    'é',
    'ß',
    '中',
    '\u{2028}',
    '\u{2029}',
    '\u{feff}',
    '\u{fffd}',
    '😀',
    '𝄞',
    '\u{10ffff}',
    '\u{1f468}',
    '\u{200d}',
];

/// Doubles worth having every time: the issue's own examples, the ends of
/// the range, subnormals, integers around 2^53 held as doubles, and the
/// points where JavaScript changes notation.
pub const EDGE_FLOATS: &[f64] = &[
    9.710932949418186e-20,
    -9.068346387644875e+23,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    2.225073858507201e-308,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    0.1,
    0.30000000000000004,
    9007199254740993.0,
    1e21,
    1e-7,
    123456789012345680000.0,
    0.000001,
    -0.0,
    0.5,
    1.5,
];

impl Gen {
    /// A random value at most `depth` levels deep (1: a scalar).
    pub fn arbitrary(rng: &mut Rng, depth: usize) -> Gen {
        let kinds = if depth > 1 { 9 } else { 7 };
        match rng.below(kinds) {
            0 => match rng.below(3) {
                0 => Gen::Null,
                1 => Gen::Bool(rng.chance(2)),
                _ => Gen::Int(rng.below(100) as i128),
            },
            1 | 2 => Gen::Float(float(rng)),
            3 => Gen::Int(int(rng)),
            4 => Gen::BigInt(big_int(rng)),
            5 | 6 => Gen::Str(string(rng, 12)),
            7 => Gen::Array(
                (0..rng.below(5))
                    .map(|_| Gen::arbitrary(rng, depth - 1))
                    .collect(),
            ),
            _ => {
                let mut fields: Vec<(String, Gen)> = Vec::new();
                for _ in 0..rng.below(5) {
                    let key = string(rng, 6);
                    if fields.iter().all(|(k, _)| *k != key) {
                        fields.push((key, Gen::arbitrary(rng, depth - 1)));
                    }
                }
                Gen::Object(fields)
            }
        }
    }

    /// Arrays nested `depth` levels deep around one float.
    pub fn nested(depth: usize, leaf: f64) -> Gen {
        let mut v = Gen::Float(leaf);
        for _ in 1..depth {
            v = Gen::Array(vec![v]);
        }
        v
    }

    /// What the server must give back for this value: integers that fit 64
    /// bits exactly, every other number as the nearest double.
    pub fn expected(&self) -> Value {
        match self {
            Gen::Null => Value::Null,
            Gen::Bool(b) => Value::Bool(*b),
            Gen::Int(i) => number_value(&i.to_string()),
            Gen::BigInt(text) => number_value(text),
            Gen::Float(f) => number_value(&js_number(*f)),
            Gen::Str(s) => Value::String(s.clone()),
            Gen::Array(items) => Value::Array(items.iter().map(Gen::expected).collect()),
            Gen::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expected()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }

    /// The value as JSON text, as a browser writes it (`JSON.stringify`:
    /// shortest numbers, `1e+21`, escapes only where needed). Negative zero
    /// is written `-0`, as a Rust client would: a browser writes `0`.
    pub fn js_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, &mut None);
        out
    }

    /// The value as JSON text in a random spelling that reads as the same
    /// value: other number notations, escapes for any character, key order
    /// shuffled, whitespace between tokens.
    pub fn respelled(&self, rng: &mut Rng) -> String {
        let mut out = String::new();
        self.write(&mut out, &mut Some(rng));
        out
    }

    fn write(&self, out: &mut String, rng: &mut Option<&mut Rng>) {
        match self {
            Gen::Null => out.push_str("null"),
            Gen::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Gen::Int(i) => out.push_str(&i.to_string()),
            Gen::BigInt(text) => out.push_str(text),
            Gen::Float(f) => match rng {
                None => out.push_str(&js_number(*f)),
                Some(rng) => out.push_str(&other_number(*f, rng)),
            },
            Gen::Str(s) => write_string(out, s, rng),
            Gen::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    space(out, rng);
                    item.write(out, rng);
                }
                out.push(']');
            }
            Gen::Object(fields) => {
                let mut order: Vec<usize> = (0..fields.len()).collect();
                if let Some(rng) = rng {
                    for i in (1..order.len()).rev() {
                        order.swap(i, rng.below(i + 1));
                    }
                }
                out.push('{');
                for (n, i) in order.into_iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    space(out, rng);
                    write_string(out, &fields[i].0, rng);
                    out.push(':');
                    space(out, rng);
                    fields[i].1.write(out, rng);
                }
                out.push('}');
            }
        }
    }
}

fn space(out: &mut String, rng: &mut Option<&mut Rng>) {
    if let Some(rng) = rng
        && rng.chance(3)
    {
        out.push_str([" ", "\n", "\t ", "\r\n"][rng.below(4)]);
    }
}

/// Any finite double: random bits (every exponent, subnormals included),
/// short decimals as people type them, and the edge cases.
fn float(rng: &mut Rng) -> f64 {
    loop {
        let f = match rng.below(4) {
            0 => f64::from_bits(rng.next_u64()),
            // Subnormal: exponent bits zero.
            1 => f64::from_bits(rng.next_u64() & 0x800f_ffff_ffff_ffff),
            2 => {
                let digits = (rng.next_u64() % 1_000_000) as f64;
                let scale = 10f64.powi(rng.below(12) as i32);
                if rng.chance(2) {
                    digits / scale
                } else {
                    -digits * scale
                }
            }
            _ => EDGE_FLOATS[rng.below(EDGE_FLOATS.len())],
        };
        if f.is_finite() {
            return f;
        }
    }
}

/// Integers of every size that 64 bits hold, the ends included.
fn int(rng: &mut Rng) -> i128 {
    match rng.below(6) {
        0 => i128::from(i64::MIN),
        1 => i128::from(u64::MAX),
        2 => i128::from(1u64 << 53) + rng.below(3) as i128 - 1,
        3 => i128::from(rng.next_u64()),
        4 => i128::from(rng.next_u64() as i64),
        _ => i128::from((rng.next_u64() % 100_000) as i64) - 50_000,
    }
}

/// An integer text of 20 to 40 digits (beyond 64 bits as a rule).
fn big_int(rng: &mut Rng) -> String {
    let len = 20 + rng.below(21);
    let mut s = String::new();
    if rng.chance(2) {
        s.push('-');
    }
    s.push(char::from(b'1' + rng.below(9) as u8));
    for _ in 1..len {
        s.push(char::from(b'0' + rng.below(10) as u8));
    }
    if s.trim_start_matches('-').parse::<u64>().is_ok() {
        s.push('0');
    }
    s
}

fn string(rng: &mut Rng, max: usize) -> String {
    (0..rng.below(max + 1))
        .map(|_| PALETTE[rng.below(PALETTE.len())])
        .collect()
}

fn write_string(out: &mut String, s: &str, rng: &mut Option<&mut Rng>) {
    out.push('"');
    for c in s.chars() {
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        };
        let control = (c as u32) < 0x20;
        match rng {
            None => match short {
                Some(e) => out.push_str(e),
                None if control => out.push_str(&format!("\\u{:04x}", c as u32)),
                None => out.push(c),
            },
            Some(rng) => {
                let pick = rng.below(3);
                if pick == 0 && short.is_some() {
                    out.push_str(short.unwrap_or_default());
                } else if pick == 1 && c == '/' {
                    out.push_str("\\/");
                } else if pick == 2 || control || short.is_some() {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        if rng.chance(2) {
                            out.push_str(&format!("\\u{unit:04X}"));
                        } else {
                            out.push_str(&format!("\\u{unit:04x}"));
                        }
                    }
                } else {
                    out.push(c);
                }
            }
        }
    }
    out.push('"');
}

/// The text JavaScript's `Number.prototype.toString` gives a double
/// (ECMA-262, Number::toString): the shortest digits that read back as it,
/// plain between 1e-7 and 1e21, else `d.ddde+N`.
pub fn js_number(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sign = if f < 0.0 { "-" } else { "" };
    // Rust's `{:e}` prints the shortest round-trip digits, `d.ddde-N`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').expect("exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let n = exp.parse::<i32>().expect("exponent") + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let e = if e < 0 {
            format!("-{}", -e)
        } else {
            format!("+{e}")
        };
        if k == 1 {
            format!("{digits}e{e}")
        } else {
            format!("{}.{}e{e}", &digits[..1], &digits[1..])
        }
    };
    format!("{sign}{body}")
}

/// What the server keeps for a number's text (docs/PROTOCOL.md, "Numbers"),
/// worked out with the standard library's correctly rounded parser rather
/// than serde_json's: an integer text that fits 64 bits is that integer
/// (`-0` is the double -0), anything else the nearest double.
pub fn number_value(text: &str) -> Value {
    let integer = !text.contains(['.', 'e', 'E']);
    if integer && text != "-0" {
        if let Ok(i) = text.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(u) = text.parse::<u64>() {
            return Value::from(u);
        }
    }
    Value::from(text.parse::<f64>().expect("a number"))
}

/// Whether a number's text is kept as an integer or as a double.
fn is_integer_text(text: &str) -> bool {
    matches!(number_value(text), Value::Number(n) if !n.is_f64())
}

/// Another spelling of the same value: for a double, Rust's exponent form,
/// an upper-case exponent with a sign, trailing zeros, or JavaScript's; an
/// integer text stays an integer text (`1` and `1.0` are different values to
/// a typed reader, and no client writes one for the other).
fn other_number(f: f64, rng: &mut Rng) -> String {
    let js = js_number(f);
    if is_integer_text(&js) {
        return js;
    }
    if f == 0.0 {
        return ["-0.0", "-0e0", "-0.000E+5", "-0"][rng.below(4)].into();
    }
    match rng.below(4) {
        0 => format!("{f:e}"),
        1 => format!("{f:E}").replace("E", "E+").replace("E+-", "E-"),
        2 => {
            let sci = format!("{f:e}");
            let (m, e) = sci.split_once('e').expect("exponent");
            let m = if m.contains('.') {
                format!("{m}000")
            } else {
                format!("{m}.000")
            };
            format!("{m}e{e}")
        }
        _ => js_number(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oracle_keeps_the_documented_kinds() {
        assert_eq!(number_value("1"), Value::from(1u64));
        assert_eq!(number_value("18446744073709551615"), Value::from(u64::MAX));
        assert!(number_value("18446744073709551616").is_f64());
        assert!(number_value("-0").is_f64());
        assert!(number_value("1.0").is_f64());
    }

    #[test]
    fn js_number_matches_javascript() {
        for (f, js) in [
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123.456, "123.456"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (-9.068346387644875e23, "-9.068346387644875e+23"),
            (5e-324, "5e-324"),
            (0.1, "0.1"),
        ] {
            assert_eq!(js_number(f), js);
        }
    }
}
