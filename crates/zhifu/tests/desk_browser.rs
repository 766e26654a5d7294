//! The operator console and the merchant portal in a real browser: Debian's
//! Chromium, driven by Playwright (`tests/browser/desk_browser.py` lists what
//! it checks), against a real `zhifu serve`. Screenshots of each page are
//! kept in `target/tmp/desk-screenshots/` (docs/screenshots/ has them too).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

#[test]
fn staff_and_merchants_work_in_chromium_through_the_console_and_the_portal() {
    support::run_browser_script("desk_browser.py", "playwright, Crypto", "desk-screenshots", "all desk checks passed");
}
