//! `Amount`: a token quantity in micro-TSR (1 TSR = 1,000,000 micro), checked.

use borsh::{BorshDeserialize, BorshSerialize};
use std::fmt;

/// Micro-units in one TSR.
pub const MICRO_PER_TSR: u128 = 1_000_000;
const DECIMALS: usize = 6;

/// A non-negative token amount stored as micro-TSR. All arithmetic is checked:
/// an overflow or an underflow is an error, never a wrap.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub struct Amount(pub u128);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount {0:?} is negative; amounts are zero or more TSR")]
    Negative(String),
    #[error("amount {0:?} is not a decimal number of TSR (examples: 25, 25.5, 0.000001)")]
    NotANumber(String),
    #[error("amount {0:?} has more than 6 decimal places (1 micro-TSR = 0.000001 TSR is the smallest unit)")]
    TooPrecise(String),
    #[error("amount {0:?} is too large")]
    TooLarge(String),
    #[error("amount must be greater than zero")]
    Zero,
}

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub const fn from_micro(micro: u128) -> Self {
        Amount(micro)
    }

    /// Whole TSR. Panics on overflow, so only for constants and tests.
    pub const fn from_tsr(tsr: u64) -> Self {
        Amount(tsr as u128 * MICRO_PER_TSR)
    }

    pub const fn micro(self) -> u128 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    pub fn checked_mul(self, factor: u128) -> Option<Amount> {
        self.0.checked_mul(factor).map(Amount)
    }

    /// `self * numerator / denominator`, rounded down; `None` on overflow or a zero denominator.
    pub fn mul_div(self, numerator: u128, denominator: u128) -> Option<Amount> {
        if denominator == 0 {
            return None;
        }
        self.0.checked_mul(numerator).map(|v| Amount(v / denominator))
    }

    /// Parses a decimal TSR amount such as `25.5` into micro-units. Rejects signs,
    /// exponents, more than six decimals and anything that does not fit in u128.
    pub fn parse_tsr(text: &str) -> Result<Amount, AmountError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(AmountError::Empty);
        }
        if t.starts_with('-') {
            return Err(AmountError::Negative(t.to_string()));
        }
        let t_unsigned = t.strip_prefix('+').unwrap_or(t);
        let (whole, frac) = match t_unsigned.split_once('.') {
            Some((w, f)) => (w, f),
            None => (t_unsigned, ""),
        };
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !digits_only(whole) || !digits_only(frac) {
            return Err(AmountError::NotANumber(t.to_string()));
        }
        if t_unsigned.contains('.') && frac.is_empty() && whole.is_empty() {
            return Err(AmountError::NotANumber(t.to_string()));
        }
        if frac.len() > DECIMALS {
            return Err(AmountError::TooPrecise(t.to_string()));
        }
        let too_large = || AmountError::TooLarge(t.to_string());
        let whole_value: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| too_large())? };
        let mut frac_padded = frac.to_string();
        while frac_padded.len() < DECIMALS {
            frac_padded.push('0');
        }
        let frac_value: u128 = frac_padded.parse().map_err(|_| too_large())?;
        whole_value
            .checked_mul(MICRO_PER_TSR)
            .and_then(|v| v.checked_add(frac_value))
            .map(Amount)
            .ok_or_else(too_large)
    }

    /// Like [`Amount::parse_tsr`] but also rejects zero, for transfers and bonds.
    pub fn parse_positive_tsr(text: &str) -> Result<Amount, AmountError> {
        let amount = Amount::parse_tsr(text)?;
        if amount.is_zero() {
            return Err(AmountError::Zero);
        }
        Ok(amount)
    }
}

impl fmt::Display for Amount {
    /// Always six decimals, so columns line up: `25.500000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / MICRO_PER_TSR, self.0 % MICRO_PER_TSR)
    }
}

impl serde::Serialize for Amount {
    /// As a decimal string of micro-units: JSON numbers cannot carry u128 safely.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        text.parse::<u128>().map(Amount).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_tsr() {
        assert_eq!(Amount::parse_tsr("25.5").unwrap(), Amount(25_500_000));
        assert_eq!(Amount::parse_tsr("0.000001").unwrap(), Amount(1));
        assert_eq!(Amount::parse_tsr("7").unwrap(), Amount(7_000_000));
        assert_eq!(Amount::parse_tsr(".5").unwrap(), Amount(500_000));
        assert_eq!(Amount::parse_tsr("3.").unwrap(), Amount(3_000_000));
    }

    #[test]
    fn rejects_bad_amounts_with_named_reason() {
        assert!(matches!(Amount::parse_tsr("-1"), Err(AmountError::Negative(_))));
        assert!(matches!(Amount::parse_tsr("1e99"), Err(AmountError::NotANumber(_))));
        assert!(matches!(Amount::parse_tsr("abc"), Err(AmountError::NotANumber(_))));
        assert!(matches!(Amount::parse_tsr(""), Err(AmountError::Empty)));
        assert!(matches!(Amount::parse_tsr("."), Err(AmountError::NotANumber(_))));
        assert!(matches!(Amount::parse_tsr("1.0000001"), Err(AmountError::TooPrecise(_))));
        assert!(matches!(
            Amount::parse_tsr("999999999999999999999999999999999999999"),
            Err(AmountError::TooLarge(_))
        ));
        assert!(matches!(Amount::parse_positive_tsr("0"), Err(AmountError::Zero)));
    }

    #[test]
    fn displays_six_decimals() {
        assert_eq!(Amount(25_500_000).to_string(), "25.500000");
        assert_eq!(Amount(1).to_string(), "0.000001");
    }

    proptest::proptest! {
        #[test]
        fn display_parse_round_trip(micro in 0u128..u128::MAX / 2) {
            let a = Amount(micro);
            proptest::prop_assert_eq!(Amount::parse_tsr(&a.to_string()).unwrap(), a);
        }

        #[test]
        fn parse_never_panics(text in ".{0,64}") {
            let _ = Amount::parse_tsr(&text);
        }
    }
}
