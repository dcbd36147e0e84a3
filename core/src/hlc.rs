//! Hybrid logical clock values: parsing, canonical text form, ordering and a generator.
//!
//! A clock value is a physical time in milliseconds since the Unix epoch plus a
//! logical counter that orders events sharing one millisecond. Its text form
//! begins with the ISO-8601 UTC time, so a plain timestamp such as
//! `2026-11-25T10:00:00.000Z` (what a browser's `new Date().toISOString()`
//! gives) is a valid clock with counter 0.
//!
//! Canonical form: `YYYY-MM-DDTHH:MM:SS.mmmZ-CCCC`, the counter as four
//! lower-case hex digits. Canonical strings sort lexically in clock order.
//! Accepted input: any RFC 3339 time (offsets are converted to UTC, digits past
//! the millisecond are dropped), optionally followed by `-` and 1 to 4 hex
//! counter digits.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Utc};

/// Largest counter value a clock can carry in its four hex digits.
pub const MAX_COUNTER: u16 = u16::MAX;

/// One hybrid logical clock reading. Ordered by physical time, then counter.
///
/// ```
/// use better_sync_core::Hlc;
/// let a: Hlc = "2026-11-25T10:00:00.000Z".parse().unwrap();
/// let b: Hlc = "2026-11-25T10:00:00.000Z-0001".parse().unwrap();
/// assert!(a < b);
/// assert_eq!(a.to_string(), "2026-11-25T10:00:00.000Z-0000");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc {
    millis: i64,
    counter: u16,
}

/// Why a string is not a clock value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid clock value {0:?}: expected an ISO-8601 UTC time such as 2026-11-25T10:00:00.000Z, optionally followed by -CCCC (hex counter)"
)]
pub struct HlcParseError(String);

impl Hlc {
    /// A clock at `millis` since the epoch with the given counter.
    pub fn new(millis: i64, counter: u16) -> Self {
        Self { millis, counter }
    }

    /// Physical part, milliseconds since the Unix epoch.
    pub fn millis(&self) -> i64 {
        self.millis
    }

    /// Logical counter.
    pub fn counter(&self) -> u16 {
        self.counter
    }

    /// The current wall-clock time with counter 0.
    pub fn now() -> Self {
        Self::new(Utc::now().timestamp_millis(), 0)
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = self.canonical() {
            // ASCII digits and separators only.
            return f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?);
        }
        let time = Utc
            .timestamp_millis_opt(self.millis)
            .single()
            .unwrap_or_default();
        write!(
            f,
            "{}-{:04x}",
            time.to_rfc3339_opts(SecondsFormat::Millis, true),
            self.counter
        )
    }
}

impl Hlc {
    /// The canonical text of a clock in the years 0000-9999 (every clock
    /// the parser accepts; [`Hlc::new`] can make others), written by hand:
    /// the server formats one for every stamp it stores, and chrono's
    /// RFC 3339 writer allocates.
    fn canonical(&self) -> Option<[u8; 29]> {
        const DAY: i64 = 86_400_000;
        let (days, ms) = (self.millis.div_euclid(DAY), self.millis.rem_euclid(DAY));
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        if !(0..=9999).contains(&year) {
            return None;
        }
        let mut out = *b"0000-00-00T00:00:00.000Z-0000";
        let mut put = |at: usize, width: usize, mut n: i64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, ms / 3_600_000);
        put(14, 2, ms / 60_000 % 60);
        put(17, 2, ms / 1000 % 60);
        put(20, 3, ms % 1000);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, shift) in [12, 8, 4, 0].into_iter().enumerate() {
            out[25 + i] = HEX[usize::from((self.counter >> shift) & 0xf)];
        }
        Some(out)
    }
}

impl FromStr for Hlc {
    type Err = HlcParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || HlcParseError(s.chars().take(64).collect());
        if s.len() > 64 || !s.is_ascii() {
            return Err(bad());
        }
        // The time ends at 'Z' or at a numeric offset; a counter may follow as
        // "-hex". An offset also starts with '-', so split on the last '-' only
        // when what precedes it parses as a full RFC 3339 time.
        let (time, counter) = match s.rfind('-') {
            Some(i) if i + 1 < s.len() && s.len() - i - 1 <= 4 && s[..i].ends_with('Z') => {
                let digits = &s[i + 1..];
                if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad());
                }
                let counter = u16::from_str_radix(digits, 16).map_err(|_| bad())?;
                (&s[..i], counter)
            }
            _ => (s, 0),
        };
        let parsed = DateTime::parse_from_rfc3339(time).map_err(|_| bad())?;
        let utc = parsed.with_timezone(&Utc);
        // An offset can carry a time of year 0000 or 9999 across the edge,
        // and the canonical text has four digits for the year: a clock
        // whose text would not parse back is refused here.
        if !(0..=9999).contains(&utc.year()) {
            return Err(bad());
        }
        Ok(Self::new(utc.timestamp_millis(), counter))
    }
}

impl serde::Serialize for Hlc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Hlc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A clock generator for one replica: every reading is greater than the
/// previous one and than every remote clock it has observed.
///
/// ```
/// use better_sync_core::hlc::HlcClock;
/// let clock = HlcClock::new();
/// let a = clock.tick();
/// let b = clock.tick();
/// assert!(b > a);
/// ```
#[derive(Debug, Default)]
pub struct HlcClock {
    last: Mutex<Hlc>,
}

impl HlcClock {
    /// A clock that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new local event: the wall clock if it moved forward, else the last
    /// reading with its counter incremented (borrowing the next millisecond
    /// when the counter is exhausted).
    pub fn tick(&self) -> Hlc {
        self.tick_at(Utc::now().timestamp_millis())
    }

    /// [`Self::tick`] with an explicit wall-clock reading, for tests.
    pub fn tick_at(&self, wall_millis: i64) -> Hlc {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = if wall_millis > last.millis {
            Hlc::new(wall_millis, 0)
        } else {
            successor(*last)
        };
        *last
    }

    /// The last reading (or the largest clock observed): what a replica
    /// persists so that its clock keeps moving forward across restarts.
    pub fn last(&self) -> Hlc {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Merge a clock received from elsewhere so later ticks order after it.
    pub fn observe(&self, remote: Hlc) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if remote > *last {
            *last = remote;
        }
    }
}

fn successor(h: Hlc) -> Hlc {
    if h.counter == MAX_COUNTER {
        Hlc::new(h.millis + 1, 0)
    } else {
        Hlc::new(h.millis, h.counter + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text as chrono writes it, which the hand-written form must equal.
    fn chrono_text(h: Hlc) -> String {
        let time = Utc.timestamp_millis_opt(h.millis()).single().unwrap();
        format!(
            "{}-{:04x}",
            time.to_rfc3339_opts(SecondsFormat::Millis, true),
            h.counter()
        )
    }

    #[test]
    fn canonical_text_is_chronos_in_every_accepted_year() {
        let last = "9999-12-31T23:59:59.999Z".parse::<Hlc>().unwrap().millis();
        let first = "0000-01-01T00:00:00.000Z".parse::<Hlc>().unwrap().millis();
        let mut cases = vec![first, -1, 0, 1, 951_782_400_000, 4_107_542_399_999, last];
        // Days around leap days and century years, and a spread of times.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(first + (x % (last - first) as u64) as i64);
        }
        for (i, ms) in cases.into_iter().enumerate() {
            let h = Hlc::new(ms, (i as u16).wrapping_mul(7919));
            assert_eq!(h.to_string(), chrono_text(h), "millis {ms}");
            assert_eq!(h.to_string().parse::<Hlc>().unwrap(), h);
        }
        // Offsets cannot carry a clock out of 0000-9999, whose text would
        // not parse back.
        for edge in ["0000-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"] {
            assert!(edge.parse::<Hlc>().is_err(), "{edge}");
        }
        assert!("0000-01-01T00:00:00-01:00".parse::<Hlc>().is_ok());
        // Outside 0000-9999 the text is chrono's.
        let far = Hlc::new(last + 1, 1);
        assert_eq!(far.to_string(), chrono_text(far));
        let before = Hlc::new(first - 1, 1);
        assert_eq!(before.to_string(), chrono_text(before));
    }

    #[test]
    fn parses_plain_and_canonical_forms() {
        let cases = [
            ("2026-11-25T10:00:00Z", "2026-11-25T10:00:00.000Z-0000"),
            ("2026-11-25T10:00:00.123Z", "2026-11-25T10:00:00.123Z-0000"),
            (
                "2026-11-25T10:00:00.123456Z",
                "2026-11-25T10:00:00.123Z-0000",
            ),
            (
                "2026-11-25T11:00:00.5+01:00",
                "2026-11-25T10:00:00.500Z-0000",
            ),
            (
                "2026-11-25T09:00:00.000-01:00",
                "2026-11-25T10:00:00.000Z-0000",
            ),
            (
                "2026-11-25T10:00:00.123Z-00ff",
                "2026-11-25T10:00:00.123Z-00ff",
            ),
            (
                "2026-11-25T10:00:00.123Z-1",
                "2026-11-25T10:00:00.123Z-0001",
            ),
        ];
        for (input, canonical) in cases {
            let h: Hlc = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(h.to_string(), canonical, "{input}");
            assert_eq!(canonical.parse::<Hlc>().unwrap(), h);
        }
    }

    #[test]
    fn rejects_garbage() {
        for input in [
            "",
            "yesterday",
            "2026-11-25",
            "2026-13-25T10:00:00Z",
            "2026-11-25T10:00:00Z-zzzz",
            "2026-11-25T10:00:00Z-00001",
            "2026-11-25T10:00:00Z-",
            "2026-11-25T10:00:00",
            "２０２６-11-25T10:00:00Z",
        ] {
            assert!(
                input.parse::<Hlc>().is_err(),
                "{input:?} should be rejected"
            );
        }
    }

    #[test]
    fn canonical_text_sorts_like_clocks() {
        let mut clocks = [
            Hlc::new(1_700_000_000_000, 3),
            Hlc::new(1_700_000_000_000, 0),
            Hlc::new(1_700_000_000_001, 0),
            Hlc::new(1_699_999_999_999, 0xffff),
            Hlc::new(1_700_000_000_000, 0x10),
        ];
        let mut texts: Vec<String> = clocks.iter().map(ToString::to_string).collect();
        clocks.sort();
        texts.sort();
        let sorted: Vec<String> = clocks.iter().map(ToString::to_string).collect();
        assert_eq!(texts, sorted);
    }

    #[test]
    fn clock_is_monotonic_and_observes_remote() {
        let clock = HlcClock::new();
        let a = clock.tick_at(1000);
        let b = clock.tick_at(1000);
        let c = clock.tick_at(999);
        assert!(a < b && b < c);
        clock.observe(Hlc::new(5000, 7));
        let d = clock.tick_at(1000);
        assert_eq!(d, Hlc::new(5000, 8));
        let e = clock.tick_at(6000);
        assert_eq!(e, Hlc::new(6000, 0));
        clock.observe(Hlc::new(6000, MAX_COUNTER));
        assert_eq!(clock.tick_at(6000), Hlc::new(6001, 0));
    }
}
