//! Alipay's parameter conventions: the text a signature covers, and decimal
//! yuan amounts.

use std::collections::BTreeMap;

use platform::AMOUNT_MAX;

/// `k=v&…` over the non-empty parameters but those in `except`, sorted by
/// name, with raw (decoded) values: what a request's signature covers.
pub fn sign_content(params: &BTreeMap<String, String>, except: &[&str]) -> String {
    params
        .iter()
        .filter(|(name, value)| !value.is_empty() && !except.contains(&name.as_str()))
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `"88.88"` → 8,888 fen, exactly: digits with at most two decimals, more
/// than zero and at most `AMOUNT_MAX`; no sign, exponent or spaces.
pub fn yuan_to_fen(text: &str) -> Option<u64> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() && fraction.len() <= 2 => (whole, fraction),
        Some(_) => return None,
        None => (text, ""),
    };
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || whole.len() > 16 || !digits(whole) || !digits(fraction) {
        return None;
    }
    let cents = match fraction.len() {
        0 => 0,
        1 => fraction.parse::<u64>().ok()? * 10,
        _ => fraction.parse::<u64>().ok()?,
    };
    let fen = whole.parse::<u64>().ok()?.checked_mul(100)?.checked_add(cents)?;
    (fen > 0 && fen <= AMOUNT_MAX).then_some(fen)
}

/// 8,888 fen → `"88.88"`.
pub fn fen_to_yuan(fen: u64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_convert_exactly_and_odd_ones_are_refused() {
        assert_eq!(yuan_to_fen("88.88"), Some(8_888));
        assert_eq!(yuan_to_fen("0.01"), Some(1));
        assert_eq!(yuan_to_fen("1"), Some(100));
        assert_eq!(yuan_to_fen("1.5"), Some(150));
        assert_eq!(yuan_to_fen("10000000000000"), Some(AMOUNT_MAX));
        for bad in
            ["", "0", "0.00", "1.001", "-1", "+1", "1e3", " 1", "1.", ".5", "1,00", "10000000000000.01", "NaN", "１"]
        {
            assert_eq!(yuan_to_fen(bad), None, "{bad:?}");
        }
        assert_eq!(fen_to_yuan(8_888), "88.88");
        assert_eq!(fen_to_yuan(5), "0.05");
        assert_eq!(fen_to_yuan(100), "1.00");
    }

    #[test]
    fn the_signed_text_is_sorted_raw_and_skips_empty_values_and_the_signature() {
        let params: BTreeMap<String, String> =
            [("method", "m"), ("app_id", "1"), ("sign", "x"), ("notify_url", ""), ("biz_content", "{\"a\":\"b c\"}")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(sign_content(&params, &["sign"]), "app_id=1&biz_content={\"a\":\"b c\"}&method=m");
    }
}
