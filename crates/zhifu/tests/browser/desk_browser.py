"""The operator console and the merchant portal in a real browser: Debian's
Chromium driven by Playwright (no browser download). Run by
crates/zhifu/tests/desk_browser.rs:

    python3 desk_browser.py <base url> <admin key> <screenshot dir>

Support staff sign in (a wrong password first), find a trade by its
out_trade_no, open its timeline, refund part of it through the
confirmation step; the refund shows in the audit log and in the merchant's
portal. A support login sees no fee-schedule form and its POST is refused;
a cross-site POST without the CSRF token is refused (nothing refunded); a
merchant cannot open another merchant's trade by URL; sign-out and session
expiry end sessions (a signed-out cookie replayed is refused).
"""

import json
import os
import sys
import urllib.request

from Crypto.PublicKey import RSA
from playwright.sync_api import sync_playwright

from accessibility import ACCESSIBILITY

BASE, ADMIN, SHOTS = sys.argv[1], sys.argv[2], sys.argv[3]
CHROMIUM = os.environ.get("ZHIFU_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "a long passphrase"


def rest(method, path, key, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + key)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def made(status_and_body):
    status, body = status_and_body
    assert status in (200, 201), (status, body)
    return body


def shot(page, name):
    problems = page.evaluate(ACCESSIBILITY)
    assert not problems, (name, problems)
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


# Two merchants with portal logins, a buyer, a paid trade of each; staff.
tea = made(rest("POST", "/v1/merchants", ADMIN, {"name": "Tea House", "login": "teahouse", "password": PASSWORD}))
other = made(rest("POST", "/v1/merchants", ADMIN, {"name": "Other Shop", "login": "othershop", "password": PASSWORD}))
buyer = made(rest("POST", "/v1/users", ADMIN, {"name": "lin"}))
made(rest("POST", "/v1/topups", buyer["api_key"], {"amount": 100000, "bank": "ICBC"}))


def paid_trade(merchant, out_trade_no, amount):
    trade = made(rest("POST", "/v1/trades", merchant["api_key"],
                      {"out_trade_no": out_trade_no, "amount": amount, "subject": "Longjing tea", "mode": "instant"}))
    made(rest("POST", f"/v1/trades/{trade['trade_no']}/pay", buyer["api_key"], {"source": "balance"}))
    return trade["trade_no"]


ours = paid_trade(tea, "order-42", 5000)
theirs = paid_trade(other, "order-99", 7000)
sam = made(rest("POST", "/v1/admin/staff", ADMIN, {"login": "sam", "password": PASSWORD, "role": "support"}))
made(rest("POST", "/v1/admin/staff", ADMIN, {"login": "fay", "password": PASSWORD, "role": "finance"}))
ada = made(rest("POST", "/v1/admin/staff", ADMIN, {"login": "ada", "password": PASSWORD, "role": "admin"}))
schedules_before = made(rest("GET", "/v1/admin/fee-schedules", ADMIN))


def sign_in(page, desk, login):
    page.goto(BASE + desk)
    page.get_by_label("Login").fill(login)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    # The start page links to both desks.
    page.goto(BASE + "/")
    assert page.get_by_role("link", name="zhifu console").is_visible()
    assert page.get_by_role("link", name="zhifu merchant portal").is_visible()

    # Console: a wrong password, then support staff sign in.
    page.goto(BASE + "/console")
    shot(page, "console-sign-in")
    page.get_by_label("Login").fill("sam")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert "Wrong login or password" in page.locator(".error").inner_text()
    sign_in(page, "/console", "sam")
    assert page.locator(".who span").inner_text() == "sam"
    assert "✓" in page.locator("#books").inner_text(), "the books balance"
    assert "leader" in page.locator("#store + dl").inner_text()
    shot(page, "console-home")

    # The live view: the two payments of the last minute, ¥50.00 + ¥70.00.
    page.get_by_role("link", name="Live").click()
    assert page.locator("#gmv").inner_text() == "¥120.00", page.locator("#gmv").inner_text()
    assert page.locator("svg polyline").count() == 2
    shot(page, "console-live")
    # Reconciliation is finance's: support is refused.
    assert page.goto(BASE + "/console/reconciliation").status == 403
    page.goto(BASE + "/console")

    # Find the trade by out_trade_no: its page and its timeline.
    page.get_by_label("Search").fill("order-42")
    page.get_by_role("button", name="Search").click()
    assert page.url.endswith("/console/trades/" + ours), page.url
    timeline = page.locator(".timeline").inner_text()
    assert "trade.paid" in timeline and "trade.succeeded" in timeline, timeline

    # Refund part of it, through the confirmation step.
    page.get_by_label("Refund (¥)").fill("12.00")
    page.get_by_label("Reason").fill("one tin arrived dented")
    page.get_by_role("button", name="Refund…").click()
    assert page.locator("#confirm-amount").inner_text() == "¥12.00"
    shot(page, "console-confirm-refund")
    confirmation = page.eval_on_selector_all(
        "form[action$='/refund'] input[type=hidden]", "inputs => Object.fromEntries(inputs.map(i => [i.name, i.value]))")
    page.get_by_role("button", name="Confirm the refund").click()
    assert page.url.endswith("/console/trades/" + ours), page.url
    assert page.locator("#refunded").inner_text() == "¥12.00"
    assert "refund.succeeded" in page.locator(".timeline").inner_text()
    ledger = page.locator("#transfers").inner_text()
    assert "trade_payment" in ledger and "trade_refund" in ledger and "¥12.00" in ledger, ledger
    shot(page, "console-trade")
    assert made(rest("GET", f"/v1/trades/{ours}", ADMIN))["refunded_amount"] == 1200
    # The confirmation form again (a second submission): the same refund.
    assert page.request.post(BASE + f"/console/trades/{ours}/refund", form=confirmation).status == 200
    assert made(rest("GET", f"/v1/trades/{ours}", ADMIN))["refunded_amount"] == 1200, "refunded once"

    # The refund's id and its event's (after the merchant's id) find the trade too.
    events = made(rest("GET", "/v1/events?limit=100", tea["api_key"]))["data"]
    refunded = next(e for e in events if e["type"] == "refund.succeeded")
    for query in [refunded["data"]["refund"]["id"], f"{tea['id']} {refunded['id']}"]:
        page.goto(BASE + "/console")
        page.get_by_label("Search").fill(query)
        page.get_by_role("button", name="Search").click()
        assert page.url.endswith("/console/trades/" + ours), (query, page.url)
    # Alone, a delivered event is not found: the page says to add the merchant.
    page.goto(BASE + "/console")
    page.get_by_label("Search").fill(refunded["id"])
    page.get_by_role("button", name="Search").click()
    assert "mch_… evt_…" in page.content()
    page.goto(BASE + f"/console/trades/{ours}")

    # The audit log: the refund, by sam, on the trade.
    page.get_by_role("link", name="Audit log").click()
    first = page.locator("tbody tr").first.inner_text()
    assert "trade.refund" in first and sam["id"] in first and ours in first, first
    shot(page, "console-audit")

    # Support cannot change fee schedules: no form, and the POST is refused.
    page.get_by_role("link", name="Settings").click()
    assert page.get_by_role("button", name="Save").count() == 0
    shot(page, "console-settings-support")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    answer = page.request.post(BASE + "/console/settings/fees/transfer",
                               form={"csrf": csrf, "rate_bps": "500", "minimum": "1.00", "maximum": ""})
    assert answer.status == 403, answer.status
    assert made(rest("GET", "/v1/admin/fee-schedules", ADMIN)) == schedules_before

    # A cross-site form POST (no CSRF token) is refused: nothing refunded.
    answer = page.request.post(BASE + f"/console/trades/{ours}/refund",
                               form={"csrf": "", "nonce": "forged", "amount": "1.00", "confirm": "yes"})
    assert answer.status == 403, answer.status
    assert made(rest("GET", f"/v1/trades/{ours}", ADMIN))["refunded_amount"] == 1200

    # Sign out: the sign-in form again, and the old cookie replayed is refused.
    cookie = next(c for c in context.cookies() if c["name"] == "zhifu_staff")
    page.get_by_role("button", name="Sign out").click()
    assert page.get_by_label("Password").is_visible()
    replay = browser.new_context()
    replay.add_cookies([cookie])
    again = replay.new_page()
    again.goto(BASE + "/console")
    assert again.get_by_label("Password").is_visible(), "a signed-out session is refused"
    assert again.request.get(BASE + f"/console/trades/{ours}").status == 200  # the sign-in page,
    assert "order-42" not in again.request.get(BASE + f"/console/trades/{ours}").text()  # not the trade

    # An admin changes a fee schedule, creates a campaign and pauses it: audited.
    admin = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in(admin, "/console", "ada")
    admin.get_by_role("link", name="Settings").click()
    admin.get_by_label("transfer rate (bp)").fill("25")
    admin.locator("form[aria-label=transfer]").get_by_role("button", name="Save").click()
    transfer = next(s for s in made(rest("GET", "/v1/admin/fee-schedules", ADMIN)) if s["product"] == "transfer")
    assert transfer["schedule"]["rate_bps"] == 25, transfer
    for name, value in [("name", "Singles' Day"), ("budget (¥)", "1000.00"), ("discount (¥)", "5.00"),
                        ("uses per user", "1"), ("starts at (RFC 3339)", "2013-11-10T00:00:00+08:00"),
                        ("ends at (RFC 3339)", "2013-11-12T00:00:00+08:00")]:
        admin.get_by_label(name, exact=True).fill(value)
    admin.get_by_role("button", name="Create").click()
    admin.get_by_label("Daily rate (bp)").fill("7")
    admin.locator("form[action='/console/settings/loans']").get_by_role("button", name="Save").click()
    assert made(rest("GET", "/v1/admin/loan-terms", ADMIN))["daily_rate_bps"] == 7
    assert "Singles' Day" in admin.locator("#campaigns + table").inner_text()
    admin.get_by_role("button", name="Pause").click()
    assert "paused" in admin.locator("#campaigns + table").inner_text()
    shot(admin, "console-settings-admin")
    admin.get_by_role("link", name="Audit log").click()
    log = admin.locator("tbody").inner_text()
    assert "campaign.pause" in log and "fee_schedule" in log and "loan_terms.set" in log and ada["id"] in log, log

    # The portal: the merchant sees the refund made in the console.
    portal = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in(portal, "/portal", "teahouse")
    assert "order-42" in portal.locator("table").nth(1).inner_text()
    # Today's takings (¥50.00 paid, ¥12.00 refunded) and the six days before.
    assert portal.locator("#takings").inner_text() == "¥38.00"
    days = portal.locator("table[aria-labelledby=last-days] tbody tr")
    assert days.count() == 7 and "50.00" in days.first.inner_text() and "38.00" in days.first.inner_text()
    shot(portal, "portal-home")
    portal.get_by_role("link", name=ours).click()
    assert portal.locator("#refunded").inner_text() == "¥12.00"
    assert "refund.succeeded" in portal.locator(".timeline").inner_text()
    shot(portal, "portal-trade")
    # Another merchant's trade by URL: not found, nothing of it shown.
    answer = portal.goto(BASE + f"/portal/trades/{theirs}")
    assert answer.status == 404 and "order-99" not in portal.content(), answer.status
    # A restricted key, shown once: it reads and cannot write.
    portal.goto(BASE + "/portal/keys")
    portal.get_by_role("button", name="New restricted key").click()
    key = portal.locator("#new-key").inner_text()
    assert rest("GET", "/v1/balance", key)[0] == 200
    assert rest("POST", "/v1/transfers", key, {"to": buyer["id"], "amount": 1})[0] == 403
    # The gateway's app key replaced from the portal; a key that is not one refused.
    portal.get_by_label("New app public key (PEM, RSA 2048)").fill("not a key")
    portal.get_by_role("button", name="Replace the app key").click()
    assert "not a usable RSA public key" in portal.content()
    portal.goto(BASE + "/portal/keys")
    portal.get_by_label("New app public key (PEM, RSA 2048)").fill(RSA.generate(2048).publickey().export_key("PEM").decode())
    portal.get_by_role("button", name="Replace the app key").click()
    assert "now verifies this merchant" in portal.locator(".notice").inner_text()
    audit = made(rest("GET", f"/v1/admin/audit?target={tea['id']}", ADMIN))
    assert any(line["action"] == "app_public_key.set" for line in audit["data"]), audit
    # The full API key rolled from the portal with the current one: the new
    # key works, the old one for the hour chosen; another merchant's refused.
    portal.goto(BASE + "/portal/keys")
    portal.get_by_label("Current API key").fill(other["api_key"])
    portal.get_by_role("button", name="Roll the full API key").click()
    assert "not a key of this merchant" in portal.content()
    portal.goto(BASE + "/portal/keys")
    portal.get_by_label("Current API key").fill(tea["api_key"])
    portal.get_by_label("The old key keeps working").select_option("3600")
    portal.get_by_role("button", name="Roll the full API key").click()
    rolled = portal.locator("#rolled-key").inner_text()
    shot(portal, "portal-keys")
    assert rolled != tea["api_key"] and made(rest("GET", "/v1/balance", rolled))["available"] >= 0
    assert rest("GET", "/v1/balance", tea["api_key"])[0] == 200, "the old key works for the hour"
    audit = made(rest("GET", f"/v1/admin/audit?target={tea['id']}", ADMIN))
    assert any(line["action"] == "api_key.roll" for line in audit["data"]), audit
    tea["api_key"] = rolled
    # The portal's CSRF holds too.
    answer = portal.request.post(BASE + f"/portal/trades/{ours}/refund",
                                 form={"csrf": "0" * 32, "nonce": "forged", "amount": "1.00", "confirm": "yes"})
    assert answer.status == 403, answer.status

    # A dispute: the buyer disputes an escrow trade, the merchant rejects it
    # in the portal, the buyer escalates, support decides in the console.
    boots = made(rest("POST", "/v1/trades", tea["api_key"],
                      {"out_trade_no": "order-77", "amount": 8800, "subject": "Tea set", "mode": "escrow"}))["trade_no"]
    made(rest("POST", f"/v1/trades/{boots}/pay", buyer["api_key"], {}))
    dispute = made(rest("POST", f"/v1/trades/{boots}/disputes", buyer["api_key"], {"amount": 3000, "reason": "two cups broken"}))
    portal.goto(BASE + "/portal/disputes")
    assert dispute["id"] in portal.locator("table").inner_text()
    portal.get_by_role("link", name=boots).click()
    assert "two cups broken" in portal.locator("#disputes-title + table").inner_text()
    portal.get_by_label("Note").fill("packed with care; photos sent")
    shot(portal, "portal-dispute")
    portal.get_by_role("button", name="Reject").click()
    assert "rejected" in portal.locator(".dispute-status").inner_text()
    made(rest("POST", f"/v1/disputes/{dispute['id']}/escalate", buyer["api_key"], {}))
    # (sam signed out above; ada, an admin, has support's duties too.)
    admin.goto(BASE + "/console")
    admin.get_by_role("link", name="Disputes").click()
    assert "escalated" in admin.locator("table").inner_text()
    admin.get_by_role("link", name=boots).click()
    before = made(rest("GET", "/v1/balance", buyer["api_key"]))["available"]
    admin.get_by_label("Refund to the buyer (¥)").fill("15.00")
    shot(admin, "console-dispute")
    admin.get_by_role("button", name="Decide " + dispute["id"]).click()
    assert "decided" in admin.locator(".dispute-status").inner_text()
    decided = made(rest("GET", f"/v1/disputes/{dispute['id']}", ADMIN))
    assert (decided["status"], decided["refunded"]) == ("decided", 1500), decided
    assert made(rest("GET", "/v1/balance", buyer["api_key"]))["available"] == before + 1500
    # Search by the dispute's id opens its trade.
    admin.goto(BASE + "/console")
    admin.get_by_label("Search").fill(dispute["id"])
    admin.get_by_role("button", name="Search").click()
    assert admin.url.endswith("/console/trades/" + boots), admin.url

    # A pre-authorisation: Tea House freezes a deposit by the buyer's payment
    # code; the portal lists it and releases what it holds; the console shows it.
    code = made(rest("POST", "/v1/payment-codes", buyer["api_key"], {}))["auth_code"]
    deposit = made(rest("POST", "/v1/freezes", tea["api_key"], {"payment_code": code, "out_order_no": "room-8", "out_request_no": "room-8-f", "amount": 2000, "title": "tasting room deposit"}))
    held_before = made(rest("GET", "/v1/balance", buyer["api_key"]))
    portal.get_by_role("link", name="Pre-authorisations").click()
    assert deposit["id"] in portal.locator("table").inner_text() and "AUTHORIZED" in portal.locator(".freeze-status").inner_text()
    shot(portal, "portal-freezes")
    portal.get_by_role("button", name="Release ¥20.00").click()
    assert "FINISH" in portal.locator(".freeze-status").inner_text()
    held_after = made(rest("GET", "/v1/balance", buyer["api_key"]))
    assert (held_after["available"], held_after["held"]) == (held_before["available"] + 2000, held_before["held"] - 2000), held_after
    admin.goto(BASE + f"/console/parties/{tea['id']}")
    assert deposit["id"] in admin.content()

    # Session expiry: finance signs in; eight hours of clock later, signed out.
    finance = browser.new_context().new_page()
    sign_in(finance, "/console", "fay")
    assert finance.locator(".who span").inner_text() == "fay"
    finance.get_by_role("link", name="Reconciliation").click()
    assert "balanced" in finance.locator("h1").inner_text() and "bank lines" in finance.content()
    shot(finance, "console-reconciliation")
    made(rest("POST", "/v1/admin/clock", ADMIN, {"advance_seconds": 8 * 3600 + 1}))
    finance.goto(BASE + "/console")
    assert finance.get_by_label("Password").is_visible(), "an expired session is refused"

    # The day has ended: finance downloads Tea House's bill of it from its page.
    made(rest("POST", "/v1/admin/clock", ADMIN, {"advance_seconds": 24 * 3600}))
    sign_in(finance, "/console", "fay")
    finance.goto(BASE + f"/console/parties/{tea['id']}")
    finance.get_by_label("Bill of the day").fill("2013-11-11")
    shot(finance, "console-party")
    with finance.expect_download() as download:
        finance.get_by_role("button", name="Download the bill").click()
    bill = open(download.value.path(), encoding="utf-8").read()
    assert ",order-42," in bill and ",trade_refund," in bill and "# closing_balance," in bill, bill
    # The merchant gets the same bill from the portal, and its balance transactions.
    shop = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in(shop, "/portal", "teahouse")
    shop.get_by_role("link", name="Bills").click()
    shop.get_by_label("Day").fill("2013-11-11")
    with shop.expect_download() as download:
        shop.get_by_role("button", name="Download the day's bill").click()
    assert open(download.value.path(), encoding="utf-8").read() == bill
    shop.get_by_role("link", name="Balance").click()
    movements = shop.locator("tbody").inner_text()
    assert "trade_refund" in movements and "-12.00" in movements, movements
    shot(shop, "portal-balance")

    # The API reference, rendered by the server from its OpenAPI document.
    reference = browser.new_context().new_page()
    reference.goto(BASE + "/")
    reference.get_by_role("link", name="API reference").click()
    assert reference.locator("code", has_text="POST /v1/transfers").count() == 1
    assert reference.locator("#schema-TradeView").count() == 1
    shot(reference, "api-reference")

    # Chinese by Accept-Language.
    chinese = browser.new_context(locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"}).new_page()
    chinese.goto(BASE + "/console")
    assert chinese.locator("html").get_attribute("lang") == "zh-CN" and "登录" in chinese.content()
    chinese.get_by_label("账户名").fill("ada")
    chinese.get_by_label("密码").fill(PASSWORD)
    chinese.get_by_role("button", name="登录").click()
    chinese.get_by_role("link", name="设置").click()
    assert "费率" in chinese.locator("h1").inner_text() and "营销活动" in chinese.content()
    assert chinese.get_by_placeholder("预算（¥）").count() == 1 and chinese.get_by_label("每人次数").count() == 1
    shot(chinese, "console-settings-chinese")

    browser.close()

print("all desk checks passed")
