//! The cashier in a real browser: Debian's Chromium, driven by Playwright
//! (`tests/browser/cashier_browser.py` lists what it checks), against a real
//! `zhifu serve`. Screenshots of each page are kept in
//! `target/tmp/cashier-screenshots/` (docs/screenshots/ has one of each).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

#[test]
fn a_buyer_pays_in_chromium_from_a_website_a_phone_and_a_qr_code() {
    let modules = "playwright, alipay.aop.api, Crypto";
    support::run_browser_script("cashier_browser.py", modules, "cashier-screenshots", "all browser checks passed");
}
